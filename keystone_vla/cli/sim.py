"""`keystone sim`: run episodes in the PyBullet simulator and list the tasks."""

from __future__ import annotations

import argparse
import sys

from keystone_vla.cli._common import emit_summary


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("sim", help="run tasks in the PyBullet simulator (oracle or a policy), list tasks",
                         description="Simulation: tabletop assembly tasks with scripted oracle experts.")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")

    run = sim_sub.add_parser("run", help="run episodes, report success rate, write a video of the first episode",
                             description="Run seeded episodes of one task and print success rate and mean steps.")
    run.add_argument("--task", default="stack", help="task name (see `keystone sim tasks`)")
    run.add_argument("--arm", default="panda", help="arm: panda (default) or iiwa")
    run.add_argument("--split", default="seen", help="instruction/colour/shape split: seen or unseen")
    run.add_argument("--policy", default="oracle", help="oracle (scripted expert with privileged state)")
    run.add_argument("--episodes", type=int, default=10)
    run.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    run.add_argument("--image-size", type=int, default=128)
    run.add_argument("--video", default=None, help="write the first episode as MP4 (or GIF with a .gif name)")
    run.add_argument("--unsafe-no-shield", action="store_true", help="TESTS ONLY: run without the safety shield")
    run.add_argument("--json", action="store_true", help="print the summary as JSON on the last stdout line")
    run.set_defaults(func=cmd_run)

    tasks = sim_sub.add_parser("tasks", help="list tasks with their instruction templates and splits")
    tasks.add_argument("--json", action="store_true")
    tasks.set_defaults(func=cmd_tasks)
    sim.set_defaults(func=lambda args: (sim.print_help(sys.stderr), 2)[1])


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from keystone_vla.errors import ConfigError, unknown_choice
    from keystone_vla.robots import get_robot
    from keystone_vla.sim import get_task
    from keystone_vla.sim.rollout import make_world, run_episode, write_video
    from keystone_vla.types import EpisodeSpec
    from keystone_vla.vocab import SPLITS

    get_task(args.task)
    get_robot(args.arm)
    if args.split not in SPLITS:
        raise unknown_choice("split", args.split, SPLITS)
    if args.policy != "oracle":
        raise unknown_choice("policy", args.policy, ["oracle"])
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    shield = None if args.unsafe_no_shield else "default"
    world = make_world(EpisodeSpec(args.task, args.seed, args.split, args.arm), ("front",), args.image_size, shield)
    successes, steps, video = 0, [], None
    bar = tqdm(range(args.episodes), desc=f"{args.task} ({args.arm})", unit="ep", file=sys.stderr)
    for i in bar:
        spec = EpisodeSpec(args.task, args.seed + i, args.split, args.arm)
        rec = run_episode(spec, record=False, world=world, video=bool(args.video) and i == 0)
        successes += rec.success
        steps.append(rec.steps)
        if i == 0 and args.video:
            video = write_video(rec.video_frames, args.video)
        bar.set_postfix(success=f"{successes}/{i + 1}")
    world.close()
    summary = {
        "task": args.task, "arm": args.arm, "split": args.split, "policy": args.policy, "episodes": args.episodes,
        "success_rate": successes / args.episodes, "mean_steps": float(np.mean(steps)), "seed": args.seed,
        "video": video, "shield": not args.unsafe_no_shield,
    }
    emit_summary(summary, args.json, title="keystone sim run")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    import json

    from keystone_vla.sim import TASKS

    out = {name: {"max_steps": cls.max_steps, "templates": {s: [t.text for t in cls.templates if t.split == s]
                                                            for s in ("seen", "unseen")}}
           for name, cls in TASKS.items()}
    for name, info in out.items():
        print(f"{name}  (max {info['max_steps']} steps)", file=sys.stderr)
        for split, texts in info["templates"].items():
            for t in texts:
                print(f"    [{split:6}] {t}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    return 0
