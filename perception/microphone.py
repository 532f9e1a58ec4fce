"""Live speech: voice-activity segmentation of an audio stream into utterances, and microphone capture.

`listen(recognizer, frames)` runs pocketsphinx's `Endpointer` (WebRTC-style VAD with a smoothing window) over any
iterator of int16 chunks: a microphone, or a WAV file cut into chunks (how the tests drive the same code). Each
segment is decoded while it is spoken (`SpeechStream`), so the result is ready ~tens of ms after the speaker stops.

`microphone_frames` needs the optional `sounddevice` package (``pip install 'keystone-vla[mic]'``) and the
PortAudio library; it is imported only when called, and a clear `ConfigError` says what is missing.
This module must never record to disk or send audio anywhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from keystone_vla.errors import ConfigError

from .speech import SAMPLE_RATE, SpeechRecognizer, Utterance

PREROLL_S = 0.1


def listen(recognizer: SpeechRecognizer, chunks: Iterable[np.ndarray], vad_mode: int = 2,
           window: float = 0.3, preroll: float = PREROLL_S) -> Iterator[Utterance]:
    """Yield one `Utterance` per stretch of speech found in `chunks` (int16 mono at the recogniser's rate).

    `vad_mode` 0..3: higher rejects more non-speech; `window` (s) is how long speech or silence must last to switch.
    """
    from pocketsphinx import Endpointer

    ep = Endpointer(window=window, vad_mode=vad_mode, sample_rate=recognizer.sample_rate)
    frame_len = ep.frame_bytes // 2
    stream = None
    pending = np.zeros(0, dtype=np.int16)
    # audio just before the detected onset: the VAD decides late, and a clipped 'st-' turns 'stop' into noise
    history: deque[np.ndarray] = deque(maxlen=max(1, int(preroll / ep.frame_length)))
    for chunk in chunks:
        pending = np.concatenate([pending, np.asarray(chunk, dtype=np.int16).reshape(-1)])
        while len(pending) >= frame_len:
            frame, pending = pending[:frame_len], pending[frame_len:]
            was_in_speech = ep.in_speech
            speech = ep.process(frame.tobytes())
            if speech is None:
                history.append(frame)
            else:
                if not was_in_speech or stream is None:
                    stream = recognizer.stream()
                    for old in (history if preroll > 0 else ()):
                        stream.feed(old)
                    history.clear()
                stream.feed(np.frombuffer(speech, dtype=np.int16))
                if not ep.in_speech:
                    yield stream.finish()
                    stream = None
    tail = np.concatenate([pending, np.zeros(frame_len - len(pending), dtype=np.int16)]) if len(pending) else None
    speech = ep.end_stream(tail.tobytes()) if tail is not None else ep.end_stream()
    if speech is not None and stream is not None:
        stream.feed(np.frombuffer(speech, dtype=np.int16))
    if stream is not None:
        yield stream.finish()


def file_chunks(samples: np.ndarray, chunk: int = 480) -> Iterator[np.ndarray]:
    """Cut int16 samples into `chunk`-sample pieces (30 ms at 16 kHz), as a microphone delivers them."""
    for i in range(0, len(samples), chunk):
        yield samples[i: i + chunk]


def microphone_frames(sample_rate: int = SAMPLE_RATE, chunk: int = 480, seconds: float | None = None,
                      device: int | str | None = None) -> Iterator[np.ndarray]:
    """Yield int16 chunks from the default (or given) input device until `seconds` pass (None: until interrupted)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:
        raise ConfigError(
            f"microphone mode needs the optional 'sounddevice' package and the PortAudio library ({exc}); "
            "install with: pip install 'keystone-vla[mic]' && apt-get install -y libportaudio2 — "
            "or pass a recording with --wav FILE") from None
    total = None if seconds is None else int(seconds * sample_rate)
    read = 0
    try:
        with sd.InputStream(samplerate=sample_rate, channels=1, dtype="int16", blocksize=chunk, device=device) as st:
            while total is None or read < total:
                data, _overflow = st.read(chunk)
                read += len(data)
                yield np.asarray(data, dtype=np.int16).reshape(-1)
    except sd.PortAudioError as exc:
        raise ConfigError(f"cannot open the microphone ({exc}); check the input device (--device) "
                          "or pass a recording with --wav FILE") from None
