"""speech node: spoken commands -> `/keystone/instruction`; "stop" -> `/keystone/estop`.

Watches `wav_dir` for new ``*.wav`` files (16 kHz mono int16; processed once each, in name order, polled at
`poll_rate` Hz) and decodes them with `keystone_vla.perception.speech.SpeechRecognizer` (pocketsphinx with the
task grammar). Accepted instructions are published as String; an accepted "stop" publishes Bool(true) on the
e-stop topic; every utterance (also rejected ones) is published as JSON on `/keystone/speech`.

Releasing an e-stop is never done by voice: the reset must be a deliberate `/keystone/estop_reset`.
Microphone capture is not wired here yet (use `keystone listen` for a microphone).

`/diagnostics` at 1 Hz: state ``ok`` (``error: <why>`` after a file it could not decode, until the next good one),
the last error, rates of utterances / accepted / rejected / stops, and the totals.
"""

from __future__ import annotations

import json
from pathlib import Path

from keystone_vla.errors import ConfigError
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.diagnostics import Diagnostics
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, Node

SPEECH = "/keystone/speech"


class SpeechNode:
    def __init__(self, node: Node) -> None:
        from keystone_vla.perception.speech import SpeechRecognizer

        self.node = node
        wav_dir = node.declare_parameter("wav_dir", "", "folder watched for new 16 kHz mono *.wav utterances")
        rate = float(node.declare_parameter("poll_rate", 2.0, "how often the folder is checked (Hz)",
                                            range=(0.1, 100.0)))
        threshold = float(node.declare_parameter(
            "threshold", 0.6, "confidence (0..1) below which an utterance is rejected, never acted on",
            range=(0.0, 1.0)))
        if not wav_dir or not Path(wav_dir).is_dir():
            raise ConfigError(f"speech node: wav_dir {wav_dir!r} is not a folder; pass --param wav_dir=/path/to/wavs")
        self.wav_dir = Path(wav_dir)
        self.recognizer = SpeechRecognizer(threshold=threshold)
        self.seen: set[str] = set()
        self.instruction_pub = node.create_publisher(m.String, topics.INSTRUCTION, DEFAULT_QOS)
        self.estop_pub = node.create_publisher(m.Bool, topics.ESTOP, DEFAULT_QOS)
        self.speech_pub = node.create_publisher(m.String, SPEECH, DEFAULT_QOS)
        self.totals = {"utterances": 0, "accepted": 0, "rejected": 0, "stops": 0, "bad_files": 0}
        self.state = "ok"
        self.diag = Diagnostics(node, "speech", lambda: self.state)
        self.diag.values = lambda: {"wav_dir": str(self.wav_dir), **self.totals}
        node.create_timer(1.0 / rate, self.poll)

    def poll(self) -> None:
        for path in sorted(self.wav_dir.glob("*.wav")):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            self.handle(path)

    def handle(self, path: Path) -> None:
        try:
            utt = self.recognizer.recognize_wav(path)
        except (ConfigError, OSError, EOFError) as exc:  # a bad file is reported, never fatal
            self.node.log.error(f"{path.name}: {exc}")
            self._count("bad_files")
            self.state = f"error: could not decode {path.name}"
            self.diag.error(f"{path.name}: {exc}")
            return
        self.state = "ok"
        self._count("utterances")
        if utt.accepted and utt.command == "stop":
            self.estop_pub.publish(m.Bool(True))
            self._count("stops")
        elif utt.accepted and utt.instruction:
            self.instruction_pub.publish(m.String(utt.instruction))
        self._count("accepted" if utt.accepted else "rejected")
        self.speech_pub.publish(m.String(json.dumps({"file": path.name, **utt.to_dict()})))
        self.node.log.info(f"{path.name}: {utt.transcript!r} conf {utt.confidence:.2f} -> "
                           f"{utt.command if utt.accepted else 'rejected'}")

    def _count(self, name: str) -> None:
        self.totals[name] += 1
        self.diag.tick(name)
