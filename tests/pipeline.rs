//! The headless pipeline end to end: on a tiny checkpoint written by the test (always runs), and
//! on the real default model with a small slice of a sample dataset (skips loudly without it).

use laplace_lora::experiment::{self, Event, ExperimentConfig, Outcome};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(source: &str, dataset: &str, extra_train: &str) -> ExperimentConfig {
    let d = repo().join("sample_data").join(dataset);
    let text = format!(
        r#"
[model]
source = "{source}"
[data]
train = "{}"
validation = "{}"
test = "{}"
max_train = 16
max_validation = 16
max_test = 16
[lora]
rank = 4
alpha = 8
targets = ["q_proj", "v_proj", "lm_head"]
[train]
batch_size = 4
seed = 1
{extra_train}
"#,
        d.join("train.jsonl").display(),
        d.join("validation.jsonl").display(),
        d.join("test.jsonl").display()
    );
    ExperimentConfig::from_toml_str(&text).unwrap()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Runs and checks everything a run directory must hold; returns metrics.json.
fn run_and_check(cfg: &ExperimentConfig, dir: &Path) -> serde_json::Value {
    experiment::prepare_run_dir(dir, false).unwrap();
    let mut events = Vec::new();
    let out = experiment::run(cfg, dir, &AtomicBool::new(false), &mut |e| events.push(e.clone())).unwrap();
    assert_eq!(out, Outcome::Finished);
    for f in ["config.toml", "events.jsonl", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "metrics.json", "predictions.jsonl", "splits.json"] {
        assert!(dir.join(f).is_file(), "{f} is missing from the run directory");
    }
    // config.toml is the resolved configuration and parses back to the same thing.
    let back = ExperimentConfig::from_toml_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    assert_eq!(&back, cfg);
    // Every event line parses; the last says finished.
    let lines: Vec<Event> = std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("event line parses"))
        .collect();
    assert_eq!(lines.len(), events.len());
    assert!(matches!(lines.last(), Some(Event::Finished { .. })));
    assert!(lines.iter().any(|e| matches!(e, Event::TrainStep { .. })));
    let m = read_json(&dir.join("metrics.json"));
    for method in ["map", "temperature", "zero_shot"] {
        let x = &m[method];
        for k in ["accuracy", "ece", "mce", "nll", "brier"] {
            let v = x[k].as_f64().unwrap_or_else(|| panic!("metrics.{method}.{k} missing"));
            assert!(v.is_finite() && v >= 0.0, "metrics.{method}.{k} = {v}");
        }
        assert_eq!(x["bins"].as_array().unwrap().len(), 15);
        assert_eq!(x["n"], 16);
    }
    assert!(m["temperature"]["temperature"].as_f64().unwrap() > 0.0);
    let preds: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preds.len(), 16);
    for p in &preds {
        let probs: Vec<f64> = p["map_probs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(probs.len(), p["choices"].as_array().unwrap().len());
    }
    let splits = read_json(&dir.join("splits.json"));
    assert_eq!(splits["train"].as_array().unwrap().len(), 16);
    m
}

#[test]
fn tiny_model_pipeline_writes_a_complete_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 4, false).unwrap();
    let cfg = config(&model.to_string_lossy(), "compare4", "epochs = 1");
    run_and_check(&cfg, &tmp.path().join("run"));
    // An existing run directory is never overwritten without force.
    assert!(experiment::prepare_run_dir(&tmp.path().join("run"), false).is_err());
}

#[test]
fn real_model_fine_tunes_and_fits_its_training_items() {
    let Some(files) = laplace_lora::testing::default_model_if_present() else {
        eprintln!("\n!!!!! SKIPPED: the default model is not in the cache; run `laplace-lora fetch-model` first !!!!!\n");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&files.path().to_string_lossy(), "yesno", "epochs = 2\nlearning_rate = 1e-3");
    let m = run_and_check(&cfg, &tmp.path().join("run"));
    // Training lowered the loss on the items it trained on (NLL of the training split under the
    // base model vs under the fine-tuned adapter).
    let before = m["train"]["zero_shot"]["nll"].as_f64().unwrap();
    let after = m["train"]["map"]["nll"].as_f64().unwrap();
    assert!(after < before, "training NLL did not go down: {before} -> {after}");
}
