"""The audio tokenizer in two layouts: boson's `HiggsAudioTokenizer` (model.pth, weight-normed convs) and
transformers' `HiggsAudioV2TokenizerModel` (model.safetensors, plain convs), after transformers'
`convert_higgs_audio_v2_tokenizer_to_hf.py`. Keys map one to one; weight norm is merged going native
(`w = g·v/‖v‖`, norm over dims 1..n) and split coming back (`v = w`, `g = ‖w‖`), so the round trip holds to float
rounding. Block indices depend on the number of down/up-sampling ratios (5 in the release).
"""
import re

import torch

from ..errors import FormatError
from .audio_tokenizer import BOSON_WIDTHS, WIDTHS_KEY

RES = ("snake1", "conv1", "snake2", "conv2")  # the four layers of a residual unit
SEMANTIC_UNWRAP = ((r"\.conv\.conv\.", ".conv."), (r"\.conv1\.conv\.", ".conv1."), (r"\.conv2\.conv\.", ".conv2."))
FLAT = (("quantizer.vq.layers.", "quantizer.quantizers."), ("._codebook.", ".codebook."), ("fc_prior.", "fc."),
        ("fc_post1.", "fc1."), ("fc_post2.", "fc2."))


# boson's DAC encoder / decoder blocks -> the native names: (boson prefix, native module, residual units' block
# indices and the shift to res_unit numbers, the two other layers of a block -> their native names)
_ACOUSTIC = ((r"encoder\.block", "acoustic_encoder", "012", 1, {"3": "snake1", "4": "conv1"}),
             (r"decoder_2\.model", "acoustic_decoder", "234", -1, {"0": "snake1", "1": "conv_t1"}))


def _acoustic_to_native(key, n):
    """encoder.* / decoder_2.* -> acoustic_encoder.* / acoustic_decoder.*; `n`: number of ratios."""
    for prefix, native, res_blocks, shift, others in _ACOUSTIC:
        m = re.match(prefix + r"\.(\d+)\.(.*)", key)
        if not m:
            continue
        i, rest = int(m[1]), m[2]
        if i in (0, n + 1, n + 2):
            return f"{native}.{ {0: 'conv1', n + 1: 'snake1', n + 2: 'conv2'}[i]}.{rest}"
        r = re.match(rf"block\.([{res_blocks}])\.block\.([0123])\.(.*)", rest)
        if r:
            return f"{native}.block.{i - 1}.res_unit{int(r[1]) + shift}.{RES[int(r[2])]}.{r[3]}"
        r = re.match(rf"block\.([{''.join(others)}])\.(.*)", rest)
        return f"{native}.block.{i - 1}.{others[r[1]]}.{r[2]}" if r else None
    return None


def key_to_native(key, n_ratios):
    """A boson key (weight_g/weight_v already merged to .weight) -> its native key."""
    if key.startswith("semantic_model."):
        return key
    native = _acoustic_to_native(key, n_ratios)
    if native is not None:
        return native
    for old, new in FLAT:
        key = key.replace(old, new)
    for pattern, repl in SEMANTIC_UNWRAP:
        key = re.sub(pattern, repl, key)
    return key


def merge_weight_norm(sd):
    """{..weight_g, ..weight_v} -> ..weight = g·v/‖v‖ (norm over every dim but 0, as torch's weight_norm dim=0)."""
    out = {}
    for key, value in sd.items():
        if key.endswith(".weight_g"):
            base = key[: -len("_g")]
            v = sd[base + "_v"]
            out[base] = value * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
        elif not key.endswith(".weight_v"):
            out[key] = value
    return out


def state_dict_to_native(sd, n_ratios):
    merged = merge_weight_norm(sd)
    return {key_to_native(k, n_ratios): v for k, v in merged.items()}


