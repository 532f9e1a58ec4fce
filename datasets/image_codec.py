"""Per-frame image codecs for the episode store: one way to turn uint8 [H, W, 3] frames into bytes and back.

The store keeps every camera frame as one encoded blob (see `keystone_vla.datasets.store`), so a loader can
hold the *encoded* frames of many episodes in RAM and decode only the frames a batch needs. The codec is
chosen by measurement on frames rendered by the simulator (`scripts/bench_data.py` -> `benchmarks/data.json`,
key ``codecs``). The rule: the smallest lossless codec whose decode fits the loader budget (<= 0.25 ms per
128 x 128 frame: two cameras per sample at 2,000 samples/s on 2 cores) and whose encode is small next to a
simulator step (<= 5 ms). A plain bytes x decode-time product is reported too, but on its own it rewards
barely-compressing codecs (raw frames score 0). `benchmarks/data.json` (1,520 front + wrist frames of
oracle episodes, 128 px, 2-core machine shared with other jobs):

| codec | bytes/frame | decode ms | encode ms | |
|---|---|---|---|---|
| raw | 49,152 | 0 | 0 | what zarr stores uncompressed |
| zstd (level 3) | 22,700 | 0.07 | 0.27 | zarr's default compressor, per frame |
| **QOI** | 17,400 | 0.11 | 0.14 | chosen: 2.8x smaller than raw, fast both ways |
| PNG | 16,900 | 0.33 | 7.8 | over both budgets |
| WebP lossless (method 0) | 13,000 | 0.26 | 0.59 | 25% smaller than QOI, 2.4x slower to decode |
| JPEG-XL lossless | 14,200 | 0.67 | 0.73 | too slow to decode |
| JPEG q95 / H.264 video | 5,300 / 1,400-2,600 | | | lossy; video also loses random access |

So `DEFAULT_CODEC` is QOI ("Quite OK Image" format, lossless): exact pixels for training and byte-exact
tests, 2.8x smaller than raw and 1.3x smaller than zstd, decoding well inside the budget. A whole store
(2 cameras) takes 35.0 KB/step against 98.4 KB raw and 45.6 KB with zarr's default zstd on raw frames.
Lossy JPEG and video are used only for the LeRobot export, never for the store.

Codecs listed in `CODECS` can always be decoded, so changing the default never strands an existing store.
This module must never import torch or zarr: worker processes and the ingester use it standalone.
"""

from __future__ import annotations

from collections.abc import Callable

import imagecodecs
import numpy as np

from keystone_vla.errors import DatasetError, unknown_choice

DEFAULT_CODEC = "qoi"


def _zstd_encode(frame: np.ndarray) -> bytes:
    h, w, c = frame.shape
    header = np.array([h, w, c], dtype="<u4").tobytes()
    return header + imagecodecs.zstd_encode(np.ascontiguousarray(frame).tobytes(), level=3)


def _zstd_decode(blob: bytes) -> np.ndarray:
    h, w, c = np.frombuffer(blob[:12], dtype="<u4")
    return np.frombuffer(imagecodecs.zstd_decode(blob[12:]), dtype=np.uint8).reshape(int(h), int(w), int(c))


#: name -> (encode(uint8 [H, W, 3]) -> bytes, decode(bytes) -> uint8 [H, W, 3], lossless)
CODECS: dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray], bool]] = {
    "webp": (lambda f: imagecodecs.webp_encode(f, lossless=True, method=0, level=0), imagecodecs.webp_decode, True),
    "png": (lambda f: imagecodecs.png_encode(f, level=6), imagecodecs.png_decode, True),
    "qoi": (imagecodecs.qoi_encode, imagecodecs.qoi_decode, True),
    "zstd": (_zstd_encode, _zstd_decode, True),
    "jpegxl": (lambda f: imagecodecs.jpegxl_encode(f, lossless=True, effort=1), imagecodecs.jpegxl_decode, True),
    "jpeg": (lambda f: imagecodecs.jpeg8_encode(f, level=95), imagecodecs.jpeg8_decode, False),
}


def _check_frame(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise DatasetError(f"camera frames must be uint8 [H, W, 3], got {arr.dtype} {list(arr.shape)}")
    return np.ascontiguousarray(arr)


def encode_frame(frame: np.ndarray, codec: str = DEFAULT_CODEC) -> bytes:
    """Encode one uint8 [H, W, 3] RGB frame with `codec`."""
    if codec not in CODECS:
        raise unknown_choice("image codec", codec, CODECS, DatasetError)
    return bytes(CODECS[codec][0](_check_frame(frame)))


def decode_frame(blob: bytes, codec: str) -> np.ndarray:
    """Decode one blob written by `encode_frame` back to uint8 [H, W, 3] RGB."""
    if codec not in CODECS:
        raise unknown_choice("image codec", codec, CODECS, DatasetError)
    try:
        out = CODECS[codec][1](blob)
    except Exception as exc:  # imagecodecs raises codec-specific error classes
        raise DatasetError(f"cannot decode a {codec} frame ({len(blob)} bytes): {exc}") from exc
    out = np.asarray(out)
    if out.ndim == 2:  # a grey frame written by another tool
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out[:, :, :3]
