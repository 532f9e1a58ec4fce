"""speech node: spoken commands -> `/keystone/instruction`; "stop" -> `/keystone/estop`.

Watches `wav_dir` for new ``*.wav`` files (16 kHz mono int16; processed once each, in name order, polled at
`poll_rate` Hz) and decodes them with `keystone_vla.perception.speech.SpeechRecognizer` (pocketsphinx with the
task grammar). Accepted instructions are published as String; an accepted "stop" publishes Bool(true) on the
e-stop topic; every utterance (also rejected ones) is published as JSON on `/keystone/speech`.

Releasing an e-stop is never done by voice: the reset must be a deliberate `/keystone/estop_reset`.
Microphone capture is not wired here yet (use `keystone listen` for a microphone).
"""

from __future__ import annotations

import json
from pathlib import Path

from keystone_vla.errors import ConfigError
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, Node

SPEECH = "/keystone/speech"


class SpeechNode:
    def __init__(self, node: Node) -> None:
        from keystone_vla.perception.speech import SpeechRecognizer

        self.node = node
        wav_dir = node.declare_parameter("wav_dir", "")
        rate = float(node.declare_parameter("poll_rate", 2.0))
        threshold = float(node.declare_parameter("threshold", 0.6))
        if not wav_dir or not Path(wav_dir).is_dir():
            raise ConfigError(f"speech node: wav_dir {wav_dir!r} is not a folder; pass --param wav_dir=/path/to/wavs")
        self.wav_dir = Path(wav_dir)
        self.recognizer = SpeechRecognizer(threshold=threshold)
        self.seen: set[str] = set()
        self.instruction_pub = node.create_publisher(m.String, topics.INSTRUCTION, DEFAULT_QOS)
        self.estop_pub = node.create_publisher(m.Bool, topics.ESTOP, DEFAULT_QOS)
        self.speech_pub = node.create_publisher(m.String, SPEECH, DEFAULT_QOS)
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
            return
        if utt.accepted and utt.command == "stop":
            self.estop_pub.publish(m.Bool(True))
        elif utt.accepted and utt.instruction:
            self.instruction_pub.publish(m.String(utt.instruction))
        self.speech_pub.publish(m.String(json.dumps({"file": path.name, **utt.to_dict()})))
        self.node.log.info(f"{path.name}: {utt.transcript!r} conf {utt.confidence:.2f} -> "
                           f"{utt.command if utt.accepted else 'rejected'}")
