"""The spoken-command decision: scene grammars, accept / confirm / repeat, the stop spotter, one path for CLI and ROS."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from keystone_vla.errors import ConfigError
from keystone_vla.perception.speech import Hypothesis, decide, key_words, strip_polite
from keystone_vla.perception.speech_grammar import CommandGrammar
from keystone_vla.perception.speech_synth import mix_at_snr, noise_bed, require_tools, speak

os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    require_tools()
    TOOLS = True
except ConfigError:
    TOOLS = False
needs_tools = pytest.mark.skipif(not TOOLS, reason="espeak-ng and sox are not installed (scripts/setup.sh)")
SCENE = ["red_block", "blue_block", "green_block"]


def hyp(text: str, p: float = 0.95, complete: bool = True) -> Hypothesis:
    return Hypothesis(text, complete, tuple((w, p) for w in text.split()))


def test_scene_grammar_holds_only_the_scene() -> None:
    g = CommandGrammar.from_vocabulary(["fit the peg into the socket", "stack the {block} on the {block}"])
    jsgf = g.for_scene(SCENE).to_jsgf()
    assert "<colour> = red | green | blue;" in jsgf
    assert "orange" not in jsgf and "peg" not in jsgf and "bowl" not in jsgf
    assert "stack the <np_block> on the <np_block>" in jsgf
    assert "could you" in jsgf  # polite forms
    assert "peg" in g.for_scene(["red_peg", "hole"]).to_jsgf()


def test_decision_accepts_only_agreeing_sure_decodes() -> None:
    said = "stack the red block on the blue block"
    assert decide(hyp(said), hyp(said), SCENE)[0] == "accept"
    # the open decode heard a colour the scene does not hold: ask, never substitute silently
    assert decide(hyp("stack the orange block on the blue block"), hyp(said), SCENE)[:3:2] == ("confirm",
                                                                                               "decodes disagree")
    assert decide(hyp(said.replace("red", "green")), hyp(said), SCENE)[0] == "confirm"
    assert decide(hyp(said), hyp(said, p=0.45), SCENE)[0] == "confirm"  # one unsure word
    assert decide(hyp(said), hyp(said, complete=False), SCENE)[0] == "repeat"
    assert decide(hyp("", complete=False), None, None)[0] == "repeat"
    # synonyms are the same key words
    assert key_words("pile the red cube on the blue brick") == key_words(said)


def test_a_spotted_stop_wins_over_the_command() -> None:
    decision, h, why = decide(hyp("put the red block on the blue block"), None, None, stop_heard=True)
    assert (decision, h.transcript) == ("accept", "stop")


def test_polite_words_are_not_passed_on() -> None:
    assert strip_polite("could you please put the peg in the hole please") == "put the peg in the hole"
    assert strip_polite("can you put the red can in the bowl") == "put the red can in the bowl"
    assert strip_polite("stop") == "stop"


def test_noise_kinds_are_mixed_at_the_snr_over_speech() -> None:
    speech = np.sin(np.arange(16000) / 5.0) * 3000
    for kind in ("white", "machinery"):
        bed = noise_bed(kind, 3.0, seed=1)
        out, snr = mix_at_snr(speech, bed, 10.0, lead_s=0.5, trail_s=0.5)
        assert abs(snr - 10.0) < 0.2 and len(out) == 16000 * 2
    with pytest.raises(ConfigError, match="unknown noise kind"):
        noise_bed("rain", 1.0, 0)


@pytest.fixture(scope="module")
def recognizer():
    from keystone_vla.cli.listen import build_recognizer

    return build_recognizer()


@needs_tools
def test_stop_mid_sentence_over_machinery_is_heard_at_once(recognizer) -> None:
    head = speak("put the red block on the", "en-us", 170, 40)
    stop = speak("stop", "en-us", 170, 40)
    speech = np.concatenate([head, np.zeros(1900), stop]).astype(np.float64)
    audio, _ = mix_at_snr(speech, noise_bed("machinery", 6.0, seed=3), 10.0, lead_s=0.4, trail_s=0.6)
    stream = recognizer.stream(SCENE)
    heard = None
    for i in range(0, len(audio), 480):
        heard = heard or stream.feed(audio[i: i + 480])
    utt = stream.finish()
    end_of_stop = 0.4 + len(speech) / 16000
    assert utt.accepted and utt.command == "stop" and utt.instruction is None
    assert heard is not None and heard - end_of_stop < 0.35


@needs_tools
def test_listen_cli_and_ros_node_decide_alike(recognizer, tmp_path, capsys) -> None:
    import wave

    from keystone_vla.cli import main
    from keystone_vla.ros_nodes.runner import build_node

    audio, _ = mix_at_snr(speak("stack the red block on the blue block", "en-us"), noise_bed("white", 5.0, 2), 20.0,
                          0.3, 0.4)
    wav = tmp_path / "cmd.wav"
    with wave.open(str(wav), "wb") as wf:
        wf.setnchannels(1), wf.setsampwidth(2), wf.setframerate(16000), wf.writeframes(audio.tobytes())
    assert main(["listen", "--wav", str(wav), "--scene", ",".join(SCENE), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli["decision"] == "accept" and cli["instruction"] == "stack the red block on the blue block"
    node = build_node("speech", {"wav_dir": str(tmp_path), "scene": ",".join(SCENE)}, "dds")
    try:
        assert node.scene == SCENE
        ros = node.recognizer.recognize_wav(wav, node.scene).to_dict()
    finally:
        node.node.destroy()
    assert {k: ros[k] for k in ("decision", "instruction", "transcript")} == \
        {k: cli[k] for k in ("decision", "instruction", "transcript")}
