"""`higgs-ds benchmark` on a Seed-TTS-eval list of real (espeak-ng) speech built here, on the tiny model with an
adapter: both systems' rows in list order, the duration ratio against the ground-truth wav (or the reference
speaking rate) recomputed independently, the scorers named, a rerun that generates nothing (resumed), and a bad
line reported with file:line before any model loads."""
import json
import os

import pytest
import soundfile as sf
import torch

from tests.evaluation.espeak import SENTENCES, synth


@pytest.fixture(scope="module")
def meta(tmp_path_factory):
    root = tmp_path_factory.mktemp("seedtts")
    os.makedirs(root / "wavs")
    for name, text, voice in (("m_ref", SENTENCES[0], "us_m3"), ("f_ref", SENTENCES[1], "gb_f3"),
                              ("f_gt", SENTENCES[2], "gb_f3")):
        synth(str(root / "wavs" / f"{name}.wav"), text, voice)
    lines = [f"u1|{SENTENCES[0]}|wavs/m_ref.wav|{SENTENCES[3]}",
             f"u2|{SENTENCES[1]}|wavs/f_ref.wav|{SENTENCES[2]}|wavs/f_gt.wav"]
    (root / "meta.lst").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def adapter(tiny_assets, tmp_path_factory):
    """A LoRA adapter on the tiny model whose B matrices are not zero (so it changes the model)."""
    from higgs_ds.models.finetune import FinetuneConfig
    from higgs_ds.models.loading import load_model

    torch.manual_seed(0)
    model = FinetuneConfig().apply(load_model(tiny_assets.model_path))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    out = str(tmp_path_factory.mktemp("adapter"))
    model.save_pretrained(out)
    return out


@pytest.mark.slow
def test_benchmark_scores_adapter_beside_base_and_resumes(meta, adapter, tmp_path, monkeypatch, capsys):
    from higgs_ds.cli import main

    out = str(tmp_path / "results.json")
    argv = ["benchmark", "--meta", str(meta / "meta.lst"), "--output", out, "--adapter", adapter,
            "--max_new_tokens", "16"]  # the random tiny model: no EOS this early (its text after one is garbage)
    assert main(argv) == 0
    r = json.load(open(out))
    assert r["lines"] == 2 and set(r["systems"]) == {"adapter", "base"}
    assert r["scoring"]["sim"]["model"].startswith("resemblyzer ") and r["scoring"]["asr"] is None
    assert r["models"]["adapter"] == os.path.abspath(adapter)
    for name, s in r["systems"].items():
        assert [row["utt"] for row in s["rows"]] == ["u1", "u2"]
        assert {"sim", "dnsmos_ovrl", "duration_ratio", "stopped", "silence_ratio", "repetition"} <= set(s["mean"])
        assert "wer" not in s["mean"]
        u1, u2 = s["rows"]
        gt = sf.info(str(meta / "wavs" / "f_gt.wav")).duration
        assert u2["duration_ratio"] == pytest.approx(u2["seconds"] / gt, rel=1e-6)
        ref = sf.info(str(meta / "wavs" / "m_ref.wav")).duration
        expected = len(SENTENCES[3]) / (len(SENTENCES[0]) / ref)
        assert u1["duration_ratio"] == pytest.approx(u1["seconds"] / expected, rel=1e-3)
        assert os.path.isfile(os.path.join(out + ".work", name, "u1.wav"))
    assert r["systems"]["adapter"]["rows"][0]["sim"] != r["systems"]["base"]["rows"][0]["sim"]
    assert "warnings" in r["systems"]["adapter"]
    table = capsys.readouterr().out
    assert "adapter all" in table and "base all" in table and "duration_ratio" in table
    # a rerun finds every line done: nothing is generated again, the same results come out
    import higgs_ds.evaluation.prompts as prompts

    monkeypatch.setattr(prompts, "generate_one", lambda *a: pytest.fail("generated again"))
    assert main(argv) == 0
    assert json.load(open(out))["systems"] == r["systems"]


def test_bad_meta_line_names_file_and_line(meta, tmp_path, capsys):
    from higgs_ds.cli import main

    bad = meta / "bad.lst"  # beside the wavs: the paths in it are relative to the list
    bad.write_text((meta / "meta.lst").read_text().replace("wavs/f_ref.wav", "wavs/nope.wav"))
    assert main(["benchmark", "--meta", str(bad), "--output", str(tmp_path / "r.json")]) == 65
    err = capsys.readouterr().err
    assert f"{bad}:2: wav file not found" in err and "Traceback" not in err
    bad.write_text("u1|only three|fields\n")
    assert main(["benchmark", "--meta", str(bad), "--output", str(tmp_path / "r.json")]) == 65
    assert f"{bad}:1: expected utt|prompt_text|prompt_wav|text" in capsys.readouterr().err
