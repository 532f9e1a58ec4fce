"""The hard spoken-command set (tests/data/speech): the committed manifest is what its generator builds, it covers
what the speech benchmark promises, and rendering an entry gives the noise kind at the SNR it names."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SPEECH_TOOLS, needs_speech_tools

from keystone_vla.errors import ConfigError
from keystone_vla.perception.speech_synth import NOISE_KINDS, mix_at_snr, noise_bed

SET = Path(__file__).parent / "data" / "speech"

TOOLS = SPEECH_TOOLS
needs_tools = needs_speech_tools


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("speech_set", SET / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_committed_manifest_is_the_generators_and_covers_the_set(gen) -> None:
    items = gen.build_manifest()
    assert json.loads((SET / "manifest.json").read_text()) == items, "rerun python tests/data/speech/generate.py"
    assert len({i["id"] for i in items}) == len(items)
    for split in ("tune", "test"):
        part = [i for i in items if i["split"] == split]
        assert len({i["voice"] for i in part}) >= 4
        assert {i["snr_db"] for i in part} == {20.0, 10.0, 5.0}
        assert {i["kind"] for i in part} == {"command", "stop", "stop_mid", "not_command"}
        assert {i["task"] for i in part if i["kind"] == "command"} == set(gen.TEMPLATES)
        assert len({i["speed"] for i in part}) > 10 and len({i["pitch"] for i in part}) > 10
        assert min(i["lead_s"] for i in part) >= 0.2 and min(i["trail_s"] for i in part) >= 0.3
    test = [i for i in items if i["split"] == "test"]
    assert {i["noise"] for i in test} == set(NOISE_KINDS)
    # held out: no voice and no babble of the test split is in the tune split
    tune = [i for i in items if i["split"] == "tune"]
    assert not {i["voice"] for i in test} & {i["voice"] for i in tune}
    assert "babble" not in {i["noise"] for i in tune}
    # every stop said mid-sentence starts with words of a command and ends with "stop"
    for it in (i for i in items if i["kind"] == "stop_mid"):
        assert it["parts"][-1] == "stop" and len(it["parts"][0].split()) >= 2


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_beds_are_repeatable_and_mixed_at_the_named_snr(kind) -> None:
    if kind == "babble" and not TOOLS:
        pytest.skip("babble is espeak-ng speech")
    bed = noise_bed(kind, 3.0, seed=5)
    again, other = noise_bed(kind, 3.0, seed=5), noise_bed(kind, 3.0, seed=6)
    # espeak-ng's own output varies by a few samples between runs: babble is repeatable in what it says, closely
    assert np.corrcoef(bed, again)[0, 1] > 0.95 and abs(np.corrcoef(bed, other)[0, 1]) < 0.5
    t = np.arange(8000) / 16000
    speech = 3000 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    for snr in (20.0, 10.0, 5.0):
        out, measured = mix_at_snr(speech, bed, snr, lead_s=0.25, trail_s=0.5, offset=1234)
        assert out.dtype == np.int16 and len(out) == 4000 + 8000 + 8000
        assert measured == pytest.approx(snr, abs=0.3)
        assert np.abs(out[:4000]).max() > 0  # the silence around the words is noise, not digital zero
    with pytest.raises(ConfigError, match="unknown noise kind"):
        noise_bed("rain", 1.0, seed=0)


@needs_tools
def test_rendering_an_entry_gives_speech_between_its_silences(gen) -> None:
    item = next(i for i in gen.build_manifest() if i["kind"] == "stop_mid" and i["snr_db"] == 20.0)
    audio, end_s = gen.render(item)
    lead, trail = int(item["lead_s"] * 16000), int(item["trail_s"] * 16000)
    assert len(audio) / 16000 == pytest.approx(end_s + item["trail_s"], abs=1e-3)
    x = audio.astype(np.float64)
    rms = lambda a: float(np.sqrt(np.mean(a ** 2)))  # noqa: E731
    speech = x[lead: len(x) - trail]
    # 20 dB over the speech: the words stand well above the noise-only lead and tail
    assert rms(speech) > 3 * rms(x[:lead]) and rms(speech) > 3 * rms(x[-trail:])
