"""ChatML reading: clear file:line errors, path resolution, labels as prepare_chatml_sample gives them."""
import json

import pytest
import torch

from higgs_ds.data.chatml import read_chatml
from higgs_ds.data.samples import voice_cloning_sample
from higgs_ds.errors import DataError


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_reads_samples_and_resolves_audio_relative_to_file(small_data):
    samples = list(read_chatml(small_data[0]))
    assert len(samples) == 8 and samples[0].line == 1 and samples[0].sample.start_index == 4
    url = samples[0].sample.messages[4].content.audio_url
    assert url.startswith("/") and url.endswith(".wav")


@pytest.mark.parametrize("bad, message", [
    ('{"messages": [', "malformed JSON"),
    ({"messages": [{"role": "narrator", "content": "x"}]}, "role 'narrator'"),
    ({**voice_cloning_sample("a.wav", "r", "b.wav", "t"), "start_index": 9}, "start_index 9 is out of range"),
    ({"messages": voice_cloning_sample("a.wav", "r", "b.wav", "t")["messages"][:4], "start_index": 3},
     "nothing to learn"),
    ({"messages": [{"role": "assistant", "content": {"type": "video"}}]}, "unknown content type"),
    ({"no_messages": 1}, "non-empty 'messages' list"),
])
def test_bad_samples_name_file_and_line(tmp_path, bad, message):
    good = voice_cloning_sample("a.wav", "ref", "b.wav", "target")
    path = _write(tmp_path / "d.jsonl", [good, bad])
    with pytest.raises(DataError, match=message) as err:
        list(read_chatml(path))
    assert f"{path}:2" in str(err.value)


def test_non_utf8_names_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(json.dumps(voice_cloning_sample("a.wav", "r", "b.wav", "t")).encode() + b"\n{\"x\": \"\xff\"}\n")
    with pytest.raises(DataError, match=f"{p}:2: not valid UTF-8"):
        list(read_chatml(str(p)))


def test_missing_audio_names_sample(tmp_path, tiny_bundle, tiny_assets):
    from higgs_ds.data.training_set import open_training_set

    _, tok, _ = tiny_bundle
    path = _write(tmp_path / "d.jsonl", [voice_cloning_sample("missing_ref.wav", "r", "b.wav", "t")])
    with pytest.raises(DataError, match=r"d\.jsonl:1 .*audio file not found: .*missing_ref\.wav"):
        open_training_set(path, tok, tiny_assets.model_path, tiny_assets.audio_tokenizer_path)


def test_json_list_files(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([voice_cloning_sample("a.wav", "r", "b.wav", "t")] * 2))
    assert [s.line for s in read_chatml(str(p))] == [1, 2]


def test_dataset_labels_only_the_target_turn(small_dataset, tiny_bundle):
    """Exactly <|audio_out_bos|>, <|AUDIO_OUT|>, <|audio_eos|>, <|eot_id|> of the target turn carry text labels."""
    _, tok, _ = tiny_bundle
    sample = small_dataset[0]
    labeled = sample.label_ids[sample.label_ids != -100].tolist()
    assert tok.convert_ids_to_tokens(labeled) == ["<|audio_out_bos|>", "<|AUDIO_OUT|>", "<|audio_eos|>", "<|eot_id|>"]
    assert sample.audio_ids_start.tolist()[0] == 0 and len(sample.audio_ids_start) == 2
    assert sample.audio_ids_concat.shape[0] == 8 and sample.audio_ids_concat.dtype == torch.long


def test_collating_the_same_sample_twice_keeps_audio_labels(small_dataset, tiny_bundle):
    """boson's collator sets its input samples' <|AUDIO_OUT|> labels to -100 in place; ours must not let it."""
    from higgs_ds.data.collate import TrainingCollator

    model, _, _ = tiny_bundle
    collate = TrainingCollator(model.config)
    sample = small_dataset[0]
    labels_before = sample.label_ids.clone()
    first, second = collate([sample]), collate([sample])
    assert torch.equal(sample.label_ids, labels_before)
    assert (first["label_audio_ids"] != -100).any()
    assert torch.equal(first["label_audio_ids"], second["label_audio_ids"])


def test_token_budget_loader_batches_within_budget(small_dataset, tiny_bundle):
    from higgs_ds.data.loaders import build_loader, start_epoch

    model, _, _ = tiny_bundle
    budget = 2 * max(small_dataset.num_tokens(i) for i in range(len(small_dataset)))
    loaders = [build_loader(small_dataset, model.config, 1, r, 2, seed=0, max_tokens_per_batch=budget) for r in (0, 1)]
    for loader in loaders:
        start_epoch(loader, 1)
    batches = [list(loader) for loader in loaders]
    assert len(batches[0]) == len(batches[1]) >= 2
    for b in batches[0] + batches[1]:
        assert b["input_ids"].shape[0] <= 2 and (b["label_audio_ids"] != -100).any()
    assert sum(b["input_ids"].shape[0] for r in batches for b in r) == len(small_dataset)
    # resume mid-epoch: skipping the first batch yields exactly the rest of the same epoch
    start_epoch(loaders[0], 1, skip_batches=1)
    rest = list(loaders[0])
    assert len(rest) == len(batches[0]) - 1
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(rest, batches[0][1:]))


def test_fast_delay_pattern_equals_boson():
    from boson_multimodal.model.higgs_audio.utils import build_delay_pattern_mask

    from higgs_ds.data.collate import delay_pattern

    g = torch.Generator().manual_seed(0)
    for bsz, k, t in [(1, 8, 1), (1, 8, 37), (3, 4, 5), (2, 1, 9), (1, 8, 0)]:
        ids = torch.randint(0, 1024, (bsz, k, t), generator=g)
        for ours, ref in zip(delay_pattern(ids, 1024, 1025), build_delay_pattern_mask(ids, 1024, 1025)):
            assert ours.dtype == ref.dtype and torch.equal(ours, ref)


def test_training_collator_equals_serve_engine_collator(small_dataset, tiny_bundle):
    """The sped-up collation gives exactly the serve engine's collator output (labels included)."""
    from dataclasses import asdict, replace

    from higgs_ds.data.collate import TrainingCollator, serve_engine_collator

    config = tiny_bundle[0].config
    samples = [small_dataset[i] for i in range(4)]
    ours = TrainingCollator(config)(samples)
    ref = asdict(serve_engine_collator(config)([replace(s, label_ids=s.label_ids.clone()) for s in samples]))
    ref = {k: v for k, v in ref.items() if v is not None and k != "reward"}
    assert ours.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k
