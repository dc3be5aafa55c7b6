"""Generation eval during training: every `--eval_generate_every` steps, and once before the first step with the
LoRA adapter disabled (the zero-shot baseline of the base model), clone a fixed held-out prompt set with the live
model through the serve engine, score it (SIM, DNSMOS, WER with an ASR dir) and log `eval_gen/*`.

The prompts are spread over ranks (rank r takes prompts r, r + world, ...); the scored rows are gathered on every
rank so all ranks return the same metrics. `eval_gen/time_share` is the fraction of wall time spent here.
"""
import contextlib
import logging
import time

from .best import BestKeeper
from .drift import drift_warnings, drifted
from .failures import KEYS as FAILURE_KEYS
from .scorer import METRICS, TABLE_METRICS
from .stats import error_rate_label, flat_breakdown, summarize

log = logging.getLogger(__name__)
LOGGED = METRICS + FAILURE_KEYS


def gather_rows(rows):
    """Every rank's rows, on every rank, in rank order (a no-op without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, rows)
    return [r for part in out for r in part]


def gen_metrics(rows, baseline=None):
    """Flat metrics: each score's and failure measure's mean and ci95, its change since the baseline, the no-audio
    fraction, and the table metrics per language and speaker (`language/<tag>/error_rate`, ...; error_rate_name:
    wer, cer or both)."""
    summary = summarize(rows, METRICS + FAILURE_KEYS)
    out = {"num_prompts": len(rows), "no_audio": sum(r["no_audio"] for r in rows) / max(len(rows), 1)}
    for k in LOGGED:
        if k in summary and summary[k]["mean"] is not None:
            out[k], out[f"{k}_ci95"] = summary[k]["mean"], summary[k]["ci95"]
            if baseline and baseline.get(k) is not None:
                out[f"delta_{k}"] = out[k] - baseline[k]
    if "error_rate" in out:
        out["error_rate_name"] = error_rate_label(rows)
    out.update(flat_breakdown(rows, TABLE_METRICS))
    return out


def sim_dropped(metrics, baseline):
    """True when SIM fell below the baseline by more than its 95 % CI half-width."""
    return drifted(metrics, baseline, "sim", -1, 0.0)


class GenerationEval:
    """Built on every rank; `run(step)` is collective (all ranks call it at the same step)."""

    def __init__(self, peft_model, paths, samples, every, num_prompts, scorer, sink=None, rank=0, world=1,
                 max_new_tokens=512, retention=()):
        """`retention`: `evaluation/retention.py` prompts (skills of the base model), scored as `retain/*`."""
        from ..inference.preview import live_engine
        from .prompts import eval_prompts

        self.model, self.every, self.sink, self.scorer = peft_model, every, sink, scorer
        self.max_new_tokens = max_new_tokens
        self.prompts = eval_prompts(samples, num_prompts)[rank::world]
        self.retention, self.has_retention = list(retention)[rank::world], bool(retention)
        base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
        self.engine = live_engine(base, paths) if self.prompts or self.retention else None
        self.baseline, self.records, self.spent, self.t0 = None, [], 0.0, time.time()

    def due(self, step):
        return self.every > 0 and step > 0 and step % self.every == 0

    def run(self, step, baseline=False):
        """Generate, score, log `eval_gen/*` at `step`; `baseline`: with the adapter disabled (the base model)."""
        t = time.time()
        rows, retained = self._generate(baseline)
        metrics = gen_metrics(rows, None if baseline else self.baseline)
        warnings = [] if baseline else drift_warnings(metrics, self.baseline)
        if self.has_retention:
            warnings += self._retention(metrics, retained, baseline)
        if baseline:
            self.baseline = metrics
        self.spent += time.time() - t
        metrics.update(seconds=time.time() - t, time_share=self.spent / max(time.time() - self.t0, 1e-9))
        for w in warnings:
            log.warning("eval_gen at step %d: %s", step, w)
        metrics["num_warnings"] = len(warnings)
        if self.sink is not None:
            self.sink.write(metrics, step, "eval_gen/")
        self.records.append({"step": step, "baseline": baseline, **metrics, "warnings": warnings})
        log.info("eval_gen at step %d: %s", step, ", ".join(f"{k} {metrics[k]:.3f}" for k in LOGGED if k in metrics))
        return metrics

    def _generate(self, baseline):
        """(clone rows, retention rows) of every rank (collective)."""
        from .prompts import generate_rows

        was_training = self.model.training
        self.model.eval()
        off = self.model.disable_adapter() if baseline and hasattr(self.model, "disable_adapter") else None
        try:
            with off or contextlib.nullcontext():
                rows, retained = ([generate_rows(self.engine, ps, self.scorer, self.max_new_tokens) if self.engine
                                   else [] for ps in (self.prompts, self.retention)])
        finally:
            self.model.train(was_training)
        return gather_rows(rows), gather_rows(retained) if self.has_retention else []

    def _retention(self, metrics, rows, baseline):
        """Add `retain/*` (and `retain_drop`, `sim_retain`) to `metrics`; the drift warnings of the retention set."""
        from .retention import retain_drop

        now = gen_metrics(rows)
        metrics.update({f"retain/{k}": v for k, v in now.items()})
        if baseline:
            return []
        base = {k[len("retain/"):]: v for k, v in self.baseline.items() if k.startswith("retain/")}
        metrics["retain_drop"] = retain_drop(now, base)
        if metrics.get("sim") is not None:
            metrics["sim_retain"] = metrics["sim"] - metrics["retain_drop"]
        return [f"retention prompts (skills of the base model): {w}" for w in drift_warnings(now, base)]


def setup_quality(args, peft_model, paths, val_set, sink, rank, world, save_fn, artefact):
    """(GenerationEval or None, BestKeeper or None) from a `GenerationEvalConfig` (`args`); runs the base-model
    baseline (step 0) first. `save_fn(dir)`: how --keep_best writes its `artefact` (`adapter`/`model`) on every
    rank (models/finetune.save_to)."""
    from .retention import retention_prompts
    from .scorer import Scorer

    best = BestKeeper(args.keep_best, args.output_dir, save_fn, rank, artefact) if args.keep_best else None
    if args.eval_generate_every <= 0:
        return None, best
    if val_set is None:
        log.warning("--eval_generate_every: no val set, generation eval is off")
        return None, best
    device = next(peft_model.parameters()).device
    scorer = Scorer(args.sim_model, args.asr_model, device=str(device))
    gen = GenerationEval(peft_model, paths, val_set.samples, args.eval_generate_every, args.num_eval_prompts, scorer,
                         sink, rank, world, args.eval_max_new_tokens, retention_prompts(args.retention_prompts))
    gen.run(0, baseline=True)
    return gen, best
