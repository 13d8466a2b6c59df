#!/usr/bin/env bash
# Races `laplace-lora bench` against the PyTorch reference (reference.py) on this machine, one run
# after another (never at the same time), at every shape of the matrix, and writes one report:
# per shape (tokens x batch), each phase's time for
#   ours f32 | ours bf16 (CPUs with AVX512_BF16) | ours forced to AVX2 | PyTorch | PyTorch forced to AVX2
# the ratios ours / PyTorch (f32, bf16 and AVX2 against PyTorch's AVX2) and each side's multiple of
# its arithmetic floor (the phase's FLOPs / that side's measured GEMM rate on the same rows).
#
#   benches/reference/setup.sh          # once: the reference's virtual environment
#   benches/reference/compare.sh        # the whole matrix (about 45 minutes on a quiet 2-core Zen 5)
#   SHAPES="64x4" VARIANTS="f32 torch" benches/reference/compare.sh   # a part of it
#
# SHAPES: "TOKENSxBATCH" items (default "64x4 64x8 256x4 256x8"). VARIANTS: any of
# "f32 bf16 avx2 torch torch-avx2" (default all; bf16 is skipped where the CPU lacks AVX512_BF16).
# PyTorch is forced to AVX2 with ATEN_CPU_CAPABILITY=avx2 (its own kernels), MKL_ENABLE_INSTRUCTIONS=AVX2
# (its f32 GEMM) and ONEDNN_MAX_CPU_ISA=AVX2; ours with `bench --cpu avx2`.
# Arguments are passed to both sides unchanged (e.g. --kfac-examples 8); REFERENCE_ARGS (e.g.
# "--attn eager") go to the reference only. Repeats: 5 steps / 3 Laplace repeats at 64 tokens,
# 3 / 1 at 256 (REPEATS and LAPLACE_REPEATS override). Builds the release binary only if missing.
# Writes results/{rust,pytorch}-*.json (ignored by git) and results/compare-<UTC>.md (meant to be
# committed), and copies that to results/latest.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$root/target/release/laplace-lora"
py="$here/.venv/bin/python"
out="$here/results"
mkdir -p "$out"

if [ ! -x "$py" ]; then
    echo "no reference environment: run benches/reference/setup.sh first" >&2
    exit 1
fi
if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --release)
fi

shapes="${SHAPES:-64x4 64x8 256x4 256x8}"
variants="${VARIANTS:-f32 bf16 avx2 torch torch-avx2}"
has_bf16=0
grep -qw avx512_bf16 /proc/cpuinfo && has_bf16=1

load() { cut -d' ' -f1-3 /proc/loadavg; }
loads="$(load)"
stamp="$(date -u +%Y%m%d-%H%M%S)"
started=$(date +%s)
files=()
for shape in $shapes; do
    t="${shape%x*}"
    b="${shape#*x}"
    if [ "$t" -ge 256 ]; then rep="${REPEATS:-3}"; lrep="${LAPLACE_REPEATS:-1}"; else rep="${REPEATS:-5}"; lrep="${LAPLACE_REPEATS:-3}"; fi
    common=(--seq-len "$t" --batch "$b" --repeats "$rep" --laplace-repeats "$lrep")
    for v in $variants; do
        f="$out/run-$stamp-$t-$b-$v.json"
        echo "== $shape $v (load average $(load))" >&2
        # A variant that fails (PyTorch's KFAC runs out of memory at 256 x 8 on 24 GiB) is
        # recorded as failed in the report and the matrix goes on.
        set +e
        case "$v" in
            f32) "$bin" bench --dtype f32 "${common[@]}" --json "$f" "$@" ;;
            bf16)
                if [ "$has_bf16" = 0 ]; then echo "   (no AVX512_BF16 on this CPU: skipped)" >&2; continue; fi
                "$bin" bench --dtype bf16 "${common[@]}" --json "$f" "$@" ;;
            avx2) "$bin" bench --dtype f32 --cpu avx2 "${common[@]}" --json "$f" "$@" ;;
            # shellcheck disable=SC2086
            torch) "$py" "$here/reference.py" "${common[@]}" --json "$f" "$@" ${REFERENCE_ARGS:-} ;;
            # shellcheck disable=SC2086
            torch-avx2) ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 "$py" "$here/reference.py" "${common[@]}" --json "$f" "$@" ${REFERENCE_ARGS:-} ;;
            *) echo "unknown variant $v" >&2; exit 2 ;;
        esac
        rc=$?
        set -e
        if [ "$rc" != 0 ]; then
            why="exit $rc"
            [ "$rc" = 137 ] && why="killed (exit 137): out of memory at $(free -g | awk '/^Mem:/ {print $2}') GiB"
            echo "   $shape $v failed: $why" >&2
            printf '{"seq_len": %s, "batch": %s, "failed": "%s"}\n' "$t" "$b" "$why" > "$f"
        fi
        files+=("$v=$f")
    done
    loads="$loads | $(load)"
done
elapsed=$(( $(date +%s) - started ))

report="$out/compare-$stamp.md"
LOADS="$loads" ELAPSED="$elapsed" "$py" "$here/report.py" "$report" "${files[@]}"
cp "$report" "$out/latest.md"
echo "wrote $report ($elapsed s)" >&2
