#!/usr/bin/env bash
# Races `laplace-lora bench` against the PyTorch reference (reference.py) on this machine, one after
# the other (never at the same time), and prints the ratios ours / PyTorch.
#
#   benches/reference/setup.sh          # once: the reference's virtual environment
#   benches/reference/compare.sh        # [--repeats N --laplace-repeats N --kfac-examples N --test-examples N]
#
# Arguments are passed to both sides unchanged; REFERENCE_ARGS (e.g. "--attn eager") go to the
# reference only. Builds the release binary only if it is missing.
# Writes results/rust.json and results/pytorch.json (ignored by git) and results/compare-<UTC>.md
# (a small markdown table, meant to be committed), and copies that to results/latest.md.
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

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load average before: $(load)" >&2
load_before="$(load)"

echo "== laplace-lora bench" >&2
"$bin" bench --json "$out/rust.json" "$@"
load_mid="$(load)"
echo "== PyTorch reference (load average $load_mid)" >&2
# shellcheck disable=SC2086
"$py" "$here/reference.py" --json "$out/pytorch.json" "$@" ${REFERENCE_ARGS:-}
load_after="$(load)"

stamp="$(date -u +%Y%m%d-%H%M%S)"
report="$out/compare-$stamp.md"
LOADS="$load_before | $load_mid | $load_after" "$py" - "$out/rust.json" "$out/pytorch.json" "$report" <<'PY'
import json, os, platform, sys

rust = json.load(open(sys.argv[1]))
torch = json.load(open(sys.argv[2]))
path = sys.argv[3]

def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"

mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
# key, unit, format, target (ratio ours / PyTorch, or absolute for the prior recompute)
rows = [
    ("lora_step_s", "s", "{:.3f}", ("ratio", 0.7)),
    ("kfac_per_example_s", "s", "{:.3f}", ("ratio", 0.7)),
    ("kfac_decompose_s", "s", "{:.3f}", None),
    ("predictive_per_example_s", "s", "{:.3f}", ("ratio", 0.7)),
    ("prior_recompute_ms", "ms", "{:.2f}", ("abs", 16.0)),
    ("peak_rss_mib", "MiB", "{:.0f}", ("ratio", 1.0)),
    ("peak_rss_laplace_mib", "MiB", "{:.0f}", None),
]

def fmt(f, v):
    return "-" if v is None else f.format(v)

lines = []
lines.append(f"# laplace-lora bench against PyTorch, {rust['date'][:10]}")
lines.append("")
lines.append(f"- machine: {cpu_name()}, {os.cpu_count()} cores, {mem_gib:.0f} GiB; load average (1/5/15 min) before | between | after: {os.environ.get('LOADS', '?')}")
lines.append(f"- ours: {rust['implementation']}, {rust['threads']} threads; reference: {torch['implementation']}, {torch['threads']} threads, {torch.get('attention')} attention, laplace-torch backend {torch.get('laplace_backend')} ({torch.get('curvature')})")
lines.append(
    f"- shapes: batch {rust['batch']} x {rust['seq_len']} tokens, K = {rust['k']}, LoRA r = {rust['rank']} alpha {rust['alpha']:g} on "
    f"{', '.join(rust['targets'])} ({rust['lora_params']} parameters); KFAC over {rust['kfac_examples']} examples, predictive over "
    f"{rust['predictive_examples']}; medians of {rust['repeats']} steps / {rust['laplace_repeats']} Laplace repeats after a warm-up"
)
lines.append("")
lines.append("| key | ours | PyTorch | ours / PyTorch | target |")
lines.append("|---|---|---|---|---|")
for key, unit, f, target in rows:
    a, b = rust.get(key), torch.get(key)
    ratio = a / b if (a is not None and b not in (None, 0)) else None
    if target is None:
        t = ""
    elif target[0] == "ratio":
        ok = ratio is not None and ratio <= target[1]
        t = f"<= {target[1]:g} ({'met' if ok else 'not met'})"
    else:
        ok = a is not None and a < target[1]
        t = f"< {target[1]:g} {unit} ({'met' if ok else 'not met'})"
    lines.append(f"| {key} ({unit}) | {fmt(f, a)} | {fmt(f, b)} | {fmt('{:.2f}', ratio)} | {t} |")
text = "\n".join(lines) + "\n"
open(path, "w").write(text)
print(text)
PY
cp "$report" "$out/latest.md"
echo "wrote $report" >&2
