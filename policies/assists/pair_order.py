"""Pair order: a kit's independent put-downs run in the order the demonstrations used, largest y first.

Why: the plan head is shown object ids, not positions, so the order in which it lists a kit's independent
(pick X, place_in X, T) pairs is arbitrary, while the chunk head was trained on the demonstrations' order (the
part with the largest y in the robot base frame first: left to right for an operator facing the arm). Measured
on keystone-base's kit_assembly episodes (100, seen split): plans in the demonstrations' order succeeded in 7 of
13, in another order in 19 of 87.

It only reorders: the steps are the model's. A plan that is not made only of such pairs, where one pair depends
on another (a tower: a target is another pair's part), or that names an object the scene lacks, is returned
unchanged.
"""

from __future__ import annotations

from typing import Any

from keystone_vla.types import Plan


def order_independent_pairs(plan: Plan, objects: dict[str, Any]) -> Plan:
    """`plan` with its (pick X, place_in X, T) pairs sorted by X's y in the base frame, largest first, when the plan
    is made only of such pairs and none depends on another (every part and target distinct, no target is a part);
    any other plan, or one naming an object `objects` (id -> object with .position) lacks, comes back unchanged."""
    steps = plan.steps
    if len(steps) < 4 or len(steps) % 2:
        return plan
    pairs = [(steps[i], steps[i + 1]) for i in range(0, len(steps), 2)]
    if not all(p.skill == "pick" and q.skill == "place_in" and len(q.args) == 2 and q.args[0] == p.args[0]
               for p, q in pairs):
        return plan
    parts = [p.args[0] for p, _ in pairs]
    targets = [q.args[1] for _, q in pairs]
    if len(set(parts)) != len(parts) or len(set(targets)) != len(targets) or set(parts) & set(targets):
        return plan
    if any(x not in objects for x in parts):
        return plan
    ordered = sorted(pairs, key=lambda pq: -float(objects[pq[0].args[0]].position[1]))
    return Plan(plan.instruction, tuple(s for pq in ordered for s in pq))
