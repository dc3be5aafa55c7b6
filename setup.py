"""higgs_ds package. Install the pinned stack with scripts/setup_venv.sh (CPU) or requirements/gpu.txt (GPU)."""
from setuptools import find_packages, setup

# Runtime requirements, pinned to the verified stack. boson-multimodal is installed with --no-deps by the
# setup script (its metadata pins boto3, ruff, torchvision); it is listed in the extras for documentation.
CORE = [
    "torch==2.13.0", "deepspeed==0.19.8", "transformers==4.46.3", "tokenizers==0.20.3", "peft==0.17.1",
    "huggingface_hub==0.36.2", "safetensors==0.8.0", "librosa==0.11.0", "soundfile==0.14.0",
    "tensorboard==2.21.0", "tqdm==4.70.1", "numpy==2.4.6",
]
setup(
    name="higgs_ds",
    version="0.1.0",
    description="LoRA fine-tuning of Higgs Audio v2 for zero-shot voice cloning on DeepSpeed",
    packages=find_packages(include=["higgs_ds", "higgs_ds.*"]),
    python_requires=">=3.10",
    install_requires=[],  # see requirements/*.txt: installed without the resolver on purpose
    extras_require={"cpu": CORE + ["boson_multimodal==0.1.1"], "gpu": CORE + ["boson_multimodal==0.1.1"]},
    entry_points={"console_scripts": ["higgs-ds=higgs_ds.cli:main"]},
)
