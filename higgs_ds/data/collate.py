"""The serve engine's collator, configured exactly as `HiggsAudioServeEngine` builds it, plus training labels."""
from dataclasses import asdict, replace

from boson_multimodal.data_collator.higgs_audio_collator import HiggsAudioSampleCollator


def serve_engine_collator(config, whisper_processor=None):
    """`HiggsAudioSampleCollator` with the serve engine's arguments (serve_engine.py, boson-multimodal 0.1.1)."""
    return HiggsAudioSampleCollator(
        whisper_processor=whisper_processor, encode_whisper_embed=config.encode_whisper_embed,
        audio_in_token_id=config.audio_in_token_idx, audio_out_token_id=config.audio_out_token_idx,
        audio_stream_bos_id=config.audio_stream_bos_id, audio_stream_eos_id=config.audio_stream_eos_id,
        pad_token_id=config.pad_token_id, return_audio_in_tokens=False,
        use_delay_pattern=config.use_delay_pattern, audio_num_codebooks=config.audio_num_codebooks, round_to=1,
    )


class TrainingCollator:
    """Collate `ChatMLDatasetSample`s into the keyword arguments of `HiggsAudioModel.forward` (labels included)."""

    def __init__(self, config, whisper_processor=None):
        self.collator = serve_engine_collator(config, whisper_processor)

    def __call__(self, samples):
        # HiggsAudioSampleCollator sets the <|AUDIO_OUT|> labels of its *input* samples to -100 in place: a sample
        # collated twice (a second epoch, a repeated padding batch) would silently lose its audio labels.
        samples = [replace(s, label_ids=s.label_ids.clone()) if s.label_ids is not None else s for s in samples]
        batch = asdict(self.collator(samples))
        batch.pop("reward", None)
        return {k: v for k, v in batch.items() if v is not None}
