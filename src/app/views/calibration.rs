//! The Calibration tab: reliability diagrams, confidence histograms and the metrics table of every method.

use super::*;
use crate::app::figure::{csv_button, csv_field, Figure, Series};
use crate::app::selective::{aurc, risk_coverage};
use crate::app::store::{method_label, RunStore, PRIOR_METHOD, TEST_SET};
use egui::{Color32, RichText};
use laplace_lora::calibration::Metrics;

pub struct CalibState {
    pub overlay: bool,
    pub hidden: std::collections::BTreeSet<String>,
    /// Bins and bootstrap (`binning_controls`), and their table for the current set.
    pub stats: super::binning_controls::StatsSettings,
    stats_cache: Option<super::binning_controls::StatsCache>,
    /// Risk-coverage curves and AURC per method, for (store revision, set).
    selective: Option<(u64, String, Vec<(String, Vec<[f64; 2]>, f64)>)>,
}

impl Default for CalibState {
    fn default() -> Self {
        Self { overlay: false, hidden: Default::default(), stats: Default::default(), stats_cache: None, selective: None }
    }
}

/// Each method's risk-coverage curve and AURC from the items' probabilities (`probs` of the
/// predictions; the prior slider's recomputed ones for its entry).
fn selective_curves(s: &RunStore, set: &str, methods: &[String]) -> Option<Vec<(String, Vec<[f64; 2]>, f64)>> {
    let preds = s.set_predictions(set)?.ok()?;
    let mut out = Vec::new();
    for m in methods {
        let items: Vec<(f64, bool)> = if m == PRIOR_METHOD && set == TEST_SET {
            let Some(pp) = &s.prior_probs else { continue };
            pp.iter().zip(preds).map(|(q, p)| conf_of(q, p.label)).collect()
        } else {
            preds.iter().filter_map(|p| p.probs.get(m).map(|q| conf_of(q, p.label))).collect()
        };
        if items.is_empty() {
            continue;
        }
        let c = risk_coverage(&items);
        let a = aurc(&c);
        out.push((m.clone(), c, a));
    }
    Some(out)
}

fn conf_of(q: &[f64], label: usize) -> (f64, bool) {
    let (i, c) = laplace_lora::calibration::top_label(q);
    (c, i == label)
}

pub fn risk_coverage_figure(id: &str, curves: &[(String, Vec<[f64; 2]>, f64)]) -> Figure {
    let mut f = Figure::new(id, "Risk-coverage: error rate of the most confident fraction", "coverage (share of items answered)", "risk (error rate)");
    f.x_range = Some((0.0, 1.0));
    f.legend_corner = egui_plot::Corner::LeftTop;
    for (m, c, a) in curves {
        f.series.push(Series::line(&format!("{} (AURC {a:.3})", method_label(m)), method_color(m), c.clone()).width(2.0));
    }
    f
}

