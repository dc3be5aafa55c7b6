"""One metrics path: every scalar (step metrics, eval, generation eval) and every preview (audio, image) goes through
a `Sinks` fan-out to TensorBoard (unless `--tensorboard_dir none`), a JSONL file (always: output_dir/metrics.jsonl)
and Weights & Biases (only when asked for with `--wandb_project` and installed). Rank 0 only.

A sink has `scalars(values, step, prefix)`, `audio(tag, wav, step, sample_rate)`, `image(tag, chw, step)` and
`close()`; a new backend is one small class here.
"""
import json
import math
import os

from ..errors import ConfigError


def _numbers(values, prefix):
    return {prefix + k: float(v) for k, v in values.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardSink:
    def __init__(self, log_dir):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir)

    def scalars(self, values, step, prefix=""):
        for k, v in _numbers(values, prefix).items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def audio(self, tag, wav, step, sample_rate):
        self.writer.add_audio(tag, wav, step, sample_rate=sample_rate)
        self.writer.flush()

    def image(self, tag, chw, step):
        self.writer.add_image(tag, chw, step, dataformats="CHW")
        self.writer.flush()

    def close(self):
        self.writer.close()


class JsonlSink:
    """One JSON object a line: `{"step": N, "<prefix><key>": value, ...}` for scalars (non-finite values as null),
    `{"step": N, "audio" | "image": tag, ...}` for previews (the media itself stays in TensorBoard / W&B)."""

    def __init__(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.file = open(path, "a")

    def _line(self, obj):
        self.file.write(json.dumps(obj, allow_nan=False) + "\n")
        self.file.flush()

    def scalars(self, values, step, prefix=""):
        vals = {k: (v if math.isfinite(v) else None) for k, v in _numbers(values, prefix).items()}
        self._line({"step": step, **vals})

    def audio(self, tag, wav, step, sample_rate):
        self._line({"step": step, "audio": tag, "seconds": len(wav) / sample_rate})

    def image(self, tag, chw, step):
        self._line({"step": step, "image": tag, "shape": list(chw.shape)})

    def close(self):
        self.file.close()


class WandbSink:
    def __init__(self, project, run_dir, config=None):
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"--wandb_project {project}: Weights & Biases is not installed (pip install wandb), "
                              "or leave the flag out") from None
        self.wandb = wandb
        self.run = wandb.init(project=project, dir=run_dir, config=config or {})

    def scalars(self, values, step, prefix=""):
        self.run.log(_numbers(values, prefix), step=step)

    def audio(self, tag, wav, step, sample_rate):
        self.run.log({tag: self.wandb.Audio(wav, sample_rate=sample_rate)}, step=step)

    def image(self, tag, chw, step):
        self.run.log({tag: self.wandb.Image(chw.transpose(1, 2, 0))}, step=step)

    def close(self):
        self.run.finish()


class Sinks:
    """Fan-out to every configured sink (possibly none)."""

    def __init__(self, sinks=()):
        self.sinks = list(sinks)

    def scalars(self, values, step, prefix=""):
        for s in self.sinks:
            s.scalars(values, step, prefix)

    def audio(self, tag, wav, step, sample_rate):
        for s in self.sinks:
            s.audio(tag, wav, step, sample_rate)

    def image(self, tag, chw, step):
        for s in self.sinks:
            s.image(tag, chw, step)

    def close(self):
        for s in self.sinks:
            s.close()

    def __bool__(self):
        return bool(self.sinks)


def build_sinks(rank, tensorboard_dir=None, jsonl_path=None, wandb_project=None, run_config=None):
    """The sinks of rank 0 (other ranks get an empty `Sinks`)."""
    if rank != 0:
        return Sinks()
    sinks = []
    if tensorboard_dir:
        sinks.append(TensorBoardSink(tensorboard_dir))
    if jsonl_path:
        sinks.append(JsonlSink(jsonl_path))
    if wandb_project:
        sinks.append(WandbSink(wandb_project, os.path.dirname(os.path.abspath(jsonl_path or ".")), run_config))
    return Sinks(sinks)
