//! The methods axis (DESIGN.md section 5) against independent computations on a tiny model:
//! MC dropout at p = 0 is MAP, an ensemble of identical members is its member, ensembles average
//! probabilities (not logits), BLoB with no variance and no KL trains exactly like MAP, every
//! method's metrics are those of its stored probabilities, and a finished run's methods
//! evaluated again on its own test items (the `eval` verb) give what the run gave.

use candle_core::Device;
use laplace_lora::calibration;
use laplace_lora::experiment::{self, ExperimentConfig, MetricsFile, Outcome};
use laplace_lora::lora::LoraSet;
use laplace_lora::methods::{self, BlobTrainOpts, SetPrediction};
use laplace_lora::model::LoadedModel;
use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn tiny(dir: &Path) -> std::path::PathBuf {
    let model = dir.join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 4, false).unwrap();
    model
}

fn config(model: &Path, methods: &str, extra: &str) -> ExperimentConfig {
    let text = format!("{}\n[methods]\nlist = [{methods}]\n{extra}\n", laplace_lora::testing::tiny_experiment_toml(model, 12, 2, 3));
    ExperimentConfig::from_toml_str(&text).unwrap()
}

fn run(cfg: &ExperimentConfig, dir: &Path) {
    experiment::prepare_run_dir(dir, false).unwrap();
    assert_eq!(experiment::run(cfg, dir, &AtomicBool::new(false), &mut |_| {}).unwrap(), Outcome::Finished);
}

fn probs(dir: &Path, method: &str) -> Vec<Vec<f64>> {
    experiment::read_predictions(&dir.join("predictions.jsonl")).unwrap().iter().map(|p| p.probs[method].clone()).collect()
}

#[test]
fn ensembles_average_probabilities_not_logits() {
    // Two members, two classes, by hand: logits (2, 0) and (0, 0) give softmax (0.8808, 0.1192)
    // and (0.5, 0.5), mean 0.6904; averaging the logits first would give softmax(1, 0) = 0.7311.
    let a = vec![vec![2.0, 0.0]];
    let b = vec![vec![0.0, 0.0]];
    let p = SetPrediction::from_member_logits(&[a.clone(), b]);
    let want = 0.5 * (1.0 / (1.0 + (-2.0f64).exp()) + 0.5);
    assert!((p.probs[0][0] - want).abs() < 1e-15, "{} vs {want}", p.probs[0][0]);
    assert!((p.probs[0][0] - 0.7310585786).abs() > 0.03);
    assert_eq!(p.samples.as_ref().unwrap()[0].len(), 2);
    // Identical members: the member itself.
    let one = SetPrediction::from_logits(a.clone());
    let three = SetPrediction::from_member_logits(&[a.clone(), a.clone(), a]);
    for (x, y) in one.probs[0].iter().zip(&three.probs[0]) {
        assert!((x - y).abs() < 1e-15);
    }
}

#[test]
fn every_method_on_a_tiny_run_and_its_metrics_are_those_of_its_probabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let all = r#""zero_shot", "map", "temperature", "llla", "laplace", "mc_dropout", "checkpoint_ensemble", "deep_ensemble", "blob""#;
    // MC dropout at p = 0 with a run trained without dropout: the MAP adapter, no dropout at
    // test, so exactly MAP. One-member ensembles: the MAP adapter itself (the last epoch's
    // checkpoint, and deep-ensemble member 0).
    let cfg = config(
        &model,
        all,
        "mc_dropout = { p = 0.0, samples = 3 }\ncheckpoint_ensemble = { members = 1 }\ndeep_ensemble = { members = 1 }\nblob = { samples = 4 }",
    );
    let dir = tmp.path().join("run");
    run(&cfg, &dir);
    let mf = MetricsFile::read(&dir.join("metrics.json")).unwrap();
    let names: Vec<&str> = mf.methods.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["zero_shot", "map", "temperature", "llla", "laplace", "mc_dropout", "checkpoint_ensemble", "deep_ensemble", "blob"]);
    let preds = experiment::read_predictions(&dir.join("predictions.jsonl")).unwrap();
    let labels: Vec<usize> = preds.iter().map(|p| p.label).collect();
    for (name, entry) in &mf.methods {
        let p: Vec<Vec<f64>> = preds.iter().map(|x| x.probs[name].clone()).collect();
        let want = calibration::metrics(&p, &labels);
        let got: calibration::Metrics = serde_json::from_value(entry.clone()).unwrap();
        assert_eq!(got, want, "{name}: metrics.json differs from the metrics of its stored probabilities");
        let cost = &entry["cost"];
        for k in ["train_seconds", "prepare_seconds", "eval_seconds", "peak_rss_mib"] {
            assert!(cost[k].as_f64().is_some_and(|x| x >= 0.0), "{name}: cost.{k} = {}", cost[k]);
        }
    }
    let map = probs(&dir, "map");
    for m in ["checkpoint_ensemble", "deep_ensemble"] {
        assert_eq!(probs(&dir, m), map, "{m} with one member is not exactly MAP");
    }
    // Three identical passes averaged: MAP to the rounding of (p + p + p) / 3.
    for (x, y) in probs(&dir, "mc_dropout").iter().flatten().zip(map.iter().flatten()) {
        assert!((x - y).abs() <= 1e-15, "MC dropout at p = 0: {x} vs MAP {y}");
    }
    // The sampling methods keep their samples, whose mean is their probabilities.
    for p in &preds {
        let s = &p.samples["mc_dropout"];
        assert_eq!(s.len(), 3);
        assert_eq!(p.samples["blob"].len(), 4);
        let mean = methods::mean_rows(&p.samples["blob"]);
        for (a, b) in mean.iter().zip(&p.probs["blob"]) {
            assert!((a - b).abs() < 1e-12);
        }
    }
    // BLoB's draws differ from one another (it learnt or kept some variance).
    assert!(preds.iter().any(|p| p.samples["blob"].windows(2).any(|w| w[0] != w[1])));
    // Its saved state is where `eval` will look for it.
    for f in
        ["methods/blob/adapter/adapter_model.safetensors", "methods/blob/rho.safetensors", "methods/checkpoint_ensemble/member_0/adapter_model.safetensors"]
    {
        assert!(dir.join(f).is_file(), "{f} missing");
    }

    // `eval` on the run's own test items, from the saved state: the same predictive.
    // The whole test file: the run's 12 test items are among its 100.
    let set = laplace_lora::data::EvalSet { name: "again".into(), path: cfg.data.test.clone(), format: cfg.data.format, max_items: None, drop_unfit: false };
    let out = experiment::evaluate_run(&dir, set, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(out, Outcome::Finished);
    let again = experiment::read_predictions(&dir.join("eval/again/predictions.jsonl")).unwrap();
    let mut matched = 0;
    for p in &preds {
        let a = again.iter().find(|a| a.id == p.id).unwrap_or_else(|| panic!("test item {} not evaluated again", p.id));
        matched += 1;
        for name in &names {
            // Same adapters, same seeds, same f32 arithmetic; the batches pad differently and the
            // Laplace methods recompute their Jacobians: 1e-5. (MC dropout's and BLoB's draws
            // depend on the batch order, so their probabilities are compared as distributions
            // only through their metrics below.)
            if matches!(*name, "mc_dropout" | "blob") {
                continue;
            }
            for (x, y) in a.probs[*name].iter().zip(&p.probs[*name]) {
                assert!((x - y).abs() < 1e-5, "{name} on {}: {x} vs {y}", p.id);
            }
        }
    }
    assert_eq!(matched, preds.len());
    let ev = MetricsFile::read(&dir.join("eval/again/metrics.json")).unwrap();
    assert_eq!(ev.methods.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), names);
    assert!(dir.join("eval/again/metrics.json").is_file());
}

