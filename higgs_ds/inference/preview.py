"""Audio previews during training: every N steps rank 0 clones a few validation prompts with the live model
through `HiggsAudioServeEngine` and writes them to TensorBoard as audio and as a log-spectrogram image.

The serve engine is built once around the *training* model (no second copy of the weights): its
`HiggsAudioModel.from_pretrained` is pointed at the live model, whose peft LoRA layers are active in place.
The engine is given the device as "cuda:N" so it does not capture CUDA graphs of the training model.
"""
import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


def prompt_of(sample):
    """The part of a ChatML sample the model sees before it speaks: messages before `start_index`."""
    from boson_multimodal.data_types import ChatMLSample

    end = sample.start_index if sample.start_index else len(sample.messages) - 1
    return ChatMLSample(messages=sample.messages[:end])


def log_spectrogram(wav, n_fft=512, hop=240):
    """(1, freq, time) image in [0, 1] of the log-magnitude STFT."""
    spec = torch.stft(torch.as_tensor(wav, dtype=torch.float32), n_fft, hop, window=torch.hann_window(n_fft),
                      return_complex=True).abs()
    img = torch.log(spec + 1e-5).flip(0)
    img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    return img.unsqueeze(0).numpy()


def live_engine(live_model, paths, kv_cache_length=2048):
    """`HiggsAudioServeEngine` around the live (training) model; also used by generation eval."""
    from .generate import serve_engine

    device = next(live_model.parameters()).device
    device = f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu"  # "cuda" would capture graphs
    return serve_engine(paths.model_path, paths.audio_tokenizer_path, paths.tokenizer_path, device=device,
                        model=live_model, kv_cache_lengths=[kv_cache_length])


class AudioPreview:
    """Generates `num_prompts` validation prompts every `every` optimizer steps (rank 0 only)."""

    def __init__(self, live_model, paths, samples, every, sinks, num_prompts=2, max_new_tokens=512):
        """`sinks`: engine/sinks.py `Sinks` (TensorBoard, JSONL, W&B) the previews go to."""
        self.every, self.sinks, self.max_new_tokens = every, sinks, max_new_tokens
        self.prompts = [prompt_of(s.sample) for s in samples[:num_prompts]]
        self.model = live_model
        self.engine = self._engine(live_model, paths)

    @staticmethod
    def _engine(live_model, paths):
        return live_engine(live_model, paths)

    def due(self, step):
        return self.every > 0 and step % self.every == 0

    @torch.no_grad()
    def write(self, step):
        """Generate (greedy, audio forced) and write `samples/{i}/audio` and `samples/{i}/spectrogram`."""
        was_training = self.model.training
        self.model.eval()
        try:
            for i, prompt in enumerate(self.prompts):
                resp = self.engine.generate(prompt, max_new_tokens=self.max_new_tokens, temperature=0.0,
                                            force_audio_gen=True, ras_win_len=None)
                if resp.audio is None or len(resp.audio) == 0:
                    log.info("preview %d at step %d: no audio generated", i, step)
                    continue
                wav = np.clip(np.asarray(resp.audio, dtype=np.float32), -1, 1)
                self.sinks.audio(f"samples/{i}/audio", wav, step, resp.sampling_rate)
                self.sinks.image(f"samples/{i}/spectrogram", log_spectrogram(wav), step)
        finally:
            self.model.train(was_training)


def build_preview(rank, config, engine, paths, val_set, sinks):
    """The audio preview on rank 0 (None when off, without validation data or without a media sink)."""
    if rank != 0 or config.sample_every <= 0 or val_set is None or not sinks:
        return None
    from ..models.unwrap import base_higgs_model

    return AudioPreview(base_higgs_model(engine), paths, val_set.samples, config.sample_every, sinks,
                        config.num_preview_prompts, config.preview_max_new_tokens)
