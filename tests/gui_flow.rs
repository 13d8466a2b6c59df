//! The workbench driven headless (egui_kittest, no renderer): pick a sample dataset, see its
//! preview, start a run on a tiny model, see progress, cancel; open a finished run directory made
//! by the pipeline (with the Laplace stage), move the prior slider and see the metrics change.

#[path = "../src/app/mod.rs"]
mod app;
#[path = "common/gui.rs"]
mod gui;

use app::store::RunStatus;
use app::{Tab, WorkbenchApp};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use gui::{harness, step_until};
use laplace_lora::calibration::binning::{metrics_binned, Binning, Scheme};
use laplace_lora::experiment::{self, ExperimentConfig, Stage};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Clicks a tab in the top bar (a setup section may carry the same name, e.g. "Training").
fn click_tab(h: &mut Harness<'static, WorkbenchApp>, label: &str) {
    let n = h.get_all_by_label(label).min_by(|a, b| a.rect().top().total_cmp(&b.rect().top())).unwrap();
    assert!(n.rect().top() < 40.0, "{label} is not in the top bar");
    n.click();
}

#[test]
fn pick_dataset_start_see_progress_cancel_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 3, false).unwrap();
    let mut a = WorkbenchApp::new(Some(repo().join("sample_data")), tmp.path().join("runs"));
    a.setup.model_source = model.display().to_string();
    a.setup.out_dir = tmp.path().join("runs").join("cancelled").display().to_string();
    a.setup.max_train = 16;
    a.setup.max_test = 8;
    a.setup.train_cfg.epochs = 2000; // long enough to be cancelled mid-training
    let mut h = harness(a);
    h.run_steps(2);

    // Pick a sample dataset: the preview shows its rendered prompts with the answer marked.
    h.get_by_label("yesno").click();
    h.run_steps(2);
    assert!(h.state().setup.train.ends_with("yesno/train.jsonl"), "{}", h.state().setup.train);
    step_until(&mut h, 20, "the preview", |a| a.setup.preview.as_ref().is_some_and(|p| p.path.ends_with("yesno/train.jsonl")));
    assert!(h.query_all_by_label_contains("correct answer").next().is_some(), "preview marks the answer");
    assert!(h.query_all_by_label_contains("Answer:").next().is_some(), "preview shows the rendered prompt");

    // Start: the worker runs and the progress bar names the stage.
    h.get_by_label("Run all").click();
    h.run_steps(2);
    assert!(h.state().worker.is_some(), "Run all starts the worker");
    step_until(&mut h, 120, "the training stage", |a| a.store.stage == Some(Stage::Train));
    assert!(h.query_all_by_label_contains("fine-tuning").next().is_some(), "the stage is shown");
    assert!(h.state().store.metrics.contains_key("zero_shot"), "zero-shot metrics arrived live");

    // Cancel: the worker stops and the run is marked cancelled.
    h.get_all_by_label("Cancel").next().unwrap().click();
    h.run_steps(2);
    step_until(&mut h, 60, "the cancel", |a| a.worker.is_none());
    assert!(matches!(h.state().store.status, RunStatus::Cancelled(_)), "{:?}", h.state().store.status);
    assert!(h.query_all_by_label_contains("Cancelled").next().is_some());
    let dir = tmp.path().join("runs").join("cancelled");
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(events.lines().last().unwrap().contains("\"cancelled\""));

    // The cancelled run opens from the Runs tab.
    click_tab(&mut h, "Runs");
    h.run_steps(2);
    h.get_all_by_label("Open").next().unwrap().click();
    step_until(&mut h, 20, "the run to open", |a| a.tab == Tab::Calibration);
    assert_eq!(h.state().store.dir.as_deref(), Some(dir.as_path()));
    assert!(h.state().store.metrics.contains_key("zero_shot"));
}

fn tiny_config(model: &Path) -> ExperimentConfig {
    ExperimentConfig::from_toml_str(&laplace_lora::testing::tiny_experiment_toml(model, 8, 2, 1)).unwrap()
}

