"""Launch scripts parse, and what they reference exists."""
import glob
import os
import re
import subprocess

from tests.helpers import ROOT


def test_launch_scripts_parse_and_reference_existing_configs():
    scripts = sorted(glob.glob(os.path.join(ROOT, "launch", "*")))
    assert {os.path.basename(s) for s in scripts} >= {"single_node.sh", "multi_node.sh", "slurm.sbatch"}
    for script in scripts:
        subprocess.run(["bash", "-n", script], check=True)
        with open(script) as f:
            text = f.read()
        assert "higgs_ds/train.py" in text
        for cfg in re.findall(r"ds_configs/[\w.]+\.json", text):
            assert os.path.isfile(os.path.join(ROOT, cfg)), (script, cfg)


def test_hostfile_format():
    with open(os.path.join(ROOT, "hostfile")) as f:
        lines = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
    assert lines == [["node1", "slots=8"], ["node2", "slots=8"]]
