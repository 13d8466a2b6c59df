#!/usr/bin/env python3
"""The report of compare.sh: one markdown table per shape from the runs' JSON files.

    report.py OUT.md VARIANT=FILE.json ...

VARIANT is f32, bf16, avx2 (ours) or torch, torch-avx2 (PyTorch). The FLOPs of each phase come from
our bench's JSON (src/bench/floor.rs counts them); each side's floor is those FLOPs over its own
measured GEMM rate of the frozen products on the same rows (ours: the rate of the storage it ran,
the bf16 kernels' for bf16), and "x floor" is the measured time over that floor.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections import defaultdict

OURS = ["f32", "bf16", "avx2"]
THEIRS = ["torch", "torch-avx2"]
NAMES = {"f32": "ours f32", "bf16": "ours bf16", "avx2": "ours AVX2", "torch": "PyTorch", "torch-avx2": "PyTorch AVX2"}
# key, unit, format, FLOPs key, target of ours / PyTorch
ROWS = [
    ("lora_step_s", "s", "{:.3f}", "step", 0.7),
    ("kfac_per_example_s", "s", "{:.3f}", "kfac_per_example", 0.7),
    ("kfac_decompose_s", "s", "{:.3f}", None, None),
    ("predictive_per_example_s", "s", "{:.3f}", "predictive_per_example", 0.7),
    ("prior_recompute_ms", "ms", "{:.2f}", None, None),
    ("peak_rss_mib", "MiB", "{:.0f}", None, 1.0),
    ("peak_rss_laplace_mib", "MiB", "{:.0f}", None, None),
]


def cpu_name() -> str:
    try:
        fields = {}
        for line in open("/proc/cpuinfo"):
            if ":" in line:
                k, v = line.split(":", 1)
                fields.setdefault(k.strip(), v.strip())
        return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    except OSError:
        return platform.processor() or "unknown CPU"


def fmt(f, v):
    return "-" if v is None else f.format(v)


def main() -> int:
    out = sys.argv[1]
    runs = defaultdict(dict)  # (seq_len, batch) -> variant -> json
    for arg in sys.argv[2:]:
        variant, path = arg.split("=", 1)
        d = json.load(open(path))
        runs[(d["seq_len"], d["batch"])][variant] = d
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    # A failed variant ({"failed": why}) is named under its shape and left out of the tables.
    failed = defaultdict(dict)
    for key in list(runs):
        for v in list(runs[key]):
            if "failed" in runs[key][v]:
                failed[key][v] = runs[key].pop(v)["failed"]
    any_run = next(d for by in runs.values() for d in by.values())
    lines = [f"# laplace-lora bench against PyTorch, {any_run['date'][:10]}", ""]
    lines.append(f"- machine: {cpu_name()}, {os.cpu_count()} cores, {mem_gib:.0f} GiB; load average (1/5/15 min) before and after each shape: {os.environ.get('LOADS', '?')}; {os.environ.get('ELAPSED', '?')} s in all")
    impl = {}
    for by_variant in runs.values():
        for v, d in by_variant.items():
            impl.setdefault("ours" if v in OURS else "theirs", d)
    if "ours" in impl:
        d = impl["ours"]
        lines.append(f"- ours: {d['implementation']}, {d['threads']} threads; {d.get('cpu', '')}")
    if "theirs" in impl:
        d = impl["theirs"]
        lines.append(f"- reference: {d['implementation']}, {d['threads']} threads, {d.get('attention')} attention, laplace-torch backend {d.get('laplace_backend')} ({d.get('curvature')})")
    lines.append("- K = 4, LoRA r = 8 alpha 16 on q_proj, v_proj; KFAC and predictive over 8 examples each; medians after a warm-up. \"x floor\": time / (the phase's FLOPs / that run's GEMM rate of the frozen products on the same rows)")
    for (t, b) in sorted(runs):
        by = runs[(t, b)]
        flops = next((by[v]["flops"] for v in OURS if v in by), None)
        lines += ["", f"## {t} tokens x batch {b}", ""]
        rates = []
        for v in OURS + THEIRS:
            if v in by:
                d = by[v]
                r = d.get("floor_gflops", d.get("gemm_f32_gflops"))
                extra = f" ({d.get('frozen_dtype')}, {d.get('f32_path')})" if v in OURS else f" (capability {d.get('cpu_capability')})"
                rates.append(f"{NAMES[v]} {fmt('{:.0f}', r)} GFLOP/s{extra}")
                ck = d.get("check_logits_rel")
                if ck is not None:
                    rates[-1] += f", logits/gradients vs f32 {ck:.1e}/{d.get('check_grads_rel'):.1e}"
        lines.append("GEMM rate of the frozen products: " + "; ".join(rates))
        for v, why in failed.get((t, b), {}).items():
            lines.append(f"{NAMES[v]}: {why}")
        if flops:
            lines.append(f"FLOPs: step {flops['step'] / 1e9:.1f} G, KFAC {flops['kfac_per_example'] / 1e9:.1f} G an example, predictive {flops['predictive_per_example'] / 1e9:.1f} G an example")
        lines.append("")
        cols = [v for v in OURS + THEIRS if v in by]
        ratio_cols = [(a, bb) for a, bb in [("f32", "torch"), ("bf16", "torch"), ("avx2", "torch-avx2")] if a in by and bb in by]
        head = ["key"] + [NAMES[v] for v in cols] + [f"{NAMES[a]} / {NAMES[bb]}" for a, bb in ratio_cols] + ["target"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for key, unit, f, fkey, target in ROWS:
            cells = [f"{key} ({unit})"]
            for v in cols:
                val = by[v].get(key)
                cell = fmt(f, val)
                if fkey and flops and val is not None:
                    rate = by[v].get("floor_gflops", by[v].get("gemm_f32_gflops"))
                    if rate:
                        cell += f" ({val / (flops[fkey] / (rate * 1e9)):.2f}x floor)"
                cells.append(cell)
            verdicts = []
            for a, bb in ratio_cols:
                x, y = by[a].get(key), by[bb].get(key)
                r = x / y if (x is not None and y) else None
                cells.append(fmt("{:.2f}", r))
                if target is not None and r is not None:
                    verdicts.append(f"{a} {'met' if r <= target else 'not met'}")
            cells.append(f"<= {target:g} ({', '.join(verdicts)})" if target is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    tmp = out + ".tmp"
    open(tmp, "w").write(text)
    os.replace(tmp, out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
