"""Synthetic spoken commands for tests and benchmarks: espeak-ng speech, sox resampling and white noise at a set SNR.

Real tools, no mocks: `synthesize` runs ``espeak-ng`` then ``sox`` (16 kHz mono 16-bit), `add_noise` mixes sox
``whitenoise`` into a clip at the requested signal-to-noise ratio and returns the SNR measured on the result.
Both are system packages (scripts/setup.sh installs them). This module must never be used at run time on a robot.
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


def synthesize(text: str, voice: str, out: str | Path, speed: int = 160) -> Path:
    """Speak `text` with espeak-ng `voice` into a 16 kHz mono 16-bit WAV at `out`."""
    require_tools()
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        _run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text])
        _run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)])
    return out


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
