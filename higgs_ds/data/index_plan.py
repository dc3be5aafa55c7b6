"""The index plan of a collated batch, computed on the host so the training step never waits on the device.

`HiggsAudioModel.forward` finds its audio positions with boolean masks (`nonzero`, `torch.where`, `x[mask]`) in the
input merge, in every dual-FFN layer and in the loss: each is a host synchronisation. The collator already holds
every position on the host, so `build_plan` runs boson-multimodal's own `merge_input_ids_with_audio_features` there
once per batch on one-column stand-in embeddings that carry each source row's index: its output says, for every
merged position, which text token / audio-in column / audio-out column lands there, and yields boson's masks,
labels and position ids unchanged. `models/training_forward.py` replays the merge with `index_select` and splits the
dual-FFN layers with these indices; the loss takes its labeled rows from here (`rows`).
"""
import dataclasses
from typing import Optional

import torch
from boson_multimodal.model.higgs_audio.utils import merge_input_ids_with_audio_features

from ..models.training_forward import INDEX_PLAN_KEY
from .alignment import audio_rows, text_rows

ROUND_TO = 8  # HiggsAudioModel.forward pads the merged length to a multiple of 8 when use_cache is off

_TENSORS = ("source", "attention_mask", "labels", "position_ids", "input_ids", "audio_in_mask",
            "audio_in_discrete_codes_mask", "audio_out_mask", "text_index", "codes_index",
            "text_pos", "text_tgt", "audio_pos", "audio_tgt", "n_text", "n_audio_k")


@dataclasses.dataclass
class IndexPlan:
    """Everything position-dependent of one batch's forward and loss, with sizes fixed on the host.

    `source` (B*L,): row of `cat([zero row, text embeddings (B*T), audio-in embeddings, audio-out embeddings])` at
    each merged position (0: padding). The merge outputs are boson's, (B, L). `text_index` / `codes_index`: flat
    positions of the dual-FFN text and audio (in or out codes) paths. `text_pos/text_tgt`, `audio_pos/audio_tgt`:
    the loss's labeled rows (`alignment.text_rows/audio_rows`); `n_text` and `n_audio_k` their counts;
    `audio_rows_per_seq`: host ints, how many of those audio rows each sequence (row) holds (per-sequence scores).
    """
    source: torch.Tensor
    attention_mask: torch.Tensor
    labels: Optional[torch.Tensor]
    position_ids: torch.Tensor
    input_ids: torch.Tensor
    audio_in_mask: torch.Tensor
    audio_in_discrete_codes_mask: torch.Tensor
    audio_out_mask: torch.Tensor
    text_index: torch.Tensor
    codes_index: torch.Tensor
    text_pos: torch.Tensor
    text_tgt: torch.Tensor
    audio_pos: torch.Tensor
    audio_tgt: torch.Tensor
    n_text: torch.Tensor
    n_audio_k: torch.Tensor
    n_sources: int
    text_shape: tuple  # (B, T) of the collated input_ids
    has_padding: bool
    left_padding: bool
    audio_rows_per_seq: tuple = ()
    round_to: int = ROUND_TO

    def _map(self, fn):
        return dataclasses.replace(self, **{k: fn(getattr(self, k)) for k in _TENSORS if getattr(self, k) is not None})

    def to(self, device, non_blocking=False):
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        """Called by the DataLoader's pin-memory thread on CUDA, so `to(..., non_blocking=True)` is asynchronous."""
        return self._map(lambda t: t.pin_memory())

    def loss_rows(self):
        """(text positions, text targets, audio positions, (N, K) audio targets, n_text, per-codebook audio counts)."""
        return self.text_pos, self.text_tgt, self.audio_pos, self.audio_tgt, self.n_text, self.n_audio_k

    def without_audio_labels(self):
        """The plan of the same batch with every audio label -100 (fault injection `no_audio_labels`)."""
        k = self.audio_tgt.shape[1]
        return dataclasses.replace(self, audio_pos=self.audio_pos[:0], audio_tgt=self.audio_tgt[:0],
                                   n_audio_k=torch.zeros(k, dtype=torch.long, device=self.n_audio_k.device),
                                   audio_rows_per_seq=(0,) * len(self.audio_rows_per_seq))


