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
    assert!(errors.is_empty(), "{errors:#?}");
}
