#!/usr/bin/env python3
"""Writes the first N blocks of a llama-family GGUF as a GGUF of its own (same tokenizer, same
embedding and head, `<arch>.block_count` = N), for carrying a real model's weights to a machine
that takes fewer bytes than the whole model (the GPU machine takes 64 MiB; the default model is
98 MB, 30 MB of it the embedding and about 2.2 MB each block).

    python3 scripts/truncate-gguf.py IN.gguf OUT.gguf N      # needs `pip install gguf numpy`

The truncated model is not a good language model; it is a real one for checking that the whole
pipeline (fine-tuning, Laplace, evaluation) runs on a device and agrees with the CPU.
"""
import sys

import gguf


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == f"{arch}.block_count":
            if n > value:
                sys.exit(f"{src} has {value} blocks, fewer than {n}")
            value = n
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, vtype, sub_type=sub)
    for t in r.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= n:
            continue
        # Quantised tensors travel as their raw blocks with their type and logical shape.
        shape = [int(d) for d in reversed(t.shape)]
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
