"""The hard spoken-command set: accents, shop-floor noise, speed and pitch, silence around the words.

`build_manifest()` returns the set as plain data (what was said, by which voice, at what speed and pitch, over which
noise at which SNR, with how much silence, in which scene); `render(item)` turns one entry into 16 kHz int16 audio
with espeak-ng and sox (`keystone_vla.perception.speech_synth`). Both are deterministic, so the audio is regenerated
on any machine with espeak-ng (scripts/setup.sh installs it) instead of being committed; `manifest.json` beside this
file is `build_manifest()` written out, and `python tests/data/speech/generate.py --check` verifies the two agree.

Two splits with nothing in common but the sentences' templates:
- ``tune``: voices en-us, en-gb, en-gb-x-rp, en-gb-x-gbclan; white and machinery noise. Decision thresholds may be
  chosen on it.
- ``test``: voices en-gb-scotland, en-029, en-us-nyc, en-gb-x-gbcwmd; white, machinery and babble noise (babble is
  never in ``tune``). Only reported, never tuned on.
Each split has every voice x noise kind x SNR (20, 10, 5 dB) cell, and in each cell task commands (every task's
phrasings, towers, polite forms), "stop" said alone, "stop" cutting a command off mid-sentence, and speech that is no
command at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
SNRS_DB = (20.0, 10.0, 5.0)
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "tune": {"voices": ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan"), "noises": ("white", "machinery")},
    "test": {"voices": ("en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbcwmd"),
             "noises": ("white", "machinery", "babble")},
}
COMMANDS_PER_CELL = 10
SEED = {"tune": 1000, "test": 2000}

COLOURS = ("red", "green", "blue", "yellow", "orange", "cyan", "purple", "white")
NOUNS = {"block": ("block", "cube", "brick"), "cylinder": ("cylinder", "can", "puck"), "bowl": ("bowl", "container"),
         "plate": ("plate", "tray")}
#: the simulator's templates (sim/tasks/*.py) as spoken, plus the tower and pick-and-place forms operators use
TEMPLATES: dict[str, tuple[str, ...]] = {
    "pick_place": ("put the {obj} {prep} the {box}", "place the {obj} {prep} the {box}", "move the {obj} {prep} the {box}",
                   "pick up the {obj} and drop it {prep} the {box}", "transfer the {obj} {prep} the {box}"),
    "stack": ("stack the {a} on the {b}", "put the {a} on top of the {b}", "place the {a} onto the {b}",
              "set the {a} down on the {b}", "pile the {a} on the {b}"),
    "insert": ("insert the peg into the hole", "put the peg in the hole", "place the {colour} peg into the fixture",
               "fit the peg into the socket", "push the {colour} pin into the hole"),
    "kit_assembly": ("put each part into its matching slot in the kit", "place the parts in the kit", "assemble the kit",
                     "fill the kit with the matching parts", "put every piece in the slot with the same shape"),
    "build_tower": ("build a tower {a} at the bottom then {b} then {c}",
                    "stack the blocks with {a} at the bottom {b} in the middle and {c} on top",
                    "make a tower of {a} {b} and {c} from the bottom up", "build a tower with {c} on top of {b} on top of {a}",
                    "assemble a tower first {a} next {b} last {c}", "build a tower with {a} {b} and {c}"),
}
POLITE = (("please ", ""), ("", " please"), ("could you ", ""), ("can you please ", ""), ("would you ", " please"))
NOT_COMMANDS = ("what time does the next shift start", "the coffee is cold again",
                "did anyone see my safety glasses", "we are out of labels for the printer")


def _scene_and_text(rng: np.random.Generator) -> tuple[str, str, list[str]]:
    """(task, sentence, scene object names): the scene holds what the sentence names plus distractors."""
    task = str(rng.choice(list(TEMPLATES)))
    template = str(rng.choice(TEMPLATES[task]))
    colours = [str(c) for c in rng.choice(COLOURS, size=4, replace=False)]
    scene: list[str]
    if task == "pick_place":
        kind = str(rng.choice(["block", "cylinder"]))
        box = str(rng.choice(["bowl", "plate"]))
        text = template.format(obj=f"{colours[1]} {rng.choice(NOUNS[kind])}", box=f"{colours[0]} {rng.choice(NOUNS[box])}",
                               prep="in" if box == "bowl" else "on")
        scene = [f"{colours[0]}_{box}", f"{colours[1]}_{kind}", f"{colours[2]}_{rng.choice(['block', 'cylinder'])}"]
    elif task == "stack":
        text = template.format(a=f"{colours[0]} {rng.choice(NOUNS['block'])}", b=f"{colours[1]} {rng.choice(NOUNS['block'])}")
        scene = [f"{c}_block" for c in colours[:3]]
    elif task == "insert":
        text = template.format(colour=colours[0])
        scene = [f"{colours[0]}_peg", "hole"]
    elif task == "kit_assembly":
        text = template
        scene = [f"{colours[0]}_square", f"{colours[1]}_disc", f"{colours[2]}_bar", "kit"]
    else:
        text = template.format(a=colours[0], b=colours[1], c=colours[2])
        scene = [f"{c}_block" for c in colours[:4]]
    if rng.random() < 0.3:
        pre, post = POLITE[int(rng.integers(len(POLITE)))]
        text = f"{pre}{text}{post}"
    return task, text, sorted(scene)


def _voice_params(rng: np.random.Generator) -> dict[str, float | int]:
    return {"speed": int(rng.integers(130, 201)), "pitch": int(rng.integers(25, 76)),
            "lead_s": round(float(rng.uniform(0.2, 1.0)), 2), "trail_s": round(float(rng.uniform(0.3, 1.0)), 2)}


def build_manifest() -> list[dict]:
    """Every utterance of both splits, in a fixed order (deterministic)."""
    items: list[dict] = []
    for split, spec in SPLITS.items():
        rng = np.random.default_rng(SEED[split])
        for voice in spec["voices"]:
            for noise in spec["noises"]:
                for snr in SNRS_DB:
                    cell = dict(split=split, voice=voice, noise=noise, snr_db=snr)

                    def add(kind: str, text: str, parts: list[str], scene: list[str], task: str | None = None,
                            cell: dict = cell, rng: np.random.Generator = rng) -> None:
                        items.append({"id": f"{cell['split']}-{len(items):05d}", "kind": kind, "task": task,
                                      "text": text, "parts": parts, "scene": scene, **cell, **_voice_params(rng),
                                      "noise_seed": int(rng.integers(4)),
                                      "noise_offset": int(rng.integers(0, 16000 * 20))})

                    for _ in range(COMMANDS_PER_CELL):
                        task, text, scene = _scene_and_text(rng)
                        add("command", text, [text], scene, task)
                    add("stop", "stop", ["stop"], [])
                    # "stop" cutting a command off: the first 2-5 words of a command, a short pause, then "stop"
                    _, text, scene = _scene_and_text(rng)
                    head = " ".join(text.split()[: int(rng.integers(2, 6))])
                    add("stop_mid", "stop", [head, "stop"], scene)
                    add("not_command", str(rng.choice(NOT_COMMANDS)), [], [])
                    items[-1]["parts"] = [items[-1]["text"]]
    return items


def render(item: dict, beds: dict | None = None) -> tuple[np.ndarray, float]:
    """One manifest entry as int16 [N] 16 kHz audio, and the time (s) its last word ends (stop latency is measured
    from there). `beds` caches noise beds between calls."""
    from keystone_vla.perception.speech_synth import mix_at_snr, noise_bed, speak

    beds = {} if beds is None else beds
    key = (item["noise"], item["noise_seed"])
    if key not in beds:
        beds[key] = noise_bed(item["noise"], 30.0, seed=7919 * (1 + item["noise_seed"]) + len(item["noise"]))
    pieces = [speak(p, item["voice"], item["speed"], item["pitch"]) for p in item["parts"]]
    gap = np.zeros(int(0.12 * 16000))
    speech = np.concatenate([x for p in pieces for x in (p.astype(np.float64), gap)][:-1])
    audio, _ = mix_at_snr(speech, beds[key], item["snr_db"], item["lead_s"], item["trail_s"], item["noise_offset"])
    return audio, item["lead_s"] + len(speech) / 16000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="fail unless manifest.json equals build_manifest()")
    p.add_argument("--wav-dir", type=Path, help="also write every entry as <id>.wav here (for listening)")
    args = p.parse_args(argv)
    items = build_manifest()
    if args.check:
        same = json.loads(MANIFEST.read_text()) == items
        print("manifest.json is up to date" if same else "manifest.json differs from build_manifest(); rerun")
        return 0 if same else 1
    MANIFEST.write_text(json.dumps(items, indent=0) + "\n")
    print(f"wrote {MANIFEST} ({len(items)} utterances)")
    if args.wav_dir:
        import wave

        args.wav_dir.mkdir(parents=True, exist_ok=True)
        beds: dict = {}
        for it in items:
            audio, _ = render(it, beds)
            with wave.open(str(args.wav_dir / f"{it['id']}.wav"), "wb") as wf:
                wf.setnchannels(1), wf.setsampwidth(2), wf.setframerate(16000), wf.writeframes(audio.tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
