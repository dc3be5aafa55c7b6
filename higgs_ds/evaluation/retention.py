"""Skills kept: prompts the base model handles without a reference voice (a scene description in the system turn,
plain text), generated with the base model (the baseline) and at every generation eval, so a fine-tune that
forgets what the base model could do shows as `retain/*` moving away from the baseline.

`--retention_prompts default` uses the built-in set below; a FILE is JSONL, one `{"text": STR, "scene": STR}` per
line (`scene` optional: the system turn's scene description).
"""
import json
import os

from ..errors import DataError

SCENE_SYSTEM = "Generate audio following instruction.\n\n<|scene_desc_start|>\n{scene}\n<|scene_desc_end|>"
DEFAULT = (
    ("Audio is recorded from a quiet room.", "The museum opens at nine, and the guided tour starts an hour later."),
    ("Audio is recorded from a quiet room.", "Could you tell me how to get to the train station from here?"),
    (None, "Numbers like twenty-five and dates like March third should be read naturally."),
)


def retention_prompt(text, scene=None, name="retain"):
    """An `EvalPrompt` without a reference clip: system (scene description or none), user text."""
    from boson_multimodal.data_types import ChatMLSample, Message

    from .prompts import EvalPrompt

    system = SCENE_SYSTEM.format(scene=scene) if scene else "Generate audio following instruction."
    prompt = ChatMLSample(messages=[Message(role="system", content=system), Message(role="user", content=text)])
    return EvalPrompt(prompt, None, text, "retain", name)


def retention_prompts(spec):
    """The prompts of `--retention_prompts` (None: off, `default`: built in, else a JSONL file)."""
    if not spec:
        return []
    if spec == "default":
        return [retention_prompt(t, s, f"retain{i}") for i, (s, t) in enumerate(DEFAULT)]
    if not os.path.isfile(spec):
        raise DataError(f"--retention_prompts {spec}: file not found", "missing_file", file=spec)
    out = []
    with open(spec) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{spec}:{n}: not valid JSON ({e.msg})", "json", spec, n) from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
                raise DataError(f"{spec}:{n}: expected {{\"text\": STR, \"scene\": STR (optional)}}", "schema", spec, n)
            out.append(retention_prompt(obj["text"], obj.get("scene"), f"retain{n}"))
    return out


def retain_drop(metrics, baseline):
    """How much of the base model's skill the run lost on the retention prompts (0 = none): the fall of DNSMOS OVRL
    (÷ 4, the width of its scale), plus the fall of the stop rate, plus the rise of WER, each counted when bad."""
    def worse(key, sign, scale=1.0):
        if baseline.get(key) is None or metrics.get(key) is None:
            return 0.0
        return max(0.0, sign * (metrics[key] - baseline[key]) / scale)

    return worse("dnsmos_ovrl", -1, 4.0) + worse("stopped", -1) + worse("wer", +1)
