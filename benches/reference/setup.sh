#!/usr/bin/env bash
# Creates benches/reference/.venv with the PyTorch reference the Rust bench is raced against:
# CPU PyTorch, transformers (loads the cached GGUF), peft, laplace-torch with its KFAC backend
# (curvlinops), gguf, psutil. Never run in CI. Re-running it is cheap once the venv exists.
#
# PyPI's Linux x86_64 torch wheel depends on the CUDA libraries; they are installed but unused
# (the reference runs on the CPU with 2 threads). Override the interpreter with PYTHON=...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install \
    torch \
    transformers \
    peft \
    "laplace-torch==0.3" \
    curvlinops-for-pytorch \
    gguf \
    accelerate \
    psutil
"$venv/bin/python" - <<'PY'
import torch, transformers, peft, laplace, curvlinops, gguf, psutil
from importlib.metadata import version
for name in ["torch", "transformers", "peft", "laplace-torch", "curvlinops-for-pytorch", "gguf", "psutil"]:
    print(f"{name:24s} {version(name)}")
PY
echo "ready: $venv"
