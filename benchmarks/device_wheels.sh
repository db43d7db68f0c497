#!/usr/bin/env bash
# Fetch, here, what the GPU checks need on a device machine that reaches no package registry and
# runs Python 3.12 with torch, numpy, scipy, scikit-learn, regex, sacrebleu, cython and setuptools
# already installed: fairseq-fixed's source (it builds its C++ parts there, about two minutes) and
# the wheels of the rest of the training stack, into .whl/ (about 13 MB; git ignores it).
# Then carry it:  device run, carry [".whl"], command "bash benchmarks/gpu_checks.sh"
set -euo pipefail
DEST=${DEST:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DEST"
grep -qx "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d "$DEST" cffi pycparser bitarray hydra-core==1.3.2 omegaconf==2.3.0 soundfile submitit
$PY -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w "$DEST"  # an sdist only on PyPI: build it here
$PY -m pip download -q --no-deps --no-build-isolation fairseq-fixed==0.12.3.1 -d "$DEST"
ls -la "$DEST"
