"""Prototype of the agent rule in README §4 (not in the agent): once the hand has been still for a tick (the end
effector moved < STILL_M metres between the last two observations; environment, default 0.0005, measured with
0.002), run a gripper change that the latest chunk predicts anywhere in its horizon, instead of waiting for it to come
within the executed actions. Run from the repository root:

    STILL_M=0.002 python reports/dev-stop24/still_hand_release.py CKPT [TASK] [EPISODES] [ACTIONS_PER_CHUNK] [on|off]

Episodes use seeds 0..EPISODES-1 of the seen split; prints the successes."""
import os
import sys

import numpy as np

from keystone_vla.policies.episode import EpisodeAdapter
from keystone_vla.policies.vla_agent import VLAAgent
from keystone_vla.sim.rollout import run_episode
from keystone_vla.types import EpisodeSpec

STILL_M = float(os.environ.get("STILL_M", "0.0005"))


def run(ckpt: str, task: str, seed: int, actions_per_chunk: int, rule: bool) -> tuple[bool, int, int]:
    agent = VLAAgent.from_pretrained(ckpt, n_action_steps=actions_per_chunk)
    predict, act = agent.vla.predict_chunk, agent.runtime.act
    state = {"grip": None, "prev_ee": None, "fired": 0}

    def traced(*args, **kwargs):
        chunk = predict(*args, **kwargs)
        state["grip"] = np.asarray(chunk.actions)[:, -1].copy()
        return chunk

    def act_with_rule(observation):
        action = act(observation)
        ee = np.asarray(observation.ee_pose)[:3]
        still = state["prev_ee"] is not None and float(np.linalg.norm(ee - state["prev_ee"])) < STILL_M
        state["prev_ee"] = ee
        grip = state["grip"]
        if rule and still and grip is not None:
            now = float(action[-1]) >= 0.5
            change = [g for g in grip if (g >= 0.5) != now]
            if change:
                action = action.copy()
                action[-1] = 0.0 if now else 1.0
                state["fired"] += 1
        return action

    agent.vla.predict_chunk = traced
    agent.runtime.act = act_with_rule
    rec = run_episode(EpisodeSpec(task, seed, "seen", "panda"), policy=EpisodeAdapter(agent), record=False)
    return bool(rec.success), int(rec.steps), state["fired"]


if __name__ == "__main__":
    a = sys.argv[1:]
    ckpt, task = a[0], (a[1] if len(a) > 1 else "insert")
    n, k = (int(a[2]) if len(a) > 2 else 10), (int(a[3]) if len(a) > 3 else 2)
    rule = (a[4] if len(a) > 4 else "on") == "on"
    wins = 0
    for seed in range(n):
        ok, steps, fired = run(ckpt, task, seed, k, rule)
        wins += ok
        print(f"seed {seed}: success {ok} in {steps} ticks, rule fired {fired} times", flush=True)
    print(f"{task}, {k} actions per chunk, rule {'on' if rule else 'off'}: {wins}/{n}")
