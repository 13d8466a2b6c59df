#!/usr/bin/env bash
# Builds `laplace-lora` with `--features cuda` on a machine without a GPU or a CUDA install, and
# puts it into dev/ (ignored by git), compressed, for a GPU machine to run.
#
#   scripts/build-cuda.sh              # compute capability 90 (H100/H200); CUDA_COMPUTE_CAP=80 etc.
#
# The CUDA 13.0 compiler comes as Python wheels (nvcc, nvvm, the runtime and C runtime headers,
# CCCL) fetched with `pip download` and unpacked into one toolkit tree under
# ${CUDA_TREE:-$HOME/.cache/laplace-lora/cuda-13.0}. The build uses its own target directory
# (${CUDA_TARGET_DIR:-target-cuda}) so the CPU build is not invalidated. candle compiles its CUDA
# kernels (PTX and a static library of quantised-matmul kernels) with that nvcc: ~20-40 minutes on 2
# cores the first time.
#
# Then, on the GPU machine (the `device` tool: carry ["dev"]):  bash scripts/device-bench.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree="${CUDA_TREE:-$HOME/.cache/laplace-lora/cuda-13.0}"
target="${CUDA_TARGET_DIR:-$root/target-cuda}"
cap="${CUDA_COMPUTE_CAP:-90}"

if [ ! -x "$tree/bin/nvcc" ] || [ ! -x "$tree/nvvm/bin/cicc" ]; then
    wheels="$(mktemp -d)"
    echo "fetching the CUDA 13.0 compiler wheels into $wheels" >&2
    pip download --no-deps --dest "$wheels" \
        nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 \
        nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 >&2
    mkdir -p "$tree"
    for w in "$wheels"/*.whl; do
        unzip -q -o "$w" -d "$wheels/x"
    done
    cp -r "$wheels/x/nvidia/cu13/." "$tree/"
    ln -sf libcudart.so.13 "$tree/lib/libcudart.so"
    rm -rf "$wheels"
fi
"$tree/bin/nvcc" --version | tail -1 >&2

export PATH="$tree/bin:$PATH" CUDA_ROOT="$tree" CUDA_PATH="$tree" CUDA_HOME="$tree"
export CUDA_COMPUTE_CAP="$cap" CARGO_TARGET_DIR="$target"

# candle links cuBLAS, cuRAND, NVRTC and the driver (libcuda) at build time, none of which is here
# (nor needed: the GPU machine has its own). Link against stubs that carry the right SONAMEs and
# export the symbols the binary uses, found by a first link that ignores unresolved symbols; at run
# time the loader finds the real libraries by SONAME.
stubs="$tree/stubs"
mkdir -p "$stubs"
stub() { # name soname-version symbol-regex
    grep -E "$3" "$stubs/symbols.txt" 2>/dev/null | sed 's/.*/void &(void) {}/' >"$stubs/$1.c" || true
    cc -shared -o "$stubs/lib$1.so" -Wl,-soname,"lib$1.so.$2" "$stubs/$1.c"
}
stubs_all() {
    stub cuda 1 '^cu[A-Z]'
    stub cublas 13 '^cublas[^L]'
    stub cublasLt 13 '^cublasLt'
    stub curand 10 '^curand'
    stub nvrtc 13 '^nvrtc'
}
export LIBRARY_PATH="$tree/lib:$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
: >"$stubs/symbols.txt"
stubs_all
cd "$root"
cargo rustc --release --features cuda --bin laplace-lora -- -C link-arg=-Wl,--unresolved-symbols=ignore-all
nm -D --undefined-only "$target/release/laplace-lora" | awk '{print $2}' | sed 's/@.*//' | sort -u >"$stubs/symbols.txt"
stubs_all
cargo rustc --release --features cuda --bin laplace-lora -- -C link-arg=-Wl,--no-undefined

# The binary is ~80 MB (candle's PTX kernels); stripped and xz-compressed it is ~12 MB, inside
# what the device tool carries (64 MiB).
mkdir -p "$root/dev"
strip -o "$root/dev/laplace-lora" "$target/release/laplace-lora"
xz -T0 -6 -f "$root/dev/laplace-lora"
readelf -d "$target/release/laplace-lora" | grep NEEDED >&2

# The PyTorch reference's Laplace packages, which the GPU machine's Python lacks (it has torch,
# transformers, peft and their other dependencies); pure-Python wheels, ~1 MB.
pip download --no-deps --dest "$root/dev/wheels" laplace-torch==0.3 curvlinops-for-pytorch==3.0.1 \
    asdfghjkl==0.1a4 backpack-for-pytorch==1.7.1 unfoldNd==0.2.3 einconv==0.1.0 >&2
du -sh "$root/dev" >&2
echo "dev/laplace-lora.xz is the CUDA build; run it on a GPU machine with scripts/device-bench.sh" >&2
