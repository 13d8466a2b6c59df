//! Snapshot images of every tab (egui_kittest, rendered on the CPU adapter), drawn from a
//! synthetic run with every optional field present (Laplace, LLLA, logit covariance, prior
//! curve), so the pictures do not depend on timings or paths. Update with UPDATE_SNAPSHOTS=1.

#[path = "../src/app/mod.rs"]
mod app;

use app::store::{PredRow, PriorPoint, RunStatus, RunStore, StepReport, ValPoint};
use app::{Tab, WorkbenchApp};
use egui_kittest::Harness;
use laplace_lora::calibration::{metrics, softmax};
use laplace_lora::experiment::Summary;
use std::path::PathBuf;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn synthetic_store() -> RunStore {
    let mut r = Lcg(7);
    let mut s = RunStore { status: RunStatus::Finished, ..Default::default() };
    s.total_steps = 48;
    for step in 1..=48 {
        let loss = 1.4 * (-(step as f64) / 15.0).exp() + 0.05 + 0.15 * r.next();
        let lr = if step <= 5 { 5e-4 * step as f64 / 5.0 } else { 5e-4 * (48 - step) as f64 / 43.0 };
        s.steps.push(StepReport {
            step,
            total_steps: s.total_steps,
            epoch: (step - 1) / 16,
            loss,
            batch_accuracy: (1.0 - loss / 1.6).clamp(0.0, 1.0),
            learning_rate: lr,
            grad_norm: 1.0,
            seconds: 0.5,
        });
    }
    for (e, (acc, ece, nll)) in [(0.55, 0.08, 1.1), (0.68, 0.12, 0.95), (0.70, 0.21, 1.05)].into_iter().enumerate() {
        s.validation.push(ValPoint { epoch: e + 1, step: 16 * (e + 1), summary: Summary { accuracy: acc, ece, nll, brier: 0.4 } });
    }
    let (mut map, mut temp, mut zs, mut lap, mut llla, mut labels) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..40 {
        let label = i % 4;
        let mut f: Vec<f64> = (0..4).map(|_| 3.0 * r.next()).collect();
        if r.next() < 0.7 {
            f[label] += 3.0;
        } else {
            f[(label + 1) % 4] += 3.0;
        }
        let cov: Vec<Vec<f64>> = (0..4).map(|a| (0..4).map(|b| if a == b { 1.0 + r.next() } else { 0.2 }).collect()).collect();
        let m = softmax(&f);
        let t = softmax(&f.iter().map(|x| x / 1.8).collect::<Vec<_>>());
        let l = softmax(&f.iter().map(|x| x / 1.6).collect::<Vec<_>>());
        let ll = softmax(&f.iter().map(|x| x / 1.3).collect::<Vec<_>>());
        let z = softmax(&f.iter().map(|x| x / 4.0).collect::<Vec<_>>());
        s.predictions.push(PredRow {
            id: format!("compare4-test-{i:04}"),
            prompt: format!(
                "Select one of the choices that answers the following question: Which number is the largest?\nChoices:\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
                10 + i,
                20 + i,
                30 + i,
                40 + i
            ),
            choices: (0..4).map(|c| format!("{}", 10 * (c + 1) + i)).collect(),
            label,
            map_logits: Some(f.clone()),
            probs: [("map", &m), ("temperature", &t), ("zero_shot", &z), ("laplace", &l), ("llla", &ll)]
                .iter()
                .map(|(k, v)| (k.to_string(), (*v).clone()))
                .collect(),
            logit_mean: [("laplace".to_string(), f.clone())].into_iter().collect(),
            logit_cov: [("laplace".to_string(), cov)].into_iter().collect(),
            ..Default::default()
        });
        map.push(m);
        temp.push(t);
        zs.push(z);
        lap.push(l);
        llla.push(ll);
        labels.push(label);
    }
    for (k, p) in [("zero_shot", &zs), ("map", &map), ("temperature", &temp), ("llla", &llla), ("laplace", &lap)] {
        s.metrics.insert(k.into(), metrics(p, &labels));
        s.method_order.push(k.into());
    }
    s.temperature = Some(1.8);
    s.prior_curve = Some(
        [
            (0.01, -60.0, 1.5, 0.22),
            (0.03, -45.0, 1.3, 0.16),
            (0.1, -33.0, 1.1, 0.10),
            (0.3, -27.0, 1.0, 0.06),
            (1.0, -25.0, 0.98, 0.05),
            (3.0, -28.0, 1.02, 0.09),
            (10.0, -35.0, 1.1, 0.14),
            (100.0, -50.0, 1.2, 0.2),
        ]
        .into_iter()
        .map(|(delta, log_marglik, val_nll, val_ece)| PriorPoint { delta, log_marglik, val_nll, val_ece })
        .collect(),
    );
    s.chosen_delta = Some(1.0);
    s.prior_delta = Some(1.0);
    s.log = vec!["[loading model] loaded".into(), "finished in 61.0 s".into()];
    s
}

