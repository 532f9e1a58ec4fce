"""Task registry. A task is one module here (scene, templates, plan, success); see `base.Task`."""

from __future__ import annotations

from keystone_vla.errors import SimError, unknown_choice
from keystone_vla.vocab import COLOURS, OBJECT_SYNONYMS

from .base import Task, TaskInstance, Template
from .build_tower import BuildTowerTask
from .insert import InsertTask
from .kit_assembly import KitAssemblyTask
from .pick_place import PickPlaceTask
from .stack import StackTask

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (PickPlaceTask, StackTask, InsertTask, KitAssemblyTask, BuildTowerTask)
}


def get_task(name: str) -> Task:
    """Instantiate a task by name; unknown names raise an error listing the valid tasks."""
    try:
        return TASKS[name]()
    except KeyError:
        raise unknown_choice("task", name, TASKS, SimError) from None


def instruction_vocabulary() -> set[str]:
    """Every word an instruction of any task can contain (templates, colours, object synonyms, step texts)."""
    words: set[str] = set(COLOURS)
    for syn in OBJECT_SYNONYMS.values():
        for s in syn:
            words.update(s.split())
    for task in TASKS.values():
        words |= task().vocabulary()
    words |= {"pick", "up", "the", "place", "on", "in", "put", "insert", "into", "slot", "hole", "peg"}
    return {w.lower() for w in words if w}


#: what each template slot is filled with, for grammars built from the templates (e.g. the speech recogniser);
#: {a} {b} {c} are a block in stack ("the red block") and a bare colour in a tower ("red at the bottom")
SPEECH_SLOTS: dict[str, str] = {"obj": "block|cylinder", "box": "bowl|plate", "a": "block_or_colour",
                                "b": "block_or_colour", "c": "block_or_colour", "colour": "colour", "prep": "prep"}


def all_templates(split: str | None = None) -> list[str]:
    return [t.text for task in TASKS.values() for t in task.templates if split is None or t.split == split]


__all__ = ["TASKS", "get_task", "instruction_vocabulary", "all_templates", "SPEECH_SLOTS", "Task", "TaskInstance", "Template"]
