//! The Prior precision tab: the evidence and validation curves against delta and the live slider.

use super::*;
use crate::app::figure::{Figure, Series};
use crate::app::store::{interp_prior, RunStore, PRIOR_METHOD};
use egui::{Color32, RichText};
use laplace_lora::calibration::Metrics;

/// The prior-precision tab. Moving the slider recomputes the test predictive before anything
/// below it is drawn, so the readout, metrics and reliability diagram follow in the same frame.
pub fn prior_tab(ui: &mut egui::Ui, s: &mut RunStore, set: &mut String, vc: &ViewCtx) {
    explain(ui, "The Laplace approximation puts a Gaussian over the LoRA weights whose width depends on the prior precision delta: a large delta trusts the fine-tuned weights (little uncertainty, close to MAP), a small delta lets them vary more (more uncertainty, softer probabilities). The workbench picks delta by maximising the log marginal likelihood (how well the model with that prior explains the training data, penalised for complexity; left plot, higher is better), and you can compare that choice with validation NLL and ECE (lower is better). The green line marks the chosen delta, the purple one the slider. Move the slider to try another delta: the test metrics, the reliability diagram below, the Calibration tab's \"Laplace @ slider\" entry and the Examples tab are recomputed instantly from the cached Jacobians (probit predictive).");
    let Some(curve) = &s.prior_curve else {
        ui.add_space(20.0);
        ui.label(RichText::new("The posterior stage is not in this run.").strong());
        ui.label("This tab needs prior_curve.csv (written by the Laplace stage): log marginal likelihood, validation NLL and ECE over a grid of prior precisions. Runs made before the Laplace stage landed, or cancelled before it, have none.");
        return;
    };
    let (mut lo, mut hi) = (curve.first().unwrap().delta.log10(), curve.last().unwrap().delta.log10());
    if let Some(c) = s.chosen_delta.filter(|c| *c > 0.0) {
        lo = lo.min(c.log10());
        hi = hi.max(c.log10());
    }
    let cur = s.prior_delta.or(s.chosen_delta).unwrap_or(10f64.powf((lo + hi) / 2.0));
    let mut x = cur.log10();
    let mut new_delta = None;
    ui.horizontal(|ui| {
        ui.label("prior precision δ (log₁₀):");
        let r = ui.add(egui::Slider::new(&mut x, lo..=hi).text("log10 delta").custom_formatter(|v, _| format!("{v:.2}")));
        if r.changed() {
            new_delta = Some(10f64.powf(x));
        }
        ui.label(format!("δ = {:.4}", 10f64.powf(x)));
        if let Some(c) = s.chosen_delta {
            ui.colored_label(Color32::from_rgb(50, 175, 95), format!("chosen δ = {c:.4}"));
            if ui
                .add_enabled((c.log10() - x).abs() > 1e-9, egui::Button::new("Reset to chosen δ"))
                .on_hover_text("The delta the run chose (laplace.json, prior_precision)")
                .clicked()
            {
                new_delta = Some(c);
                x = c.log10();
            }
        }
    });
    if let Some(d) = new_delta {
        s.set_prior_delta(d);
    }
    eval_set_selector(ui, s, set);
    // Another set's metrics at the slider's delta, from that set's spectral cache.
    let on_set = (set != TEST_SET).then(|| s.prior_metrics_on(set));
    let s: &RunStore = s;
    let Some(curve) = &s.prior_curve else { return };
    if let Some(p) = interp_prior(curve, 10f64.powf(x)) {
        ui.label(
            RichText::new(format!(
                "at δ = {:.4}: log marginal likelihood {:.3}, validation NLL {:.4}, validation ECE {:.4}",
                p.delta, p.log_marglik, p.val_nll, p.val_ece
            ))
            .monospace(),
        );
    }
    let mk = |id: &str, title: &str, y: &str, f: &dyn Fn(&crate::app::store::PriorPoint) -> f64, c: Color32| {
        let mut fig = Figure::new(id, title, "prior precision δ", y);
        fig.log_x = true;
        fig.legend = false;
        fig.series.push(Series::line(y, c, curve.iter().map(|p| [p.delta.log10(), f(p)]).collect()).width(2.5));
        fig.series.push(Series::vline("slider δ", SLIDER_COLOR, x));
        if let Some(d) = s.chosen_delta {
            fig.series.push(Series::vline("chosen δ", CHOSEN_COLOR, d.log10()).dashed());
        }
        fig
    };
    ui.horizontal(|ui| {
        ui.label("Lines:");
        ui.colored_label(CHOSEN_COLOR, "dashed green: the chosen δ");
        ui.colored_label(SLIDER_COLOR, "solid yellow: the slider's δ");
    });
    let h = 170.0;
    egui::ScrollArea::vertical().id_salt("prior_scroll").show(ui, |ui| {
        ui.columns(3, |c| {
            let mut lml = mk("prior_log_marglik", "Log marginal likelihood", "log marglik", &|p| p.log_marglik, Color32::from_rgb(70, 130, 230));
            // The curve falls by orders of magnitude at large delta; show the part near the top.
            let mut v: Vec<f64> = curve.iter().map(|p| p.log_marglik).filter(|x| x.is_finite()).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            if let (Some(lo), Some(hi)) = (v.get(v.len() / 4).copied(), v.last().copied()) {
                if hi > lo {
                    let floor = lo - (hi - lo) * 0.05;
                    lml.series[0].points.retain(|p| p[1] >= floor);
                }
            }
            figure(&mut c[0], &lml, h, vc);
            figure(&mut c[1], &mk("prior_val_nll", "Validation NLL", "NLL", &|p| p.val_nll, Color32::from_rgb(230, 85, 60)), h, vc);
            figure(&mut c[2], &mk("prior_val_ece", "Validation ECE", "ECE", &|p| p.val_ece, Color32::from_rgb(0, 175, 175)), h, vc);
        });
        ui.separator();
        if let Some(r) = on_set {
            set_metrics_ui(ui, s, set, r, vc);
            return;
        }
        match &s.prior_metrics {
            Some(m) => {
                let mut rows: Vec<(String, &Metrics)> = vec![];
                for k in ["map", "temperature", "laplace"] {
                    if let Some(x) = s.metrics.get(k) { rows.push((k.to_string(), x)); }
                }
                rows.push((PRIOR_METHOD.to_string(), m));
                ui.label(RichText::new("Test metrics at the slider's δ").strong());
                metrics_table(ui, "prior_metrics", &rows, None);
                let f = reliability_figure("reliability_prior", &format!("Laplace at δ = {:.4} (ECE {:.3})", s.prior_delta.unwrap_or(0.0), m.ece), &[(PRIOR_METHOD.to_string(), m)], false);
                ui.columns(2, |c| {
                    figure(&mut c[0], &f, 230.0, vc);
                    if let (Some(l), Some(d)) = (s.metrics.get("laplace"), s.chosen_delta) {
                        let g = reliability_figure("reliability_laplace_chosen", &format!("Laplace-LoRA at the chosen δ = {d:.4} (ECE {:.3})", l.ece), &[("laplace".to_string(), l)], false);
                        figure(&mut c[1], &g, 230.0, vc);
                    }
                });
            }
            None => {
                ui.weak("Recomputing the test predictive at a new δ needs the Laplace stage's cached posterior (laplace/spectral_cache.safetensors); this run shows the curve only.");
            }
        }
    });
}

