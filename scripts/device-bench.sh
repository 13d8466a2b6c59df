#!/usr/bin/env bash
# Runs on a GPU machine from the repository root, with dev/ from scripts/build-cuda.sh (the device
# tool: command "bash scripts/device-bench.sh", carry ["dev"] (and [".gguf-carry"] for the end-to-end
# run below), timeout ~500 s): our bench on the
# GPU with the frozen weights in f32 and in bf16, the PyTorch reference on the same GPU (the ratio
# the issue asks for), and our bench on the machine's CPU. The model is the synthetic one (the
# default model's shapes, random weights: the GPU machine has no network and takes 64 MiB of
# files, less than the model). Each part has its own time limit, and a failing part does not stop
# the others. Results go to $OUT (the device tool brings that folder back) or ./dev-out: log.txt
# and one JSON report per part.
set -uo pipefail
out="${OUT:-dev-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
main() {
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
echo "== $(date -u +%FT%TZ) $(nproc) CPUs"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
bin=/tmp/laplace-lora-cuda
xz -dc dev/laplace-lora.xz >"$bin" && chmod +x "$bin"
if ldd "$bin" | grep -q "not found"; then
    # Fall back to any CUDA 13 library folder on the machine.
    for d in $(find / -xdev \( -name 'libcublas.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcudart.so.13*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u); do
        LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
    done
fi
ldd "$bin" | grep -E "cuda|cublas|curand|not found"

part() { # name seconds command...
    local name="$1" secs="$2"; shift 2
    echo "== $name (limit ${secs} s)"
    local t0=$SECONDS
    timeout "$secs" "$@"
    echo "== $name: exit $? after $((SECONDS - t0)) s"
}
# The model: the default model's shapes, or DEVICE_BENCH_CONFIG=benches/reference/configs/X.json
# (e.g. tinyllama-1.1b.json) with one Laplace repeat; the same shapes for ours and PyTorch.
if [ -n "${DEVICE_BENCH_CONFIG:-}" ]; then
    synth=(--synthetic-config "$DEVICE_BENCH_CONFIG" --laplace-repeats 1)
    tag="-$(basename "$DEVICE_BENCH_CONFIG" .json)"
else
    synth=(--synthetic)
    tag=""
fi
# LAPLACE_LORA_PROFILE=1: the phases print where their time goes (forward, backward, the rest).
part "ours, GPU, f32 weights" 110 env LAPLACE_LORA_PROFILE=1 "$bin" bench "${synth[@]}" --device cuda --dtype f32 \
    --json "$out/cuda-f32$tag.json"
if [ "${DEVICE_BENCH_PER_COLUMN:-0}" = 1 ]; then
    part "ours, GPU, f32, backward columns one pass each" 80 env LAPLACE_LORA_STACK_COLUMNS=0 LAPLACE_LORA_PROFILE=1 \
        "$bin" bench "${synth[@]}" --device cuda --dtype f32 --repeats 2 --json "$out/cuda-f32-percolumn$tag.json"
fi
part "ours, GPU, bf16 weights" 80 "$bin" bench "${synth[@]}" --device cuda --dtype bf16 --json "$out/cuda-bf16$tag.json"
# The reference: the machine's PyTorch, peft and transformers; laplace-torch and friends from dev/wheels.
python3 -m pip install --quiet --no-deps --no-index --target /tmp/refpkgs dev/wheels/*.whl
part "PyTorch, GPU, f32" 130 env PYTHONPATH=/tmp/refpkgs python3 benches/reference/reference.py \
    "${synth[@]}" --device cuda --json "$out/pytorch-cuda$tag.json"
# End to end on a real model: the yesno sample experiment (fine-tuning, Laplace, evaluation) with
# the first blocks of the default model (scripts/truncate-gguf.py; carry its folder too), on the
# GPU and on the CPU; their metrics should agree to float rounding.
for g in ${DEVICE_BENCH_E2E:-.gguf-carry/*.gguf}; do
    [ -f "$g" ] || continue
    for run in cuda-f32 cuda-bf16 cpu-f32; do
        sed -e "s#^source = .*#source = \"$g\"#" -e "s#^device = .*#device = \"${run%-*}\"\ndtype = \"${run#*-}\"#" \
            assets/configs/yesno.toml >"/tmp/e2e-$run.toml"
        part "yesno run on $(basename "$g"), $run" 120 "$bin" run "/tmp/e2e-$run.toml" --out "/tmp/e2e-$run" --force
        cp "/tmp/e2e-$run/metrics.json" "$out/e2e-$run-metrics.json" 2>/dev/null || true
    done
    break
done
if [ "${DEVICE_BENCH_CPU:-1}" = 1 ]; then
    part "ours, CPU ($(nproc) cores), f32" 40 "$bin" bench --synthetic --device cpu --repeats 3 --laplace-repeats 1 \
        --json "$out/cpu.json"
fi
}
main 2>&1 | tee "$out/log.txt"
