"""A training run with a bad data file under the deepspeed launcher on 2 CPU ranks: the message is printed once
(rank 0), every rank exits, the launcher exits non-zero, and nothing hangs (docs/ERRORS.md)."""
import json
import os
import subprocess
import time

import pytest

from tests.helpers import DEEPSPEED, ROOT

pytestmark = pytest.mark.slow


def test_bad_data_under_the_launcher(small_data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    with open(small_data[0]) as f:
        good = [json.loads(line) for line in f]
    for row in good:  # absolute audio paths: the file lives elsewhere
        for m in row["messages"]:
            if isinstance(m["content"], dict):
                m["content"]["audio_url"] = os.path.join(os.path.dirname(small_data[0]), m["content"]["audio_url"])
    bad.write_text("\n".join(json.dumps(r) for r in good[:3]) + "\n{not json\n")
    cmd = [DEEPSPEED, "--num_accelerators", "2", "--master_port", "29531", "higgs_ds/train.py",
           "--deepspeed", "ds_configs/cpu_zero2.json", "--train_data", str(bad), "--output_dir", str(tmp_path / "out"),
           "--no_progress"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "DS_ACCELERATOR": "cpu"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode != 0, out[-3000:]
    assert out.count(f"{bad}:4: malformed JSON") == 1, out[-3000:]  # printed once, by rank 0
    assert "Traceback" not in out, out[-3000:]
    assert time.time() - t0 < 180
    assert not os.path.exists(tmp_path / "out" / "adapter")
