"""Pair order: a kit's independent put-downs reordered largest y first; anything dependent left alone."""

from __future__ import annotations

import numpy as np

from keystone_vla.perception.objects import DetectedObject
from keystone_vla.policies.assists.pair_order import order_independent_pairs
from keystone_vla.types import Plan, PlanStep


def _pairs(*pairs: tuple[str, str, str]) -> Plan:
    steps = []
    for part, skill, target in pairs:
        steps += [PlanStep("pick", (part,), f"pick up the {part}"), PlanStep(skill, (part, target), f"put {part}")]
    return Plan("assemble the kit", tuple(steps))


def test_independent_put_downs_run_largest_y_first_and_dependent_ones_keep_their_order() -> None:
    objs = {i: DetectedObject(i, None, "bar", np.array([0.5, y, 0.02])) for i, y in
            (("red_bar", -0.1), ("blue_disc", 0.2), ("green_ell", 0.05), ("a_slot", 0), ("b_slot", 0), ("c_slot", 0))}
    kit = _pairs(("red_bar", "place_in", "a_slot"), ("blue_disc", "place_in", "b_slot"),
                 ("green_ell", "place_in", "c_slot"))
    out = order_independent_pairs(kit, objs)
    assert [s.args[0] for s in out.steps[::2]] == ["blue_disc", "green_ell", "red_bar"]
    assert sorted(out.steps, key=str) == sorted(kit.steps, key=str) and out.instruction == kit.instruction
    for i in range(0, 6, 2):  # every pick still directly precedes its own put-down
        assert out.steps[i].skill == "pick" and out.steps[i + 1].args[0] == out.steps[i].args[0]
    # a tower (each block goes onto the previous one), a shared target, a target that is a part, a missing pose
    tower = _pairs(("blue_disc", "place_on", "red_bar"), ("green_ell", "place_on", "blue_disc"))
    shared = _pairs(("red_bar", "place_in", "a_slot"), ("blue_disc", "place_in", "a_slot"))
    chained = _pairs(("red_bar", "place_in", "a_slot"), ("blue_disc", "place_in", "red_bar"))
    unknown = _pairs(("red_bar", "place_in", "a_slot"), ("white_tee", "place_in", "b_slot"))
    for plan in (tower, shared, chained, unknown, _pairs(("red_bar", "place_in", "a_slot"))):
        assert order_independent_pairs(plan, objs) is plan
