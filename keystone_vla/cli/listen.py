"""`keystone listen`: recognise a spoken command from a WAV file or the microphone, offline.

    keystone listen --wav FILE [--threshold 0.6] [--json]
    keystone listen --mic [--seconds N] [--device ID] [--json]

The grammar is built from Keystone's vocabulary plus every simulator task template, so new task words are
recognised without editing anything here. `--json` prints `transcript, confidence, accepted, instruction` (plus
`command`, `message`, `steps`, `latency_ms`) as one JSON object on the last stdout line; in microphone mode one JSON
line per utterance, and listening ends on an accepted "stop" or after `--seconds`. A rejected utterance
("please repeat") is a successful run: exit 0, `accepted: false`. This module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from keystone_vla.cli._common import emit_summary


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "listen",
        help="recognise a spoken command (WAV file or microphone), offline",
        description="Decode a spoken command with pocketsphinx and a grammar built from the task vocabulary; "
        "low-confidence utterances are rejected ('please repeat'), 'stop' is reported as a stop command.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav", type=Path, help="a WAV file (16-bit PCM; 16 kHz mono preferred)")
    src.add_argument("--mic", action="store_true", help="listen on the microphone (needs the 'mic' extra)")
    p.add_argument("--threshold", type=float, default=0.6, help="minimum confidence to accept (default 0.6)")
    p.add_argument("--seconds", type=float, default=None, help="microphone mode: stop listening after N seconds")
    p.add_argument("--device", default=None, help="microphone mode: input device index or name")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=run)


def build_recognizer(threshold: float, polite: bool = True) -> Any:
    """The offline recogniser with the simulator's task templates (and, with `polite`, their polite forms) in its
    grammar: what `keystone listen` and the ROS speech node decode with."""
    from keystone_vla.perception.speech import SpeechRecognizer
    from keystone_vla.sim.tasks import SPEECH_SLOTS, all_templates

    return SpeechRecognizer.for_templates(all_templates(), SPEECH_SLOTS, threshold, polite)


def _summary(utt: Any) -> dict[str, Any]:
    d = utt.to_dict()
    keys = ("transcript", "confidence", "accepted", "instruction", "command", "message", "steps", "latency_ms")
    return {k: d[k] for k in keys}


def run(args: argparse.Namespace) -> int:
    recognizer = build_recognizer(args.threshold)
    if args.wav is not None:
        utt = recognizer.recognize_wav(args.wav)
        emit_summary(_summary(utt), args.json, title=f"heard: {utt.transcript!r}" + (
            "" if utt.accepted else " -> please repeat"))
        return 0
    from keystone_vla.perception.microphone import listen, microphone_frames

    device = int(args.device) if args.device is not None and str(args.device).isdigit() else args.device
    print("listening (say 'stop' or press Ctrl-C to end)...", file=sys.stderr)
    for utt in listen(recognizer, microphone_frames(seconds=args.seconds, device=device)):
        summary = _summary(utt)
        state = utt.command if utt.accepted else "please repeat"
        print(f"heard: {utt.transcript!r} ({utt.confidence:.2f}) -> {state}", file=sys.stderr)
        if args.json:
            print(json.dumps(summary), flush=True)
        if utt.control == "stop":
            break
    return 0
