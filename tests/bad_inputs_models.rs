//! Bad inputs of the model verbs and checks added with issue 17 (kept apart from
//! tests/bad_inputs.rs to ease merging): each a clear `error:` naming what is wrong, no panic,
//! a non-zero exit, and for `run` nothing written when the memory check refuses.

use candle_core::quantized::gguf_file::{self, Value};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_laplace-lora");

fn run_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("LAPLACE_LORA_OFFLINE_HUB", "1")
        .env("LAPLACE_LORA_NO_PIP", "1")
        .env("LAPLACE_LORA_CACHE", std::env::temp_dir().join("laplace-lora-bad-inputs-models-empty-cache"))
        .output()
        .expect("running laplace-lora");
    let all = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("panicked"), "{args:?} panicked:\n{all}");
    (out.status.code().unwrap_or(-1), all)
}

/// The tiny GGUF of the tests with byte-level tokenizer metadata naming pre-tokenizer `pre`.
fn gguf_with_pre(dir: &Path, pre: &str) -> std::path::PathBuf {
    let src = dir.join("src").join("tiny.gguf");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    let cfg = laplace_lora::model::Config::from_hf_str(&laplace_lora::testing::tiny_config_json(laplace_lora::testing::tiny_vocab().len(), 32, 2, 4, 2, false))
        .unwrap();
    let w = laplace_lora::testing::random_weights(&cfg, 3).unwrap();
    laplace_lora::testing::write_tiny_gguf(&src, &cfg, &w).unwrap();
    let (content, mut file) = laplace_lora::model::gguf::read_content(&src).unwrap();
    let mut md: Vec<(String, Value)> = content.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let tokens: Vec<Value> = (0..cfg.vocab_size).map(|i| Value::String(format!("t{i}"))).collect();
    md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    md.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens)));
    md.push(("tokenizer.ggml.merges".into(), Value::Array(vec![])));
    let tensors: Vec<(String, candle_core::quantized::QTensor)> =
        content.tensor_infos.keys().map(|n| (n.clone(), content.tensor(&mut file, n, &candle_core::Device::Cpu).unwrap())).collect();
    let out = dir.join("model.gguf");
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(&out).unwrap(), &md_refs, &t_refs).unwrap();
    out
}

#[test]
fn check_model_names_a_missing_model() {
    let (code, all) = run_cli(&["check-model", "/nonexistent/model.gguf"]);
    assert!(code != 0 && all.contains("error:") && all.contains("/nonexistent/model.gguf"), "{all}");
}

#[test]
fn check_model_refuses_an_unknown_pre_tokenizer_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let p = gguf_with_pre(tmp.path(), "qwen9-future");
    let (code, all) = run_cli(&["check-model", p.to_str().unwrap(), "--tokens", "1"]);
    assert!(code != 0 && all.contains("error:") && all.contains("\"qwen9-future\"") && all.contains("tokenizer.ggml.pre"), "{all}");
}

#[test]
fn check_model_json_needs_answer_logits() {
    let (code, all) = run_cli(&["check-model", "x.gguf", "--json", "out.json"]);
    assert!(code != 0 && all.contains("--answer-logits"), "{all}");
}

#[test]
fn check_model_with_a_bad_dataset_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = laplace_lora::model::Config::from_hf_str(&laplace_lora::testing::tiny_config_json(laplace_lora::testing::tiny_vocab().len(), 32, 2, 4, 2, false))
        .unwrap();
    let w = laplace_lora::testing::random_weights(&cfg, 3).unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    laplace_lora::testing::write_tiny_gguf(&gguf, &cfg, &w).unwrap();
    let data = tmp.path().join("bad.jsonl");
    std::fs::write(&data, "{\"question\": \"q\", \"choices\": [\"a\"]\n").unwrap();
    let (code, all) = run_cli(&["check-model", gguf.to_str().unwrap(), "--tokens", "1", "--answer-logits", data.to_str().unwrap()]);
    assert!(code != 0 && all.contains("error:") && all.contains("bad.jsonl"), "{all}");
}

#[test]
fn run_refuses_what_will_not_fit_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    laplace_lora::testing::write_tiny_hf_model(&hf, 3, false).unwrap();
    // A million prompts a batch: the attention matrices alone are terabytes.
    let toml = laplace_lora::testing::tiny_experiment_toml(&hf, 8, 1, 0).replace("batch_size = 4", "batch_size = 1000000");
    let config = tmp.path().join("huge.toml");
    std::fs::write(&config, toml).unwrap();
    let out = tmp.path().join("run");
    let (code, all) = run_cli(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(code != 0 && all.contains("error:") && all.contains("--ignore-memory") && all.contains("available"), "{all}");
    assert!(!out.exists(), "a refused run left {}", out.display());
}