#[test]
fn open_finished_run_every_tab_and_move_the_prior_slider() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 5, false).unwrap();
    let dir = tmp.path().join("runs").join("done");
    experiment::prepare_run_dir(&dir, false).unwrap();
    experiment::run(&tiny_config(&model), &dir, &AtomicBool::new(false), &mut |_| {}).unwrap();
    // A distribution-shift set evaluated on the finished run (`laplace-lora eval`), with its own
    // spectral cache for the Prior tab.
    let shift = tmp.path().join("shift.jsonl");
    let lines: Vec<String> = (0..10)
        .map(|i| {
            let c: Vec<String> = (0..4).map(|j| format!("{}", (i * 7 + j * 13) % 50 + 1)).collect();
            let best = (0..4).max_by_key(|&j| (i * 7 + j * 13) % 50).unwrap();
            serde_json::json!({"id": format!("shift-{i}"), "question": "Which number is the largest?", "choices": c, "answer": best}).to_string()
        })
        .collect();
    std::fs::write(&shift, lines.join("\n") + "\n").unwrap();
    let set = laplace_lora::data::EvalSet { name: "shift".into(), path: shift, format: Default::default(), max_items: None, drop_unfit: false };
    experiment::evaluate_run(&dir, set, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert!(dir.join("eval").join("shift").join("spectral_cache.safetensors").is_file(), "the eval verb writes the set's spectral cache");

    let mut h = harness(WorkbenchApp::new(Some(repo().join("sample_data")), tmp.path().join("runs")));
    h.run_steps(2);
    click_tab(&mut h, "Runs");
    h.run_steps(2);
    assert!(h.query_all_by_label("done").next().is_some(), "the run is listed");
    h.get_all_by_label("Open").next().unwrap().click();
    step_until(&mut h, 20, "the run to open", |a| a.tab == Tab::Calibration);
    // The setup panel follows the opened run: its data (compare4, not the panel's first sample),
    // caps and training settings, so that "Run all" would repeat it.
    let setup = &h.state().setup;
    assert!(setup.train.ends_with("compare4/train.jsonl"), "{}", setup.train);
    assert_eq!((setup.max_train, setup.max_test, setup.train_cfg.epochs, setup.lora.rank), (8, 12, 2, 2));
    assert_eq!(setup.samples[setup.selected_sample.expect("a sample is selected")].name, "compare4");
    let s = &h.state().store;
    assert_eq!(s.status, RunStatus::Finished);
    for m in ["zero_shot", "map", "temperature", "laplace"] {
        assert!(s.metrics.contains_key(m), "{m}");
    }
    assert_eq!(s.predictions.len(), 12);
    assert!(!s.steps.is_empty() && !s.validation.is_empty(), "training curves replayed from events.jsonl");
    assert!(h.query_all_by_label("MAP").count() >= 2, "metrics table row (and the Show checkbox)");
    assert!(h.query_all_by_label("ECE").next().is_some(), "metrics table header");

    // Every tab draws this run.
    for t in ["Training", "Examples", "Log", "Calibration"] {
        click_tab(&mut h, t);
        h.run_steps(3);
    }
    click_tab(&mut h, "Examples");
    h.run_steps(2);
    h.get_by_label("overconf. (desc)").click();
    h.run_steps(2);
    h.get_by_label("1").click();
    h.run_steps(2);
    assert_eq!(h.state().examples.selected, Some(0));
    assert!(h.query_all_by_label_contains("Probabilities per answer").next().is_some());
    h.get_by_label("wrong and confident").click();
    h.run_steps(2);
    assert!(h.state().examples.wrong_confident);

    // Prior tab: opening the run installed its spectral cache as the prior slider's recompute.
    assert!(dir.join("laplace").join("spectral_cache.safetensors").is_file(), "the pipeline writes the spectral cache");
    assert!(h.state().store.recompute.is_some(), "the cache becomes the prior slider's recompute");
    click_tab(&mut h, "Prior precision");
    h.run_steps(3);
    assert!(h.query_all_by_label_contains("Log marginal likelihood").next().is_some());
    let laplace_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("laplace").join("laplace.json")).unwrap()).unwrap();
    let chosen = h.state().store.chosen_delta.unwrap();
    if let Some(p) = laplace_json["prior_precision"].as_f64() {
        assert_eq!(chosen, p, "the chosen delta is laplace.json's prior_precision");
    }
    let before = h.state().store.prior_metrics.clone().unwrap();
    let run_laplace = h.state().store.metrics["laplace"].clone();
    assert!(
        (before.nll - run_laplace.nll).abs() < 0.02 * run_laplace.nll.abs().max(1.0),
        "at the chosen delta the slider gives the run's Laplace predictive: {} vs {}",
        before.nll,
        run_laplace.nll
    );
    assert!(
        h.query_all_by_label_contains(&format!("at δ = {chosen:.4}:")).next().is_some(),
        "readout at {chosen}: {:?} {:?}",
        h.state().store.prior_curve,
        h.state().store.prior_delta
    );
    let lo = h.state().store.prior_curve.as_ref().unwrap()[0].delta.log10().min(chosen.log10());
    let slider = h.get_by_role_and_label(egui::accesskit::Role::Slider, "log10 delta");
    slider.set_value_accesskit(lo);
    h.run_steps(3);
    let d = h.state().store.prior_delta.unwrap();
    assert!((d.log10() - lo).abs() < 0.011, "slider moved delta to {d}, wanted 1e{lo}");
    let after = h.state().store.prior_metrics.clone().unwrap();
    assert!((after.nll - before.nll).abs() > 1e-6, "the metrics follow the slider: {} -> {}", before.nll, after.nll);
    assert!(h.query_all_by_label_contains(&format!("at δ = {d:.4}:")).next().is_some(), "the readout follows the slider");
    assert!(h.query_all_by_label(&format!("{:.4}", after.nll)).next().is_some(), "the table shows the new NLL");
    // The examples follow the slider too (probabilities and logit covariance at the new delta).
    let p0 = h.state().store.prior_probs.as_ref().unwrap()[0].clone();
    assert_eq!(p0.len(), h.state().store.predictions[0].choices.len());
    let (_, cov, at_slider) = h.state().store.item_logits(0).unwrap();
    assert!(at_slider && cov.len() == p0.len());

    // The Prior tab on the shift set: the slider's metrics there come from eval/shift's cache; at
    // the chosen delta they are the set's Laplace-LoRA metrics (exact Sigma_f in metrics.json, the
    // binned spectral one here: 2% on NLL as for the test split), and they follow the slider.
    h.state_mut().eval_set = "shift".into();
    h.state_mut().store.set_prior_delta(chosen);
    h.run_steps(1);
    step_until(&mut h, 30, "the shift set's cache", |a| a.store.set_prior.is_some());
    let (_, d0, probs, m0) = h.state().store.set_prior.clone().unwrap();
    assert_eq!((d0, probs.len()), (chosen, 10));
    let want = h.state().store.eval_metrics["shift"]["laplace"].clone();
    assert!((m0.nll - want.nll).abs() < 0.02 * want.nll.abs().max(1.0), "shift NLL at the chosen delta {} vs the run's {}", m0.nll, want.nll);
    assert!((m0.accuracy - want.accuracy).abs() < 0.11, "shift accuracy {} vs {}", m0.accuracy, want.accuracy);
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("Metrics on shift at the slider").next().is_some());
    assert!(h.query_all_by_label(&format!("{:.4}", m0.nll)).next().is_some(), "the table shows the shift set's NLL {:.4}", m0.nll);
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "log10 delta").set_value_accesskit(lo);
    h.run_steps(3);
    let (_, d1, _, m1) = h.state().store.set_prior.clone().unwrap();
    assert!((d1.log10() - lo).abs() < 0.011 && (m1.nll - m0.nll).abs() > 1e-6, "the shift metrics follow the slider: {d1} {} -> {}", m0.nll, m1.nll);
    h.state_mut().eval_set = app::store::TEST_SET.to_string();
    h.run_steps(2);

    // Exports write files into the run directory.
    h.get_all_by_label("SVG").next().unwrap().click();
    h.get_all_by_label("CSV").next().unwrap().click();
    h.run_steps(2);
    let ex = dir.join("exports");
    assert!(ex.join("prior_log_marglik.svg").is_file() && ex.join("prior_log_marglik.csv").is_file());
    assert!(std::fs::read_to_string(ex.join("prior_log_marglik.svg")).unwrap().starts_with("<svg"));

    // Calibration with 4 equal-mass bins and bootstrap intervals: the table shows the metrics of
    // the stored probabilities under that binning, and the intervals' header.
    click_tab(&mut h, "Calibration");
    h.run_steps(2);
    h.state_mut().calib.stats = app::views::StatsSettings { binning: Binning { bins: 4, scheme: Scheme::EqualMass }, bootstrap: true };
    h.run_steps(3);
    let preds = &h.state().store.predictions;
    let probs: Vec<Vec<f64>> = preds.iter().map(|p| p.probs["map"].clone()).collect();
    let labels: Vec<usize> = preds.iter().map(|p| p.label).collect();
    let want = metrics_binned(&probs, &labels, &Binning { bins: 4, scheme: Scheme::EqualMass });
    // MCE, the largest bin gap, moves with the binning (ECE need not: with every gap of one sign
    // it is |accuracy - mean confidence| under any binning).
    let stored = &h.state().store.metrics["map"];
    assert!((want.mce - stored.mce).abs() > 1e-4, "the test needs a binning that changes MCE: {} vs {}", want.mce, stored.mce);
    assert!(h.query_all_by_label(&format!("{:.4}", want.mce)).next().is_some(), "MAP's equal-mass MCE {:.4} in the table", want.mce);
    assert!(h.query_all_by_label("ECE 95%").next().is_some(), "the bootstrap intervals are shown");
}

