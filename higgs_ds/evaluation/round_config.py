"""The settings of on-policy DPO rounds (`train.py --stage dpo --rounds R`; recipes/rounds.py, docs/PREFERENCE.md)."""
import dataclasses

from ..config import option
from ..errors import ConfigError

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
    round_weights: str = option("duration=1,stop=1", "reward weights (evaluation/reward.py terms, an unnamed term "
                                "weighs 0; the default: stopping on time); rounds score without models: only "
                                "duration and stop may be non-zero")
    round_min_gap: float = option(0.0, "a prompt gives no pair when its best and worst rewards differ by less",
                                  minimum=0)

    def weights(self):
        from .reward import WEIGHTS, parse_weights

        weights = parse_weights(self.round_weights, base=dict.fromkeys(WEIGHTS, 0.0), flag="--round_weights")
        needs_model = [k for k, v in weights.items() if v and k not in SCORE_FREE]
        if needs_model:
            raise ConfigError(f"--round_weights: {', '.join(needs_model)} need scoring models, which rounds do not run "
                              f"yet; use {' and '.join(SCORE_FREE)} (score with `higgs-ds score` and train on "
                              "`higgs-ds pairs` files instead)")
        return weights
