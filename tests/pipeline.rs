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
    for f in
        ["config.toml", "events.jsonl", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "metrics.json", "predictions.jsonl", "splits.json"]
    {
        assert!(dir.join(f).is_file(), "{f} is missing from the run directory");
    }
    // config.toml is the resolved configuration and parses back to the same thing.
    let back = ExperimentConfig::from_toml_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    assert_eq!(&back, cfg);
    // Every event line parses and carries its time; the last says finished.
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let lines: Vec<Event> = text.lines().map(|l| serde_json::from_str(l).expect("event line parses")).collect();
    let stamps: Vec<f64> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["t"].as_f64().expect("every event is stamped")).collect();
    assert!(stamps.windows(2).all(|w| w[1] >= w[0]), "event times go back");
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
    // Temperature scaling fits on the last epoch's validation logits (the final adapter's), with
    // no validation pass of its own: no calibrate-stage progress, and its "NLL before" is the
    // last validation event's NLL.
    assert!(!events.iter().any(|e| matches!(e, Event::Progress { stage: experiment::Stage::Calibrate, .. })), "temperature scaling ran a validation pass");
    let last_val =
        events.iter().rev().find_map(|e| if let Event::Validation { summary, .. } = e { Some(summary.nll) } else { None }).expect("a validation event");
    let msg = events
        .iter()
        .find_map(|e| match e {
            Event::Stage { stage: experiment::Stage::Calibrate, message } if message.starts_with("temperature ") => Some(message.clone()),
            _ => None,
        })
        .expect("the temperature fit's message");
    let before: f64 = msg.split("validation NLL ").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{msg}"));
    assert!((before - last_val).abs() < 1e-4, "temperature fitted on NLL {before}, the last validation pass had {last_val}");
    // The training split's MAP metrics are there; with a Laplace method in the run they come
    // from the curvature pass's logits: no evaluation pass after the Laplace stage.
    for k in ["zero_shot", "map"] {
        assert!(m["train"][k]["nll"].as_f64().is_some_and(|v| v.is_finite()), "metrics.train.{k} missing");
    }
    if let Some(last_laplace) = events.iter().rposition(|e| matches!(e, Event::Stage { stage: experiment::Stage::Laplace, .. })) {
        assert!(
            !events[last_laplace..].iter().any(|e| matches!(e, Event::Progress { stage: experiment::Stage::Evaluate, .. })),
            "the training split was evaluated again after the Laplace fit"
        );
    }
    let preds: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(preds.len(), 16);
    for p in &preds {
        let probs: Vec<f64> = p["probs"]["map"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
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

#[test]
fn tiny_model_fine_tune_then_fit_laplace_on_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 4, false).unwrap();
    let mut cfg = config(&model.to_string_lossy(), "compare4", "epochs = 1");
    cfg.laplace.enabled = false; // the Fine-tune button
    let dir = tmp.path().join("run");
    let m = run_and_check(&cfg, &dir);
    assert!(m.get("laplace").is_none() && !dir.join("laplace").exists());
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();

    // A cancelled refit leaves every file as it was and says so in events.jsonl.
    let before: Vec<Vec<u8>> = ["metrics.json", "predictions.jsonl", "config.toml"].iter().map(|f| read(f)).collect();
    let out = experiment::refit_laplace(&dir, None, &AtomicBool::new(true), &mut |_| {}).unwrap();
    assert_eq!(out, Outcome::Cancelled);
    let after: Vec<Vec<u8>> = ["metrics.json", "predictions.jsonl", "config.toml"].iter().map(|f| read(f)).collect();
    assert_eq!(before, after);
    let last: Event = serde_json::from_str(std::str::from_utf8(&read("events.jsonl")).unwrap().lines().last().unwrap()).unwrap();
    assert!(matches!(last, Event::Cancelled { .. }), "{last:?}");

    // The refit with other settings: Laplace results appear, MAP ones stay.
    let mut section = cfg.laplace.clone();
    section.prior = experiment::PriorChoice::Method("grid".into());
    section.predictive = "mc".into();
    let mut events = Vec::new();
    let out = experiment::refit_laplace(&dir, Some(&section), &AtomicBool::new(false), &mut |e| events.push(e.clone())).unwrap();
    assert_eq!(out, Outcome::Finished);
    assert!(matches!(events.last(), Some(Event::Finished { .. })));
    let m2 = read_json(&dir.join("metrics.json"));
    assert_eq!(m2["map"], m["map"]);
    assert_eq!(m2["temperature"], m["temperature"]);
    for method in ["laplace", "llla"] {
        let nll = m2[method]["nll"].as_f64().unwrap_or_else(|| panic!("metrics.{method} missing"));
        assert!(nll.is_finite() && nll > 0.0);
    }
    for l in std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap().lines() {
        let p: serde_json::Value = serde_json::from_str(l).unwrap();
        let lp: Vec<f64> = p["probs"]["laplace"].as_array().expect("laplace probs").iter().map(|v| v.as_f64().unwrap()).collect();
        assert!((lp.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p["logit_cov"]["laplace"].is_array() && p["logit_cov"]["llla"].is_array());
    }
    let lj = read_json(&dir.join("laplace").join("laplace.json"));
    assert_eq!(lj["config"]["predictive"], "mc");
    assert!(dir.join("prior_curve.csv").is_file() && dir.join("laplace/posterior.safetensors").is_file());
    // config.toml records the settings the Laplace files came from.
    let back = ExperimentConfig::from_toml_str(&String::from_utf8(read("config.toml")).unwrap()).unwrap();
    assert!(back.laplace.enabled);
    assert_eq!(back.laplace.prior, section.prior);

    // Not a run directory: a clear error, not a panic.
    let err = experiment::refit_laplace(tmp.path(), None, &AtomicBool::new(false), &mut |_| {}).unwrap_err();
    assert!(format!("{err:#}").contains("config.toml"), "{err:#}");
}
