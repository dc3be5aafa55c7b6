"""The weight average (engine/ema.py) on a small module: the fold by hand, the averaged weights swapped in and the
trained ones restored bit for bit, a saved and reloaded average continuing exactly, and the flag's range."""
import pytest
import torch


def _module():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    m[1].bias.requires_grad_(False)  # frozen: not averaged
    return m


def _step(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g))


def test_average_by_hand_swap_and_resume(tmp_path):
    from higgs_ds.engine.ema import WeightAverage

    m, decay = _module(), 0.7
    avg, hand, trained = WeightAverage(m, decay), None, None
    for s in range(3):
        _step(m, s)
        avg.update()
        w = {n: p.detach().double().clone() for n, p in m.named_parameters() if p.requires_grad}
        hand = w if hand is None else {n: decay * hand[n] + (1 - decay) * w[n] for n in w}
    assert set(avg.shadow) == set(hand) and "1.bias" not in avg.shadow
    for n in hand:
        torch.testing.assert_close(avg.shadow[n].double(), hand[n], rtol=1e-6, atol=1e-7)
    trained = {n: p.detach().clone() for n, p in m.named_parameters()}
    with avg.applied():
        for n, p in m.named_parameters():
            expect = hand[n].float() if n in hand else trained[n]
            torch.testing.assert_close(p.detach(), expect, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(p, trained[n]) for n, p in m.named_parameters())  # restored exactly
    avg.save_state(str(tmp_path), rank=0)
    again = WeightAverage(m, decay)
    again.load_state(str(tmp_path))
    _step(m, 9)
    avg.update()
    again.update()
    assert again.updates == avg.updates == 4
    assert all(torch.equal(avg.shadow[n], again.shadow[n]) for n in hand)


def test_ema_decay_flag_range(capsys):
    from higgs_ds.args import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["--ema_decay", "1.0"])
    assert e.value.code == 2 and "--ema_decay must be < 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--ema_decay", "-0.1"])
