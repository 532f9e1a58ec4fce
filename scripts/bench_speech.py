"""Spoken commands on the hard set (tests/data/speech): accuracy, what reaches the planner, and "stop".

    .venv/bin/python scripts/bench_speech.py [--every N] [--out benchmarks/speech.json]

Renders every utterance of tests/data/speech/manifest.json with its committed generator (espeak-ng + sox, no
committed audio: 8 espeak-ng accents, white / machinery / babble noise at 20, 10 and 5 dB SNR, speed and pitch
changes, silence before and after), decodes each recording with `keystone listen`'s recogniser, and reports,
per split (``tune``: decision thresholds may be chosen there; ``test``: held-out voices and babble noise, only
reported):

- WER of the transcript the decision rests on, per SNR, voice and noise kind (commands only);
- decisions: accepted, confirm (asked back, where the recogniser asks), repeat; **accepted-wrong**: accepted
  commands whose colours, objects, qualifiers, numbers, verbs, prepositions or tower positions differ from what was
  said (synonyms such as cube/block are the same command), counted apart from WER;
- "stop": recall over the set's stop utterances (said alone, and cutting a command off mid-sentence), the
  decision's latency (the whole decode, from the end of the recording), and stops heard in commands or other
  speech (spurious stops).

`--every N` takes every N-th utterance (a full pass is ~780 decodes). Latencies depend on the machine's load; the
JSON records the load average at the start.
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

#: tower positions: their change changes the command
_POSITION = {"top", "bottom", "middle", "first", "next", "last", "then", "up"}


def load_generator():
    spec = importlib.util.spec_from_file_location("speech_set", ROOT / "tests/data/speech/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def strip_polite(text: str) -> str:
    from keystone_vla.perception.speech_grammar import POLITE_PREFIXES

    words = text.split()
    for prefix in sorted(POLITE_PREFIXES, key=len, reverse=True):
        p = prefix.split()
        if words[: len(p)] == p and len(words) > len(p):
            words = words[len(p):]
            break
    if len(words) > 1 and words[-1] == "please":
        words = words[:-1]
    return " ".join(words)


def meaning(text: str) -> list[str]:
    """What a command asks for, word by word: synonyms collapse, function and polite words drop out."""
    from keystone_vla.perception.language import NUMBERS, PREPOSITIONS, QUALIFIERS, VERBS, noun_table
    from keystone_vla.vocab import COLOURS

    nouns = noun_table()
    out = []
    for w in strip_polite(text).split():
        if w in COLOURS or w in NUMBERS:
            out.append(w)
        elif w in nouns:
            out.append("noun:" + nouns[w])
        elif w in QUALIFIERS:
            out.append("qual:" + QUALIFIERS[w])
        elif w in VERBS:
            out.append("verb:" + VERBS[w])
        elif w in PREPOSITIONS:
            out.append("prep:" + PREPOSITIONS[w])
        elif w in _POSITION:
            out.append(w)
    return out


def run_item(rec, item: dict, audio: np.ndarray) -> dict:
    """Decode one recording as `keystone listen --wav` and the ROS speech node do (`recognize`: cut to its speech,
    then decoded); the decision's own fields where the recogniser has them (a ``decision`` of accept / confirm /
    repeat, a ``candidate`` asked back about), else accepted -> accept."""
    t0 = time.perf_counter()
    utt = rec.recognize(audio)
    decision = getattr(utt, "decision", None) or ("accept" if utt.accepted else "repeat")
    return {"id": item["id"], "decision": decision, "transcript": utt.transcript, "instruction": utt.instruction,
            "candidate": getattr(utt, "candidate", None), "command": utt.command if utt.accepted else None,
            "confidence": round(utt.confidence, 3), "finish_ms": round(utt.latency_ms, 1),
            "wall_ms": round((time.perf_counter() - t0) * 1000, 1)}


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
                if r["command"] == "stop":
                    stop_lat.append(r["finish_ms"])
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
                     # the whole decode of the recording, from its end to the decision
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
    p.add_argument("--threshold", type=float, default=0.6, help="acceptance threshold (keystone listen's default)")
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
    #: side by side on the same audio: the task grammar alone, and with the polite forms around every command
    variants = {"task_grammar": build_recognizer(args.threshold, polite=False),
                "task_grammar_polite": build_recognizer(args.threshold, polite=True)}
    beds: dict = {}
    results: dict[str, dict[str, dict]] = {name: {} for name in variants}
    t0 = time.time()
    for n, it in enumerate(chosen, 1):
        audio, _ = gen.render(it, beds)
        for name, rec in variants.items():
            results[name][it["id"]] = run_item(rec, it, audio)
        if n % 25 == 0:
            print(f"[{n}/{len(chosen)}] {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    summary = {"set": "tests/data/speech/manifest.json", "utterances": len(chosen), "every": args.every,
               "recogniser": f"pocketsphinx (keystone listen's SpeechRecognizer), threshold {args.threshold}",
               "load_average_at_start": round(load, 2), "seconds": round(time.time() - t0, 1), "variants": {}}
    for name, res in results.items():
        walls = [r["finish_ms"] for r in res.values()]
        summary["variants"][name] = {"finish_ms_p50": round(float(np.median(walls)), 1), **summarise(items, res)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.records:
        args.records.write_text(json.dumps(results, indent=0) + "\n")
    for name, v in summary["variants"].items():
        for split in ("tune", "test"):
            s = v[split]
            print(f"{name} {split}: WER {s['wer'].get('all')} (10 dB {s['wer'].get('snr_10')}, 5 dB "
                  f"{s['wer'].get('snr_5')}); accepted {s['accepted']}/{s['commands']}, accepted-wrong "
                  f"{s['accepted_wrong']}, confirm {s['confirm_rate']:.1%}; stop recall {s['stop']['recall']:.0%}, "
                  f"p50 {s['stop']['latency_ms_p50']} ms; decode p50 {v['finish_ms_p50']} ms")
    print(json.dumps({k: summary[k] for k in ("utterances", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
