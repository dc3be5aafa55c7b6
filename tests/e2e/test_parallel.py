"""On CPU: data parallelism is exact (2 ranks == 1 rank with the same global batch), and two "nodes"
started without ssh (DeepSpeed --no_ssh, one launcher per node rank, on localhost) form one job."""
import json
import os
import subprocess

import pytest
import torch

from higgs_ds.engine.checkpoint import STATE_FILE, complete_tags
from tests.helpers import DEEPSPEED, PYTHON, ROOT, run_cmd

pytestmark = pytest.mark.slow

COMMON = ["--deepspeed", "ds_configs/cpu_zero2.json", "--batch_size", "1", "--num_epochs", "3", "--max_steps", "8",
          "--learning_rate", "3e-3", "--no_progress", "--tensorboard_dir", "none"]


@pytest.fixture(scope="module")
def data(small_data, small_dataset):  # the train file prepared once (small_dataset), reused by every run
    return ["--train_data", small_data[0]]


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def _step_samples(n, world, accum, epoch, seed=42):
    """Sample indices of each optimizer step, as train.py's DistributedSampler(s) hand them out (batch 1)."""
    per_rank = []
    for r in range(world):
        s = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=True, seed=seed)
        s.set_epoch(epoch)
        per_rank.append(list(s))
    steps = len(per_rank[0]) // accum
    return [sorted(i for rank in per_rank for i in rank[k * accum:(k + 1) * accum]) for k in range(steps)]


def test_two_ranks_equal_one_rank_with_the_same_global_batch(data, tmp_path):
    """2 ranks x micro batch 1 (ZeRO-2, fp32) vs 1 process x micro batch 1 x accumulation 2, 8 optimizer steps.

    Same samples per step: DistributedSampler shuffles one permutation per epoch (seed + epoch) and gives rank r
    the items r, r + 2, ... of it, so step k of the 2-rank run sees permutation items 2k and 2k+1, which are the
    1-rank run's two micro-batches of step k (asserted below for all three epochs). Micro batch 1 in both means
    no padding difference either. With --loss_normalization global (default) each step's gradient is the exact
    mean over the step's labeled tokens in both runs, so only the order of fp32 additions differs (ZeRO-2's
    reduce-scatter average vs. local accumulation): observed <= 1.1e-7 relative on every key over the 8 AdamW
    steps at lr 3e-3; tolerance 1e-5 (100x margin; consecutive steps' losses must differ by > 1e-4).
    grad_norm (before clipping) is compared too: the norms here are ~6-9 with clipping at 1.0, so a 2x error in
    the rank/accumulation scaling of the gradient (ranks summing instead of averaging) leaves clipped AdamW's
    losses unchanged and is caught only by grad_norm; a rank that trained on its own gradient alone changes the
    losses too.
    """
    for epoch in range(3):
        assert _step_samples(8, 2, 1, epoch) == _step_samples(8, 1, 2, epoch)
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    run_cmd([DEEPSPEED, "--num_accelerators", "2", "--master_port", "29661", "higgs_ds/train.py", *COMMON, *data,
             "--output_dir", two], env={"DS_ACCELERATOR": "cpu"}, timeout=300)
    run_cmd([PYTHON, "higgs_ds/train.py", *COMMON, *data, "--gradient_accumulation_steps", "2", "--output_dir", one],
            timeout=300)
    m2, m1 = _metrics(two), _metrics(one)
    assert (m2["world_size"], m1["world_size"]) == (2, 1)
    h2, h1 = m2["history"], m1["history"]
    assert [h["step"] for h in h2] == [h["step"] for h in h1] == list(range(1, 9))
    assert [h["epoch"] for h in h1] == [0, 0, 0, 0, 1, 1, 1, 1]  # 4 steps per epoch in both: crosses an epoch
    for a, b in zip(h2, h1):
        for key in ("loss/total", "loss/text", "loss/audio", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key, a[key], b[key])
    losses = [h["loss/total"] for h in h1]
    assert losses[-1] < losses[0] - 0.1  # it trained: the trajectories being compared are not flat
    assert all(abs(x - y) > 1e-4 * abs(y) for x, y in zip(losses, losses[1:]))  # steps differ >> tolerance


def _hostfile(tmp_path):
    # --no_ssh never resolves or contacts these names: they only number the nodes (one slot = one rank each)
    path = tmp_path / "hostfile"
    path.write_text("node1 slots=1\nnode2 slots=1\n")
    return str(path)


def _two_nodes(cmds, env, timeout=300):
    """Start both node launchers at once; wait for both; return their outputs (failing on a non-zero exit)."""
    full_env = {**os.environ, **env}
    procs = [subprocess.Popen(c, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"node {i} exited {p.returncode}:\n{out[-6000:]}"
    return outs


def _check_two_node_run(out, outs):
    m = _metrics(out)
    assert m["world_size"] == 2
    assert [h["step"] for h in m["history"]] == [1, 2, 3, 4]
    tags = complete_tags(os.path.join(out, "checkpoints"))
    assert [s for s, _ in tags] == [2, 4]
    last = tags[-1][1]
    with open(os.path.join(last, STATE_FILE)) as f:
        assert json.load(f)["step"] == 4
    assert all(os.path.isfile(os.path.join(last, f"rng_rank{r}.json")) for r in range(2))  # written by both nodes
    assert os.path.isfile(os.path.join(last, "adapter", "adapter_model.safetensors"))
    assert os.path.isfile(os.path.join(out, "adapter", "adapter_model.safetensors"))
    assert "step 4/4" in outs[0] and "world 2" in outs[0]


TWO_NODE_ARGS = ["--batch_size", "1", "--max_steps", "4", "--save_every", "2",
                 "--learning_rate", "3e-3", "--no_progress", "--tensorboard_dir", "none"]


def test_two_nodes_without_ssh_on_localhost(data, tmp_path):
    """`deepspeed --hostfile H --no_ssh --node_rank N --master_addr 127.0.0.1`, once per node, concurrently."""
    hostfile, out = _hostfile(tmp_path), str(tmp_path / "out")
    args = data + TWO_NODE_ARGS
    cmds = [[DEEPSPEED, "--hostfile", hostfile, "--no_ssh", "--node_rank", str(n), "--master_addr", "127.0.0.1",
             "--master_port", "29641", "higgs_ds/train.py", "--deepspeed", "ds_configs/cpu_zero2.json", *args,
             "--output_dir", out] for n in (0, 1)]
    _check_two_node_run(out, _two_nodes(cmds, {"DS_ACCELERATOR": "cpu"}))


def test_two_nodes_without_ssh_through_multi_node_sh(data, tmp_path):
    """The same through launch/multi_node.sh (NO_SSH=1, NODE_RANK, MASTER_ADDR): the documented no-ssh recipe."""
    hostfile, out = _hostfile(tmp_path), str(tmp_path / "out")
    args = data + TWO_NODE_ARGS
    env = {"DS_ACCELERATOR": "cpu", "PATH": os.path.dirname(DEEPSPEED) + os.pathsep + os.environ.get("PATH", ""),
           "NO_SSH": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29651", "HOSTFILE": hostfile,
           "DS_CONFIG": "ds_configs/cpu_zero2.json"}
    script = os.path.join(ROOT, "launch", "multi_node.sh")
    cmds = [["env", f"NODE_RANK={n}", "bash", script, *args, "--output_dir", out] for n in (0, 1)]
    _check_two_node_run(out, _two_nodes(cmds, env))
