"""K sampled candidates per voice-cloning prompt through the serve engine: the material of preference pairs
(`higgs-ds sample`, docs/PREFERENCE.md).

Candidate k of prompt i is generated with the seed `candidate_seed(seed, i, k)`, so it is the same clip on any
number of ranks and after any restart. Each rank takes the prompts whose index is its rank modulo the world size.
A candidate is done when its row file exists: its wav is written first (atomically), then its row (atomically), so
a rerun skips every finished candidate and regenerates none; a kill costs at most the candidate being generated.
"""
import dataclasses
import json
import logging
import os
import time

import numpy as np

from ..durable import write_atomic
from ..faults import fault
from .candidates import CANDIDATES, check_settings, merge_candidates, read_prompts, row_path, wav_name
from .generate import clone

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SamplingConfig:
    """How candidates are drawn (the serve engine's sampling settings); `num_samples` is K per prompt."""
    num_samples: int = 4
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 50
    max_new_tokens: int = 1024


def candidate_seed(seed, prompt_index, k):
    """The generation seed of candidate `k` of prompt `prompt_index`: a function of the three numbers only."""
    return int(np.random.SeedSequence([seed, prompt_index, k]).generate_state(1)[0])


def generate_candidate(engine, prompt, k, config, output_dir):
    """Generate one candidate (audio forced), write its wav atomically; returns its row (without writing it). A
    generation without decodable audio gives a row with `"audio": None, "no_audio": True`."""
    import soundfile as sf

    seed = candidate_seed(config.seed, prompt.index, k)
    row = {**prompt.request(), "k": k, "seed": seed}
    try:
        resp = clone(engine, prompt.ref_audio, prompt.ref_text, prompt.text, config.temperature, config.top_k,
                     config.top_p, seed, config.max_new_tokens, force_audio_gen=True)
    except RuntimeError as e:  # the audio tokenizer refuses a clip of a few frames
        if "Kernel size can't be greater than actual input size" not in str(e):
            raise
        resp = None
    if resp is None or resp.audio is None or len(resp.audio) == 0:
        log.warning("%s: candidate %d produced no audio", prompt.where, k)
        return {"audio": None, **row, "no_audio": True}
    wav = np.clip(np.asarray(resp.audio, dtype=np.float32), -1, 1)
    name = wav_name(prompt.index, k)
    os.makedirs(os.path.join(output_dir, "wavs"), exist_ok=True)
    write_atomic(os.path.join(output_dir, name), lambda f: sf.write(f, wav, resp.sampling_rate, format="WAV"))
    eos = engine.model.config.audio_stream_eos_id
    return {"audio": name, **row, "duration_s": len(wav) / resp.sampling_rate,
            "stopped": bool((np.asarray(resp.generated_audio_tokens) == eos).any())}


def sample_candidates(engine, prompts, config, output_dir, rank=0, world=1, progress=False):
    """Generate this rank's missing candidates of `prompts` (`CandidatePrompt`s, inference/candidates.py) with an
    already built serve engine (`generate.load_engine`, or `preview.live_engine` around a live model); each one's
    wav and row land in `output_dir`. Returns {"generated", "skipped", "no_audio"} for this rank."""
    from tqdm import tqdm

    mine = [(p, k) for p in prompts if p.index % world == rank for k in range(config.num_samples)]
    todo = [(p, k) for p, k in mine if not os.path.isfile(row_path(output_dir, p.index, k))]
    os.makedirs(os.path.join(output_dir, "rows"), exist_ok=True)
    counts = {"generated": 0, "skipped": len(mine) - len(todo), "no_audio": 0}
    with tqdm(total=len(mine), initial=counts["skipped"], desc="candidates", disable=not progress) as bar:
        for n, (p, k) in enumerate(todo, start=1):
            row = generate_candidate(engine, p, k, config, output_dir)
            write_atomic(row_path(output_dir, p.index, k), json.dumps(row))
            counts["generated"] += 1
            counts["no_audio"] += bool(row.get("no_audio"))
            bar.update()
            fault("kill_mid_sample", n, rank)  # after the n-th candidate of this run is recorded
    return counts


def wait_for_merge(output_dir, prompts, num_samples, poll_s=2.0):
    """Merge `candidates.jsonl` as soon as every rank's rows exist (rank 0 waits for the others)."""
    waited = 0.0
    while (counts := merge_candidates(output_dir, prompts, num_samples)) is None:
        if waited % 60 < poll_s:
            log.info("waiting for the other ranks' candidates (%.0f s so far)", waited)
        time.sleep(poll_s)
        waited += poll_s
    return counts


def run_sampling(prompts_path, output_dir, config, load_engine, settings=None, rank=0, world=1):
    """`higgs-ds sample`: read and check the prompts (before any model loads), refuse an output dir sampled with
    other settings, generate this rank's share with `load_engine()`'s engine, and (rank 0) merge
    `output_dir/candidates.jsonl`. Returns the merged counts on rank 0, this rank's counts elsewhere."""
    prompts = read_prompts(prompts_path)
    check_settings(output_dir, {"prompts": os.path.abspath(prompts_path), **(settings or {}),
                                **{k: v for k, v in dataclasses.asdict(config).items() if k != "num_samples"}})
    counts = sample_candidates(load_engine(), prompts, config, output_dir, rank, world, progress=rank == 0)
    log.info("rank %d: %d candidates generated, %d already there, %d without audio", rank, counts["generated"],
             counts["skipped"], counts["no_audio"])
    if rank != 0:
        return counts
    merged = wait_for_merge(output_dir, prompts, config.num_samples)
    log.info("%s: %d candidates of %d prompts (%d without audio, left out)", os.path.join(output_dir, CANDIDATES),
             merged["candidates"], len(prompts), merged["no_audio"])
    return merged
