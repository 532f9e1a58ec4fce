"""Benchmark perception and speech; writes `benchmarks/perception.json`.

Measures on this machine:
- speech: word error rate, sentence accuracy, acceptance and latency of the offline recogniser on the synthetic
  command set (`speech_synth.COMMANDS`, 40 commands) spoken by several espeak-ng voices with sox white noise at
  30/20/10 dB SNR; end-of-speech latency (streaming, 30 ms chunks) and whole-utterance decode time side by side;
  the CLI grammar (+ all simulator task templates) at 20 dB; harder voices (reported, not in the goal);
  out-of-grammar speech false-accept rate.
- point clouds / scene graph at 128x128 on simulator scenes: point-cloud pipeline time (`segment_objects`: depth ->
  points -> voxel -> RANSAC table removal -> DBSCAN) and full scene-graph time (+ colour, shape, pose), object position error and colour accuracy vs ground truth, with
  the TinyRenderer pixel convention vs the naive pixel-centre convention side by side.

Goals (issue 6): WER <= 5 % at 20 dB on >= 40 commands, several voices; latency p50 <= 100 ms; point-cloud pipeline
<= 10 ms at 128x128. Usage: python scripts/bench_perception.py [--quick] [--out benchmarks/perception.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

GOAL_VOICES = ("en-us", "en-us+m3", "en-us-nyc", "en-us+f2")
HARD_VOICES = ("en-us+f3", "en-029", "en-gb-x-rp")


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 2) if xs else float("nan")


def bench_speech(quick: bool) -> dict:
    from keystone_vla.cli.listen import build_recognizer
    from keystone_vla.perception.speech import SpeechRecognizer, read_wav
    from keystone_vla.perception.speech_synth import (
        COMMANDS,
        OUT_OF_GRAMMAR,
        add_noise,
        synthesize,
        word_errors,
    )

    rec = SpeechRecognizer()
    voices = GOAL_VOICES[:2] if quick else GOAL_VOICES
    snrs = (20.0,) if quick else (30.0, 20.0, 10.0)
    tmp = Path(tempfile.mkdtemp(prefix="keystone_speech_"))

    def clip(text: str, voice: str, snr: float, i: int) -> Path:
        clean = tmp / f"{voice}_{abs(hash(text)) % 10**9}.wav"
        if not clean.exists():
            synthesize(text, voice, clean)
        out = tmp / f"{clean.stem}_{snr:g}.wav"
        if not out.exists():
            add_noise(clean, snr, out, seed=i)
        return out

    def run(recognizer, texts, voice, snr) -> dict:
        errs = words = exact = accepted = wrong_accepted = 0
        eos, batch, dur = [], [], []
        for i, text in enumerate(texts):
            samples = read_wav(clip(text, voice, snr, i))
            t0 = time.perf_counter()
            utt = recognizer.recognize(samples)
            batch.append((time.perf_counter() - t0) * 1000)
            stream = recognizer.stream()
            for k in range(0, len(samples), 480):
                stream.feed(samples[k:k + 480])
            eos.append(stream.finish().latency_ms)
            dur.append(utt.duration_s)
            e, n = word_errors(text, utt.transcript)
            errs, words, exact = errs + e, words + n, exact + (e == 0)
            accepted += utt.accepted
            wrong_accepted += utt.accepted and e > 0
        return {"utterances": len(texts), "wer": round(errs / words, 4), "sentence_accuracy": round(exact / len(texts), 4),
                "accepted": accepted, "accepted_but_wrong": wrong_accepted,
                "eos_latency_ms": {"p50": _pct(eos, 50), "p99": _pct(eos, 99)},
                "decode_ms": {"p50": _pct(batch, 50), "p99": _pct(batch, 99)},
                "real_time_factor": round(float(np.sum(batch)) / 1000 / float(np.sum(dur)), 4)}

    out: dict = {"commands": len(COMMANDS), "voices": list(voices), "by_voice_snr": {}}
    for voice in voices:
        for snr in snrs:
            r = run(rec, COMMANDS, voice, snr)
            out["by_voice_snr"][f"{voice}@{snr:g}dB"] = r
            print(f"speech {voice} {snr:g} dB: WER {r['wer']:.3f} eos p50 {r['eos_latency_ms']['p50']} ms",
                  file=sys.stderr)
    at20 = [v for k, v in out["by_voice_snr"].items() if k.endswith("@20dB")]
    words_w = [v["utterances"] for v in at20]
    out["goal_20db"] = {
        "wer": round(float(np.average([v["wer"] for v in at20], weights=words_w)), 4),
        "eos_latency_p50_ms": round(float(np.median([v["eos_latency_ms"]["p50"] for v in at20])), 2),
        "decode_p50_ms": round(float(np.median([v["decode_ms"]["p50"] for v in at20])), 2),
        "wer_goal": 0.05, "latency_goal_ms": 100.0,
    }
    cli = build_recognizer(0.6)
    out["cli_grammar_20db"] = {v: run(cli, COMMANDS, v, 20.0) for v in voices[:2]}
    if not quick:
        out["harder_voices_20db"] = {v: run(rec, COMMANDS, v, 20.0) for v in HARD_VOICES}
    oog = [rec.recognize(read_wav(clip(t, v, 20.0, i))) for v in voices[:2] for i, t in enumerate(OUT_OF_GRAMMAR)]
    out["out_of_grammar_20db"] = {"utterances": len(oog), "false_accepts": sum(u.accepted for u in oog),
                                  "accepted": [u.transcript for u in oog if u.accepted]}
    return out


def bench_scene_graph(quick: bool) -> dict:
    import open3d as o3d

    from keystone_vla.perception.cameras import PinholeCamera
    from keystone_vla.perception.objects import from_ground_truth
    from keystone_vla.perception.scene_graph import SceneGraphConfig, build_scene_graph, segment_objects
    from keystone_vla.sim.tasks import get_task
    from keystone_vla.sim.world import SimWorld

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    world = SimWorld(image_size=128, cameras=("front",))
    cam = world.cameras["front"]
    conventions = {
        "tiny_renderer_offset": PinholeCamera.from_pybullet(cam.view_matrix, cam.projection_matrix, 128, 128),
        "pixel_centre_offset": PinholeCamera.from_pybullet(cam.view_matrix, cam.projection_matrix, 128, 128,
                                                           pixel_offset=(0.5, 0.5)),
    }
    cfg = SceneGraphConfig()
    seeds = range(2 if quick else 6)
    pipe_ms, graph_ms = [], []
    stats = {k: {"xy_err": [], "colour_ok": 0, "colour_n": 0, "shape_ok": 0, "shape_n": 0} for k in conventions}
    for task in ("pick_place", "stack", "build_tower", "insert", "kit_assembly"):
        for seed in seeds:
            for split in ("seen", "unseen"):
                get_task(task).reset(world, seed, split)
                frame = cam.render()
                pc = conventions["tiny_renderer_offset"]
                for _ in range(3):
                    t0 = time.perf_counter()
                    segment_objects(frame.rgb, frame.depth, pc, cfg)
                    pipe_ms.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    build_scene_graph(frame.rgb, frame.depth, pc, cfg)
                    graph_ms.append((time.perf_counter() - t0) * 1000)
                for name, camera in conventions.items():
                    found = build_scene_graph(frame.rgb, frame.depth, camera, cfg)
                    st = stats[name]
                    for obj in world.objects.values():
                        gt = from_ground_truth(obj)
                        if gt.shape == "slot" or not found:
                            continue
                        det = min(found, key=lambda d: np.linalg.norm(d.position[:2] - gt.position[:2]))
                        err = float(np.linalg.norm(det.position[:2] - gt.position[:2]))
                        st["shape_n"] += 1
                        st["shape_ok"] += det.shape == gt.shape
                        if gt.colour is not None:
                            st["colour_n"] += 1
                            st["colour_ok"] += det.colour == gt.colour
                        visible = int((frame.seg == obj.body).sum())
                        if gt.shape in ("block", "cylinder", "peg", "square", "disc", "bar") and visible > 40:
                            st["xy_err"].append(err)
    world.close()
    res = {"image_size": 128, "scenes": len(seeds) * 10,
           "point_cloud_pipeline_ms": {"p50": _pct(pipe_ms, 50), "p99": _pct(pipe_ms, 99), "goal": 10.0},
           "scene_graph_ms": {"p50": _pct(graph_ms, 50), "p99": _pct(graph_ms, 99)}}
    for name, st in stats.items():
        res[name] = {"objects": len(st["xy_err"]),
                     "xy_error_mm": {"mean": round(1000 * float(np.mean(st["xy_err"])), 2),
                                     "max": round(1000 * float(np.max(st["xy_err"])), 2)},
                     "colour_accuracy": round(st["colour_ok"] / st["colour_n"], 4),
                     "shape_accuracy": round(st["shape_ok"] / st["shape_n"], 4)}
    print(f"scene graph: pipeline p50 {res['point_cloud_pipeline_ms']['p50']} ms, full "
          f"{res['scene_graph_ms']['p50']} ms", file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer voices, SNRs and scenes")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/perception.json"))
    args = ap.parse_args()
    load = os.getloadavg()[0]
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1min_at_start": load},
              "scene_graph": bench_scene_graph(args.quick), "speech": bench_speech(args.quick)}
    result["machine"]["load_1min_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"wer_20db": result["speech"]["goal_20db"]["wer"],
                      "eos_latency_p50_ms": result["speech"]["goal_20db"]["eos_latency_p50_ms"],
                      "point_cloud_pipeline_p50_ms": result["scene_graph"]["point_cloud_pipeline_ms"]["p50"]}))


if __name__ == "__main__":
    main()
