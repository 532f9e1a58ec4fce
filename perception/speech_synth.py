"""Synthetic spoken commands for tests and benchmarks: espeak-ng speech, sox resampling, shop-floor noise at a set SNR.

Real tools, no mocks: `synthesize` / `speak` run ``espeak-ng`` (voice, speed, pitch) then ``sox`` (16 kHz mono
16-bit), `add_noise` mixes sox ``whitenoise`` into a clip at the requested signal-to-noise ratio and returns the SNR
measured on the result. `noise_bed` makes the three noise kinds of the hard speech set (white; ``machinery``: mains
hum and harmonics, a servo whine that sweeps as an arm moves, impacts and rumble; ``babble``: several espeak-ng
talkers saying unrelated things) and `mix_at_snr` puts a clip into one with silence before and after, the SNR taken
over the speech only. Both tools are system packages (scripts/setup.sh installs them). This module must never be
used at run time on a robot.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from keystone_vla.errors import ConfigError

#: espeak-ng voices the tests use: American male, American female variant, Caribbean English, New York
VOICES: tuple[str, ...] = ("en-us", "en-us+f3", "en-029", "en-us-nyc")


#: the synthetic spoken-command set (tests and scripts/bench_perception.py): every skill, colour, control word
COMMANDS: tuple[str, ...] = (
    'pick up the red block',
    'put the blue block on the green block',
    'stack the yellow cube on the red cube',
    'insert the peg into the hole',
    'stop',
    'cancel',
    'resume',
    'put the orange disc in the disc slot',
    'put the left red block in the blue bowl',
    'grab the purple cylinder',
    'place the white square in the square slot',
    'put the cyan bar into the bar slot',
    'stack the green block on top of the blue block',
    'build a tower of three blocks',
    'put the peg in the hole',
    'pick up the nearest block',
    'place the red block on the yellow plate',
    'put the tee in the tee slot',
    'put the ell in the ell slot',
    'pick up the farthest green cube',
    'put the right block in the red bowl',
    'stack five blocks',
    'place the blue cylinder on the red block',
    'grab the peg',
    'put the yellow square into the square slot',
    'pick up the left peg',
    'put the green brick in the white bowl',
    'insert the pin into the socket',
    'pick up the orange bar',
    'put the red disc in the slot',
    'place the cyan block in the purple bowl',
    'stack the red brick on the green brick',
    'build a tower of four blocks',
    'pick up the white cylinder',
    'put the purple block on the orange block',
    'grab the nearest red cube',
    'put the blue puck in the yellow bowl',
    'place the green disc in the disc slot',
    'pick up the yellow tee',
    'put the orange cube on the tray',
)
#: out-of-grammar speech the recogniser must reject ("please repeat")
OUT_OF_GRAMMAR: tuple[str, ...] = (
    'what a lovely day it is today',
    'hello how are you',
    'can you hear me',
    'the weather is nice this morning',
    'turn on the lights in the kitchen',
    'where did I leave my keys',
    'bananas are yellow',
    "let's have lunch at noon",
    'open the window please',
    'i think we should go home now',
)


def require_tools() -> None:
    """Raise ConfigError naming the missing tool (espeak-ng, sox) and how to install it."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not found; install with 'apt-get install -y espeak-ng sox' "
                          "(scripts/setup.sh does this)")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")


def synthesize(text: str, voice: str, out: str | Path, speed: int = 160, pitch: int = 50) -> Path:
    """Speak `text` with espeak-ng `voice` (`speed` words per minute, `pitch` 0..99) into a 16 kHz mono WAV at `out`."""
    require_tools()
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text])
        _run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)])
    return out