#[test]
fn fit_laplace_on_an_opened_fine_tuned_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 6, false).unwrap();
    let dir = tmp.path().join("runs").join("mapped");
    experiment::prepare_run_dir(&dir, false).unwrap();
    let mut cfg = tiny_config(&model);
    cfg.laplace.enabled = false; // what the Fine-tune button runs
    experiment::run(&cfg, &dir, &AtomicBool::new(false), &mut |_| {}).unwrap();

    let mut h = harness(WorkbenchApp::new(Some(repo().join("sample_data")), tmp.path().join("runs")));
    h.run_steps(2);
    assert!(h.state().refit_target().is_none(), "nothing open: Fit Laplace is disabled");
    click_tab(&mut h, "Runs");
    h.run_steps(2);
    h.get_all_by_label("Open").next().unwrap().click();
    step_until(&mut h, 20, "the run to open", |a| a.store.dir.as_deref() == Some(dir.as_path()) && a.store.metrics.contains_key("map"));
    assert!(!h.state().store.metrics.contains_key("laplace"));
    assert_eq!(h.state().refit_target().as_deref(), Some(dir.as_path()));
    h.get_by_label("Fit Laplace").click();
    h.run_steps(1);
    assert!(h.state().worker.is_some() || h.state().store.metrics.contains_key("laplace"), "the refit started");
    step_until(&mut h, 120, "the Laplace fit", |a| a.worker.is_none() && a.store.metrics.contains_key("laplace"));
    let s = &h.state().store;
    assert_eq!(s.status, RunStatus::Finished);
    assert!(s.metrics.contains_key("map") && s.metrics.contains_key("llla"));
    assert!(!s.steps.is_empty(), "the training curves stay on screen");
    assert!(s.prior_curve.is_some(), "the prior curve is read after the fit");
    assert!(dir.join("laplace").join("posterior.safetensors").is_file());
    assert_eq!(h.state().status_line, "Laplace fitted on the open run");
}

