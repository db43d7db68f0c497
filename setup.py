from setuptools import find_packages, setup

setup(
    name="sslam-plugin",
    version="0.1.0",
    description="SSLAM and EAT audio self-supervised pre-training as an installable fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sslam_plugin", "sslam_plugin.*"]),
    python_requires=">=3.11",
    install_requires=[
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "numpy",
        "soundfile",
        "safetensors",
    ],
    extras_require={
        # fairseq-fixed must be installed after torch with --no-build-isolation;
        # the Makefile does that. Never depend on plain `fairseq`.
        "train": ["fairseq-fixed==0.12.3.1", "submitit", "matplotlib"],
        "test": ["pytest", "scikit-learn"],
    },
)
