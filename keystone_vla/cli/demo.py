"""`keystone demo`: say or type an instruction, see the plan, watch the policy do it in simulation.

    keystone demo ["stack the red block on the blue block"] [--wav FILE] [--policy keystone-base|PATH|oracle]
                  [--agent shipped|raw] [--agent-set KEY=VALUE ...] [--video PATH] [--seed N] [--json]

With no instruction it runs a sample one. Until a `keystone-base` checkpoint is installed, the default policy
falls back to the scripted oracle with a printed notice. A refused instruction is a successful refusal (exit 0,
``status: refused``). This module only parses arguments and prints; the work is `keystone_vla.policies.demo`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from keystone_vla.cli._common import emit_summary


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run an instruction end to end in simulation (plan, motion, video)",
        description="Ground an instruction in a simulated scene, show the plan, run the policy with the safety "
        "shield on, print success and write the rollout video.",
    )
    p.add_argument("instruction", nargs="?", help="what to do (default: a sample instruction)")
    p.add_argument("--wav", type=Path, help="a 16 kHz mono WAV file with the spoken instruction")
    p.add_argument("--policy", default=None, help="keystone-base (default), oracle, or a checkpoint folder")
    p.add_argument("--agent", default=None, metavar="PRESET",
                   help="VLA policies: the agent preset (shipped, raw; default: the checkpoint's agent.json, else "
                        "shipped), resolved exactly as keystone eval and the ROS policy node do")
    p.add_argument("--agent-set", action="append", default=[], metavar="KEY=VALUE",
                   help="VLA policies: change one agent setting, repeatable (see keystone eval --help)")
    p.add_argument("--video", type=Path, default=None, help="where to write the MP4 (default: runs/demo-<time>.mp4)")
    p.add_argument("--arm", default="panda", help="arm to simulate (default: panda)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    p.add_argument("--scene", default="perception", choices=["perception", "privileged"],
                   help="where the agent's objects come from: 'perception' (default: its cameras) or 'privileged' "
                        "(simulator truth: an upper bound, labelled in the summary)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    p.set_defaults(func=run)


def _resolve_policy(name: str | None) -> str:
    from keystone_vla.policies.registry import SHIPPED, shipped_checkpoint

    if name is not None:
        return name
    if shipped_checkpoint() is None:
        print(f"notice: the {SHIPPED} checkpoint is not installed yet; running the scripted oracle instead "
              "(pass --policy PATH to use a trained checkpoint)", file=sys.stderr)
        return "oracle"
    return SHIPPED


def _instruction_from_wav(path: Path) -> tuple[str | None, str, str]:
    """(instruction or None, transcript, reason it was not accepted) from a WAV file via the offline recognizer."""
    from keystone_vla.perception.speech import SpeechRecognizer

    utt = SpeechRecognizer().recognize_wav(path)
    print(f"heard: {utt.transcript!r} (confidence {utt.confidence:.2f})", file=sys.stderr)
    if utt.accepted and utt.instruction:
        return utt.instruction, utt.transcript, ""
    if utt.accepted and utt.control:
        return None, utt.transcript, f"heard the control word {utt.control!r}, not a task to run"
    return None, utt.transcript, (f"speech not accepted (heard {utt.transcript!r}, confidence "
                                  f"{utt.confidence:.2f}); please repeat")


def run(args: argparse.Namespace) -> int:
    from keystone_vla.errors import ConfigError
    from keystone_vla.policies.demo import SAMPLE_INSTRUCTION, DemoResult, default_video_path, run_demo
    from keystone_vla.policies.registry import agent_config_of, load_policy

    if args.wav is not None and args.instruction:
        raise ConfigError("give either an instruction or --wav FILE, not both")
    policy_name = _resolve_policy(args.policy)
    agent = agent_config_of(policy_name, args.agent, args.agent_set)  # bad presets fail before any work
    if args.wav is not None:
        if not args.wav.is_file():
            raise ConfigError(f"--wav {args.wav}: no such file")
        instruction, heard, why = _instruction_from_wav(args.wav)
        if instruction is None:
            return _finish(DemoResult(heard, "refused", why), policy_name, args.json, agent)
    else:
        # only a missing argument runs the sample: an empty one (a speech front end that heard nothing) is refused
        instruction = SAMPLE_INSTRUCTION if args.instruction is None else args.instruction
        if args.instruction is None:
            print(f"no instruction given; running the sample: {instruction!r}", file=sys.stderr)
    print(f"instruction: {instruction!r}  policy: {policy_name}" + (f"  agent: {agent.preset}" if agent else ""),
          file=sys.stderr)
    policy = load_policy(policy_name, agent)
    video = args.video or default_video_path()
    result = run_demo(instruction, policy, video, arm=args.arm, seed=args.seed, scene=args.scene)
    return _finish(result, policy_name, args.json, agent)


def _finish(result: Any, policy_name: str, as_json: bool, agent: Any = None) -> int:
    summary = {**result.summary(), "policy": policy_name, "agent": agent.preset if agent is not None else None}
    if result.refused:
        print(f"refused: {result.reason}", file=sys.stderr)
    else:
        print(f"{'SUCCESS' if result.success else 'FAILED'} after {result.steps} ticks; video: {result.video}",
              file=sys.stderr)
    emit_summary(summary, as_json, title="keystone demo")
    return 0