pub fn reliability_figure(id: &str, title: &str, methods: &[(String, &Metrics)], overlay: bool) -> Figure {
    let mut f = Figure::new(id, title, "confidence", "accuracy");
    f.x_range = Some((0.0, 1.0));
    f.y_range = Some((0.0, 1.12));
    f.series.push(Series::line("perfect calibration", Color32::from_gray(120), vec![[0.0, 0.0], [1.0, 1.0]]).dashed().width(1.5));
    for (name, m) in methods {
        let c = method_color(name);
        let label = method_label(name).to_string();
        if overlay {
            let pts: Vec<[f64; 2]> = m.bins.iter().filter(|b| b.count > 0).map(|b| [b.mean_confidence, b.accuracy]).collect();
            f.series.push(Series::line(&format!("{label} (ECE {:.3})", m.ece), c, pts).width(2.5));
        } else {
            // Equal-width bins: one bar series; equal-mass bins (each its own width, from its
            // smallest to its largest confidence): a series a bin, one legend entry.
            let w = m.bins.first().map(|b| b.upper - b.lower).unwrap_or(1.0 / 15.0);
            let uniform = m.bins.iter().all(|b| ((b.upper - b.lower) - w).abs() < 1e-12);
            if uniform {
                let bars: Vec<[f64; 2]> = m.bins.iter().filter(|b| b.count > 0).map(|b| [(b.lower + b.upper) / 2.0, b.accuracy]).collect();
                f.series.push(Series::bars(&format!("{label} accuracy"), c, w, bars));
            } else {
                for (i, b) in m.bins.iter().filter(|b| b.count > 0).enumerate() {
                    let s = Series::bars(&format!("{label} accuracy"), c, (b.upper - b.lower).max(0.006), vec![[(b.lower + b.upper) / 2.0, b.accuracy]]);
                    f.series.push(if i == 0 { s } else { s.hidden_from_legend() });
                }
            }
            for (i, b) in m.bins.iter().filter(|b| b.count > 0).enumerate() {
                let w = (b.upper - b.lower).max(0.006);
                let (lo, hi) = (b.lower + w * 0.05, b.upper - w * 0.05);
                let (a, cf) = (b.accuracy, b.mean_confidence);
                let s = Series::area("gap", Color32::from_rgba_unmultiplied(230, 60, 60, 70), vec![[lo, a], [hi, a], [hi, cf], [lo, cf]]);
                f.series.push(if i == 0 { Series { legend: true, name: "gap to confidence".into(), ..s } } else { s });
            }
            let (pts, labels): (Vec<[f64; 2]>, Vec<String>) = m
                .bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| ([(b.lower + b.upper) / 2.0, b.accuracy.max(b.mean_confidence) + 0.05], format!("{}", b.count)))
                .unzip();
            f.series.push(Series::labels(Color32::from_gray(110), pts, labels));
        }
    }
    f
}

pub fn histogram_figure(id: &str, methods: &[(String, &Metrics)]) -> Figure {
    let mut f = Figure::new(id, "Confidence histogram (test items per confidence bin)", "top-class confidence", "items");
    f.x_range = Some((0.0, 1.0));
    let n = methods.len().max(1) as f64;
    for (j, (name, m)) in methods.iter().enumerate() {
        let w = m.bins.first().map(|b| b.upper - b.lower).unwrap_or(1.0 / 15.0);
        let bw = w / n;
        let pts = m.bins.iter().map(|b| [b.lower + bw * (j as f64 + 0.5), b.count as f64]).collect();
        f.series.push(Series::bars(method_label(name), method_color(name), bw, pts));
    }
    f
}

pub fn metrics_table(ui: &mut egui::Ui, id: &str, rows: &[(String, &Metrics)], extra: Option<&dyn Fn(&str) -> String>) {
    metrics_table_with(ui, id, rows, extra, None)
}

/// A further column of the metrics table: header, its hover text, the value per method
/// (`Err` text where it has none yet).
pub type ExtraCol<'a> = (&'a str, &'a str, &'a dyn Fn(&str) -> Result<f64, String>);