def state_dict_to_boson(native_sd, boson_keys, n_ratios):
    """Invert `state_dict_to_native` over `boson_keys` (a boson tokenizer's own state-dict keys): a native conv
    weight whose boson key was weight-normed becomes `weight_v = w`, `weight_g = ‖w‖`."""
    normed = {k[: -len("_g")] for k in boson_keys if k.endswith(".weight_g")}
    plain = [k for k in boson_keys if not k.endswith((".weight_g", ".weight_v"))] + sorted(normed)
    out = {}
    for key in plain:
        native = key_to_native(key, n_ratios)
        if native not in native_sd:
            raise FormatError(f"native audio tokenizer lacks {native} (boson {key})")
        w = native_sd[native]
        if key in normed:
            out[key + "_v"] = w.clone()
            out[key + "_g"] = w.norm(dim=tuple(range(1, w.dim())), keepdim=True)
        else:
            out[key] = w
    return out


def bandwidth_for(n_q, sample_rate, ratios, bins):
    """The native `target_bandwidths[-1]` (kbps) that makes it use `n_q` quantizers, as boson always does."""
    frame_rate = -(-sample_rate // int(torch.tensor(ratios).prod()))
    return n_q * frame_rate * (int(bins) - 1).bit_length() / 1000


def config_to_native(boson, teacher_config):
    """boson tokenizer config.json + its semantic teacher's config.json -> native config.json."""
    if boson.get("downsample_mode", "step_down") != "step_down" or boson.get("vq_scale", 1) != 1 or \
            not isinstance(boson.get("bins", 1024), int):
        raise FormatError("audio tokenizer config: only the released layout (step_down, vq_scale 1, RVQ) converts")
    ratios, widths = list(boson["ratios"]), {**BOSON_WIDTHS, **boson.get(WIDTHS_KEY, {})}
    if teacher_config["hidden_size"] != widths["semantic_hidden_size"]:
        raise FormatError(f"audio tokenizer: semantic teacher hidden_size {teacher_config['hidden_size']} != "
                          f"semantic width {widths['semantic_hidden_size']}")
    return {"model_type": "higgs_audio_v2_tokenizer", "architectures": ["HiggsAudioV2TokenizerModel"],
            "acoustic_model_config": {"model_type": "dac", "encoder_hidden_size": widths["encoder_hidden_size"],
                                      "downsampling_ratios": ratios, "decoder_hidden_size": widths["decoder_hidden_size"],
                                      "upsampling_ratios": ratios, "hidden_size": boson["D"],
                                      "sampling_rate": boson["sample_rate"]},
            "semantic_model_config": teacher_config, "codebook_size": boson["bins"],
            "codebook_dim": boson["codebook_dim"], "sample_rate": boson["sample_rate"],
            "semantic_sample_rate": boson.get("semantic_sample_rate") or 16000,
            "target_bandwidths": [bandwidth_for(boson["n_q"], boson["sample_rate"], ratios, boson["bins"])]}


def config_to_boson(native, n_q):
    """native config.json -> (boson config.json, semantic teacher config.json); `n_q`: quantizer layers held."""
    acoustic = native["acoustic_model_config"]
    widths = {"encoder_hidden_size": acoustic.get("encoder_hidden_size", BOSON_WIDTHS["encoder_hidden_size"]),
              "decoder_hidden_size": acoustic.get("decoder_hidden_size", BOSON_WIDTHS["decoder_hidden_size"]),
              "semantic_hidden_size": native["semantic_model_config"]["hidden_size"]}
    boson = {"D": acoustic["hidden_size"], "ratios": list(acoustic["downsampling_ratios"]),
             "sample_rate": native.get("sample_rate", 24000), "bins": native.get("codebook_size", 1024), "n_q": n_q,
             "codebook_dim": native.get("codebook_dim", 64), "semantic_techer": "hubert_base_general",
             "semantic_sample_rate": native.get("semantic_sample_rate", 16000), "downsample_mode": "step_down",
             "vq_scale": 1, "last_layer_semantic": True}
    if widths != BOSON_WIDTHS:  # widths boson-multimodal hard-codes otherwise (models/audio_tokenizer.py)
        boson[WIDTHS_KEY] = widths
    return boson, dict(native["semantic_model_config"])
