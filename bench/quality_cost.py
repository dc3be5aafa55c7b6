"""Cost of the prepare-time checks per clip on this CPU: the pair check's speaker embedding (resemblyzer), the
quality columns (decode at 16 kHz + silence/clipping measures) and DNSMOS, on espeak-ng speech, with the
projection to LibriTTS-R (585 h) when one process runs them (the pair check runs on rank 0 only).

    python bench/quality_cost.py [--clips 12] [--out bench/results/quality_cost_cpu.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBRITTS_R_HOURS = 585.0
VOICES = ("en-us", "en-us+f4", "en+whisper")
TEXT = ("The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate. "
        "Numbers like seven and eleven are often lucky, said the man at the station.")


def clips(out_dir, n):
    paths = []
    for i in range(n):
        path = os.path.join(out_dir, f"{i}.wav")
        subprocess.run(["espeak-ng", "-v", VOICES[i % len(VOICES)], "-s", str(150 + 5 * i), "-w", path, TEXT],
                       check=True)
        paths.append(path)
    return paths


def timed(fn, paths):
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--out")
    args = ap.parse_args()
    import torch

    from higgs_ds.data.audio import load_waveform
    from higgs_ds.data.quality import clip_quality
    from higgs_ds.evaluation.dnsmos import DnsmosScorer
    from higgs_ds.evaluation.speaker import file_embedder

    with tempfile.TemporaryDirectory() as d:
        paths = clips(d, args.clips)
        audio_s = sum(sf.info(p).duration for p in paths)
        embed, dnsmos = file_embedder(), DnsmosScorer()
        embed(paths[0]), dnsmos.score(load_waveform(paths[0], 16000))  # warm-up
        cost = {"pair_check_embed": timed(embed, paths),
                "quality_columns": timed(lambda p: clip_quality(load_waveform(p, 16000), 16000), paths),
                "dnsmos": timed(lambda p: dnsmos.score(load_waveform(p, 16000)), paths)}
    result = {"clips": len(paths), "audio_seconds": round(audio_s, 2), "torch_threads": torch.get_num_threads(),
              "load_average": os.getloadavg()[0]}
    for k, s in cost.items():
        rtf = s / audio_s
        result[k] = {"s_per_clip": round(s / len(paths), 4), "s_per_audio_s": round(rtf, 5),
                     "libritts_r_585h_one_process_h": round(rtf * LIBRITTS_R_HOURS, 2)}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
