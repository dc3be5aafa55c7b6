"""Quality columns (higgs_ds/data/quality.py) measured on signals built with known silences and clipping, and the
training filters (higgs_ds/data/filters.py): parsing, per-rule drop counts, nulls failing a rule."""
import numpy as np
import pytest

from higgs_ds.data.filters import parse_filter, select
from higgs_ds.data.quality import clip_quality
from higgs_ds.errors import ConfigError

RATE = 16000


def _tone(seconds, amplitude, f0=220.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * f0 * t)


def test_clip_quality_finds_the_silences_and_clipping_it_was_built_with():
    parts = [np.zeros(int(0.5 * RATE)), _tone(1.0, 0.3), np.zeros(int(0.3 * RATE)),
             np.clip(_tone(0.7, 2.0), -1.0, 1.0), np.zeros(int(0.2 * RATE))]
    wav = np.concatenate(parts)
    clipped = int(np.sum(np.abs(np.clip(_tone(0.7, 2.0), -1.0, 1.0)) >= 1.0))
    q = clip_quality(wav, RATE)
    frame = 0.02
    assert q["duration"] == pytest.approx(len(wav) / RATE)
    assert q["lead_silence"] == pytest.approx(0.5, abs=frame) and q["trail_silence"] == pytest.approx(0.2, abs=frame)
    assert q["internal_silence"] == pytest.approx(0.3, abs=2 * frame)
    assert q["peak"] == pytest.approx(1.0) and q["clipping"] == pytest.approx(clipped / len(wav), rel=1e-3)
    clean = clip_quality(_tone(1.0, 0.3), RATE)
    assert clean["clipping"] == 0 and clean["lead_silence"] == 0 and clean["internal_silence"] == 0
    silent = clip_quality(np.zeros(RATE), RATE)
    assert silent["lead_silence"] == silent["duration"] == 1.0


def test_filter_rules_parse_and_name_what_is_wrong():
    rules = parse_filter("dnsmos>=3.0, pair_sim>=0.6,duration<12.5")
    assert [str(r) for r in rules] == ["dnsmos>=3", "pair_sim>=0.6", "duration<12.5"]
    assert parse_filter("") == []
    with pytest.raises(ConfigError, match="unknown column 'snr'"):
        parse_filter("snr>=3")
    with pytest.raises(ConfigError, match="'dnsmos=>3' is not"):
        parse_filter("dnsmos=>3")


def test_select_counts_each_drop_under_the_first_rule_it_fails():
    quality = {("f", "a"): {"dnsmos": 3.5, "pair_sim": 0.9}, ("f", "b"): {"dnsmos": 2.0, "pair_sim": 0.9},
               ("f", "c"): {"dnsmos": 3.1, "pair_sim": 0.2}, ("f", "d"): {"dnsmos": 1.0, "pair_sim": 0.1},
               ("f", "e"): {"dnsmos": None, "pair_sim": 0.95}}
    keys = [("f", k) for k in "abcdez"]  # z: no quality row at all
    kept, dropped = select(keys, quality, parse_filter("dnsmos>=3.0,pair_sim>=0.6"))
    assert kept == [0]
    assert dropped == {"dnsmos>=3": 4, "pair_sim>=0.6": 1}  # b, d, e (null), z (missing); c by pair_sim
    kept, dropped = select(keys, quality, parse_filter("pair_sim>=0.6"))
    assert kept == [0, 1, 4] and dropped == {"pair_sim>=0.6": 3}
    with pytest.raises(ConfigError, match="no sample has 'dnsmos'"):
        select(keys, {k: {"dnsmos": None} for k in quality}, parse_filter("dnsmos>=3"))
