"""Configs of evaluation during training: teacher-forced eval, audio previews, generation eval (docs/EVAL.md).
Their fields are train.py flags (higgs_ds/config.py)."""
import dataclasses
from typing import Optional

from ..config import option
from ..constants import OUTPUT_DIR
from .best import METRIC_KEYS


@dataclasses.dataclass
class EvalConfig:
    """Teacher-forced evaluation of the val set (token-weighted, evaluation/teacher_forced.py) and TensorBoard audio previews."""
    eval_every: int = option(0, "evaluate on the val set every N optimizer steps (TensorBoard eval/...; 0: "
                                "only at the end)", minimum=0)
    sample_every: int = option(0, "every N optimizer steps rank 0 clones --num_preview_prompts held-out prompts "
                                  "with the serve engine and writes audio + spectrograms to TensorBoard (0: off)",
                               minimum=0)
    num_preview_prompts: int = option(2, "held-out prompts per audio preview", minimum=1)
    preview_max_new_tokens: int = option(512, "generation budget of each preview", minimum=1)
    batch_size: int = 2

    def due(self, step):
        return self.eval_every > 0 and step % self.eval_every == 0


@dataclasses.dataclass
class GenerationEvalConfig:
    """Voice-cloning quality measured while training: generation eval and the best checkpoint kept."""
    eval_generate_every: int = option(0, "every N optimizer steps, and once before the first (the base model's "
                                         "zero-shot baseline), clone --num_eval_prompts held-out prompts with the "
                                         "live model and log eval_gen/sim, eval_gen/dnsmos_ovrl, eval_gen/wer (with "
                                         "--asr_model) and their change since the baseline (docs/EVAL.md; 0: off)",
                                      minimum=0)
    num_eval_prompts: int = option(8, "held-out prompts of generation eval (the first ones of --val_data), spread "
                                      "over ranks", minimum=1)
    eval_max_new_tokens: int = option(512, "generation budget of each eval prompt", minimum=1)
    keep_best: Optional[str] = option(None, "keep the adapter of the best evaluation so far in output_dir/best/ "
                                            "(sim, dnsmos, sim_retain: highest, wer: lowest, from generation eval; "
                                            "loss: lowest eval loss/total from --eval_every)", type=str,
                                      choices=sorted(METRIC_KEYS))
    retention_prompts: Optional[str] = option(None, "also generate these prompts without a reference voice (default: "
                                                    "a built-in set; FILE: JSONL of {text, scene}) at the baseline and "
                                                    "every generation eval: eval_gen/retain/*, retain_drop, and "
                                                    "--keep_best sim_retain = sim - retain_drop (docs/EVAL.md)",
                                              type=str, metavar="default|FILE")
    sim_model: Optional[str] = option(None, "local WavLMForXVector dir for eval_gen/sim; default: resemblyzer "
                                            "(built in)", type=str, metavar="DIR")
    asr_model: Optional[str] = option(None, "local Whisper dir for eval_gen/wer and eval_gen/cer; without it no WER "
                                            "is logged", type=str, metavar="DIR")
    output_dir: str = OUTPUT_DIR


def check_generation_eval(cfg, eval_every, parser):
    """parser.error (one message, exit 2) on flags that contradict each other."""
    if cfg.keep_best in ("sim", "dnsmos", "wer", "sim_retain") and cfg.eval_generate_every == 0:
        parser.error(f"--keep_best {cfg.keep_best} needs --eval_generate_every N")
    if cfg.keep_best == "wer" and not cfg.asr_model:
        parser.error("--keep_best wer needs --asr_model DIR (there is no WER without an ASR model)")
    if cfg.keep_best == "sim_retain" and not cfg.retention_prompts:
        parser.error("--keep_best sim_retain needs --retention_prompts default|FILE")
    if cfg.keep_best == "loss" and eval_every == 0:
        parser.error("--keep_best loss needs --eval_every N")
