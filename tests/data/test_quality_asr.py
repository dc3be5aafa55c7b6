"""`higgs-ds prepare --asr_model DIR`: each target clip's CER and WER against its transcript in the quality columns
(the scorer of `higgs-ds score`, run once per clip at prepare time), and train-time filters on them."""
import json
import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from higgs_ds.assets.scoring_models import save_random_whisper

    return save_random_whisper(str(tmp_path_factory.mktemp("whisper")))


def _targets(chatml):
    """{sample id: (target wav path, target text)} read straight from the ChatML lines (message 4 is the target
    audio, message 3 its text)."""
    out = {}
    with open(chatml) as f:
        for n, line in enumerate(f, 1):
            obj = json.loads(line)
            audio = obj["messages"][4]["content"]["audio_url"]
            out[obj.get("id", f"line{n}")] = (os.path.join(os.path.dirname(chatml), audio),
                                              obj["messages"][3]["content"])
    return out


def test_prepare_stores_each_targets_cer_and_wer_and_filters_on_them(small_data, whisper_dir, tmp_path):
    import higgs_ds.cli as cli
    from higgs_ds.data.audio import load_waveform
    from higgs_ds.data.filters import filter_prepared, read_quality
    from higgs_ds.data.prepared import PreparedDataset
    from higgs_ds.evaluation.asr import WhisperASR

    out = str(tmp_path / "p")
    assert cli.main(["prepare", "--data", small_data[0], "--output", out, "--asr_model", whisper_dir]) == 0
    quality = {sid: q for (_, sid), q in read_quality(out).items()}
    asr = WhisperASR.load(whisper_dir)
    targets = _targets(small_data[0])
    assert set(quality) == set(targets)
    for sid, (wav, text) in targets.items():
        expect = asr.score(load_waveform(wav, 16000, sid), text)
        assert quality[sid]["cer"] == pytest.approx(expect["cer"]) and quality[sid]["wer"] == pytest.approx(expect["wer"])
    cers = sorted(q["cer"] for q in quality.values())
    cut = float(np.median(cers))
    view, dropped = filter_prepared(PreparedDataset(out), f"cer<={cut}")
    kept = {view.row(i, "sample_id") for i in range(len(view))}
    assert kept == {sid for sid, q in quality.items() if q["cer"] <= cut}
    assert dropped == {f"cer<={cut:g}": len(quality) - len(kept)}
