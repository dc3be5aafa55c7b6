"""Constants of the Higgs Audio v2 data and model, defined once."""
import os

IGNORE_INDEX = -100  # label of a position that carries no loss (torch's cross_entropy default)
SAMPLE_RATE = 24000  # audio tokenizer input rate (Hz)
FRAMES_PER_SECOND = 25  # audio tokenizer frames per second of audio
SYSTEM_PROMPT = "Generate speech in the provided voice."  # system turn of a voice-cloning sample
OUTPUT_DIR = "outputs/run"  # train.py's default --output_dir (checkpoints, generation eval and the run write there)
PAIR_INDEX_KEY = "pair_index"  # batch key of a preference-pair batch: each pair's dataset index (not a model input)


def cache_root():
    """Root of everything higgs_ds caches: $HIGGS_DS_CACHE, else ~/.cache/higgs_ds."""
    return os.environ.get("HIGGS_DS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "higgs_ds")
