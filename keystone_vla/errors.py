"""Exceptions with messages a user can act on.

Every error raised for bad input names what was wrong and what to do; each area of the stack has its own
subclass so callers (CLI, ROS nodes) can catch one family without swallowing bugs.
"""

from __future__ import annotations

from collections.abc import Iterable


class KeystoneError(Exception):
    """Base class for all errors Keystone raises on purpose."""


class ConfigError(KeystoneError, ValueError):
    """A configuration value, CLI option or file is invalid."""


class SimError(KeystoneError):
    """The simulator cannot do what was asked (unknown task, arm, colour; unreachable pose)."""


class DatasetError(KeystoneError):
    """An episode store, bag or export is missing, corrupt or inconsistent."""


class ModelError(KeystoneError):
    """A model, checkpoint or model input is invalid."""


class SafetyError(KeystoneError):
    """A command was rejected by the safety shield."""


class GroundingError(KeystoneError):
    """An instruction cannot be grounded in the scene."""


def unknown_choice(kind: str, value: object, valid: Iterable[str], error: type[KeystoneError] = ConfigError) -> KeystoneError:
    """Build the standard 'unknown X' error that lists the valid choices.

    >>> str(unknown_choice("task", "fly", ["stack", "insert"]))
    "unknown task 'fly'; valid choices: insert, stack"
    """
    choices = ", ".join(sorted(valid))
    return error(f"unknown {kind} {value!r}; valid choices: {choices}")