/// The slider's metrics on an evaluation set beyond the test split, beside every method's at the
/// run's chosen delta on that set.
fn set_metrics_ui(ui: &mut egui::Ui, s: &RunStore, set: &str, r: Option<Result<Metrics, String>>, vc: &ViewCtx) {
    let m = match r {
        None => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.weak(format!("reading the spectral cache of {set}..."));
            });
            return;
        }
        Some(Err(e)) => {
            ui.colored_label(Color32::from_rgb(220, 160, 40), e);
            return;
        }
        Some(Ok(m)) => m,
    };
    let delta = s.prior_delta.unwrap_or(0.0);
    let mut rows: Vec<(String, &Metrics)> = vec![];
    if let Some(ms) = s.eval_metrics.get(set) {
        for k in ["map", "temperature", "laplace"] {
            if let Some(x) = ms.get(k) {
                rows.push((k.to_string(), x));
            }
        }
    }
    rows.push((PRIOR_METHOD.to_string(), &m));
    ui.label(RichText::new(format!("Metrics on {set} at the slider's δ")).strong());
    metrics_table(ui, "prior_metrics_set", &rows, None);
    let f =
        reliability_figure("reliability_prior_set", &format!("{set}: Laplace at δ = {delta:.4} (ECE {:.3})", m.ece), &[(PRIOR_METHOD.to_string(), &m)], false);
    ui.columns(2, |c| {
        figure(&mut c[0], &f, 230.0, vc);
        if let (Some(l), Some(d)) = (s.eval_metrics.get(set).and_then(|ms| ms.get("laplace")), s.chosen_delta) {
            let g = reliability_figure(
                "reliability_laplace_chosen_set",
                &format!("{set}: Laplace-LoRA at the chosen δ = {d:.4} (ECE {:.3})", l.ece),
                &[("laplace".to_string(), l)],
                false,
            );
            figure(&mut c[1], &g, 230.0, vc);
        }
    });
}