pub fn metrics_table_with(ui: &mut egui::Ui, id: &str, rows: &[(String, &Metrics)], extra: Option<&dyn Fn(&str) -> String>, col: Option<ExtraCol>) {
    egui::Grid::new(id).striped(true).num_columns(8).min_col_width(60.0).show(ui, |ui| {
        for h in ["method", "ACC", "ECE", "MCE", "NLL", "Brier", "n"] {
            ui.label(RichText::new(h).strong()).on_hover_text(match h {
                "ACC" => "accuracy: share of test items whose most probable answer is correct (higher is better)",
                "ECE" => "expected calibration error: average |accuracy - confidence| over 15 bins, weighted by items (lower is better)",
                "MCE" => "maximum calibration error: the worst bin's |accuracy - confidence|",
                "NLL" => "negative log-likelihood of the correct answer (lower is better; punishes confident mistakes)",
                "Brier" => "squared error between the probabilities and the one-hot answer (lower is better)",
                _ => "",
            });
        }
        if let Some((h, hover, _)) = col {
            ui.label(RichText::new(h).strong()).on_hover_text(hover);
        }
        ui.end_row();
        for (name, m) in rows {
            let label = match extra {
                Some(f) => format!("{}{}", method_label(name), f(name)),
                None => method_label(name).to_string(),
            };
            ui.colored_label(method_color(name), label);
            for v in [m.accuracy, m.ece, m.mce, m.nll, m.brier] {
                ui.label(RichText::new(format!("{v:.4}")).monospace());
            }
            ui.label(format!("{}", m.n));
            if let Some((_, _, f)) = col {
                match f(name) {
                    Ok(v) => ui.label(RichText::new(format!("{v:.4}")).monospace()),
                    Err(t) => ui.weak(t),
                };
            }
            ui.end_row();
        }
    });
}

pub fn metrics_csv(rows: &[(String, &Metrics)]) -> String {
    let mut s = String::from("method,accuracy,ece,mce,nll,brier,n\n");
    for (n, m) in rows {
        s += &format!("{},{},{},{},{},{},{}\n", csv_field(n), m.accuracy, m.ece, m.mce, m.nll, m.brier, m.n);
    }
    s
}

