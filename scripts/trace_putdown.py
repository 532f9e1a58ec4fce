"""Trace a VLA checkpoint's put-down steps in simulation: where the held part sits in the hand, how far it is from
its target, and when the hand is first told to open.

For every tick of a put-down step (place_on, place_in, insert) it records the part's x/y offset in the gripper
frame now and as the agent located it when the step began (the object token's held-part offset), the part's x/y
distance and yaw error to its target, its height, the gripper opening and the commanded gripper value. Per episode
it prints one JSON line: success, steps, regrasps, releases held back by the interlock, and the first tick whose
command opens the hand (gripper < 0.5), which is where a premature release shows.

Usage: ``python scripts/trace_putdown.py --task insert --seeds 0:12 [--split seen] [--policy PATH]
[--relocate-every N] [--release-radius M] [--align-radius M] [--no-binary-gripper] [--out trace.json]`` (the agent's
defaults unless given; ``--relocate-every 0 --align-radius 0 --no-binary-gripper`` is the model without the agent's
servo rules). One process, one torch thread: the same per-episode
outcomes as ``keystone eval`` on this machine (checked on insert seeds 0-11, stop 16).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from keystone_vla.policies.episode import EpisodeAdapter
from keystone_vla.policies.vla_agent import DEFAULT_ALIGN_RADIUS, DEFAULT_RELOCATE_EVERY, VLAAgent, _opening
from keystone_vla.sim.geometry import yaw_error
from keystone_vla.sim.rollout import EpisodeSpec, run_episode
from keystone_vla.vla.object_token import gripper_yaw


def in_gripper_frame(d: np.ndarray, yaw: float) -> list[float]:
    c, s = np.cos(-yaw), np.sin(-yaw)
    return [round(1e3 * float(c * d[0] - s * d[1]), 1), round(1e3 * float(s * d[0] + c * d[1]), 1)]


class Tracer(EpisodeAdapter):
    """The harness's episode wrapper, logging every put-down tick (reads the world: a diagnostic, not a policy)."""

    def __init__(self, agent: VLAAgent) -> None:
        super().__init__(agent)
        self.agent = agent
        self.log: list[dict[str, Any]] = []
        self.world: Any = None

    def bind(self, world: Any, instance: Any) -> None:
        self.world = world
        super().bind(world, instance)

    def reset(self) -> None:
        super().reset()
        self.log = []

    def act(self, obs: Any) -> np.ndarray:
        a = self.agent
        out = a.act(obs)
        step = a.plan.steps[a.plan_step]
        if step.skill != "pick" and len(step.args) == 2 and step.args[0] != step.args[1]:
            part, target = self.world.objects[step.args[0]], self.world.objects[step.args[1]]
            ee = obs.ee_pose
            now = in_gripper_frame(part.position()[:2] - ee[:2], float(gripper_yaw(ee[3:7])))
            so = a._step_objects
            start = None if so is None else in_gripper_frame(so[0:2] - so[14:16], float(gripper_yaw(so[17:21])))
            self.log.append({
                "t": len(self.log), "step": a.plan_step, "call": step.call, "opening": round(_opening(obs), 3),
                "command": round(float(out[-1]), 3),
                "xy_error_mm": round(1e3 * float(np.linalg.norm(part.position()[:2] - target.position()[:2])), 1),
                "z": round(float(part.position()[2]), 3),
                "yaw_error_deg": round(float(np.degrees(yaw_error(part.yaw(), target.yaw(), part.symmetry))), 1),
                "in_hand_now_mm": now, "in_hand_located_mm": start})
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="insert")
    ap.add_argument("--seeds", default="0:12", help="first:last (exclusive)")
    ap.add_argument("--split", default="seen")
    ap.add_argument("--policy", default=str(Path(__file__).resolve().parents[1] / "vla/pretrained/keystone-base"))
    ap.add_argument("--relocate-every", type=int, default=DEFAULT_RELOCATE_EVERY)
    ap.add_argument("--release-radius", type=float, default=0.0)
    ap.add_argument("--align-radius", type=float, default=DEFAULT_ALIGN_RADIUS)
    ap.add_argument("--binary-gripper", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", default=None, help="write every episode's full trace here (JSON)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    first, last = (int(x) for x in args.seeds.split(":"))
    agent = VLAAgent.from_pretrained(args.policy, relocate_every=args.relocate_every,
                                     release_radius=args.release_radius, align_radius=args.align_radius,
                                     binary_gripper=args.binary_gripper)
    tracer = Tracer(agent)
    episodes = []
    for seed in range(first, last):
        rec = run_episode(EpisodeSpec(args.task, seed, args.split, "panda", None), policy=tracer, record=False)
        opens = [row for row in tracer.log if row["command"] < 0.5]
        summary = {"seed": seed, "success": bool(rec.success), "steps": rec.steps, "regrasps": agent.regrasps,
                   "held_releases": agent.held_releases, "aligned_ticks": agent.aligned_ticks, "first_open": opens[0] if opens else None}
        print(json.dumps(summary), flush=True)
        episodes.append({**summary, "trace": tracer.log})
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "episodes": episodes}))


if __name__ == "__main__":
    main()
