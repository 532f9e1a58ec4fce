"""Benchmark the data pipeline and write `benchmarks/data.json`.

Measures, side by side on this machine:
- image codecs on simulator frames (front + wrist, 128 px): bytes/frame, encode/decode ms, lossless, and the
  size x decode-time score the store's default codec is chosen by (plus per-episode H.264 video for reference);
- store bytes per step with the default codec vs raw uint8 zarr arrays (uncompressed and zarr's default zstd);
- collection episodes/s with 1 and 2 workers (same seeds, so the two stores must hold identical episodes);
- loader samples/s for batch-64 random windows (2 DataLoader workers, and in-process).

Usage: python scripts/bench_data.py [--episodes-per-task 2] [--tasks all] [--out benchmarks/data.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

DECODE_BUDGET_MS = 0.25  # two 128 px cameras per sample at 2,000 samples/s on 2 cores
ENCODE_BUDGET_MS = 5.0  # small next to a ~30 ms simulator step


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_codecs(frames: dict[str, np.ndarray]) -> dict:
    import imageio_ffmpeg

    from keystone_vla.datasets.image_codec import CODECS, DEFAULT_CODEC

    out: dict = {"frames": {c: list(v.shape) for c, v in frames.items()}, "candidates": {}}
    for name, (enc, dec, _lossless) in CODECS.items():
        sizes, enc_ms, dec_ms, exact = [], [], [], True
        for f in (f for v in frames.values() for f in v):
            t = time.perf_counter()
            blob = bytes(enc(f))
            enc_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            back = dec(blob)
            dec_ms.append((time.perf_counter() - t) * 1e3)
            sizes.append(len(blob))
            exact &= bool(np.array_equal(back, f))
        row = {"bytes_per_frame": round(statistics.mean(sizes), 1), "encode_ms": round(statistics.median(enc_ms), 3),
               "decode_ms": round(statistics.median(dec_ms), 3), "lossless": exact}
        row["score_bytes_x_decode_ms"] = round(row["bytes_per_frame"] * row["decode_ms"], 1)
        out["candidates"][name] = row
    raw = int(np.prod(next(iter(frames.values())).shape[1:]))
    out["candidates"]["raw"] = {"bytes_per_frame": raw, "encode_ms": 0.0, "decode_ms": 0.0, "lossless": True,
                                "score_bytes_x_decode_ms": None}
    with tempfile.TemporaryDirectory() as tmp:  # per-episode video: small, lossy, no random frame access
        for crf in (0, 10):
            total, n = 0, 0
            for cam, v in frames.items():
                path = f"{tmp}/{cam}_{crf}.mp4"
                w = imageio_ffmpeg.write_frames(path, (v.shape[2], v.shape[1]), fps=10, codec="libx264",
                                                pix_fmt_out="yuv444p", macro_block_size=1, quality=None,
                                                ffmpeg_log_level="error", output_params=["-crf", str(crf)])
                w.send(None)
                for f in v:
                    w.send(np.ascontiguousarray(f))
                w.close()
                total += os.path.getsize(path)
                n += len(v)
            out["candidates"][f"video_h264_crf{crf}"] = {"bytes_per_frame": round(total / n, 1), "lossless": False,
                                                         "random_access": False}
    lossless = {k: v for k, v in out["candidates"].items() if v.get("lossless") and v.get("score_bytes_x_decode_ms")}
    out["best_by_bytes_x_decode"] = min(lossless, key=lambda k: lossless[k]["score_bytes_x_decode_ms"])
    # the store's rule (see keystone_vla.datasets.image_codec): smallest lossless codec within the budgets
    fits = {k: v for k, v in lossless.items()
            if v["decode_ms"] <= DECODE_BUDGET_MS and v["encode_ms"] <= ENCODE_BUDGET_MS}
    out["rule"] = f"smallest lossless with decode <= {DECODE_BUDGET_MS} ms and encode <= {ENCODE_BUDGET_MS} ms"
    out["chosen_by_rule"] = min(fits, key=lambda k: fits[k]["bytes_per_frame"]) if fits else None
    out["default_codec"] = DEFAULT_CODEC
    out["default_matches_rule"] = out["chosen_by_rule"] == DEFAULT_CODEC
    return out


def bench_store_bytes(store_path: Path) -> dict:
    import zarr

    from keystone_vla.datasets.store import EpisodeStore

    store = EpisodeStore(store_path, mode="r")
    steps = sum(e.length for e in store.episodes())
    res = {"steps": steps, "default_codec_bytes_per_step": round(_dir_bytes(store_path) / steps, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        for label, compressors in (("raw_uncompressed", None), ("raw_zarr_default_zstd", "auto")):
            root = zarr.open_group(f"{tmp}/{label}", mode="w")
            for e in store.episodes():
                g = root.create_group(e.name)
                for key in ("state", "action", "timestamp", "plan_step", "ee_pose"):
                    a = e.array(key)
                    g.create_array(key, shape=a.shape, dtype=a.dtype, chunks=a.shape)[...] = a
                for cam in e.cameras:
                    frames = e.images(cam)
                    z = g.create_array(f"images/{cam}", shape=frames.shape, dtype="uint8",
                                       chunks=(1, *frames.shape[1:]), compressors=compressors)
                    z[...] = frames
            res[f"{label}_bytes_per_step"] = round(_dir_bytes(Path(f"{tmp}/{label}")) / steps, 1)
    res["ratio_vs_raw"] = round(res["raw_uncompressed_bytes_per_step"] / res["default_codec_bytes_per_step"], 2)
    return res


def bench_collect(tasks: str, per_task: int, root: Path, cameras: tuple[str, ...]) -> dict:
    from keystone_vla.datasets.collect import collect
    from keystone_vla.datasets.store import EpisodeStore

    res = {}
    for workers in (1, 2):
        out = root / f"collect_w{workers}.zarr"
        s = collect(tasks, per_task, out, workers=workers, seed=7, cameras=cameras, progress=False)
        res[f"workers_{workers}"] = {"episodes": s["episodes_written"] + s["episodes_dropped"],
                                     "written": s["episodes_written"], "wall_s": s["wall_s"],
                                     "episodes_per_s": s["episodes_per_s"]}
    res["speedup_2_vs_1"] = round(res["workers_2"]["episodes_per_s"] / res["workers_1"]["episodes_per_s"], 2)

    def key(e):
        return (e.attrs["task"], e.attrs["collect_index"])

    a = {key(e): e for e in EpisodeStore(root / "collect_w1.zarr", mode="r").episodes()}
    b = {key(e): e for e in EpisodeStore(root / "collect_w2.zarr", mode="r").episodes()}
    res["reproducible_across_worker_counts"] = set(a) == set(b) and all(
        np.array_equal(a[k].array("action"), b[k].array("action")) and a[k].attrs["seed"] == b[k].attrs["seed"]
        for k in a)
    return res


def bench_loader(store_path: Path, seconds: float = 8.0) -> dict:
    import torch

    from keystone_vla.datasets.torch_dataset import EpisodeWindowDataset, make_loader

    torch.set_num_threads(1)
    ds = EpisodeWindowDataset(store_path, chunk_size=8, cameras=("front",))
    res: dict = {"samples_in_store": len(ds), "batch_size": 64}
    for workers in (2, 0):
        loader = make_loader(ds, batch_size=64, num_workers=workers, seed=0)
        n, t0, warm = 0, None, 0
        deadline = time.perf_counter() + seconds + 30
        while time.perf_counter() < deadline:
            for batch in loader:
                if warm < 2 * max(workers, 1):  # first batches pay for worker start-up and cache fill
                    warm += 1
                    continue
                if t0 is None:
                    t0 = time.perf_counter()
                n += batch["images"].shape[0]
                if time.perf_counter() - t0 > seconds:
                    break
            if t0 is not None and time.perf_counter() - t0 > seconds:
                break
        elapsed = time.perf_counter() - t0
        res[f"workers_{workers}_samples_per_s"] = round(n / elapsed, 1)
        del loader
    res["goal_samples_per_s"] = 2000
    res["meets_goal"] = res["workers_2_samples_per_s"] >= 2000
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--episodes-per-task", type=int, default=2)
    parser.add_argument("--cameras", default="front,wrist")
    parser.add_argument("--out", default="benchmarks/data.json")
    args = parser.parse_args()
    cams = tuple(args.cameras.split(","))
    root = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        t0 = time.time()
        result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                    "load_avg_start": os.getloadavg()}}
        print("collection (1 and 2 workers) ...", file=sys.stderr)
        result["collection"] = bench_collect(args.tasks, args.episodes_per_task, root, cams)
        from keystone_vla.datasets.store import EpisodeStore

        store_path = root / "collect_w2.zarr"
        eps = list(EpisodeStore(store_path, mode="r").episodes())
        frames = {c: np.concatenate([e.images(c) for e in eps]) for c in cams}
        print("codecs ...", file=sys.stderr)
        result["codecs"] = bench_codecs(frames)
        print("store bytes ...", file=sys.stderr)
        result["store"] = bench_store_bytes(store_path)
        print("loader ...", file=sys.stderr)
        result["loader"] = bench_loader(store_path)
        result["machine"]["load_avg_end"] = os.getloadavg()
        result["wall_s"] = round(time.time() - t0, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
