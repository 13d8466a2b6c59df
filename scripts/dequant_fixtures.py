#!/usr/bin/env python3
"""Writes tests/fixtures/dequant/blocks.gguf for tests/gguf_dequant.rs (run once; committed).

For every GGUF block type the loader accepts (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K,
Q6_K, F16, BF16) a 2 x 1024 tensor of random blocks: every quantized field random bytes (so every
nibble, high bit and packed 6-bit scale value occurs), the f16 block scales (d, dmin, m) drawn
from +-[1e-3, 5e-2] so that they are finite. Beside each, `<type>.expected`: the same tensor
decoded by gguf-py's `gguf.quants.dequantize` (PyPI `gguf`, an independent decoder written from
ggml's C), as F32. Needs: numpy, gguf.
"""
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "dequant" / "blocks.gguf"
ROWS, COLS = 2, 1024

# Byte offsets of the f16 scale fields within a block, per llama.cpp's block structs.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82],   # scales[16], qs[64], d, dmin
    T.Q3_K: [108],      # hmask[32], qs[64], scales[12], d
    T.Q4_K: [0, 2],     # d, dmin, scales[12], qs[128]
    T.Q5_K: [0, 2],     # d, dmin, scales[12], qh[32], qs[128]
    T.Q6_K: [208],      # ql[128], qh[64], scales[16] (int8), d
}


def main():
    rng = np.random.default_rng(20261201)
    w = gguf.GGUFWriter(str(OUT), "llama")
    for qt in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.F16, T.BF16]:
        name = qt.name.lower()
        if qt == T.F16:
            raw = rng.normal(0, 1, (ROWS, COLS)).astype(np.float16)
            expected = raw.astype(np.float32)
            w.add_tensor(name, raw)
        else:
            if qt == T.BF16:
                vals = rng.normal(0, 1, (ROWS, COLS)).astype(np.float32)
                raw = (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(ROWS, -1)
            else:
                block, size = GGML_QUANT_SIZES[qt]
                nb = ROWS * COLS // block
                raw = rng.integers(0, 256, (nb, size), dtype=np.uint8)
                for off in F16_FIELDS[qt]:
                    s = (rng.uniform(1e-3, 5e-2, nb) * rng.choice([-1, 1], nb)).astype(np.float16)
                    raw[:, off:off + 2] = s.view(np.uint8).reshape(nb, 2)
                raw = raw.reshape(ROWS, -1)
            expected = gguf.quants.dequantize(raw, qt).astype(np.float32)
            assert expected.shape == (ROWS, COLS) and np.isfinite(expected).all(), qt
            w.add_tensor(name, raw, raw_dtype=qt)
        w.add_tensor(f"{name}.expected", expected)
        print(f"{qt.name:5s} max |x| {np.abs(expected).max():.3g}")
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
