"""The canonical voice-cloning sample (five-message ChatML), built in one place for synthetic data, manifests and
generation prompts."""
from ..constants import SYSTEM_PROMPT


def voice_cloning_sample(ref_audio, ref_text, target_audio, target_text, speaker=None):
    """The five-message ChatML form that trains the target audio only (start_index 4)."""
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": ref_text},
            {"role": "assistant", "content": {"type": "audio", "audio_url": ref_audio}},
            {"role": "user", "content": target_text},
            {"role": "assistant", "content": {"type": "audio", "audio_url": target_audio}},
        ],
        "start_index": 4,
        "speaker": speaker,
    }