#[test]
fn snapshot_every_tab() {
    // Relative paths keep the pictures the same on every checkout (tests run in the crate root).
    let mut a = WorkbenchApp::new(Some(PathBuf::from("sample_data")), PathBuf::from("target/no-runs-here"));
    a.store = synthetic_store();
    a.examples.selected = Some(1);
    let mut h = Harness::builder().with_size(egui::vec2(1400.0, 900.0)).build_ui_state(|ui, app: &mut WorkbenchApp| app.show(ui), a);
    let t = std::time::Instant::now();
    while h.state().setup.preview.is_none() && t.elapsed().as_secs() < 20 {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let logits: Vec<Vec<f64>> = h.state().store.predictions.iter().map(|p| p.map_logits.clone().unwrap()).collect();
    struct Soft(Vec<Vec<f64>>);
    impl app::store::PriorRecompute for Soft {
        fn at(&self, delta: f64) -> Vec<Vec<f64>> {
            self.0.iter().map(|l| softmax(&l.iter().map(|x| x / (1.0 + 1.0 / delta)).collect::<Vec<_>>())).collect()
        }
    }
    h.state_mut().set_prior_recompute(Box::new(Soft(logits)));
    // The Examples tab's uncertainty split is computed on a thread: wait for it, so that the
    // picture does not depend on timing.
    h.state_mut().tab = Tab::Examples;
    let t = std::time::Instant::now();
    while h.state().store.split_of("test", "laplace").is_none() && t.elapsed().as_secs() < 30 {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(h.state().store.split_of("test", "laplace").is_some_and(|r| r.is_ok()));
    let mut errors = vec![];
    for (tab, name) in [
        (Tab::Training, "tab_training"),
        (Tab::Calibration, "tab_calibration"),
        (Tab::Examples, "tab_examples"),
        (Tab::Prior, "tab_prior"),
        (Tab::Runs, "tab_runs"),
    ] {
        h.state_mut().tab = tab;
        h.run_steps(4);
        if let Err(e) = h.try_snapshot(name) {
            errors.push(e.to_string());
        }
    }
    h.state_mut().tab = Tab::Calibration;
    h.state_mut().calib.overlay = true;
    h.run_steps(4);
    if let Err(e) = h.try_snapshot("tab_calibration_overlaid") {
        errors.push(e.to_string());
    }
    // "Ask your own question" with an answer in place (what the run's thread would send back).
    {
        use laplace_lora::data::question::{render, Question};
        use laplace_lora::experiment::session::MethodPrediction;
        let a = h.state_mut();
        a.store.dir = Some(PathBuf::from("runs/synthetic"));
        a.tab = Tab::Examples;
        a.examples.ask_mode = true;
        a.ask.question = Question { context: String::new(), question: "Which number is the largest?".into(), choices: "7\n3\n12\n1".into() };
        let item = render(&a.ask.question, &laplace_lora::data::letter_labels(4), "your question").unwrap();
        let mp = |m: &str, probs: [f64; 4], gauss: bool| MethodPrediction {
            method: m.into(),
            probs: probs.to_vec(),
            logit_mean: gauss.then(|| vec![1.2, -0.4, 2.9, -1.1]),
            logit_cov: gauss.then(|| (0..4).map(|i| (0..4).map(|j| if i == j { 0.8 } else { 0.1 }).collect()).collect()),
        };
        a.ask.answer = Some((
            item,
            vec![
                mp("zero_shot", [0.25, 0.24, 0.27, 0.24], false),
                mp("map", [0.12, 0.02, 0.85, 0.01], false),
                mp("temperature", [0.18, 0.06, 0.72, 0.04], false),
                mp("laplace", [0.19, 0.08, 0.66, 0.07], true),
            ],
        ));
    }
    h.run_steps(4);
    if let Err(e) = h.try_snapshot("examples_ask") {
        errors.push(e.to_string());
    }
    // The training items behind the selected item's prediction (as the run's thread would rank
    // them), in a taller window: the list sits below the item's logits.
    {
        use laplace_lora::experiment::session::{SupportRow, Supports};
        let a = h.state_mut();
        a.examples.ask_mode = false;
        let id = a.store.predictions[1].id.clone();
        let row = |i: usize, label: usize, score: f64| SupportRow {
            id: format!("train-{i}"),
            label,
            label_text: ["11", "21", "31", "41"][label].into(),
            prompt: format!("Select one of the choices that answers the following question: Which number is the largest? ({i})\nChoices:\nA. 11\nAnswer:"),
            score,
            frobenius: score.abs() * 1.7,
            kernel: vec![0.0; 16],
        };
        let rows = vec![row(4, 1, 3.2e-2), row(17, 2, -2.1e-2), row(9, 1, 1.5e-2), row(30, 0, -4.0e-3)];
        a.ask.supports.insert(format!("test/{id}"), Ok(Supports { predicted: 1, rows, n_train: 64 }));
    }
    h.set_size(egui::vec2(1400.0, 1200.0));
    h.run_steps(4);
    if let Err(e) = h.try_snapshot("examples_supports") {
        errors.push(e.to_string());
    }
    // Which prompt tokens drive the same item's answer (as the run's thread would send them): the
    // prompt's words as tokens, scores made from their positions.
    {
        use laplace_lora::experiment::session::Saliency;
        use laplace_lora::model::saliency::TokenSaliency;
        let a = h.state_mut();
        let p = a.store.predictions[1].clone();
        let mut tokens: Vec<String> = p.prompt.split_inclusive(' ').map(|t| t.to_string()).collect();
        tokens.truncate(40);
        let k = p.choices.len();
        let per_class = (0..k)
            .map(|c| (0..tokens.len()).map(|t| ((t * 7 + c * 3) % 11) as f64 / 10.0 - 0.5 + if t == 12 && c == 1 { 2.0 } else { 0.0 }).collect())
            .collect();
        let logits = (0..k).map(|c| if c == 1 { 2.0 } else { 0.5 - c as f64 * 0.1 }).collect();
        a.ask.saliency.insert(format!("test/{}", p.id), Ok(Saliency { tokens, scores: TokenSaliency { logits, per_class } }));
    }
    h.run_steps(4);
    if let Err(e) = h.try_snapshot("examples_saliency") {
        errors.push(e.to_string());
    }
    h.set_size(egui::vec2(1400.0, 900.0));
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Writes a fake finished run: config.toml, events.jsonl with time stamps, and metrics.json with
/// two methods; the directory's time is fixed so the date column is the same on every run.
fn fake_run(dir: &std::path::Path, train: &str, map: [f64; 4], laplace: [f64; 4], seconds: f64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("[model]\nsource = \"smollm2-135m-instruct\"\n[data]\ntrain = \"{train}\"\n[methods]\nlist = [\"map\", \"laplace\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("events.jsonl"),
        format!("{{\"t\":0.0,\"event\":\"started\",\"run_dir\":\"x\",\"unix_time\":0}}\n{{\"t\":{seconds},\"event\":\"finished\",\"seconds\":{seconds}}}\n"),
    )
    .unwrap();
    let m = |v: [f64; 4]| format!("{{\"accuracy\":{},\"ece\":{},\"nll\":{},\"brier\":{},\"n\":100}}", v[0], v[1], v[2], v[3]);
    std::fs::write(dir.join("metrics.json"), format!("{{\"layout\":2,\"methods\":[\"map\",\"laplace\"],\"map\":{},\"laplace\":{}}}", m(map), m(laplace)))
        .unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000 + seconds as u64);
    std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
}

/// A runs root with two loose runs and a two-seed sweep (relative, so the picture has no
/// temporary path in it).
fn fake_runs_root() -> PathBuf {
    let root = PathBuf::from("target/gui-runs-table");
    let _ = std::fs::remove_dir_all(&root);
    fake_run(&root.join("obqa-lr3e-4"), "obqa", [0.61, 0.21, 1.02, 0.55], [0.64, 0.06, 0.88, 0.49], 3725.0);
    fake_run(&root.join("compare4-r8"), "sample_data/compare4/train.jsonl", [0.72, 0.18, 0.95, 0.41], [0.71, 0.05, 0.74, 0.39], 610.0);
    let sw = root.join("demo-sweep");
    for (seed, acc) in [(0, 0.58), (1, 0.66)] {
        fake_run(&sw.join(format!("runs/seed={seed}")), "arc-easy", [acc, 0.2 + acc / 10.0, 1.1, 0.5], [acc + 0.01, 0.07, 0.9, 0.45], 900.0 + seed as f64);
    }
    let point = |seed: u32| {
        format!(
            r#"{{"name":"seed={seed}","labels":{{"seed":"{seed}"}},"overrides":{{"train.seed":{seed}}},"dataset":"arc-easy","config":"configs/seed={seed}.toml","run_dir":"runs/seed={seed}","log":"logs/seed={seed}.log","status":"finished"}}"#
        )
    };
    let manifest = format!(
        r#"{{"version":1,"name":"demo-sweep","sweep_file":"demo.toml","created_unix":0,"updated_unix":0,"executor":"local","axes":[{{"name":"seed","keys":["train.seed"],"labels":["0","1"]}}],"points":[{},{}]}}"#,
        point(0),
        point(1)
    );
    std::fs::write(sw.join("sweep.json"), manifest).unwrap();
    root
}

#[test]
fn runs_table_lists_runs_sweeps_and_methods() {
    use egui_kittest::kittest::Queryable;
    let root = fake_runs_root();
    let mut a = WorkbenchApp::new(None, root.clone());
    a.tab = Tab::Runs;
    let mut h = Harness::builder().with_size(egui::vec2(1400.0, 900.0)).build_ui_state(|ui, app: &mut WorkbenchApp| app.show(ui), a);
    h.run_steps(4);
    for name in ["obqa-lr3e-4", "compare4-r8", "seed=0", "seed=1"] {
        assert!(h.query_by_label(name).is_some(), "{name} is listed");
    }
    // (The setup panel has a button for the known dataset too: the table's entry is a label.)
    let label = egui::accesskit::Role::Label;
    assert!(h.query_by_role_and_label(label, "obqa").is_some() && h.query_by_role_and_label(label, "compare4").is_some(), "dataset column");
    assert!(h.query_all_by_label_contains("Laplace-LoRA ACC").count() >= 2, "a column per method, in both tables");
    assert!(h.query_by_label("0.640").is_some(), "Laplace-LoRA's accuracy of the obqa run");
    assert!(h.query_by_label("1h 02m").is_some(), "the duration from the events' time stamps");
    assert!(h.query_all_by_label_contains("Sweep demo-sweep").next().is_some(), "the sweep's group and plot");
    let r = h.state().runs_index.sweeps[0].report.as_ref().map(|r| r.rows.len());
    assert_eq!(r, Ok(2), "the sweep's report: map and laplace over two seeds");
    let mut errors = vec![];
    if let Err(e) = h.try_snapshot("tab_runs_table") {
        errors.push(e.to_string());
    }
    // Sort by Laplace-LoRA's ECE (the header of the first table), and the filter.
    h.state_mut().runs_state.metric = 1;
    h.state_mut().runs_state.filter = "obqa".into();
    h.run_steps(3);
    assert!(h.query_by_label("compare4-r8").is_none(), "filtered out");
    assert!(h.query_by_label("0.060").is_some(), "ECE shown");
    // Trash asks first, then moves the folder into .trash and says where.
    h.get_by_label("Trash").click();
    h.run_steps(2);
    assert!(h.state().runs_state.confirm_trash.is_some(), "the confirmation is asked");
    assert!(root.join("obqa-lr3e-4").is_dir(), "nothing moves before the confirmation");
    h.get_by_label("Move to trash").click();
    h.run_steps(2);
    assert!(!root.join("obqa-lr3e-4").exists());
    let status = h.state().status_line.clone();
    assert!(status.starts_with("moved ") && status.contains(".trash"), "{status}");
    let moved: Vec<_> = std::fs::read_dir(root.join(".trash")).unwrap().flatten().collect();
    assert!(moved.len() == 1 && moved[0].path().join("metrics.json").is_file());
    assert!(h.query_by_label("obqa-lr3e-4").is_none(), "the list is rescanned");
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A run directory with a test split and a shift set `eval/shifted/`, whose items carry an
/// ensemble's member probabilities (`samples`) and a logit Gaussian for Laplace-LoRA.
fn run_with_eval_set(dir: &std::path::Path) {
    use laplace_lora::experiment::{write_predictions, MetricsFile, Prediction};
    let mut r = Lcg(3);
    let mut make = |n: usize, prefix: &str| -> Vec<Prediction> {
        (0..n)
            .map(|i| {
                let label = i % 2;
                let members: Vec<Vec<f64>> = (0..4).map(|_| softmax(&[3.0 * r.next(), 3.0 * r.next()])).collect();
                let mean: Vec<f64> = (0..2).map(|k| members.iter().map(|m| m[k]).sum::<f64>() / 4.0).collect();
                let f = vec![2.0 * r.next(), 0.0];
                Prediction {
                    id: format!("{prefix}-{i}"),
                    prompt: "Is it?".into(),
                    choices: vec!["yes".into(), "no".into()],
                    label,
                    probs: [("map".to_string(), softmax(&f)), ("deep_ensemble".to_string(), mean), ("laplace".to_string(), softmax(&f))].into_iter().collect(),
                    samples: [("deep_ensemble".to_string(), members)].into_iter().collect(),
                    logit_mean: [("laplace".to_string(), f)].into_iter().collect(),
                    logit_cov: [("laplace".to_string(), vec![vec![1.0, 0.0], vec![0.0, 1.0]])].into_iter().collect(),
                    ..Default::default()
                }
            })
            .collect()
    };
    for (sub, n, prefix) in [("", 6, "test"), ("eval/shifted", 9, "shift")] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let preds = make(n, prefix);
        write_predictions(&d.join("predictions.jsonl"), &preds).unwrap();
        let labels: Vec<usize> = preds.iter().map(|p| p.label).collect();
        let mut mf = MetricsFile::default();
        for m in ["map", "deep_ensemble", "laplace"] {
            let probs: Vec<Vec<f64>> = preds.iter().map(|p| p.probs[m].clone()).collect();
            mf.set(m, serde_json::to_value(metrics(&probs, &labels)).unwrap());
        }
        mf.write(&d.join("metrics.json")).unwrap();
    }
    std::fs::write(
        dir.join("events.jsonl"),
        "{\"t\":0,\"event\":\"started\",\"run_dir\":\"x\",\"unix_time\":0}\n{\"t\":5,\"event\":\"finished\",\"seconds\":5}\n",
    )
    .unwrap();
}

#[test]
fn eval_set_selector_uncertainty_split_and_method_difference() {
    use egui_kittest::kittest::Queryable;
    let tmp = tempfile::tempdir().unwrap();
    run_with_eval_set(tmp.path());
    let mut a = WorkbenchApp::new(None, PathBuf::from("target/no-runs-here"));
    a.store = app::store::load_run_dir(tmp.path());
    assert_eq!(a.store.eval_set_names(), ["shifted"]);
    a.tab = Tab::Examples;
    a.eval_set = "shifted".into();
    let mut h = Harness::builder().with_size(egui::vec2(1400.0, 900.0)).build_ui_state(|ui, app: &mut WorkbenchApp| app.show(ui), a);
    let t = std::time::Instant::now();
    while h.state().store.split_of("shifted", "laplace").is_none_or(|r| r.is_err()) && t.elapsed().as_secs() < 30 {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    h.run_steps(3);
    let s = &h.state().store;
    assert_eq!(s.set_predictions("shifted").unwrap().unwrap().len(), 9, "the shift set's items, read lazily");
    assert_eq!(s.split_of("shifted", "laplace").unwrap().unwrap().len(), 9);
    assert!(h.query_by_label("shift-0").is_some(), "the table lists the shift set's items");
    assert!(h.query_by_label("epistemic").is_some(), "the split's columns");
    assert!(h.query_all_by_label_contains("Uncertainty of Laplace-LoRA").next().is_some(), "the item's split");
    // The ensemble's split comes from its members: total = aleatoric + epistemic by hand.
    h.state_mut().examples.split_method = Some("deep_ensemble".into());
    let t = std::time::Instant::now();
    while h.state().store.split_of("shifted", "deep_ensemble").is_none() && t.elapsed().as_secs() < 30 {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = &h.state().store;
    let x = s.split_of("shifted", "deep_ensemble").unwrap().unwrap()[0].unwrap();
    let p = &s.set_predictions("shifted").unwrap().unwrap()[0];
    let h_ = |q: &[f64]| -q.iter().map(|v| v * v.ln()).sum::<f64>();
    let al = p.samples["deep_ensemble"].iter().map(|m| h_(m)).sum::<f64>() / 4.0;
    assert!((x.aleatoric - al).abs() < 1e-12 && (x.total - h_(&p.probs["deep_ensemble"])).abs() < 1e-12);
    // The method difference list, and the Calibration tab's AURC on the shift set.
    h.state_mut().examples.diff_mode = true;
    h.run_steps(3);
    assert!(h.query_all_by_label_contains("change their answer").next().is_some());
    h.state_mut().tab = Tab::Calibration;
    h.run_steps(3);
    assert!(h.query_by_label("AURC").is_some());
    assert!(h.query_all_by_label_contains("Risk-coverage").next().is_some());
    // Back to the test split: its 6 items.
    h.state_mut().eval_set = "test".into();
    h.state_mut().tab = Tab::Examples;
    h.state_mut().examples.diff_mode = false;
    h.run_steps(3);
    assert!(h.query_by_label("test-0").is_some() && h.query_by_label("shift-0").is_none());
}
