//! Determinism (issue 6, point 6): the same configuration and seed on the same machine give the
//! same results, bit for bit: metrics.json, predictions.jsonl, the adapter, the Laplace files and
//! every number in events.jsonl except wall-clock times. Covered: data shuffles and caps, LoRA
//! initialisation, LoRA dropout, batching, AdamW, temperature scaling, the Laplace fit with the
//! sampled Fisher and the Monte Carlo predictive. Another seed gives other numbers.
//! (Across machines or thread counts, float summation order may differ; that is not claimed.)
//! This test caught the adapter file differing between runs: safetensors wrote its metadata in
//! HashMap order; peft::save now sorts the header.

use laplace_lora::experiment::{self, ExperimentConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn config(model: &Path, seed: u64) -> ExperimentConfig {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample_data").join("compare4");
    ExperimentConfig::from_toml_str(&format!(
        r#"[model]
source = {:?}
[data]
train = {:?}
test = {:?}
max_train = 24
max_validation = 8
max_test = 12
[lora]
rank = 2
alpha = 4
dropout = 0.1
[train]
epochs = 2
batch_size = 4
seed = {seed}
[laplace]
curvature = "fisher"
predictive = "mc"
samples = 64
"#,
        model.display().to_string(),
        d.join("train.jsonl").display().to_string(),
        d.join("test.jsonl").display().to_string(),
    ))
    .unwrap()
}

fn run(cfg: &ExperimentConfig, dir: &Path) {
    experiment::prepare_run_dir(dir, false).unwrap();
    experiment::run(cfg, dir, &AtomicBool::new(false), &mut |_| {}).unwrap();
}

/// events.jsonl without what depends on the clock or the folder.
fn events_without_times(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in ["seconds", "unix_time", "run_dir", "t"] {
                o.remove(k);
            }
            // A metrics event carries the method's cost and timings, as metrics.json does.
            if let Some(m) = o.get_mut("metrics").and_then(|m| m.as_object_mut()) {
                m.remove("cost");
                m.retain(|k, _| !k.ends_with("seconds"));
            }
            // Stage messages may carry timings ("... in 0.3 s"); keep their stage only.
            if o.get("event").and_then(|e| e.as_str()) == Some("stage") {
                o.remove("message");
            }
            v
        })
        .collect()
}

/// laplace.json without its timings.
/// metrics.json without each method's `cost` and other timings (`fit_seconds`): seconds and peak
/// memory differ run to run.
fn metrics_without_costs(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    let mut costs = 0;
    for (_, e) in v.as_object_mut().unwrap().iter_mut() {
        if let Some(o) = e.as_object_mut() {
            costs += o.remove("cost").is_some() as usize;
            o.retain(|k, _| !k.ends_with("seconds"));
        }
    }
    assert!(costs >= 5, "metrics.json of {} has {costs} method costs", dir.display());
    v
}

/// The path of the first value where two JSON documents differ, and the two values there.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<(String, String, String)> {
    use serde_json::Value::{Array, Object};
    match (a, b) {
        (Object(x), Object(y)) => x
            .keys()
            .chain(y.keys())
            .find_map(|k| first_difference(x.get(k).unwrap_or(&serde_json::Value::Null), y.get(k).unwrap_or(&serde_json::Value::Null), format!("{at}.{k}"))),
        (Array(x), Array(y)) if x.len() == y.len() => x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some((at, a.to_string(), b.to_string())),
    }
}

fn laplace_json(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("laplace").join("laplace.json")).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.retain(|k, _| !k.starts_with("seconds"));
    v
}

#[test]
fn same_config_and_seed_give_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 17, false).unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    run(&config(&model, 5), &a);
    run(&config(&model, 5), &b);
    run(&config(&model, 6), &c);
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    // Bit for bit: the files hold every float with its shortest round-trip form (JSON, CSV) or
    // its raw bytes (safetensors), so equal bytes mean equal f64 / f32 values.
    let (ma, mb) = (metrics_without_costs(&a), metrics_without_costs(&b));
    assert!(ma == mb, "metrics.json differs between two runs with the same seed at {:?}", first_difference(&ma, &mb, String::new()));
    for f in [
        "predictions.jsonl",
        "splits.json",
        "prior_curve.csv",
        "adapter/adapter_model.safetensors",
        "laplace/posterior.safetensors",
        "laplace/spectral_cache.safetensors",
    ] {
        assert!(read(&a, f) == read(&b, f), "{f} differs between two runs with the same seed");
    }
    assert_eq!(laplace_json(&a), laplace_json(&b));
    assert_eq!(events_without_times(&a), events_without_times(&b), "events.jsonl differs");
    // The Laplace stage reports how many eigenvalues it clamped (a number, never missing).
    assert!(laplace_json(&a)["clamped_eigenvalues"].is_u64(), "{}", laplace_json(&a));
    // Another seed: other splits, another adapter, other metrics.
    assert!(read(&a, "adapter/adapter_model.safetensors") != read(&c, "adapter/adapter_model.safetensors"));
    assert!(read(&a, "metrics.json") != read(&c, "metrics.json"));
}
