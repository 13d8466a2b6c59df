#!/usr/bin/env python3
"""Writes a GGUF of Llama-2-7B's shapes with random weights in Q4_K blocks (norms in F32), and a
word-level tokenizer.json beside it, for measuring `laplace-lora bench --model FILE --dtype keep`
(frozen weights kept in blocks) on a machine where the f32 weights (27 GB) would not fit.

    python3 scripts/make-7b-shape-gguf.py /tmp/llama2-7b-shape/model.gguf [--layers 32]

Llama-2-7B's config.json: hidden 4096, FFN 11008, 32 layers, 32 heads (no grouped KV), vocabulary
32000, RMS eps 1e-5, rope base 10000, context 4096, untied LM head. Q4_K blocks (llama.cpp's
format, 144 bytes for 256 values): f16 scale d, f16 minimum dmin, 12 bytes of 6-bit sub-block
scales and minima, 128 bytes of 4-bit values; value = d * sc * q - dmin * m. Random bytes are valid
blocks; d and dmin are set to 1e-5..3e-5 so that weights are O(0.01), as a trained model's.
The file is written streaming (about 3.9 GB; a few seconds a layer); never commit it.
Needs numpy only.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

QK_K = 256
Q4K_BYTES = 144
T_F32, T_Q4K = 0, 12
V_UINT32, V_FLOAT32, V_STRING = 4, 6, 8
ALIGN = 32


def s(x: str) -> bytes:
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key: str, vtype: int, value) -> bytes:
    out = s(key) + struct.pack("<I", vtype)
    if vtype == V_UINT32:
        out += struct.pack("<I", value)
    elif vtype == V_FLOAT32:
        out += struct.pack("<f", value)
    elif vtype == V_STRING:
        out += s(value)
    return out


def q4k_rows(rng, rows: int, cols: int) -> np.ndarray:
    nb = rows * cols // QK_K
    blocks = rng.integers(0, 256, size=(nb, Q4K_BYTES), dtype=np.uint8)
    d = rng.uniform(1e-5, 3e-5, size=(nb, 2)).astype(np.float16)  # d, dmin
    blocks[:, 0:4] = d.view(np.uint8).reshape(nb, 4)
    return blocks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    h, f, heads, vocab, layers = 4096, 11008, 32, 32000, a.layers
    tensors = [("token_embd.weight", (vocab, h), T_Q4K), ("output_norm.weight", (h,), T_F32), ("output.weight", (vocab, h), T_Q4K)]
    for i in range(layers):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", (h,), T_F32),
            (p + "attn_q.weight", (h, h), T_Q4K),
            (p + "attn_k.weight", (h, h), T_Q4K),
            (p + "attn_v.weight", (h, h), T_Q4K),
            (p + "attn_output.weight", (h, h), T_Q4K),
            (p + "ffn_norm.weight", (h,), T_F32),
            (p + "ffn_gate.weight", (f, h), T_Q4K),
            (p + "ffn_up.weight", (f, h), T_Q4K),
            (p + "ffn_down.weight", (h, f), T_Q4K),
        ]

    def nbytes(shape, t):
        n = int(np.prod(shape))
        return n * 4 if t == T_F32 else n // QK_K * Q4K_BYTES

    meta = [
        kv("general.architecture", V_STRING, "llama"),
        kv("general.name", V_STRING, "llama-2-7b-shape-random-q4k"),
        kv("llama.block_count", V_UINT32, layers),
        kv("llama.context_length", V_UINT32, 4096),
        kv("llama.embedding_length", V_UINT32, h),
        kv("llama.feed_forward_length", V_UINT32, f),
        kv("llama.attention.head_count", V_UINT32, heads),
        kv("llama.attention.head_count_kv", V_UINT32, heads),
        kv("llama.attention.layer_norm_rms_epsilon", V_FLOAT32, 1e-5),
        kv("llama.rope.freq_base", V_FLOAT32, 10000.0),
    ]
    infos, offset = [], 0
    for name, shape, t in tensors:
        dims = list(reversed(shape))  # GGUF lists ne0 (the row length) first
        infos.append(s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", t, offset))
        offset += -(-nbytes(shape, t) // ALIGN) * ALIGN
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    with open(out, "wb") as fh:
        fh.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
        for m in meta:
            fh.write(m)
        for i in infos:
            fh.write(i)
        fh.write(b"\0" * (-fh.tell() % ALIGN))
        for k, (name, shape, t) in enumerate(tensors):
            if t == T_F32:
                data = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32).tobytes()
            else:
                data = q4k_rows(rng, *shape).tobytes()
            fh.write(data)
            fh.write(b"\0" * (-len(data) % ALIGN))
            if k % 9 == 2:
                print(f"  {name} ({fh.tell() / 2**30:.2f} GiB)", file=sys.stderr, flush=True)
    # A word-level tokenizer of the vocabulary's size (the bench feeds token ids, never text).
    vocab_map = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab_map.update({f"w{i}": i for i in range(3, vocab)})
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "<unk>"},
    }
    (out.parent / "tokenizer.json").write_text(json.dumps(tok))
    print(f"wrote {out} ({out.stat().st_size / 2**30:.2f} GiB) and {out.parent / 'tokenizer.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
