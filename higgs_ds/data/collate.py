"""The serve engine's collator, configured exactly as `HiggsAudioServeEngine` builds it, plus training labels.

`TrainingCollator` runs that collator with one substitution: boson-multimodal's `build_delay_pattern_mask` builds
its masks with `torch.tril`/`torch.triu` over int64 tensors, which took ~95 % of the collation time on CPU (docs/PERF.md);
`delay_pattern` computes the same tensors by index arithmetic (tests/data/test_dataset.py checks equality against it).
With `index_plan=True` each batch also carries its host-side index plan (`data/index_plan.py`) for the sync-free training step.
"""
import contextlib
from dataclasses import fields, replace

import boson_multimodal.data_collator.higgs_audio_collator as _boson_collator
import torch
from boson_multimodal.data_collator.higgs_audio_collator import HiggsAudioSampleCollator

from .index_plan import add_plan


def serve_engine_collator(config, whisper_processor=None):
    """`HiggsAudioSampleCollator` with the serve engine's arguments (serve_engine.py, boson-multimodal 0.1.1)."""
    return HiggsAudioSampleCollator(
        whisper_processor=whisper_processor, encode_whisper_embed=config.encode_whisper_embed,
        audio_in_token_id=config.audio_in_token_idx, audio_out_token_id=config.audio_out_token_idx,
        audio_stream_bos_id=config.audio_stream_bos_id, audio_stream_eos_id=config.audio_stream_eos_id,
        pad_token_id=config.pad_token_id, return_audio_in_tokens=False,
        use_delay_pattern=config.use_delay_pattern, audio_num_codebooks=config.audio_num_codebooks, round_to=1,
    )


def delay_pattern(input_ids, bos_token_id, pad_token_id):
    """`boson_multimodal...utils.build_delay_pattern_mask`, same outputs: codebook k shifted right by k, BOS before,
    `pad_token_id` after (and -1 there in the second output, the generation mask)."""
    bsz, k, t = input_ids.shape
    if t == 0:
        return _BOSON_DELAY(input_ids, bos_token_id, pad_token_id)
    col = torch.arange(t + k - 1, device=input_ids.device).unsqueeze(0)
    row = torch.arange(k, device=input_ids.device).unsqueeze(1)
    codes = input_ids.gather(2, (col - row).clamp(0, t - 1).expand(bsz, k, -1))
    after = col >= row + t
    with_gen_mask = torch.where(col < row, bos_token_id, torch.where(after, -1, codes))
    return torch.where(after, pad_token_id, with_gen_mask), with_gen_mask


_BOSON_DELAY = _boson_collator.build_delay_pattern_mask


@contextlib.contextmanager
def _fast_delay_pattern():
    _boson_collator.build_delay_pattern_mask = delay_pattern
    try:
        yield
    finally:
        _boson_collator.build_delay_pattern_mask = _BOSON_DELAY


class TrainingCollator:
    """Collate `ChatMLDatasetSample`s into the keyword arguments of `HiggsAudioModel.forward` (labels included);
    `index_plan`: add the batch's `IndexPlan` under `models.training_forward.INDEX_PLAN_KEY` (for `loss.compute_loss`, not the model)."""

    def __init__(self, config, whisper_processor=None, index_plan=False):
        self.collator = serve_engine_collator(config, whisper_processor)
        self.config, self.index_plan = config, index_plan

    def __call__(self, samples):
        # HiggsAudioSampleCollator sets the <|AUDIO_OUT|> labels of its *input* samples to -100 in place: a sample
        # collated twice (a second epoch, a repeated padding batch) would silently lose its audio labels.
        samples = [replace(s, label_ids=s.label_ids.clone()) if s.label_ids is not None else s for s in samples]
        with _fast_delay_pattern():
            out = self.collator(samples)
        # the fields as they are (dataclasses.asdict would deep-copy every tensor)
        batch = {f.name: getattr(out, f.name) for f in fields(out)
                 if f.name != "reward" and getattr(out, f.name) is not None}
        return add_plan(batch, self.config) if self.index_plan else batch
