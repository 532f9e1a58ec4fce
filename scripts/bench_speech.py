"""Spoken commands on the hard set (tests/data/speech): accuracy, what reaches the planner, and "stop".

    .venv/bin/python scripts/bench_speech.py [--every N] [--out benchmarks/speech.json]

Renders every utterance of tests/data/speech/manifest.json with its committed generator (espeak-ng + sox, no
committed audio), streams it into `keystone listen`'s recogniser in 30 ms chunks with the utterance's scene, and
reports, per split (``tune``: thresholds were chosen here; ``test``: held-out voices and babble noise, only
reported):

- WER of the transcript the decision rests on, per SNR, voice and noise kind (commands only);
- decisions: accepted, confirm (asked back), repeat; **accepted-wrong**: accepted commands whose colours, objects,
  qualifiers, numbers, verbs, prepositions or tower positions differ from what was said (synonyms such as cube/block
  are the same command), counted apart from WER; confirmations whose candidate was wrong are counted too;
- "stop": recall over the set's stop utterances (said alone, and cutting a command off mid-sentence), latency from
  the end of the word "stop" to the spotter's report (audio time plus compute), and stops heard in commands or other
  speech (spurious stops).

`--every N` takes every N-th utterance (the decode is slow on a shared 2-core machine). Latencies depend on the
machine's load; the JSON records the load average at the start.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: words whose change changes the command (besides `speech.key_words`): verbs by what they ask, prepositions by skill,
#: tower positions
_POSITION = {"top", "bottom", "middle", "first", "next", "last", "then", "up"}


def load_generator():
    spec = importlib.util.spec_from_file_location("speech_set", ROOT / "tests/data/speech/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def meaning(text: str) -> list[str]:
    """What a command asks for, word by word: synonyms collapse, function and polite words drop out."""
    from keystone_vla.perception.language import PREPOSITIONS, VERBS
    from keystone_vla.perception.speech import KEY_WORDS, key_words, strip_polite

    out = []
    for w in strip_polite(text).split():
        if w in KEY_WORDS:
            out.extend(key_words(w))
        elif w in VERBS:
            out.append("verb:" + VERBS[w])
        elif w in PREPOSITIONS:
            out.append("prep:" + PREPOSITIONS[w])
        elif w in _POSITION:
            out.append(w)
    return out


def run_item(rec, item: dict, audio: np.ndarray, stop_end_s: float) -> dict:
    t_stream = time.perf_counter()
    stream = rec.stream(item["scene"] or None)
    heard_at = None
    stop_latency_ms = None
    for i in range(0, len(audio), 480):
        t0 = time.perf_counter()
        at = stream.feed(audio[i: i + 480])
        if at is not None and heard_at is None:
            heard_at = at
            stop_latency_ms = (at - stop_end_s) * 1000.0 + (time.perf_counter() - t0) * 1000.0
    utt = stream.finish()
    return {"id": item["id"], "decision": utt.decision, "transcript": utt.transcript, "instruction": utt.instruction,
            "candidate": utt.candidate, "command": utt.command, "confidence": round(utt.confidence, 3),
            "key_confidence": round(utt.key_confidence, 3), "open": utt.open_transcript,
            "stop_heard_at_s": heard_at, "stop_latency_ms": stop_latency_ms,
            "finish_ms": round(utt.latency_ms, 1), "wall_ms": round((time.perf_counter() - t_stream) * 1000, 1)}


def summarise(items: list[dict], results: dict[str, dict]) -> dict:
    from keystone_vla.perception.speech_synth import word_errors

    out: dict = {}
    for split in ("tune", "test"):
        wer: dict = defaultdict(lambda: [0, 0])
        counts: dict = defaultdict(int)
        stop_lat: list[float] = []
        wrong_examples = []
        for it in (i for i in items if i["split"] == split and i["id"] in results):
            r = results[it["id"]]
            if it["kind"] == "command":
                e, n = word_errors(it["text"], r["transcript"])
                for key in ("all", f"snr_{it['snr_db']:g}", f"voice_{it['voice']}", f"noise_{it['noise']}",
                            f"noise_{it['noise']}_snr_{it['snr_db']:g}"):
                    wer[key][0] += e
                    wer[key][1] += n
                counts["commands"] += 1
                counts[r["decision"]] += 1
                if r["command"] == "stop":
                    counts["spurious_stops"] += 1
                elif r["decision"] == "accept":
                    if meaning(r["instruction"] or "") != meaning(it["text"]):
                        counts["accepted_wrong"] += 1
                        wrong_examples.append({"said": it["text"], "accepted": r["instruction"]})
                    if r["transcript"] != it["text"]:
                        counts["accepted_not_verbatim"] += 1
                elif r["decision"] == "confirm" and meaning(r["candidate"] or "") != meaning(it["text"]):
                    counts["confirm_wrong_candidate"] += 1
            elif it["kind"] in ("stop", "stop_mid"):
                counts[f"{it['kind']}_utterances"] += 1
                if r["command"] == "stop":
                    counts[f"{it['kind']}_heard"] += 1
                if r["stop_latency_ms"] is not None:
                    stop_lat.append(r["stop_latency_ms"])
            else:
                counts["not_command"] += 1
                if r["command"] == "stop":
                    counts["spurious_stops"] += 1
                elif r["decision"] == "accept":
                    counts["accepted_wrong"] += 1
                    wrong_examples.append({"said": it["text"], "accepted": r["instruction"]})
        n_cmd = max(counts["commands"], 1)
        n_stop = counts["stop_utterances"] + counts["stop_mid_utterances"]
        out[split] = {
            "wer": {k: round(e / max(n, 1), 4) for k, (e, n) in sorted(wer.items())},
            "words": wer["all"][1],
            "commands": counts["commands"],
            "accepted": counts["accept"], "confirm": counts["confirm"], "repeat": counts["repeat"],
            "accepted_rate": round(counts["accept"] / n_cmd, 4),
            "confirm_rate": round(counts["confirm"] / n_cmd, 4),
            "accepted_wrong": counts["accepted_wrong"],
            "accepted_not_verbatim": counts["accepted_not_verbatim"],
            "confirm_wrong_candidate": counts["confirm_wrong_candidate"],
            "not_command_utterances": counts["not_command"],
            "stop": {"utterances": n_stop,
                     "recall": round((counts["stop_heard"] + counts["stop_mid_heard"]) / max(n_stop, 1), 4),
                     "recall_alone": round(counts["stop_heard"] / max(counts["stop_utterances"], 1), 4),
                     "recall_mid_sentence": round(counts["stop_mid_heard"] / max(counts["stop_mid_utterances"], 1), 4),
                     "latency_ms_p50": round(float(np.median(stop_lat)), 1) if stop_lat else None,
                     "latency_ms_p90": round(float(np.percentile(stop_lat, 90)), 1) if stop_lat else None,
                     "spurious_stops": counts["spurious_stops"]},
            "accepted_wrong_examples": wrong_examples[:20],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=int, default=1, help="take every N-th utterance of the set (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/speech.json")
    p.add_argument("--records", type=Path, default=None, help="also write every utterance's result here (JSON)")
    args = p.parse_args(argv)
    from keystone_vla.cli.listen import build_recognizer

    gen = load_generator()
    items = gen.build_manifest()
    if json.loads((ROOT / "tests/data/speech/manifest.json").read_text()) != items:
        print("tests/data/speech/manifest.json is stale; run python tests/data/speech/generate.py", file=sys.stderr)
        return 1
    chosen = items[:: max(1, args.every)]
    load = os.getloadavg()[0]
    rec = build_recognizer()
    beds: dict = {}
    results: dict[str, dict] = {}
    t0 = time.time()
    for n, it in enumerate(chosen, 1):
        audio, end_s = gen.render(it, beds)
        results[it["id"]] = run_item(rec, it, audio, end_s)
        if n % 25 == 0:
            print(f"[{n}/{len(chosen)}] {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    summary = {"set": "tests/data/speech/manifest.json", "utterances": len(chosen), "every": args.every,
               "recogniser": "pocketsphinx 5 en-us, task grammar + scene grammar, stop keyword spotter",
               "load_average_at_start": round(load, 2), "seconds": round(time.time() - t0, 1),
               **summarise(items, results)}
    walls = [r["finish_ms"] for r in results.values()]
    summary["finish_ms_p50"] = round(float(np.median(walls)), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.records:
        args.records.write_text(json.dumps(list(results.values()), indent=0) + "\n")
    for split in ("tune", "test"):
        s = summary[split]
        print(f"{split}: WER {s['wer'].get('all')} (10 dB {s['wer'].get('snr_10')}, 5 dB {s['wer'].get('snr_5')}); "
              f"accepted {s['accepted']}/{s['commands']}, accepted-wrong {s['accepted_wrong']}, "
              f"confirm {s['confirm_rate']:.1%}; stop recall {s['stop']['recall']:.0%}, "
              f"p50 {s['stop']['latency_ms_p50']} ms")
    print(json.dumps({k: summary[k] for k in ("utterances", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
