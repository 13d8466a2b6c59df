#!/usr/bin/env python3
"""PyTorch reference for `laplace-lora bench`: the same phases, shapes and token ids.

Run it with the interpreter of the virtual environment that setup.sh creates:

    benches/reference/.venv/bin/python benches/reference/reference.py [--json FILE] [--device cuda] [--synthetic]
        [--seq-len T] [--batch B]

Shapes and inputs (as in src/bench/mod.rs):
- example i: T token ids (--seq-len, default 64), token t = (i * 7919 + t * 104729) % vocab, label i % 4, K = 4 answer
  tokens 330..333 whose logits are read at the last position (f(x) in R^4);
- LoRA (peft): r = 8, alpha = 16, dropout 0, on q_proj and v_proj of every block;
- lora_step_s: forward to the answer logits, mean cross-entropy, backward, AdamW (lr 1e-4), on
  examples 0..B as one batch of B x T (--batch, default 4), adapters as peft initialises them (A random, B = 0);
- kfac_per_example_s: laplace-torch `Laplace(model, 'classification', subset_of_weights='all',
  hessian_structure='kron')` over the LoRA parameters only (everything else requires_grad=False),
  default backend CurvlinopsGGN (curvlinops KFAC, fisher_type type-2 = exact GGN, kfac_approx
  'expand'), `fit` over training examples 0..N in batches of B: (fit time - the eigendecomposition
  that ends it) / N; kfac_decompose_s: that eigendecomposition (`Kron.decompose`, timed inside `fit`);
- predictive_per_example_s: `la(x, pred_type='glm', link_approx='probit')` over test examples
  1000..1000+M in batches of B (torch.func Jacobians of the 4 answer logits w.r.t. every LoRA
  parameter, the Kronecker functional variance, probit), per example;
- the Laplace phases use deterministic adapters: A[j, i] = ((n * 37 % 101) / 50 - 1) / sqrt(d_in)
  with n = j * d_in + i, B[o, j] = 0.01 * ((n * 53 % 97) / 48 - 1) with n = o * 8 + j;
- peak_rss_mib: VmHWM of the LoRA step phase, reset (/proc/self/clear_refs) after the model is
  loaded; peak_rss_laplace_mib: the same for the two Laplace phases;
- prior_recompute_ms: null (laplace-torch has no cache that recomputes the predictive at a new
  prior precision without the Jacobians);
- gemm_f32_gflops: torch's f32 matmul rate on the frozen products of one block (x W^T and dy W for
  every projection shape, B x T rows; best of 3 timings of >= 0.3 s), as `laplace-lora bench`
  measures its own: compare.sh divides each phase's FLOPs (counted by the Rust bench) by it for
  PyTorch's floor. `ATEN_CPU_CAPABILITY=avx2` in the environment forces PyTorch's AVX2 kernels.

The model is the cached GGUF of SmolLM2-135M-Instruct (transformers dequantises it; it also undoes
llama.cpp's q/k permutation), or a Hugging Face folder given with --model.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

SEQ_LEN = 64
BATCH = 4
K = 4
RANK = 8
ALPHA = 16
TEST_OFFSET = 1000
ANSWER_IDS = [330 + i for i in range(K)]


def default_gguf() -> Path:
    root = os.environ.get("LAPLACE_LORA_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "laplace-lora"
    return base / "models" / "smollm2-135m-instruct" / "smollm2-135m-instruct.gguf"


def synthetic_ids(i: int, vocab: int, seq_len: int = SEQ_LEN) -> list[int]:
    return [(i * 7919 + t * 104729) % vocab for t in range(seq_len)]


def gemm_rate(torch, cfg, rows: int, device) -> float:
    """GFLOP/s of y = x W^T and dx = dy W over one block's projection shapes (as the Rust bench)."""
    h, f = cfg.hidden_size, cfg.intermediate_size
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    qd, kvd = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    shapes = [(qd, h), (kvd, h), (kvd, h), (h, qd), (f, h), (f, h), (h, f)]
    work = []
    for d_out, d_in in shapes:
        w = torch.randn(d_out, d_in, device=device) * 0.02
        work.append((w, torch.randn(rows, d_in, device=device), torch.randn(rows, d_out, device=device), 2.0 * rows * d_in * d_out))

    def once():
        flop = 0.0
        with torch.no_grad():
            for w, x, dy, fl in work:
                x @ w.T
                dy @ w
                flop += 2 * fl
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return flop

    once()
    best = 0.0
    for _ in range(3):
        t0, flop = time.perf_counter(), 0.0
        while time.perf_counter() - t0 < 0.3:
            flop += once()
        best = max(best, flop / (time.perf_counter() - t0) / 1e9)
    return best


def peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def median(v):
    return statistics.median(v) if v else float("nan")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a .gguf file or a Hugging Face model folder (default: the cached GGUF)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed LoRA steps after one warm-up")
    ap.add_argument("--laplace-repeats", type=int, default=3, help="timed Laplace repeats after one warm-up (0 skips)")
    ap.add_argument("--kfac-examples", type=int, default=8)
    ap.add_argument("--test-examples", type=int, default=8)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="transformers' attention implementation")
    ap.add_argument("--json", default=None, help="also write the figures as JSON to this file")
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    ap.add_argument("--seq-len", type=int, default=SEQ_LEN, help="tokens per example")
    ap.add_argument("--batch", type=int, default=BATCH, help="examples per batch (every phase)")
    ap.add_argument(
        "--synthetic",
        action="store_true",
        help="random weights with the default model's shapes instead of --model (as `laplace-lora bench --synthetic`)",
    )
    ap.add_argument(
        "--synthetic-config",
        default=None,
        help="random weights with the shapes of this Hugging Face config.json (as `laplace-lora bench --synthetic-config`)",
    )
    args = ap.parse_args()

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if args.synthetic_config:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig.from_json_file(args.synthetic_config)
        cfg._attn_implementation = args.attn
        src = f"synthetic ({args.synthetic_config} shapes, random weights)"
        base = LlamaForCausalLM(cfg).to(torch.float32)
    elif args.synthetic:
        from transformers import LlamaConfig, LlamaForCausalLM

        # SmolLM2-135M-Instruct's config.json (as SMOLLM2_135M_CONFIG in src/bench.rs).
        cfg = LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5, rope_theta=100000.0,
            max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        )
        cfg._attn_implementation = args.attn
        src = "synthetic (SmolLM2-135M-Instruct shapes, random weights)"
        base = LlamaForCausalLM(cfg).to(torch.float32)
    else:
        src = Path(args.model) if args.model else default_gguf()
        if src.is_dir():
            base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation=args.attn)
        else:
            if not src.is_file():
                log(f"error: no model at {src} (run `laplace-lora fetch-model` first, or pass --model or --synthetic)")
                return 1
            base = AutoModelForCausalLM.from_pretrained(
                src.parent, gguf_file=src.name, dtype=torch.float32, attn_implementation=args.attn
            )
    device = torch.device(args.device)
    base.to(device)

    def sync():
        # CUDA queues kernels: wait for them before reading the clock.
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    base.eval()
    base.config.use_cache = False
    vocab = base.config.vocab_size
    log(f"model {src} (vocab {vocab}, {sum(p.numel() for p in base.parameters()) / 1e6:.1f}M parameters)")

    lcfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none")
    peft_model = get_peft_model(base, lcfg)
    lora_params = [p for p in peft_model.parameters() if p.requires_grad]
    n_lora = sum(p.numel() for p in lora_params)

    class AnswerLogits(nn.Module):
        """(B, T) token ids -> (B, K) answer logits at the last position (only K rows of the head)."""

        def __init__(self, causal_lm):
            super().__init__()
            self.body = causal_lm.model  # LlamaModel, with peft's LoRA layers inside
            head = causal_lm.lm_head.weight[ANSWER_IDS].detach().clone()
            self.register_buffer("head", head)

        def forward(self, input_ids):
            h = self.body(input_ids=input_ids, use_cache=False).last_hidden_state[:, -1]
            return h @ self.head.T

    model = AnswerLogits(peft_model.base_model.model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == n_lora

    rate = gemm_rate(torch, base.config, args.batch * args.seq_len, device)
    log(f"frozen products on {args.batch * args.seq_len} rows: {rate:.1f} GFLOP/s (cpu capability {torch.backends.cpu.get_cpu_capability()})")

    def batch_of(indices):
        ids = torch.tensor([synthetic_ids(i, vocab, args.seq_len) for i in indices], dtype=torch.long, device=device)
        labels = torch.tensor([i % K for i in indices], dtype=torch.long, device=device)
        return ids, labels

    have_reset = reset_peak_rss()
    if not have_reset:
        log("  (cannot reset the peak RSS: peak_rss_mib includes loading the model)")

    # 1. LoRA step.
    ids, labels = batch_of(range(args.batch))
    opt = torch.optim.AdamW(lora_params, lr=1e-4, weight_decay=0.0)
    model.train()
    steps = []
    for rep in range(args.repeats + 1):
        sync()
        t0 = time.perf_counter()
        logits = model(ids)
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t0
        log(f"  lora step {rep} {dt:.3f} s{' (warm-up)' if rep == 0 else ''}")
        if rep > 0:
            steps.append(dt)
    peak_step = peak_rss_mib()
    del opt
    for p in lora_params:
        p.grad = None
    model.eval()

    # 2./3. KFAC fit and GLM predictive.
    kfac, dec, pred = [], [], []
    peak_laplace = float("nan")
    backend_name = None
    if args.laplace_repeats > 0:
        try:
            import laplace  # noqa: F401
        except ImportError:
            log("  laplace-torch is not installed here: skipping the Laplace phases")
            args.laplace_repeats = 0
    if args.laplace_repeats > 0:
        from laplace import Laplace
        from laplace.utils.matrix import Kron
        from torch.utils.data import DataLoader, TensorDataset

        # Time the eigendecomposition that ends `fit` where it happens (Kron.decompose), so that
        # the curvature pass is the fit's time less that.
        decompose_s = [0.0]
        _decompose = Kron.decompose

        def timed_decompose(self, *a, **kw):
            sync()
            t = time.perf_counter()
            r = _decompose(self, *a, **kw)
            sync()
            decompose_s[0] += time.perf_counter() - t
            return r

        Kron.decompose = timed_decompose

        with torch.no_grad():
            for name, mod in peft_model.named_modules():
                if name.endswith("lora_A.default"):
                    r, d_in = mod.weight.shape
                    n = torch.arange(r * d_in, dtype=torch.long)
                    a = ((n * 37) % 101).to(torch.float32) / 50.0 - 1.0
                    mod.weight.copy_((a / math.sqrt(d_in)).reshape(r, d_in))
                elif name.endswith("lora_B.default"):
                    d_out, r = mod.weight.shape
                    n = torch.arange(d_out * r, dtype=torch.long)
                    b = 0.01 * (((n * 53) % 97).to(torch.float32) / 48.0 - 1.0)
                    mod.weight.copy_(b.reshape(d_out, r))
        train_ids, train_labels = batch_of(range(args.kfac_examples))
        loader = DataLoader(TensorDataset(train_ids, train_labels), batch_size=args.batch, shuffle=False)
        test_ids, _ = batch_of(range(TEST_OFFSET, TEST_OFFSET + args.test_examples))
        reset_peak_rss()
        for rep in range(args.laplace_repeats + 1):
            la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron", prior_precision=1.0)
            backend_name = type(la.backend).__name__
            decompose_s[0] = 0.0
            sync()
            t0 = time.perf_counter()
            la.fit(loader)
            sync()
            fit_s = time.perf_counter() - t0
            dec_s = decompose_s[0]
            t2 = time.perf_counter()
            probs = []
            for s in range(0, args.test_examples, args.batch):
                probs.append(la(test_ids[s : s + args.batch], pred_type="glm", link_approx="probit"))
            sync()
            pred_s = time.perf_counter() - t2
            assert torch.isfinite(torch.cat(probs)).all()
            kfac_s = max(fit_s - dec_s, 0.0)
            log(
                f"  laplace {rep} kfac {kfac_s:.2f} s ({kfac_s / args.kfac_examples:.3f} s/example), "
                f"decompose {dec_s:.2f} s, predictive {pred_s:.2f} s ({pred_s / args.test_examples:.3f} s/example)"
                f"{' (warm-up)' if rep == 0 else ''}"
            )
            if rep > 0:
                kfac.append(kfac_s / args.kfac_examples)
                dec.append(dec_s)
                pred.append(pred_s / args.test_examples)
            del la, probs
        peak_laplace = peak_rss_mib()

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

    report = {
        "lora_step_s": median(steps),
        "kfac_per_example_s": num(median(kfac)),
        "kfac_decompose_s": num(median(dec)),
        "predictive_per_example_s": num(median(pred)),
        "prior_recompute_ms": None,
        "peak_rss_mib": peak_step,
        "peak_rss_laplace_mib": num(peak_laplace),
        "threads": torch.get_num_threads(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "repeats": args.repeats,
        "laplace_repeats": args.laplace_repeats,
        "kfac_examples": args.kfac_examples,
        "predictive_examples": args.test_examples,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "gemm_f32_gflops": rate,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "k": K,
        "rank": RANK,
        "alpha": float(ALPHA),
        "targets": ["q_proj", "v_proj"],
        "lora_params": n_lora,
        "model": str(src),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "implementation": (
            f"PyTorch {torch.__version__} + transformers {transformers.__version__} + peft {version('peft')} + "
            f"laplace-torch {version('laplace-torch')} + curvlinops {version('curvlinops-for-pytorch')}"
        ),
        "laplace_backend": backend_name,
        "curvature": "KFAC, exact GGN (curvlinops fisher_type type-2), kfac_approx expand",
        "attention": args.attn,
        "python": platform.python_version(),
    }
    rows = [
        ("lora_step_s", "{:.3f}"),
        ("kfac_per_example_s", "{:.3f}"),
        ("kfac_decompose_s", "{:.3f}"),
        ("predictive_per_example_s", "{:.3f}"),
        ("prior_recompute_ms", "{:.2f}"),
        ("peak_rss_mib", "{:.0f}"),
        ("peak_rss_laplace_mib", "{:.0f}"),
        ("threads", "{}"),
    ]
    print(f"{'phase':<26} {'value':>12}")
    for key, fmt in rows:
        v = report[key]
        print(f"{key:<26} {('-' if v is None else fmt.format(v)):>12}")
    if args.json:
        p = Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
