"""`higgs-ds` CLI: validate, prepare (cache and manifest conversion), train routing."""
import json
import os

import pytest

from higgs_ds.cli import main
from higgs_ds.data.chatml import read_chatml
from higgs_ds.errors import EXIT_DATA


def test_validate_reports_and_fails_on_bad_data(small_data, tmp_path, capsys):
    assert main(["validate", "--data", small_data[0], "--report", str(tmp_path / "r.json")]) == 0
    assert "8 samples read, 8 ok" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())[small_data[0]]["speakers"] == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text(open(small_data[0]).readline() + "{oops\n")
    assert main(["validate", "--data", str(bad)]) == EXIT_DATA
    assert f"[json] {bad}:2" in capsys.readouterr().err
    assert main(["validate", "--data", str(bad), "--on_bad_sample", "skip"]) == 0


@pytest.mark.parametrize("ext", ["tsv", "csv", "jsonl"])
def test_manifest_conversion(small_data, tmp_path, ext):
    wavs = os.path.join(os.path.dirname(small_data[0]), "wavs")
    rows = [dict(target_audio=os.path.join(wavs, f"s000{i}_tgt.wav"), target_text=f"Sentence {i}.",
                 speaker=f"spk{i % 2}", ref_audio=os.path.join(wavs, f"s000{i}_ref.wav"), ref_text="Ref.")
            for i in range(5)]
    man = tmp_path / f"m.{ext}"
    if ext == "jsonl":
        man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "\t" if ext == "tsv" else ","
        man.write_text(sep.join(rows[0]) + "\n" + "".join(sep.join(r.values()) + "\n" for r in rows))
    out = tmp_path / "out" / "chatml.jsonl"
    assert main(["prepare", "--manifest", str(man), "--output", str(out)]) == 0
    samples = list(read_chatml(str(out)))
    assert len(samples) == 5 and samples[0].sample.messages[2].content.audio_url.endswith("s0000_ref.wav")
    assert main(["prepare", "--manifest", str(man), "--output", str(out), "--pair_by_speaker"]) == 0
    for s in read_chatml(str(out)):
        ref, tgt = s.sample.messages[2].content.audio_url, s.sample.messages[4].content.audio_url
        assert ref != tgt and ref.endswith("_tgt.wav")
        assert int(os.path.basename(ref)[4]) % 2 == int(os.path.basename(tgt)[4]) % 2  # same speaker


def test_train_is_routed(monkeypatch):
    import higgs_ds.train

    seen = []
    monkeypatch.setattr(higgs_ds.train, "main", lambda argv: seen.append(argv) or 0)
    assert main(["train", "--quick_test"]) == 0 and seen == [["--quick_test"]]
