#!/usr/bin/env python3
"""Writes the tokenizer fixtures of tests/tokenizer_gguf.rs (run once; the outputs are committed).

    python3 scripts/tokenizer_fixtures.py [--smollm GGUF] [--qwen GGUF]

Needs: transformers, tokenizers, sentencepiece, gguf, regex (PyPI). What it writes, under
tests/fixtures/tokenizers/:

- splits.json: for every pre-tokenizer family of src/model/pretokenize.rs (its regexes read from
  that file), the pieces of each fixture text, computed with Python's `regex` module the way
  llama.cpp applies a family's list (each regex splits every piece left by the previous one; a match
  and the text between matches are pieces), then byte-level encoded (GPT-2's byte-to-unicode map).
  An independent regex engine (ours is Oniguruma) on the same patterns; where transformers has the
  family's pattern (qwen2, llama3, tekken, gpt-4o, qwen35) the script checks ours equals it.
- spm.gguf: a SentencePiece vocabulary (BPE, byte fallback, 600 pieces) trained by the
  `sentencepiece` library on the project's documentation, written as llama.cpp's converter writes
  one (tokens, scores, token types, BOS/EOS/UNK ids, add_bos), with no tokenizer.json beside it.
- llama3.gguf: a byte-level BPE vocabulary trained by `tokenizers` with Llama 3's split, written with
  `tokenizer.ggml.pre = "llama-bpe"`, plus three whole-word tokens no merge builds, where
  llama.cpp's ignore_merges (and Llama 3's own tokenizer.json) differ from transformers' conversion.
- ids.json: per vocabulary and text, the ids transformers' GGUF conversion gives
  (AutoTokenizer.from_pretrained(folder, gguf_file=...), then tokenizer(text)), the ids of an
  independent pure-Python BPE with llama.cpp's semantics, and for spm.gguf those of the
  sentencepiece library itself. The real SmolLM2 and Qwen2.5-Coder GGUFs are included when given.
"""
import argparse, json, os, re, sys, tempfile
from pathlib import Path

import regex
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tokenizers"

