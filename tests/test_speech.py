"""Spoken commands: espeak-ng voices + sox noise -> pocketsphinx with the vocabulary grammar (real tools, no mocks)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import SPEECH_TOOLS, needs_speech_tools

from keystone_vla.errors import ConfigError
from keystone_vla.perception.microphone import file_chunks, listen
from keystone_vla.perception.speech import SpeechRecognizer, read_wav
from keystone_vla.perception.speech_grammar import CommandGrammar
from keystone_vla.perception.speech_synth import (
    COMMANDS,
    OUT_OF_GRAMMAR,
    add_noise,
    synthesize,
    wav_samples,
    word_errors,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")
VOICES = ("en-us", "en-us+m3")

TOOLS = SPEECH_TOOLS
needs_tools = needs_speech_tools


@pytest.fixture(scope="session")
def recognizer() -> SpeechRecognizer:
    return SpeechRecognizer()


@pytest.fixture(scope="session")
def audio(tmp_path_factory):
    """Lazily synthesised clips, cached for the session: audio(text, voice, snr_db) -> path (snr None = clean)."""
    root = tmp_path_factory.mktemp("speech")
    cache: dict = {}

    def get(text: str, voice: str = "en-us", snr: float | None = 20.0):
        key = (text, voice, snr)
        if key not in cache:
            stem = f"{abs(hash((text, voice))) % 10**10}_{voice.replace('+', '_')}"
            clean = root / f"{stem}.wav"
            if not clean.exists():
                synthesize(text, voice, clean)
            path = clean
            if snr is not None:
                path = root / f"{stem}_{snr:g}.wav"
                cache[(text, voice, "snr")] = add_noise(clean, snr, path, seed=len(cache))
            cache[key] = path
        return cache[key]

    return get


def test_grammar_is_built_from_vocabulary_and_templates() -> None:
    g = CommandGrammar()
    words = g.words()
    assert {"stop", "cancel", "resume", "red", "purple", "peg", "hole", "slot", "left", "three", "into"} <= words
    jsgf = g.to_jsgf()
    assert jsgf.startswith("#JSGF V1.0;") and "public <command>" in jsgf
    # a new task's words join the grammar without touching the builder
    g2 = CommandGrammar.from_vocabulary(["tighten the {peg} in the {hole}", "wipe the {object}"])
    assert {"tighten", "wipe"} <= g2.words() and "tighten" not in words
    with pytest.raises(ConfigError, match="unknown object kind 'gizmo'"):
        CommandGrammar(templates=("grab the {block|gizmo}",)).to_jsgf()


def test_the_task_grammar_holds_the_templates_objects_and_polite_forms() -> None:
    from keystone_vla.cli.listen import build_recognizer

    rec = build_recognizer(0.6)
    for text in ("set the blue block down on the red block",  # a stack template: {a} is an object phrase there
                 "build a tower: red at the bottom, then blue, then green".replace(":", "").replace(",", ""),
                 "could you put the peg in the hole please", "please assemble the kit",
                 "can you please place the yellow cube onto the orange brick", "stop"):
        assert rec.in_grammar(text), text
    assert not rec.in_grammar("please stop")  # a stop stays one short word
    assert not rec.in_grammar("put the peg in the hole the")
    plain = build_recognizer(0.6, polite=False)
    assert plain.in_grammar("put the peg in the hole") and not plain.in_grammar("could you put the peg in the hole")


def test_a_recording_is_cut_to_its_speech_before_decoding() -> None:
    from keystone_vla.perception.speech import trim_to_speech

    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 300.0, 16000 * 3)
    t = np.arange(16000) / 16000
    x = noise.copy()
    x[16000:32000] += 3000 * np.sin(2 * np.pi * 200 * t)  # 1 s of "speech" 20 dB over the noise, 1 s in
    cut = trim_to_speech(np.round(x).astype(np.int16))
    assert len(cut) == pytest.approx(16000 + 2 * 0.15 * 16000, abs=2 * 320)  # the speech and its padding only
    assert np.abs(cut[3000:-3000].astype(float)).max() > 2000
    quiet = np.round(noise).astype(np.int16)
    assert len(trim_to_speech(quiet)) == len(quiet)  # steady noise alone: nothing stands out, nothing is cut
    assert len(trim_to_speech(quiet[:800])) == 800  # too short to tell: unchanged


def test_words_without_pronunciation_are_named() -> None:
    with pytest.raises(ConfigError, match="without a pronunciation: zorblax"):
        SpeechRecognizer(CommandGrammar(templates=("zorblax the {block}",)))


@needs_tools
def test_new_template_word_is_recognised(audio) -> None:
    rec = SpeechRecognizer(CommandGrammar.from_vocabulary(["tighten the {peg} in the {hole}"]))
    utt = rec.recognize_wav(audio("tighten the peg in the hole", "en-us", 30.0))
    assert utt.transcript == "tighten the peg in the hole" and utt.accepted


@needs_tools
@pytest.mark.parametrize("snr", [30.0, 20.0, 10.0])
@pytest.mark.parametrize("voice", VOICES)
def test_stop_is_a_stop_command(recognizer, audio, voice: str, snr: float) -> None:
    utt = recognizer.recognize_wav(audio("stop", voice, snr))
    assert utt.transcript == "stop"
    assert utt.accepted and utt.command == "stop" and utt.control == "stop"
    assert utt.instruction is None  # a stop is never passed on as a task


@needs_tools
def test_noise_is_added_at_the_requested_snr(audio, tmp_path) -> None:
    clean = audio("pick up the red block", "en-us", None)
    for snr in (30.0, 20.0, 10.0):
        measured = add_noise(clean, snr, tmp_path / f"n{snr:g}.wav", seed=1)
        assert abs(measured - snr) < 0.5
    assert len(wav_samples(tmp_path / "n10.wav")) == len(wav_samples(clean))


@needs_tools
def test_instruction_is_transcribed_and_parsed(recognizer, audio) -> None:
    utt = recognizer.recognize_wav(audio("put the left red block in the blue bowl", "en-us", 20.0))
    assert utt.transcript == "put the left red block in the blue bowl"
    assert utt.accepted and utt.command == "instruction" and utt.instruction == utt.transcript
    assert utt.steps == ["pick(red_block)", "place_in(red_block, blue_bowl)"]
    assert 0.0 < utt.confidence <= 1.0 and utt.latency_ms > 0


@needs_tools
def test_out_of_grammar_speech_is_mostly_rejected(recognizer, audio) -> None:
    results = [recognizer.recognize_wav(audio(text, "en-us", 20.0)) for text in OUT_OF_GRAMMAR]
    rejected = [u for u in results if not u.accepted]
    assert len(rejected) >= 8, [(u.transcript, u.confidence) for u in results]
    assert all(u.message == "please repeat" and u.instruction is None for u in rejected)


def test_silence_and_bad_input() -> None:
    rec = SpeechRecognizer()
    utt = rec.recognize(np.zeros(16000, dtype=np.int16))
    assert not utt.accepted and utt.message == "please repeat" and utt.transcript == ""
    with pytest.raises(ConfigError, match="int16 mono"):
        rec.recognize(np.zeros(100, dtype=np.float32))
    with pytest.raises(ConfigError, match="does not exist"):
        read_wav("/nonexistent/cmd.wav")


def test_not_a_wav_file(tmp_path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"definitely not RIFF")
    with pytest.raises(ConfigError, match="not a PCM WAV"):
        read_wav(bad)


@needs_tools
def test_voice_activity_segmentation_splits_a_stream(recognizer, audio) -> None:
    texts = ["pick up the red block", "stop", "insert the peg into the hole"]
    silence = np.zeros(16000, dtype=np.int16)
    parts = [silence]
    for t in texts:
        parts += [read_wav(audio(t, "en-us", None)), silence]
    x = np.concatenate(parts).astype(np.float64)
    rms = float(np.sqrt(np.mean(read_wav(audio(texts[0], "en-us", None)).astype(np.float64) ** 2)))
    x += np.random.default_rng(1).normal(0, rms / 10, len(x))  # 20 dB shop-floor noise, also between commands
    stream = np.clip(x, -32768, 32767).astype(np.int16)
    utts = list(listen(recognizer, file_chunks(stream)))
    assert [u.transcript for u in utts] == texts
    assert [u.command for u in utts] == ["instruction", "stop", "instruction"]


@needs_tools
def test_listen_cli_json(audio, capsys) -> None:
    from keystone_vla.cli import main

    # the CLI's JSON and its decision (accuracy under noise is scripts/bench_speech.py's): a clean clip
    text = "put the blue block on the green block"
    assert main(["listen", "--wav", str(audio(text, "en-us", None)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"transcript", "confidence", "accepted", "instruction"} <= set(out)
    assert out["transcript"] == text and out["accepted"] is True
    assert out["instruction"] == text


def test_listen_cli_microphone_without_portaudio_is_a_clear_error(capsys) -> None:
    from keystone_vla.cli import main

    try:
        import sounddevice  # noqa: F401

        pytest.skip("sounddevice + PortAudio are installed here")
    except (ImportError, OSError):
        pass
    assert main(["listen", "--mic", "--seconds", "0.1"]) == 2
    assert "pip install 'keystone-vla[mic]'" in capsys.readouterr().err


@needs_tools
@pytest.mark.slow
def test_word_error_rate_at_20db(recognizer, audio) -> None:
    errors = words = 0
    for voice in VOICES:
        for text in COMMANDS:
            utt = recognizer.recognize_wav(audio(text, voice, 20.0))
            e, n = word_errors(text, utt.transcript)
            errors, words = errors + e, words + n
    assert len(COMMANDS) >= 40
    assert errors / words <= 0.05, f"WER {errors / words:.3f}"
