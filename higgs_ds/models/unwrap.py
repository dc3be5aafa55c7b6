"""Find the `HiggsAudioModel` inside the wrappers training puts around it (DeepSpeed engine, peft)."""


def base_higgs_model(model):
    """The `HiggsAudioModel` under DeepSpeed (`.module`) and peft (`get_base_model()`) wrappers."""
    seen = 0
    while "audio_decoder_proj" not in getattr(model, "_modules", {}):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        else:
            raise TypeError(f"no HiggsAudioModel (with audio_decoder_proj) found inside {type(model).__name__}")
        seen += 1
        if seen > 8:
            raise TypeError("wrapper nesting too deep while looking for HiggsAudioModel")
    return model
