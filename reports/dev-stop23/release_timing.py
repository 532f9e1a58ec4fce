"""Trace the put-down step of one episode: for every chunk predicted while the agent is on plan step 1 (every
8th tick), the predicted dz and gripper columns of all H = 8 actions; then whether the episode succeeded. Run
from the repository root:

    python reports/dev-stop23/release_timing.py CKPT [TASK] [SEED] [ACTIONS_PER_CHUNK]

(defaults insert, 0, 4). Stop 23: runs/fast23/kf holds the peg in the hole with the gripper column reading
[0.98, 0.99, 0.99, 0.94, 0.88, 0.83, 0.77, 0.76] on every chunk (the release always 4+ ticks ahead), while
runs/fast19/i reaches [1.0, 0.98, 0.90, 0.38, ...] and lets go at tick 88."""
import sys

import numpy as np

from keystone_vla.policies.episode import EpisodeAdapter
from keystone_vla.policies.vla_agent import VLAAgent
from keystone_vla.sim.rollout import run_episode
from keystone_vla.types import EpisodeSpec


def main(ckpt: str, task: str = "insert", seed: int = 0, actions_per_chunk: int = 4) -> None:
    agent = VLAAgent.from_pretrained(ckpt, n_action_steps=actions_per_chunk)
    predict = agent.vla.predict_chunk

    def traced(*args, **kwargs):
        chunk = predict(*args, **kwargs)
        acts = np.asarray(chunk.actions)
        if agent.plan_step == 1 and agent._tick % 8 == 0:
            print(f"tick {agent._tick:4d} dz {np.round(acts[:, 2], 3).tolist()} grip {np.round(acts[:, 6], 2).tolist()}")
        return chunk

    agent.vla.predict_chunk = traced
    rec = run_episode(EpisodeSpec(task, seed, "seen", "panda"), policy=EpisodeAdapter(agent), record=False)
    print(f"success {bool(rec.success)} in {rec.steps} ticks, plan {agent.plan.calls()}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], *(a[1:2] or ["insert"]), *(int(x) for x in a[2:4]))