/// Every file under `dir` with its length and modification time.
fn files_of(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn ask_your_own_question_and_see_the_training_items_behind_a_prediction() {
    use egui::accesskit::Role;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 7, false).unwrap();
    let dir = tmp.path().join("runs").join("asked");
    experiment::prepare_run_dir(&dir, false).unwrap();
    experiment::run(&tiny_config(&model), &dir, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let before = files_of(&dir);

    let mut h = harness(WorkbenchApp::new(Some(repo().join("sample_data")), tmp.path().join("runs")));
    h.run_steps(2);
    h.state_mut().open_run(dir.clone());
    step_until(&mut h, 20, "the run to open", |a| a.store.dir.as_deref() == Some(dir.as_path()) && !a.store.predictions.is_empty());
    click_tab(&mut h, "Examples");
    h.run_steps(2);
    h.get_by_label("Ask your own question").click();
    h.run_steps(2);

    // Type a question and its four choices (the run answers A..D), ask, wait for the answer.
    let question = "Which number is the largest?";
    let choices = ["seven", "three", "twelve", "one"];
    let q = h.get_by_role_and_label(Role::TextInput, "Question");
    q.focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::TextInput, "Question").type_text(question);
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Choices (one a line)").focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Choices (one a line)").type_text(&choices.join("\n"));
    h.run_steps(2);
    assert_eq!(h.state().ask.question.question, question);
    assert_eq!(h.state().ask.question.choices, choices.join("\n"));
    h.get_by_label("Ask").click();
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("computing...").next().is_some(), "the question is computed in the background");
    step_until(&mut h, 120, "the answer", |a| a.ask.answer.is_some() || a.ask.message.is_some());
    assert!(h.state().ask.message.is_none(), "{:?}", h.state().ask.message);
    let (item, shown) = h.state().ask.answer.clone().unwrap();
    assert!(item.prompt.contains("A. seven\nB. three\nC. twelve\nD. one\nAnswer:"), "{}", item.prompt);
    let lap = shown.iter().find(|p| p.method == "laplace").expect("Laplace-LoRA answered");
    assert!(h.query_all_by_label(&format!("{:.4}", lap.probs[0])).next().is_some(), "the probabilities are shown");
    assert!(h.query_all_by_label_contains("Laplace-LoRA's logits under the posterior").next().is_some());
    assert_eq!(files_of(&dir), before, "asking leaves the run directory as it was");

    // A fifth choice does not fit a run with four answer letters: a message, no answer change.
    h.state_mut().ask.question.choices.push_str("\nninety");
    h.get_by_label("Ask").click();
    step_until(&mut h, 20, "the message", |a| a.ask.message.is_some());
    assert!(h.state().ask.message.as_ref().unwrap().contains("give 2 to 4 choices"), "{:?}", h.state().ask.message);
    assert!(h.query_all_by_label_contains("give 2 to 4 choices").next().is_some(), "the message is shown");

    // The same item written as a file and evaluated by `evaluate_run` gives the same numbers.
    let f = tmp.path().join("mine.jsonl");
    std::fs::write(&f, serde_json::json!({"id": "mine", "question": question, "choices": choices, "answer": 0}).to_string() + "\n").unwrap();
    let set = laplace_lora::data::EvalSet { name: "mine".into(), path: f, format: Default::default(), max_items: None, drop_unfit: false };
    experiment::evaluate_run(&dir, set, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let want = experiment::read_predictions(&dir.join("eval").join("mine").join("predictions.jsonl")).unwrap().remove(0);
    assert_eq!(want.prompt, item.prompt, "rendered with the run's template");
    assert_eq!(want.probs.len(), shown.len(), "every method answered");
    for p in &shown {
        let w = &want.probs[&p.method];
        assert_eq!(w.len(), p.probs.len());
        for (a, b) in w.iter().zip(&p.probs) {
            assert!((a - b).abs() < 1e-9, "{}: {a} vs {b}", p.method);
        }
        if let Some(m) = &p.logit_mean {
            for (a, b) in want.logit_mean[&p.method].iter().zip(m) {
                assert!((a - b).abs() < 1e-9, "{} logit mean: {a} vs {b}", p.method);
            }
        }
    }

    // The training items behind a test item's prediction, computed on the same run's thread.
    let before = files_of(&dir);
    h.get_by_label("Back to the items").click();
    h.run_steps(3);
    // The button sits below the item's logits, out of the window: clicked through accesskit.
    h.get_by_label("Find the top 10 training items").click_accesskit();
    h.run_steps(1);
    assert!(h.state().ask.busy() || !h.state().ask.supports.is_empty(), "the click asked for the supports");
    step_until(&mut h, 120, "the supports", |a| !a.ask.supports.is_empty() && !a.ask.busy());
    let (_, sup) = h.state().ask.supports.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    let sup = sup.expect("supports computed");
    assert_eq!(sup.rows.len(), sup.n_train.min(10));
    assert!(sup.rows.windows(2).all(|w| w[0].score.abs() >= w[1].score.abs()), "ranked by |s_n|");
    assert!(h.query_all_by_label_contains("training items scored").next().is_some());

    // Which prompt tokens drive the same item's answer, on the same thread: one score per
    // prompt token and choice (checked against finite differences in tests/saliency.rs), the
    // strongest listed under the coloured prompt.
    h.get_by_label("Show which tokens drive the answer").click_accesskit();
    h.run_steps(1);
    step_until(&mut h, 60, "the saliency", |a| !a.ask.saliency.is_empty() && !a.ask.busy());
    let sal = h.state().ask.saliency.values().next().unwrap().clone().expect("saliency computed");
    let item = &h.state().store.predictions[h.state().examples.selected.unwrap()];
    assert_eq!(sal.scores.per_class.len(), item.choices.len());
    assert!(sal.scores.per_class.iter().all(|r| r.len() == sal.tokens.len()));
    assert!(sal.tokens.len() > 5 && sal.scores.per_class.iter().flatten().any(|v| *v != 0.0), "{sal:?}");
    let scores = app::views::shown_scores(&sal, sal.scores.predicted(), false);
    let (t, v) = app::views::strongest(&scores, 1)[0];
    let want = format!("{:?} {v:+.3}", sal.tokens[t]);
    assert!(h.query_all_by_label(&want).next().is_some(), "the strongest token {want} is listed");
    assert!(h.query_all_by_label("for the answer").next().is_some(), "the answer selector is shown");
    assert_eq!(files_of(&dir), before, "nothing of this is written into the run");
}
