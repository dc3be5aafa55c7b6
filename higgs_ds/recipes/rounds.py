"""On-policy DPO rounds (`train.py --stage dpo --rounds R`, docs/PREFERENCE.md), on the DPO recipe's builders.

`--train_data` and `--val_data` are voice-cloning prompts (five-message samples: the target clip gives the target
duration). Round r, from the policy at step r * N (N = `--steps_per_round`):
1. sample K candidates per train prompt with the live policy through the serve engine (inference/sampling.py,
   seeds from `--seed` + r), into `output_dir/rounds/r{r}/candidates/`;
2. score them and build the pairs (evaluation/reward.py: per prompt the best against the worst reward) into
   `output_dir/rounds/r{r}/pairs.jsonl`;
3. train N DPO steps on those pairs (the reference: the adapter-disabled model, so LoRA; ZeRO-2).
The held-out reward (the mean reward of K candidates per val prompt, the same seeds every round) is measured before
round 0 and after every round: `eval/round/reward` in every sink, and `output_dir/rounds.json`.

Resume: the round is the step's (step // N); the held-out record is the checkpoint extra `RoundState`. A killed run
resumes inside its round: the round's candidate rows and pairs file on disk are reused (an unfinished sampling
continues where it stopped), never regenerated; the loader skips the micro-batches already trained.
"""
import dataclasses
import json
import logging
import math
import os

import torch

from ..config import from_args, option
from ..durable import write_atomic
from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)
STATE_FILE = "rounds_state.json"
SCORE_FREE = ("duration", "stop")  # reward terms that need no scoring model


@dataclasses.dataclass
class RoundsConfig:
    """On-policy DPO rounds (docs/PREFERENCE.md)."""
    rounds: int = option(0, "on-policy DPO rounds (--stage dpo): each samples K candidates per --train_data prompt "
                            "from the current policy, scores them, builds pairs and trains --steps_per_round steps on "
                            "them (0: train on the pairs of --train_data)", minimum=0)
    samples_per_prompt: int = option(4, "K: candidates per prompt and round", minimum=2)
    steps_per_round: int = option(20, "optimizer steps on each round's pairs", minimum=1)
    round_max_new_tokens: int = option(100, "budget of each candidate (audio frames, 25 a second)", minimum=1)
    round_temperature: float = option(1.0, "sampling temperature of the candidates", above=0)
    round_top_k: int = option(50, "top-k of the candidates", minimum=1)
    round_top_p: float = option(0.95, "top-p of the candidates", above=0)
    round_weights: str = option("sim=0,wer=0,dnsmos=0,duration=1,stop=0",
                                "reward weights (evaluation/reward.py terms); rounds score without models: only "
                                "duration and stop may be non-zero")
    round_min_gap: float = option(0.0, "a prompt gives no pair when its best and worst rewards differ by less",
                                  minimum=0)

    def weights(self):
        from ..evaluation.reward import parse_weights

        weights = parse_weights(self.round_weights)
        needs_model = [k for k, v in weights.items() if v and k not in SCORE_FREE]
        if needs_model:
            raise ConfigError(f"--round_weights: {', '.join(needs_model)} need scoring models, which rounds do not run "
                              f"yet; use {' and '.join(SCORE_FREE)} (score with `higgs-ds score` and train on "
                              "`higgs-ds pairs` files instead)")
        return weights


