"""Per-tick trace of a VLA checkpoint in one simulated episode (reports/dev-stop25).

Each row: tick, plan step, gripper opening, end-effector position, commanded gripper, the latest chunk's gripper
commands (1 = closed), still-hand releases so far, regrasps so far, the chunk's step-done probability. A row is
printed when the step, the command or a counter changes, and every 10 ticks. From the repository root:

    python reports/dev-stop25/trace_ticks.py CKPT TASK SEED [STILL_RELEASE_M] [ACTIONS_PER_CHUNK]
"""
import sys

import numpy as np
import torch

from keystone_vla.policies.episode import EpisodeAdapter
from keystone_vla.policies.vla_agent import DEFAULT_STILL_RELEASE, VLAAgent, _opening
from keystone_vla.sim.rollout import run_episode
from keystone_vla.types import EpisodeSpec


def main(argv: list[str]) -> None:
    ckpt, task, seed = argv[0], argv[1], int(argv[2])
    still = float(argv[3]) if len(argv) > 3 else DEFAULT_STILL_RELEASE
    runtime = {"n_action_steps": int(argv[4])} if len(argv) > 4 else {}
    torch.set_num_threads(1)
    agent = VLAAgent.from_pretrained(ckpt, still_release=still, **runtime)
    act, rows = agent.act, []

    def traced(observation):
        action = act(observation)
        chunk = agent.runtime.last_chunk
        grip = "".join("1" if g >= 0.5 else "0" for g in np.asarray(chunk.actions)[:, -1]) if chunk else ""
        rows.append((agent._tick, agent.plan_step, round(_opening(observation), 2),
                     np.round(np.asarray(observation.ee_pose)[:3], 3).tolist(), float(action[-1]), grip,
                     agent.still_releases, agent.regrasps, round(float(chunk.step_done), 2) if chunk else None))
        return action

    agent.act = traced
    rec = run_episode(EpisodeSpec(task, seed, "seen", "panda"), policy=EpisodeAdapter(agent), record=False)
    print("plan", agent.plan.calls() if agent.plan else None)
    previous = None
    for row in rows:
        key = (row[1], row[4], row[6], row[7])
        if key != previous or row[0] % 10 == 0:
            print(row)
        previous = key
    print("success", rec.success, rec.steps)


if __name__ == "__main__":
    main(sys.argv[1:])
