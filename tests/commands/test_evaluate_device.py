"""`higgs-ds evaluate` runs where the model trains: the GPU in bf16 when there is one, else the CPU in fp32."""
import torch

from higgs_ds.commands.evaluate import placement


def test_evaluate_uses_the_gpu_in_bf16_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert placement() == (torch.device("cuda"), torch.bfloat16)
    assert placement("cuda:1", "float32") == (torch.device("cuda:1"), torch.float32)


def test_evaluate_stays_on_the_cpu_in_fp32_without_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement() == (torch.device("cpu"), torch.float32)
    assert placement(dtype="bfloat16") == (torch.device("cpu"), torch.bfloat16)