TEXTS = [
    "The capital of France is",
    "Hello world",
    " one leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "multiple    spaces   inside",
    "\n\nnewlines\n",
    "Which is it?\nAnswer:",
    "Choices:\nA. red\nB. blue",
    "a\r\nb\tc",
    "\tindented\n    four spaces",
    "1234567 digits 3.14159 and 2024-01-01, $1,000,000",
    "007 x42y 12345678901",
    "don't I'll we've THEY'RE she'S",
    "HELLO World CamelCaseWord",
    "naïve café résumé",
    "e\u0301 combining mark",
    "日本語のテキストです。",
    "中文测试，句子。",
    "한국어 문장",
    "Ελληνικά κείμενο",
    "русский текст",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "emoji 🙂👍🏽 ok",
    "def f(x):\n    return x**2  # square",
    "a_b-c/d\\e|f~g^h`i",
    "!!! ??? ... ---",
    "<|im_start|>user\nhi<|im_end|>",
    "Select one of the choices that answers the following question: Which is largest?\nChoices:\nA. 3\nB. 17\nC. 9\nD. 12\nAnswer:",
    "Answer the question with only True or False: is the shed painted green\nContext: The old shed behind the house was painted red last spring.\nAnswer:",
    "Classify the text. Options: positive, negative.\nText: A joy to watch.\nAnswer:",
    "The box did not fit in the car because the _ was too small.\nChoices:\nA. box\nB. car\nAnswer:",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()


def byte_encode(s):
    return "".join(B2U[b] for b in s.encode("utf-8"))


# --- the family table, read from the Rust source -----------------------------------------------

def rust_table():
    src = (ROOT / "src" / "model" / "pretokenize.rs").read_text()
    lit = r'(?:r(?P<h>#*)"(?P<raw>.*?)"(?P=h)|"(?P<esc>(?:[^"\\]|\\.)*)")'
    def unlit(m):
        if m.group("raw") is not None:
            return m.group("raw")
        body = re.sub(r"\\u\{([0-9A-Fa-f]+)\}", lambda u: chr(int(u.group(1), 16)), m.group("esc"))
        return re.sub(r"\\(.)", lambda e: {"r": "\r", "n": "\n", "t": "\t"}.get(e.group(1), e.group(1)), body)
    consts = {}
    for m in re.finditer(r"const (\w+): &str =\s*" + lit + ";", src, re.S):
        consts[m.group(1)] = unlit(re.match(lit, m.group(0)[m.group(0).index("=") + 1:].strip()))
    for m in re.finditer(r"const (\w+): &\[&str\] = &\[(.*?)\];", src, re.S):
        items = []
        body = "\n".join(l for l in m.group(2).split("\n") if not l.strip().startswith("//"))
        pos = 0
        tok = re.compile(r"\s*(?:" + lit + r"|(?P<name>\w+))\s*,?", re.S)
        while pos < len(body.rstrip()):
            t = tok.match(body, pos)
            if not t or t.end() == pos:
                break
            items.append(consts[t.group("name")] if t.group("name") else unlit(re.match(lit, t.group(0).strip().rstrip(","))))
            pos = t.end()
        consts[m.group(1)] = items
    table = {}
    for m in re.finditer(r'\(\s*&\[(.*?)\],\s*pre\("(\w+)",\s*(&\[\w+\]|\w+),\s*(true|false)\)\s*,?\s*\)', src, re.S):
        names = re.findall(r'"([^"]+)"', m.group(1))
        ref = m.group(3)
        regexes = [consts[ref[2:-1]]] if ref.startswith("&[") else consts[ref]
        table[m.group(2)] = {"names": names, "regexes": regexes, "ignore_merges": m.group(4) == "true"}
    return table


def split(text, regexes):
    pieces = [text]
    for r in regexes:
        rx = regex.compile(r)
        out = []
        for p in pieces:
            last = 0
            for m in rx.finditer(p):
                if m.start() > last:
                    out.append(p[last:m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                last = m.end()
            if last < len(p):
                out.append(p[last:])
        pieces = out
    return pieces


def write_splits(table):
    from transformers.integrations.gguf import gguf_tokenizer_mapping as tm
    for name, want in [("qwen2", tm._QWEN2_SPLIT), ("llama3", tm._LLAMA3_SPLIT), ("tekken", tm._TEKKEN_SPLIT),
                       ("gpt4o", tm._GPT4O_SPLIT), ("qwen35", tm._QWEN35_SPLIT)]:
        assert table[name]["regexes"] == [want], f"{name}: our regex differs from transformers'"
    fams = {}
    for fam, t in table.items():
        fams[fam] = {"names": t["names"], "pieces": [[byte_encode(p) for p in split(x, t["regexes"])] for x in TEXTS]}
    (OUT / "splits.json").write_text(json.dumps({"texts": TEXTS, "families": fams}, ensure_ascii=False, indent=1))
    print(f"splits.json: {len(fams)} families x {len(TEXTS)} texts")


# --- an independent BPE with llama.cpp's semantics --------------------------------------------

def reference_bpe(meta, text, regexes, ignore_merges, add_bos):
    tokens = meta["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(meta["merges"])}
    specials = sorted((t for t, ty in zip(tokens, meta["types"]) if ty in (3, 4)), key=len, reverse=True)
    out = [meta["bos"]] if add_bos else []
    # special tokens first (longest match), as llama.cpp's tokenizer_st_partition
    parts = [(False, text)]
    for s in specials:
        nxt = []
        for is_sp, p in parts:
            if is_sp:
                nxt.append((is_sp, p))
                continue
            chunks = p.split(s)
            for k, c in enumerate(chunks):
                if c:
                    nxt.append((False, c))
                if k + 1 < len(chunks):
                    nxt.append((True, s))
        parts = nxt
    for is_sp, p in parts:
        if is_sp:
            out.append(vocab[p])
            continue
        for piece in split(p, regexes):
            w = byte_encode(piece)
            if ignore_merges and w in vocab:
                out.append(vocab[w])
                continue
            syms = list(w)
            while len(syms) > 1:
                best = min(((ranks.get((syms[i], syms[i + 1]), 1 << 60), i) for i in range(len(syms) - 1)))
                if best[0] == 1 << 60:
                    break
                i = best[1]
                syms[i:i + 2] = [syms[i] + syms[i + 1]]
            out.extend(vocab[s] for s in syms)
    return out


def gguf_meta(path):
    import gguf
    r = gguf.GGUFReader(str(path))
    f = r.fields
    get = lambda k: f[k].contents() if k in f else None
    return {
        "tokens": get("tokenizer.ggml.tokens"), "merges": get("tokenizer.ggml.merges") or [],
        "types": get("tokenizer.ggml.token_type"), "bos": get("tokenizer.ggml.bos_token_id"),
        "pre": get("tokenizer.ggml.pre"), "add_bos": get("tokenizer.ggml.add_bos_token"),
    }


def transformers_ids(path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(Path(path).parent), gguf_file=Path(path).name)
    return [tok(t)["input_ids"] for t in TEXTS]


# --- the two small vocabularies ---------------------------------------------------------------

def corpus():
    files = [ROOT / "README.md", ROOT.parent / "shared" / "DESIGN.md"] + sorted((ROOT / "sample_data").rglob("*.jsonl"))
    text = "\n".join(p.read_text() for p in files if p.exists())
    return text + "\n" + "\n".join(TEXTS[:10])


def write_spm():
    import sentencepiece as spm
    import gguf
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "corpus.txt"
        src.write_text(corpus())
        spm.SentencePieceTrainer.train(
            input=str(src), model_prefix=str(Path(d) / "m"), vocab_size=600, model_type="bpe", byte_fallback=True,
            character_coverage=0.9995, split_digits=True, allow_whitespace_only_pieces=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        )
        sp = spm.SentencePieceProcessor(model_file=str(Path(d) / "m.model"))
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i) else 1)
    path = OUT / "spm.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 1), dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    sp_ids = [[1] + sp.encode(t) for t in TEXTS]
    return path, sp_ids


def write_llama3(table):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, Regex
    import gguf
    regexes = table["llama3"]["regexes"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(regexes[0]), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([corpus()], trainer)
    j = json.loads(tok.to_str())
    vocab = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    # Whole words no merge builds: llama.cpp (and Llama 3's own tokenizer.json) take a piece that
    # is a token whole ("ignore_merges"), transformers' GGUF conversion merges it from its bytes.
    tokens += [w for w in ["\u0120digits", "HELLO", "\u0120CamelCaseWord"] if w not in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    types = [3 if t in specials else 1 for t in tokens]
    path = OUT / "llama3.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|begin_of_text|>"))
    w.add_eos_token_id(tokens.index("<|end_of_text|>"))
    w.add_add_bos_token(True)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 1), dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm", help="the default model's GGUF (SmolLM2-135M-Instruct)")
    ap.add_argument("--qwen", help="Qwen2.5-Coder-0.5B-Instruct's GGUF")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    table = rust_table()
    write_splits(table)
    by_name = {n: t for t in table.values() for n in t["names"]}
    cases = {}
    spm_path, sp_ids = write_spm()
    cases["spm"] = {"file": "tests/fixtures/tokenizers/spm.gguf", "transformers": transformers_ids(spm_path), "sentencepiece": sp_ids}
    l3 = write_llama3(table)
    inputs = [("llama3", l3, "tests/fixtures/tokenizers/llama3.gguf")]
    if a.smollm:
        inputs.append(("smollm2", Path(a.smollm), "known:smollm2-135m-instruct"))
    if a.qwen:
        inputs.append(("qwen2.5-coder", Path(a.qwen), "known:qwen2.5-coder-0.5b-instruct"))
    for name, path, where in inputs:
        meta = gguf_meta(path)
        fam = by_name[meta["pre"]]
        add_bos = bool(meta["add_bos"]) if meta["add_bos"] is not None else fam is table["llama3"]
        ref = [reference_bpe(meta, t, fam["regexes"], fam["ignore_merges"], add_bos) for t in TEXTS]
        cases[name] = {"file": where, "transformers": transformers_ids(path), "reference": ref}
    for name, c in cases.items():
        other = "sentencepiece" if "sentencepiece" in c else "reference"
        diff = [i for i, (x, y) in enumerate(zip(c["transformers"], c[other])) if x != y]
        print(f"{name}: transformers and {other} differ on {len(diff)} of {len(TEXTS)} texts: {[TEXTS[i] for i in diff]}")
    (OUT / "ids.json").write_text(json.dumps({"texts": TEXTS, "cases": cases}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