class RoundState:
    """Checkpoint extra: the held-out reward before round 0 and after each round (`round_reward`)."""

    def __init__(self):
        self.heldout = []

    def save_state(self, tag_dir, rank):
        if rank == 0:
            write_atomic(os.path.join(tag_dir, STATE_FILE), json.dumps({"heldout": self.heldout}))

    def load_state(self, tag_dir):
        path = os.path.join(tag_dir, STATE_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                self.heldout = json.load(f)["heldout"]


@dataclasses.dataclass
class Rounds:
    """What the rounds need besides the trainer: settings, prompts, the serve engine around the live model."""
    config: RoundsConfig
    args: object
    setup: object
    tokenizer: object
    audio_tokenizer: object
    serve: object
    train_prompts: list
    val_prompts: list
    state: RoundState
    root: str

    def dir(self, name):
        return os.path.join(self.root, name)


def check_rounds(args, finetune, reference, ds_cfg):
    """Rounds sample from the live model inside the DeepSpeed run: LoRA (adapter-disabled reference), not ZeRO-3."""
    if finetune != "lora" or reference != "adapter":
        raise ConfigError("--rounds needs --finetune lora with the adapter-disabled reference (--reference adapter or "
                          "auto): a stored reference would be the initial model's log-probs of pairs that do not "
                          "exist yet")
    if ds_cfg.get("zero_optimization", {}).get("stage", 0) == 3:
        raise ConfigError("--rounds generates candidates with the live model: not under ZeRO-3 (each rank would "
                          "all-gather for generations of different lengths); use a ZeRO-2 config")
    if not args.val_data:
        raise ConfigError("--rounds needs --val_data: the held-out prompts whose reward each round reports")


def sampling_config(config, seed):
    from ..inference.sampling import SamplingConfig

    return SamplingConfig(config.samples_per_prompt, seed, config.round_temperature, config.round_top_p,
                          config.round_top_k, config.round_max_new_tokens)


def sample_round(r: Rounds, engine, prompts, seed, out_dir):
    """Every candidate of `prompts` in `out_dir` (missing ones generated by the live policy, this rank's share),
    then the merged rows (each rank reads rank 0's merge)."""
    from ..evaluation.eval_loop import evaluating
    from ..inference.candidates import CANDIDATES, merge_candidates
    from ..inference.sampling import sample_candidates

    config = sampling_config(r.config, seed)
    with evaluating(engine):
        counts = sample_candidates(r.serve, prompts, config, out_dir, r.setup.rank, r.setup.world)
    log.info("%s: %d candidates generated, %d already there", out_dir, counts["generated"], counts["skipped"])
    torch.distributed.barrier()
    if r.setup.rank == 0:
        merge_candidates(out_dir, prompts, config.num_samples)
    torch.distributed.barrier()
    from ..evaluation.pair_files import read_candidates

    return read_candidates(os.path.join(out_dir, CANDIDATES))


def mean_reward(candidates, weights):
    """The mean reward of candidate rows (score-free terms)."""
    from ..evaluation.reward import reward_terms

    rewards = [sum(reward_terms(c, {}, weights, False).values()) for c in candidates]
    return sum(rewards) / max(len(rewards), 1)


def round_reward(r: Rounds, engine, index):
    """The held-out reward of the policy before round `index` (the same seeds every time: common random numbers)."""
    if len(r.state.heldout) > index:
        return r.state.heldout[index]
    rows = sample_round(r, engine, r.val_prompts, r.args.seed + 10_000, r.dir(f"heldout{index}"))
    value = mean_reward(rows, r.config.weights())
    r.state.heldout = r.state.heldout[:index] + [value]
    log.info("held-out reward before round %d: %.4f (%d candidates)", index, value, len(rows))
    return value


def trainable(rows, validation):
    """The candidates a pair may hold: within the data checks' duration limits (a clip of a frame or two is refused
    by the audio checks and the audio tokenizer); the others still count in the rewards."""
    keep = [c for c in rows if validation.min_audio_seconds <= c["duration_s"] <= validation.max_audio_seconds]
    if len(keep) < len(rows):
        log.info("%d of %d candidates outside [%.2f, %.1f] s: in no pair", len(rows) - len(keep), len(rows),
                 validation.min_audio_seconds, validation.max_audio_seconds)
    return keep


def round_pairs(r: Rounds, engine, index):
    """The pairs file of round `index`: read back when it exists, else sampled, scored and written."""
    from ..evaluation.reward import build_pairs

    path = r.dir(f"r{index}/pairs.jsonl")
    if not os.path.isfile(path):
        rows = sample_round(r, engine, r.train_prompts, r.args.seed + index, r.dir(f"r{index}/candidates"))
        rows = trainable(rows, r.setup.data_cfg.validation)
        pairs, counts = build_pairs(rows, [{}] * len(rows), r.config.weights(), r.config.round_min_gap)
        if not pairs:
            raise DataError(f"round {index}: no preference pair from {counts['prompts']} prompts ({counts['no_pair']}):"
                            " raise --samples_per_prompt or --round_temperature, or lower --round_min_gap", "pairs")
        if r.setup.rank == 0:
            write_atomic(path, "".join(json.dumps(p) + "\n" for p in pairs))
            log.info("round %d: %d pairs from %d prompts (train reward %.4f)", index, counts["pairs"],
                     counts["prompts"], mean_reward(rows, r.config.weights()))
        torch.distributed.barrier()
    return path


def pair_loader(r: Rounds, path, model_config):
    """The resumable loader of a round's pairs (validated as every pair file: data/validate.py)."""
    from ..data.loaders import dataset_from_report, open_code_cache
    from ..data.pairs import PairDataset
    from ..data.validate import validate_files
    from .builders import build_loader

    validation = dataclasses.replace(r.setup.data_cfg.validation, require_pairs=True)
    (report,) = validate_files([path], r.tokenizer, validation)
    dataset = dataset_from_report(report, r.tokenizer, r.audio_tokenizer, show_progress=False,
                                  code_cache=open_code_cache(r.setup.data_cfg, r.setup.paths.audio_tokenizer_path),
                                  dataset_cls=PairDataset)
    return build_loader(r.args, r.setup, dataset, model_config)[0]


def train_round(r: Rounds, t, index):
    """N steps on round `index`'s pairs from `t.state` (inside the round after a resume); (state after, exit
    code)."""
    from ..engine.checkpoint import TrainerState
    from .loop import run_steps

    n = r.config.steps_per_round
    loader = pair_loader(r, round_pairs(r, t.engine, index), t.engine.module.config)
    state = t.state if t.state.step > index * n else TrainerState(index * n, 0, 0, t.state.history)
    epochs = math.ceil(n * t.accum / max(len(loader), 1)) + 1
    phase = dataclasses.replace(t, loader=loader, state=state, stop_at=min(t.stop_at, (index + 1) * n),
                                num_epochs=epochs)
    step, code = run_steps(phase)
    return TrainerState(step, 0, 0, state.history), code


def run_rounds(r: Rounds, t):
    """Every round from the resumed step, the held-out reward around them, then the artefact; the exit code."""
    from .loop import finish

    n, total = r.config.steps_per_round, r.config.rounds
    for index in range(t.state.step // n, total):
        before = round_reward(r, t.engine, index)
        t.meter.write({"round/reward": before, "round/index": index}, index * n, "eval/")
        state, code = train_round(r, t, index)
        t = dataclasses.replace(t, state=state)
        if code is not None:
            return code
        if t.state.step < (index + 1) * n:  # --stop_after_steps ended this process inside the round
            return 0
    final = round_reward(r, t.engine, total)
    t.meter.write({"round/reward": final, "round/index": total}, total * n, "eval/")
    write_summary(r, t)
    return finish(t, t.state.step)


def write_summary(r: Rounds, t):
    """`output_dir/rounds.json` (rank 0): the held-out reward before round 0 and after each round."""
    if r.setup.rank == 0:
        summary = {"heldout_reward": r.state.heldout, "rounds": r.config.rounds,
                   "steps_per_round": r.config.steps_per_round, "config": dataclasses.asdict(r.config)}
        write_atomic(os.path.join(t.checkpointer.output_dir, "rounds.json"), json.dumps(summary, indent=1))


def build(args):
    """(Rounds, Trainer) of a run of DPO rounds; None after --validate_data_only."""
    from ..engine.ds_config import load_ds_config
    from ..inference.candidates import read_prompts
    from ..inference.preview import live_engine
    from ..loss.preference import PreferenceConfig
    from ..models.loading import load_audio_tokenizer, load_text_tokenizer
    from ..models.unwrap import base_higgs_model
    from .builders import build_data_and_model, build_engine, build_trainer, setup_run
    from .dpo import dpo_objective, reference_kind

    config, pref = from_args(RoundsConfig, args), from_args(PreferenceConfig, args)
    config.weights()  # a bad --round_weights fails before anything loads
    args.auto_prepare = False  # prompts are read as ChatML (their target clips give the target durations)
    setup = setup_run(args)
    if setup is None:
        return None
    check_rounds(args, args.finetune, reference_kind(pref, args.finetune),
                 load_ds_config(setup.ds_path, total_steps=2, warmup_steps=1, **setup.ds_kwargs)[0])
    model, prompts_set, _ = build_data_and_model(args, setup)
    total = config.rounds * config.steps_per_round
    engine, scheduler, lr = build_engine(args, setup, model, total)
    objective = dpo_objective(engine, pref, {}, setup.eval_cfg.batch_size)
    state = RoundState()
    objective = dataclasses.replace(objective, extras=[state])
    t = build_trainer(args, setup, engine, scheduler, lr, _PromptLoader(prompts_set), None, total, objective)
    paths = setup.paths
    r = Rounds(config, args, setup, load_text_tokenizer(paths.tokenizer_path),
               load_audio_tokenizer(paths.audio_tokenizer_path), live_engine(base_higgs_model(engine), paths),
               read_prompts(setup.data_cfg.train_data), read_prompts(setup.data_cfg.val_data), state,
               os.path.join(args.output_dir, "rounds"))
    return r, t


class _PromptLoader:
    """Stands for the loader until the first round's pairs exist (the run summary reads its dataset)."""

    def __init__(self, dataset):
        self.dataset = dataset


def run(args):
    """Build the run and train its rounds; the exit code."""
    built = build(args)
    return 0 if built is None else run_rounds(*built)