#[test]
fn mc_dropout_with_dropout_differs_from_map_and_trains_its_own_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let cfg = config(&model, r#""map", "mc_dropout""#, "mc_dropout = { p = 0.3, samples = 4 }");
    let dir = tmp.path().join("run");
    run(&cfg, &dir);
    assert!(dir.join("methods/mc_dropout/adapter/adapter_model.safetensors").is_file(), "p differs from lora.dropout: an adapter of its own");
    let preds = experiment::read_predictions(&dir.join("predictions.jsonl")).unwrap();
    // Four passes with different masks.
    assert!(preds.iter().any(|p| p.samples["mc_dropout"].windows(2).any(|w| w[0] != w[1])));
    let mf = MetricsFile::read(&dir.join("metrics.json")).unwrap();
    let mc = &mf.methods.iter().find(|(n, _)| n == "mc_dropout").unwrap().1;
    assert!(mc["cost"]["train_seconds"].as_f64().unwrap() > 0.0);
}

/// BLoB with its standard deviations forced to 0 and the KL weight 0 is MAP training: the same
/// initialisation, batches, schedule, clipping and AdamW on (M, B), so the same adapter bit for
/// bit. With the KL on, it moves away (the check can fail).
#[test]
fn blob_without_variance_or_kl_trains_exactly_like_map() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let cfg = config(&model, r#""map""#, "");
    let m = LoadedModel::load_hf(&model, &Device::Cpu).unwrap();
    let d = experiment::prepare_data(&cfg, &m.tokenizer).unwrap();
    let pad = laplace_lora::model::tokenizer::pad_id(&m.tokenizer);
    let map = LoraSet::new(cfg.lora.to_config().unwrap(), &m.model.lora_dims(), d.answer_ids.clone(), cfg.train.seed, &Device::Cpu).unwrap();
    let cancel = AtomicBool::new(false);
    laplace_lora::train::train(&m.model, &map, &d.train, &d.answer_ids, pad, &cfg.train, &cancel, &mut |_| {}, &mut |_, _| Ok(())).unwrap();
    let mut sink = |_e: experiment::Event| Ok(());
    let cx = methods::Context {
        cfg: &cfg,
        model: &m.model,
        data: &d,
        map: &map,
        map_train_seconds: 0.0,
        checkpoints: &[],
        pad,
        eval_batch: 4,
        run_dir: tmp.path(),
        cancel: &cancel,
        send: RefCell::new(&mut sink),
        map_logits: Default::default(),
    };
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let post = methods::train_blob(&cx, &cfg.methods.blob, BlobTrainOpts { zero_std: true, kl_scale: 0.0 }).unwrap().unwrap();
    for (l, (mean, b)) in map.layers.iter().zip(post.mean.iter().zip(post.lora.layers.iter().map(|x| &x.b))) {
        assert_eq!(flat(l.a.as_tensor()), flat(mean.as_tensor()), "A of {}", l.module_path());
        assert_eq!(flat(l.b.as_tensor()), flat(b.as_tensor()), "B of {}", l.module_path());
    }
    // The KL weights of BLoB's schedule are 2^(i - T - 1) with a period T = 66 steps here, so
    // over these 6 steps they stay below 2^-60: scaled up, the KL step must shrink the means.
    let with_kl = methods::train_blob(&cx, &cfg.methods.blob, BlobTrainOpts { zero_std: true, kl_scale: 1e17 }).unwrap().unwrap();
    let (a, m) = (flat(map.layers[0].a.as_tensor()), flat(with_kl.mean[0].as_tensor()));
    assert!(m.iter().map(|x| x.abs()).sum::<f32>() < a.iter().map(|x| x.abs()).sum::<f32>(), "the KL step did not pull the means towards the prior's 0");
}
