"""Trace one episode of a VLA checkpoint: per predicted chunk, the plan step, the step-done probability and the
first three actions' (dx, dy, dz, dyaw, gripper); then whether the episode succeeded. Run from the repository root:

    python reports/dev-stop22/chunk_timing.py CKPT [TASK] [SEED] [ACTIONS_PER_CHUNK]

(defaults pick_place, 0, 2: the agent's default). Stop 22 used it on runs/fast22/kf: at 2 actions per chunk the
gripper column reads [0.02, 0.31, 1.0] on every chunk once the hand is down, i.e. "close in two ticks", and the
agent replans before reaching it; at 3 or 4 the same episode succeeds."""
import sys

import numpy as np

from keystone_vla.policies.episode import EpisodeAdapter
from keystone_vla.policies.vla_agent import VLAAgent
from keystone_vla.sim.rollout import run_episode
from keystone_vla.types import EpisodeSpec


def main(ckpt: str, task: str = "pick_place", seed: int = 0, actions_per_chunk: int = 2) -> None:
    agent = VLAAgent.from_pretrained(ckpt, n_action_steps=actions_per_chunk)
    predict = agent.vla.predict_chunk
    rows = []

    def traced(*args, **kwargs):
        chunk = predict(*args, **kwargs)
        first = np.asarray(chunk.actions)[:3][:, [0, 1, 2, 5, 6]]
        rows.append((agent._tick, agent.plan_step, round(float(chunk.step_done), 3), np.round(first, 3).tolist()))
        return chunk

    agent.vla.predict_chunk = traced
    rec = run_episode(EpisodeSpec(task, seed, "seen", "panda"), policy=EpisodeAdapter(agent), record=False)
    for tick, step, done, first in rows:
        print(f"tick {tick:4d} step {step} done {done:.3f} first actions (dx dy dz dyaw grip) {first}")
    print(f"success {bool(rec.success)} in {rec.steps} ticks, plan {agent.plan.calls()}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], *(a[1:2] or ["pick_place"]), *(int(x) for x in a[2:4]))