def speak(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """`synthesize` into memory, espeak-ng's own leading and trailing silence trimmed: int16 [N] at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        x = wav_samples(synthesize(text, voice, Path(tmp) / "clip.wav", speed, pitch))
    loud = np.flatnonzero(np.abs(x) > 0.02 * max(float(np.abs(x).max()), 1.0))
    if len(loud):
        x = x[max(0, loud[0] - 160): loud[-1] + 160]
    return x.astype(np.int16)


NOISE_KINDS: tuple[str, ...] = ("white", "machinery", "babble")
#: what the babble talkers say: nothing a command grammar holds, so a word heard from them is an error
BABBLE_TEXTS: tuple[str, ...] = (
    "the delivery for line four came in late this morning and nobody signed for it",
    "did you see the match last night it went to penalties again",
    "we need more labels for the packing station before the next shift",
    "the coffee machine on the second floor is broken again",
    "can somebody check the pressure gauge near the compressor",
    "my daughter starts school next week so I will leave early on monday",
    "the forklift battery needs charging before lunch",
    "they moved the safety meeting to thursday afternoon",
)
_BABBLE_VOICES: tuple[str, ...] = ("en-us", "en-gb", "en-gb-x-rp", "en-us+f3", "en-gb-scotland", "en-029")


def noise_bed(kind: str, seconds: float, seed: int, sample_rate: int = 16000) -> np.ndarray:
    """`seconds` of noise of `kind` (see `NOISE_KINDS`) as float64 samples, unit RMS, repeatable from `seed`."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    if kind == "white":
        x = rng.normal(0.0, 1.0, n)
    elif kind == "machinery":
        mains = float(rng.choice([50.0, 60.0]))
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 12))
        # a servo whine that sweeps with the arm's speed, and a belt/fan rumble (brown noise)
        f = rng.uniform(700, 1400) * (1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
        x = x + 0.4 * np.sin(2 * np.pi * np.cumsum(f) / sample_rate)
        brown = np.cumsum(rng.normal(0.0, 1.0, n))
        brown -= np.convolve(brown, np.ones(400) / 400, mode="same")
        x = x + 0.6 * brown / max(float(np.std(brown)), 1e-9)
        # impacts: decaying bursts every 0.3-1.2 s (parts dropped in a bin, a press stroke)
        pos = 0
        while pos < n:
            pos += int(rng.uniform(0.3, 1.2) * sample_rate)
            length = min(int(0.08 * sample_rate), n - pos)
            if length > 0:
                env = np.exp(-np.arange(length) / (0.015 * sample_rate))
                x[pos: pos + length] += rng.uniform(1.0, 3.0) * env * rng.normal(0.0, 1.0, length)
    elif kind == "babble":
        x = np.zeros(n)
        for _talker in range(5):
            pos = int(rng.uniform(0, 0.5) * sample_rate)
            while pos < n:
                text = str(rng.choice(BABBLE_TEXTS))
                voice = str(rng.choice(_BABBLE_VOICES))
                clip = speak(text, voice, int(rng.integers(140, 190)), int(rng.integers(30, 70)))
                clip = clip / max(float(np.sqrt(np.mean(clip ** 2))), 1e-9) * rng.uniform(0.6, 1.0)
                take = min(len(clip), n - pos)
                x[pos: pos + take] += clip[:take]
                pos += take + int(rng.uniform(0.05, 0.4) * sample_rate)
    else:
        raise ConfigError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    return x / max(float(np.sqrt(np.mean(x ** 2))), 1e-9)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, lead_s: float = 0.0, trail_s: float = 0.0,
               offset: int = 0, sample_rate: int = 16000) -> tuple[np.ndarray, float]:
    """Speech padded with `lead_s` / `trail_s` of silence, over `noise` (a bed, read from `offset`, wrapping) at
    `snr_db` measured over the speech alone. Returns (int16 [N], the SNR measured on the result)."""
    s = np.asarray(speech, dtype=np.float64)
    lead, trail = int(lead_s * sample_rate), int(trail_s * sample_rate)
    total = lead + len(s) + trail
    idx = (offset + np.arange(total)) % len(noise)
    bed = np.asarray(noise, dtype=np.float64)[idx]
    rms_s = float(np.sqrt(np.mean(s ** 2)))
    rms_n = float(np.sqrt(np.mean(bed[lead: lead + len(s)] ** 2)))
    bed = bed * rms_s / (max(rms_n, 1e-9) * 10 ** (snr_db / 20))
    y = bed.copy()
    y[lead: lead + len(s)] += s
    peak = float(np.abs(y).max())
    if peak > 32767:  # scale the whole mix, never clip it (clipping would change the SNR)
        y, s, bed = y * 32767 / peak, s * 32767 / peak, bed * 32767 / peak
    out = np.round(y).astype(np.int16)
    err = out[lead: lead + len(s)].astype(np.float64) - s
    measured = 20 * np.log10(float(np.sqrt(np.mean(s ** 2))) / max(float(np.sqrt(np.mean(err ** 2))), 1e-9))
    return out, float(measured)


def wav_samples(path: str | Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wf:
        return np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").astype(np.float64)


def add_noise(clean: str | Path, snr_db: float, out: str | Path, seed: int = 0) -> float:
    """Mix sox white noise into `clean` at `snr_db` (whole-clip RMS ratio); returns the SNR measured in `out`."""
    require_tools()
    clean, out = Path(clean), Path(out)
    x = wav_samples(clean)
    duration = len(x) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        noise = Path(tmp) / "noise.wav"
        # -R: repeatable; the seed varies the clip by trimming a different slice of a longer noise run
        offset = (seed % 97) * 0.01
        _run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth",
              f"{duration + offset:.4f}", "whitenoise", "vol", "0.5", "trim", f"{offset:.4f}"])
        n = wav_samples(noise)[: len(x)]
        rms_x = float(np.sqrt(np.mean(x**2)))
        rms_n = float(np.sqrt(np.mean(n**2)))
        gain = rms_x / (rms_n * 10 ** (snr_db / 20))
        _run(["sox", "-m", "-v", "1", str(clean), "-v", f"{gain:.6f}", str(noise), "-b", "16", str(out)])
    y = wav_samples(out)[: len(x)]
    err = y - x
    return float(20 * np.log10(rms_x / max(float(np.sqrt(np.mean(err**2))), 1e-9)))


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference length) for WER = sum(errors) / sum(lengths)."""
    ref, hyp = reference.lower().split(), hypothesis.lower().split()
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)], len(ref)
