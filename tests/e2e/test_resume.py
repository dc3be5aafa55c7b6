"""Kill-anywhere resume and resume on another world size: train.py runs killed and resumed equal an uninterrupted run."""
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch

from higgs_ds.engine.checkpoint import LATEST, STATE_FILE, complete_tags, find_resume_dir
from higgs_ds.faults import ENV
from tests.helpers import DEEPSPEED, PYTHON, ROOT, run_cmd

ARGS = ["--batch_size", "1", "--num_epochs", "2", "--max_steps", "6", "--learning_rate", "3e-3", "--no_progress",
        "--tensorboard_dir", "none", "--save_every", "1"]
LAUNCH = {1: [PYTHON, "higgs_ds/train.py", "--gradient_accumulation_steps", "2"],
          2: [DEEPSPEED, "--num_accelerators", "2", "--master_port", "29623", "higgs_ds/train.py"]}
# the 1-rank kill chain batches through the token-budget sampler (one ~200-token sample per batch): its resume
# state is covered too; the 2-rank one through DistributedSampler, as the universal-checkpoint test needs
BATCHING = {1: ["--max_tokens_per_batch", "256"], 2: []}
KEYS = ("loss/total", "loss/text", "loss/audio", "grad_norm", "lr", "epoch")


def _history(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return {h["step"]: {k: h[k] for k in KEYS} for h in json.load(f)["history"]}


@pytest.fixture(scope="module")
def data(small_data, small_dataset):  # the train file prepared once (small_dataset), reused by every run
    return ["--train_data", small_data[0]]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """reference(world) -> (output dir, history): the uninterrupted run, once per world size, shared by the tests
    below. It keeps every checkpoint (--keep_last 0)."""
    done = {}

    def get(world):
        if world not in done:
            out = str(tmp_path_factory.mktemp(f"reference{world}"))
            run_cmd(LAUNCH[world] + ARGS + BATCHING[world] + data + ["--output_dir", out, "--keep_last", "0"])
            done[world] = out, _history(out)
        return done[world]

    return get


def _killed(cmd, fault=None, after=None):
    """Run `cmd` until it dies: at the HIGGS_DS_FAULT point `fault`, or by SIGKILL of its whole process group (the
    launcher and every rank: a node failure) `after` seconds in. Returns (exit status, output)."""
    env = {**os.environ, **({ENV: fault} if fault else {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=after or 600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    finally:
        try:  # a rank the launcher did not reap
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out


def _resumed_from(out, ckpt, step):
    return f"resumed from {os.path.join(ckpt, f'step{step}')}: step {step}," in out


# (HIGGS_DS_FAULT of one run, the step the next run resumes from); the chain then gets a SIGKILL at a random time
# and a last run to the end
KILLS = {1: [("kill_mid_step@2", 1),  # backward of step 2's first micro-batch done, optimizer not stepped
             ("kill_mid_checkpoint@3", 2),  # step3.tmp/ holds the engine state only
             ("kill_before_latest@4", 3)],  # step4/ renamed into place, `latest` still names step3
         2: [("kill_mid_step@2#1", 1),  # rank 1 dies; rank 0 waits in a collective until the launcher ends it
             ("kill_mid_checkpoint@3#1", 2)]}  # rank 1 dies after its engine shard; rank 0 waits at the barrier


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_killed_anywhere_and_resumed_the_losses_are_the_uninterrupted_ones(reference, data, tmp_path,
                                                                          world):
    """One output dir, killed again and again (each run --resume auto), then run to the end: every step's losses,
    grad norm, lr and epoch equal the uninterrupted run's bit for bit (same world size, fp32, CPU: the data order,
    RNG, LR schedule and AdamW/ZeRO state all come back exactly)."""
    _, ref = reference(world)
    out = str(tmp_path / "run")
    ckpt = os.path.join(out, "checkpoints")
    cmd = LAUNCH[world] + ARGS + BATCHING[world] + data + ["--output_dir", out, "--resume", "auto"]
    prev, t0 = None, time.time()
    for fault, resume_step in KILLS[world]:
        code, log = _killed(cmd, fault=fault)
        if prev is None:
            first_kill = time.time() - t0  # start-up + 1.5 steps, on this machine, now
        assert code != 0 and "adapter written" not in log, (fault, log[-3000:])
        assert prev is None or _resumed_from(log, ckpt, prev), log[-3000:]
        assert find_resume_dir("auto", out) == os.path.join(ckpt, f"step{resume_step}"), (fault, os.listdir(ckpt))
        if fault.startswith("kill_mid_checkpoint"):
            partial = os.path.join(ckpt, f"step{resume_step + 1}.tmp")
            assert os.path.isdir(partial) and not os.path.exists(os.path.join(partial, STATE_FILE))
        if fault.startswith("kill_before_latest"):
            assert [s for s, _ in complete_tags(ckpt)][-1] == resume_step + 1  # complete, but not yet latest
        prev = resume_step
    # a SIGKILL of the launcher's process group at a seeded random time, from mid start-up to a few steps in (as
    # timed by the first killed run): wherever it lands (before the first step, mid-step, mid-checkpoint, after the
    # end), the next run must continue exactly
    delay = random.Random(world).uniform(0.7, 2.0) * first_kill
    code, log = _killed(cmd, after=delay)
    landed = [s for s in range(1, 7) if f"step {s}/6 |" in log]
    print(f"random SIGKILL after {delay:.1f}s (exit {code}); steps done in that run: {landed}")
    assert not landed or _resumed_from(log, ckpt, prev), log[-3000:]
    # where the last run must pick up: the tag `latest` names (read here, not through the package). Each logged step
    # s had saved step s-1 (save_every 1) and s itself may or may not have been saved and named before the kill; with
    # no step logged, the chain's resume point is still the latest
    expected = int(open(os.path.join(ckpt, LATEST)).read().strip()[len("step"):])
    assert expected == prev if not landed else expected in (max(landed) - 1, max(landed)), (expected, landed)
    proc = run_cmd(cmd + ["--keep_last", "2"])
    assert "starting fresh" not in proc.stdout and _resumed_from(proc.stdout, ckpt, expected), proc.stdout[-3000:]
    ran = [s for s in range(1, 7) if f"step {s}/6 |" in proc.stdout]
    assert ran == list(range(expected + 1, 7)), (expected, ran)  # only the steps after the resume point were run
    pruned = f"checkpoint {ckpt}" in proc.stdout  # --keep_last applies if this run saved (the random kill may come late)
    got = _history(out)
    assert sorted(got) == list(range(1, 7))  # history carried over through every checkpoint
    assert got == ref  # exactly: bit-identical floats at every step
    assert len({h["loss/total"] for h in got.values()}) == 6  # the comparison can tell the steps apart
    assert [h["epoch"] for h in got.values()] == [0, 0, 0, 0, 1, 1]
    tags = [s for s, _ in complete_tags(ckpt)]
    assert tags[-2:] == [5, 6] and (len(tags) == 2 or not pruned) and open(os.path.join(ckpt, LATEST)).read() == "step6"
    assert not [n for n in os.listdir(ckpt) if n.endswith(".tmp")]  # leftovers of the killed saves are gone
    last = os.path.join(ckpt, "step6")
    assert os.path.isfile(os.path.join(last, "adapter", "adapter_model.safetensors"))
    assert all(os.path.isfile(os.path.join(last, f"rng_rank{r}.json")) for r in range(world))
    with open(os.path.join(last, STATE_FILE)) as f:
        saved = json.load(f)
    assert (saved["step"], saved["epoch"], saved["batches_in_epoch"], saved["world_size"]) == (6, 1, 4 // world, world)


def _zero_state(tag_dir):
    """Flat fp32 weights and Adam moments of a ZeRO-2 tag, its ranks' partitions concatenated (no padding here:
    51,200 trainable parameters), and Adam's step."""
    files = sorted(glob.glob(os.path.join(tag_dir, "zero_pp_rank_*_mp_rank_00_optim_states.pt")))
    parts = [torch.load(f, weights_only=False)["optimizer_state_dict"] for f in files]
    states = [p["base_optimizer_state"]["state"][0] for p in parts]
    full = {"fp32": torch.cat([p["single_partition_of_fp32_groups"][0] for p in parts])}
    full.update({k: torch.cat([s[k] for s in states]) for k in ("exp_avg", "exp_avg_sq")})
    return full, {float(s["step"]) for s in states}


@pytest.mark.slow
def test_resume_on_another_world_size_through_the_universal_checkpoint(reference, data, tmp_path):
    """2-rank tag step3 (mid-epoch), resumed by 1 rank with accumulation 2 (the same global batch): rank 0 converts
    it with DeepSpeed's ds_to_universal, the engine loads it with checkpoint.load_universal, and the run continues
    on the 2-rank run's trajectory (same samples per step; only the order of fp32 additions differs, as in
    test_parallel: tolerance 1e-5 relative)."""
    ref_out, ref = reference(2)
    src = os.path.join(ref_out, "checkpoints", "step3")
    out = str(tmp_path / "one")
    tag = os.path.join(out, "checkpoints", "step3")
    shutil.copytree(src, tag)  # no `latest`: found by scanning
    proc = run_cmd(LAUNCH[1] + ARGS + data + ["--output_dir", out, "--resume", "auto",
                                                          "--stop_after_steps", "2"])
    assert "world size 2 -> 1: 6 samples into epoch 0 = 6 micro-batches per rank" in proc.stdout
    assert _resumed_from(proc.stdout, os.path.dirname(tag), 3) and "step 6/6" not in proc.stdout

    # what the engine loaded: DeepSpeed's per-parameter files equal the 2-rank shards, concatenated
    module = torch.load(os.path.join(src, "mp_rank_00_model_states.pt"), weights_only=False)
    names = [n for group in module["param_shapes"] for n in group]
    saved, _ = _zero_state(src)
    for key, file in (("fp32", "fp32.pt"), ("exp_avg", "exp_avg.pt"), ("exp_avg_sq", "exp_avg_sq.pt")):
        uni = torch.cat([torch.load(os.path.join(tag, "universal", "zero", n, file))["param"].flatten()
                         for n in names])
        assert torch.equal(uni, saved[key]), key

    # one step later, the 1-rank state (weights, both moments, Adam's step) is the 2-rank one up to fp32 rounding
    # (observed: max difference <= 0.12 ppm of each tensor's largest entry; the step itself moved them by >= 2%)
    one, one_steps = _zero_state(os.path.join(out, "checkpoints", "step4"))
    two, two_steps = _zero_state(os.path.join(ref_out, "checkpoints", "step4"))
    assert one_steps == two_steps == {4.0}
    for key in one:
        scale = two[key].abs().max().item()
        torch.testing.assert_close(one[key], two[key], rtol=1e-5, atol=1e-6 * scale, msg=key)
        assert (two[key] - saved[key]).abs().max() > 1e-2 * scale, key  # the comparison can tell the steps apart

    got = _history(out)
    assert sorted(got) == [1, 2, 3, 4, 5]
    for step in range(1, 6):
        for key in KEYS:
            assert got[step][key] == pytest.approx(ref[step][key], rel=1e-5), (step, key)
    with open(os.path.join(out, "checkpoints", "step5", STATE_FILE)) as f:
        assert json.load(f)["world_size"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_a_checksum_mismatch_in_the_newest_checkpoint_resumes_from_the_previous_one(reference, data, tmp_path,
                                                                                     world):
    """A finished run's newest tag (step6) with one byte of its engine state changed, size kept (complete by its
    sizes): --resume auto says which file fails its CRC-32, resumes from step5, and step 6 comes out as in the
    uninterrupted run. The CRC-32s are the ones the real save wrote (split between the ranks with 2) and the check at
    resume is split the same way."""
    ref_out, ref = reference(world)
    out = str(tmp_path / "run")
    shutil.copytree(ref_out, out)
    ckpt = os.path.join(out, "checkpoints")
    victim = os.path.join(ckpt, "step6", "mp_rank_00_model_states.pt")
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    assert [s for s, _ in complete_tags(ckpt)][-1] == 6
    proc = run_cmd(LAUNCH[world] + ARGS + BATCHING[world] + data + ["--output_dir", out, "--resume", "auto"])
    assert f"{victim} does not match the CRC-32 written at save time" in proc.stdout, proc.stdout[-3000:]
    assert f"resuming from {os.path.join(ckpt, 'step5')}" in proc.stdout and _resumed_from(proc.stdout, ckpt, 5)
    assert _history(out) == ref  # step 6 retrained from step 5: bit for bit the uninterrupted run's
    assert find_resume_dir("auto", out) == os.path.join(ckpt, "step6")  # saved again, intact
