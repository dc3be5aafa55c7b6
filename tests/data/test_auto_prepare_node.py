"""--auto_prepare on a node with several ranks: they share the shards (each encodes its own on its own device) and
rank 0 writes the index; the result equals one process preparing everything, and the tokenizers are released."""
import json
import os
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import json, sys
from higgs_ds.data.auto_prepare import auto_prepare
from higgs_ds.data.validate import ValidationConfig
from higgs_ds.data import prepare_shard
out = auto_prepare(sys.argv[1], sys.argv[2], sys.argv[3], ValidationConfig(), int(sys.argv[4]), poll_s=0.1,
                   shard_size=2)
print(json.dumps({"out": out, "released": "audio_tokenizer" not in prepare_shard._STATE}))
"""


def _rank(rank, world, train, tiny_assets, cache):
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
           "LOCAL_WORLD_SIZE": str(world), "HIGGS_DS_CACHE": cache, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, train, tiny_assets.model_path,
                             tiny_assets.audio_tokenizer_path, str(rank)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_ranks_of_a_node_share_the_shards_and_match_one_process(tiny_assets, tmp_path):
    from higgs_ds.data.prepared import INDEX, PreparedDataset
    from higgs_ds.data.synthetic import create_sample_data

    train, _ = create_sample_data(str(tmp_path / "d"), num_samples=9, seed=3, min_seconds=0.2, max_seconds=0.3)
    shared = [_rank(r, 2, train, tiny_assets, str(tmp_path / "shared")) for r in (0, 1)]
    results = [_finish(p) for p in shared]
    alone = _finish(_rank(0, 1, train, tiny_assets, str(tmp_path / "alone")))
    out = results[0]["out"]
    assert results[1]["out"] == out and all(r["released"] for r in results + [alone])
    with open(os.path.join(out, INDEX)) as f:
        shards = [s["name"] for s in json.load(f)["shards"]]
    ranks = {}
    for k, name in enumerate(shards):
        with open(os.path.join(out, name + ".json")) as f:
            ranks[k] = json.load(f)["rank"]
    assert len(shards) == 4 and ranks == {k: k % 2 for k in range(4)}  # shard k by rank k mod 2
    a, b = PreparedDataset(out), PreparedDataset(alone["out"])
    assert len(a) == len(b) == 8
    for i in range(len(a)):
        assert all(a.row(i, c) == b.row(i, c) for c in ("input_ids", "label_ids", "audio_codes", "sample_id"))
