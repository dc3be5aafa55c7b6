"""Preference pairs of real speech (espeak-ng): the prompt's reference clip and the chosen clip are one voice, the
rejected clip is another voice saying the same text. Both directions of each voice pair appear, so a model that
ignores the reference prefers the chosen clip in exactly half the pairs."""
import json
import os

from higgs_ds.data.samples import voice_cloning_sample
from tests.evaluation.espeak import synth

VOICES = ("us_m3", "gb_f3")
TRAIN_SENTENCES = ["The cat sat on the mat.", "Open the window, please.", "It is cold outside today.",
                   "She reads a book at night.", "We walked along the river.", "The train leaves at noon.",
                   "He plays the old piano.", "Bring me a cup of tea."]
HELD_OUT = ["The dog runs in the park.", "My phone is on the desk.", "They sing a happy song.",
            "Close the door behind you."]


def _pairs(root, clips, sentences, ref_sentence):
    rows = []
    for s in sentences:
        for voice in VOICES:
            other = next(v for v in VOICES if v != voice)
            sample = voice_cloning_sample(clips[voice, ref_sentence], ref_sentence, clips[voice, s], s, voice)
            rows.append({**sample, "rejected": {"type": "audio", "audio_url": clips[other, s]}})
    return rows


def write_pairs(root):
    """(train pairs path, held-out pairs path): held-out sentences are in no training pair."""
    os.makedirs(root, exist_ok=True)
    clips = {(v, s): synth(os.path.join(root, f"{v}_{i}.wav"), s, v)
             for v in VOICES for i, s in enumerate(TRAIN_SENTENCES + HELD_OUT)}
    paths = []
    for name, sentences, ref in (("train", TRAIN_SENTENCES[1:], TRAIN_SENTENCES[0]),
                                 ("heldout", HELD_OUT, TRAIN_SENTENCES[0])):
        path = os.path.join(root, f"{name}_pairs.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in _pairs(root, clips, sentences, ref))
        paths.append(path)
    return paths