pub fn calibration_tab(ui: &mut egui::Ui, s: &mut RunStore, st: &mut CalibState, set: &mut String, vc: &ViewCtx) {
    explain(ui, "A reliability diagram sorts the test items by how confident the model was in its top answer (15 bins from 0 to 1) and shows, as a bar, how often it was actually right in each bin. A perfectly calibrated model has bars on the dashed diagonal: of the answers given with 80% confidence, 80% are correct. Bars below the diagonal (shaded red gap) mean overconfidence, above it underconfidence; the small numbers are how many items fall in each bin. Compare zero-shot (the base model), MAP (plain fine-tuning), temperature scaling (one number fitted on validation data that softens or sharpens all probabilities) and, when the Laplace stage has run, LLLA and Laplace-LoRA (Bayesian averaging over plausible LoRA weights). The table gives the numbers; lower ECE, NLL and Brier are better.");
    eval_set_selector(ui, s, set);
    let set = set.as_str();
    s.request_set(set);
    let s: &RunStore = s;
    let on_test = set == TEST_SET;
    let set_metrics = s.eval_metrics.get(set);
    let all: Vec<String> = if on_test {
        let mut v = s.methods();
        if s.prior_metrics.is_some() {
            v.push(PRIOR_METHOD.to_string());
        }
        v
    } else {
        let m = set_metrics.map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let mut v: Vec<String> = s.method_order.iter().filter(|x| m.contains(x)).cloned().collect();
        v.extend(m.into_iter().filter(|x| !s.method_order.contains(x)));
        v
    };
    let metrics_of = |m: &str| if on_test { s.metrics_of(m) } else { set_metrics.and_then(|x| x.get(m)) };
    if all.is_empty() {
        ui.add_space(20.0);
        ui.label(if s.is_running() {
            "Metrics appear here as each stage finishes (zero-shot first, then MAP and temperature)."
        } else {
            "No metrics yet: run an experiment or open a run."
        });
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.label("Show:");
        for m in &all {
            let mut on = !st.hidden.contains(m);
            if ui.checkbox(&mut on, RichText::new(method_label(m)).color(method_color(m))).changed() {
                if on {
                    st.hidden.remove(m);
                } else {
                    st.hidden.insert(m.clone());
                }
            }
        }
        ui.separator();
        ui.selectable_value(&mut st.overlay, false, "Side by side");
        ui.selectable_value(&mut st.overlay, true, "Overlaid");
    });
    let stats = super::binning_controls::stats_controls(ui, s, set, &all, &mut st.stats, &mut st.stats_cache);
    let rows: Vec<(String, &Metrics)> = match stats {
        // Rebinned (or a shift set's, with its AUROC): from the stored per-item probabilities.
        Some(c) => c.rows.iter().filter(|r| !st.hidden.contains(&r.method)).map(|r| (r.method.clone(), &r.metrics)).collect(),
        None => all.iter().filter(|m| !st.hidden.contains(*m)).filter_map(|m| metrics_of(m).map(|x| (m.clone(), x))).collect(),
    };
    let temp = s.temperature;
    let extra = move |m: &str| if m == "temperature" { temp.map(|t| format!(" (T = {t:.2})")).unwrap_or_default() } else { String::new() };
    // The risk-coverage curves, recomputed when the store or the set changes (a sort per method).
    if st.selective.as_ref().map(|(r, n, _)| (*r, n.as_str())) != Some((s.revision, set)) {
        match selective_curves(s, set, &all) {
            Some(c) => st.selective = Some((s.revision, set.to_string(), c)),
            None => st.selective = None,
        }
    }
    let waiting = match s.set_predictions(set) {
        None => "reading...".to_string(),
        Some(Err(_)) => "no predictions".to_string(),
        Some(Ok(_)) => "-".to_string(),
    };
    if s.set_predictions(set).is_none() {
        ui.ctx().request_repaint_after(std::time::Duration::from_millis(100));
    }
    let curves: &[(String, Vec<[f64; 2]>, f64)] = st.selective.as_ref().map(|x| x.2.as_slice()).unwrap_or(&[]);
    let aurc_of = |m: &str| curves.iter().find(|c| c.0 == m).map(|c| c.2).ok_or_else(|| waiting.clone());
    let suffix = if on_test { String::new() } else { format!("_{}", crate::app::figure::sanitize(set)) };
    metrics_table_with(
        ui,
        "metrics_table",
        &rows,
        Some(&extra),
        Some(("AURC", "area under the risk-coverage curve: the mean error rate of the k most confident items over k = 1..n (lower is better: the confident answers are the right ones)", &aurc_of)),
    );
    if let Some(c) = stats {
        super::binning_controls::stats_table(ui, c, set);
    }
    if let Some(Err(e)) = s.set_predictions(set) {
        ui.colored_label(Color32::from_rgb(220, 160, 40), format!("the per-item curves need this set's predictions: {e}"));
    }
    csv_button(ui, &format!("metrics{suffix}"), || metrics_csv(&rows), vc.run_dir, vc.status);
    ui.separator();
    egui::ScrollArea::vertical().id_salt("calib_scroll").show(ui, |ui| {
        let h = 260.0;
        if st.overlay {
            ui.columns(2, |c| {
                figure(&mut c[0], &reliability_figure(&format!("reliability_overlay{suffix}"), "Reliability diagram (overlaid)", &rows, true), h, vc);
                figure(&mut c[1], &histogram_figure(&format!("confidence_histogram{suffix}"), &rows), h, vc);
            });
        } else {
            let per_row = 3.min(rows.len()).max(1);
            for chunk in rows.chunks(per_row) {
                ui.columns(per_row, |c| {
                    for (i, (name, m)) in chunk.iter().enumerate() {
                        let f = reliability_figure(
                            &format!("reliability_{name}{suffix}"),
                            &format!("{} (ECE {:.3})", method_label(name), m.ece),
                            &[(name.clone(), *m)],
                            false,
                        );
                        figure(&mut c[i], &f, h, vc);
                    }
                });
            }
            figure(ui, &histogram_figure(&format!("confidence_histogram{suffix}"), &rows), 200.0, vc);
        }
        let shown: Vec<(String, Vec<[f64; 2]>, f64)> = curves.iter().filter(|c| !st.hidden.contains(&c.0)).cloned().collect();
        if !shown.is_empty() {
            figure(ui, &risk_coverage_figure(&format!("risk_coverage{suffix}"), &shown), 220.0, vc);
        }
    });
}
