#!/usr/bin/env bash
# Runs on a GPU machine from the repository root, with dev/ from scripts/build-cuda.sh (the device
# tool: command "bash scripts/device-bench.sh", carry ["dev"], timeout ~500 s): our bench on the
# GPU, the PyTorch reference on the same GPU (the ratio the issue asks for), and our bench on the
# machine's CPU. The model is the synthetic one
# (the default model's shapes, random weights: the GPU machine has no network and takes 64 MiB of
# files, less than the model). Results go to $OUT (the device tool brings that folder back) or ./dev-out.
set -euo pipefail
out="${OUT:-dev-out}"
mkdir -p "$out"
# The CUDA 13 libraries the binary needs (cuBLAS, cuRAND, the runtime) come with the machine's
# PyTorch as nvidia-* wheels; the driver's libcuda is on the loader's path already.
libs="$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for pat in ("nvidia/cu13/lib", "nvidia/*/lib"):
        for d in glob.glob(os.path.join(sp, pat)):
            dirs.add(d)
print(":".join(sorted(dirs)))
PY
)"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
bin=/tmp/laplace-lora-cuda
xz -dc dev/laplace-lora.xz >"$bin"
chmod +x "$bin"
ldd "$bin" | grep -E "cuda|cublas|curand" | tee "$out/ldd.txt"
"$bin" bench --synthetic --device cuda --json "$out/cuda.json" 2>&1 | tee "$out/cuda.log" || true
# The reference: the machine's PyTorch, peft and transformers; laplace-torch and friends from dev/wheels.
python3 -m pip install --quiet --no-deps --no-index --target /tmp/refpkgs dev/wheels/*.whl
PYTHONPATH=/tmp/refpkgs python3 benches/reference/reference.py --synthetic --device cuda \
    --json "$out/pytorch-cuda.json" 2>&1 | tail -40 >"$out/pytorch-cuda.log" || true
"$bin" bench --synthetic --device cpu --repeats 3 --laplace-repeats 1 --json "$out/cpu.json" 2>/dev/null || true
