#!/usr/bin/env python3
"""Answer-logit parity of laplace-lora against Hugging Face transformers on the same GGUF.

    python3 benches/reference/parity.py MODEL.gguf [--data sample_data/compare4/test.jsonl ...]
            [--bin target/release/laplace-lora] [--max-items 12] [--json OUT]

For each dataset, runs `laplace-lora check-model MODEL --answer-logits DATA --json ...` (our token
ids and answer logits), then transformers on the same file (`from_pretrained(folder,
gguf_file=...)`, float32, eager attention) and its own GGUF tokenizer on the same prompt texts.
Prints, per dataset and overall: how many prompts tokenize differently, and the largest absolute
differences of the answer logits and of their softmax probabilities, both on our ids (the
model alone) and on transformers' ids (model and tokenizer). Needs torch, transformers, gguf
(benches/reference/setup.sh installs them). Exit status 1 when a logit differs by more than
--tol (default 1e-3).
"""
import argparse, json, subprocess, sys, tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ["sample_data/compare4/test.jsonl", "sample_data/yesno/test.jsonl", "sample_data/cloze2/test.jsonl"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--data", nargs="*", default=DEFAULT_DATA)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "laplace-lora"))
    ap.add_argument("--max-items", type=int, default=12)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--json", help="also write the per-item figures here")
    a = ap.parse_args()
    gguf = Path(a.gguf).resolve()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    rows, worst = [], {"ours_ids": 0.0, "hf_ids": 0.0, "prob_ours_ids": 0.0, "prob_hf_ids": 0.0}
    mismatched = 0
    for data in a.data:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "ours.json"
            subprocess.run([a.bin, "check-model", str(gguf), "--tokens", "1", "--answer-logits", str(ROOT / data),
                            "--json", str(out), "--max-items", str(a.max_items)], check=True, stdout=subprocess.DEVNULL)
            ours = json.loads(out.read_text())
        for it in ours["items"]:
            hf_ids = tok(it["prompt"])["input_ids"]
            same = hf_ids == it["ids"]
            mismatched += not same
            ans = it["answer_ids"]
            with torch.no_grad():
                on_ours = model(torch.tensor([it["ids"]])).logits[0, -1, ans]
                on_hf = on_ours if same else model(torch.tensor([hf_ids])).logits[0, -1, ans]
            mine = torch.tensor(it["answer_logits"], dtype=torch.float32)
            r = {
                "id": it["id"], "same_ids": same,
                "ours_ids": (on_ours - mine).abs().max().item(),
                "hf_ids": (on_hf - mine).abs().max().item(),
                "prob_ours_ids": (on_ours.softmax(-1) - mine.softmax(-1)).abs().max().item(),
                "prob_hf_ids": (on_hf.softmax(-1) - mine.softmax(-1)).abs().max().item(),
            }
            for k in worst:
                worst[k] = max(worst[k], r[k])
            rows.append(r)
            print(f"{data:40s} {it['id']:24s} ids {'same' if same else 'DIFFER':6s} logits {r['ours_ids']:.2e} "
                  f"(transformers' ids {r['hf_ids']:.2e})", flush=True)
    print(f"\n{gguf.name}: {len(rows)} prompts, {mismatched} tokenized differently by transformers")
    print(f"  max |answer logit difference| on our ids {worst['ours_ids']:.2e}, on transformers' ids {worst['hf_ids']:.2e}")
    print(f"  max |probability difference|  on our ids {worst['prob_ours_ids']:.2e}, on transformers' ids {worst['prob_hf_ids']:.2e}")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": str(gguf), "worst": worst, "mismatched": mismatched, "items": rows}, indent=1))
    return 0 if max(worst["ours_ids"], worst["hf_ids"]) <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