def supported(config):
    """The plan covers the released layout: no Whisper tower (`skip_audio_tower`), heads right on the hidden states."""
    return bool(config.skip_audio_tower) and not getattr(config, "audio_decoder_proj_num_layers", 0)


def _stand_ins(batch, config):
    """One-column float64 'embeddings' holding 1 + each source row's index (exact below 2**53)."""
    ids = batch["input_ids"]
    n_text = ids.numel()
    audio_in = batch.get("audio_in_ids")
    n_in = audio_in.shape[-1] if audio_in is not None else 0
    audio_out = batch.get("audio_out_ids")
    n_out = audio_out.shape[-1] if audio_out is not None else 0
    text = torch.arange(1, n_text + 1, dtype=torch.float64).view(*ids.shape, 1)
    in_embed = torch.arange(n_text + 1, n_text + 1 + n_in, dtype=torch.float64).view(-1, 1) \
        if config.encode_audio_in_tokens else None
    n_in = n_in if config.encode_audio_in_tokens else 0
    out_embed = torch.arange(n_text + n_in + 1, n_text + n_in + n_out + 1, dtype=torch.float64).view(-1, 1)
    return text, in_embed, out_embed, 1 + n_text + n_in + n_out


def build_plan(batch, config):
    """`IndexPlan` of a collated batch (CPU tensors, as `TrainingCollator` emits them); None if not `supported`."""
    if not supported(config):
        return None
    ids = batch["input_ids"]
    text, in_embed, out_embed, n_sources = _stand_ins(batch, config)
    left_padding = ids.shape[0] == 1  # as HiggsAudioModel.forward decides with use_cache off
    merged = merge_input_ids_with_audio_features(
        None, None, in_embed, batch.get("audio_in_ids_start"), out_embed, batch.get("audio_out_ids_start"),
        config.audio_in_token_idx, config.audio_out_token_idx, text, ids, batch["attention_mask"],
        batch.get("label_ids"), pad_token_id=config.pad_token_id, round_to=ROUND_TO, left_padding=left_padding)
    embed, attn, labels, pos_ids, merged_ids, in_mask, in_codes_mask, out_mask = merged
    codes = (in_codes_mask | out_mask).reshape(-1)
    k = int(config.audio_num_codebooks)
    t_pos, t_tgt = text_rows(labels, attn.shape, "cpu")
    a_pos, a_tgt = audio_rows(out_mask, batch.get("label_audio_ids"), batch.get("audio_out_ids_start"), k, "cpu")
    return IndexPlan(
        source=embed.reshape(-1).round().long(), attention_mask=attn, labels=labels, position_ids=pos_ids,
        input_ids=merged_ids, audio_in_mask=in_mask, audio_in_discrete_codes_mask=in_codes_mask,
        audio_out_mask=out_mask, text_index=(~codes).nonzero().squeeze(1), codes_index=codes.nonzero().squeeze(1),
        text_pos=t_pos, text_tgt=t_tgt, audio_pos=a_pos, audio_tgt=a_tgt,
        n_text=torch.tensor(t_pos.numel()), n_audio_k=(a_tgt != -100).sum(0),
        n_sources=n_sources, text_shape=tuple(ids.shape), has_padding=not bool((attn == 1).all()),
        left_padding=left_padding,
        audio_rows_per_seq=tuple(torch.bincount(a_pos // attn.shape[1], minlength=attn.shape[0]).tolist()))


def add_plan(batch, config):
    """`batch` with its `IndexPlan` under `INDEX_PLAN_KEY` (unchanged when the config is not `supported`)."""
    plan = build_plan(batch, config)
    return batch if plan is None else {**batch, INDEX_PLAN_KEY: plan}
