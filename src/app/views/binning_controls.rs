//! The Calibration tab's statistics controls: the reliability bins (count, equal width or equal
//! mass), 95% bootstrap intervals on every metric, and, on a shift set, how well each method's
//! uncertainty tells the set's items from the test items (AUROC). Recomputed from the stored
//! per-item probabilities once per change of the settings, the set or the store, never per frame.

use super::*;
use crate::app::store::{RunStore, PRIOR_METHOD, TEST_SET};
use laplace_lora::calibration::binning::{metrics_binned, Binning, Scheme};
use laplace_lora::calibration::bootstrap::{intervals, Interval, Intervals};
use laplace_lora::calibration::shift::{auroc, uncertainty};
use laplace_lora::calibration::Metrics;

/// What the user chose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatsSettings {
    pub binning: Binning,
    pub bootstrap: bool,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self { binning: Binning::default(), bootstrap: false }
    }
}

/// One method's numbers under the chosen settings.
pub struct MethodStats {
    pub method: String,
    pub metrics: Metrics,
    pub intervals: Option<Intervals>,
    /// AUROC of this set's items against the test items by 1 - max p (shift sets only).
    pub shift_auroc: Option<f64>,
}

/// The computed table for (store revision, set, settings).
pub struct StatsCache {
    key: (u64, String, StatsSettings),
    pub rows: Vec<MethodStats>,
}

/// Bootstrap draws: 1,000, fewer on large sets (the work is draws x items x methods).
fn draws(n: usize) -> usize {
    (200_000 / n.max(1)).clamp(200, 1000)
}

/// A method's probabilities and labels on `set` (the slider's on the test split).
fn probs_of(s: &RunStore, set: &str, m: &str) -> Option<(Vec<Vec<f64>>, Vec<usize>)> {
    let preds = s.set_predictions(set)?.ok()?;
    if m == PRIOR_METHOD {
        let pp = s.prior_probs.as_ref().filter(|_| set == TEST_SET)?;
        return Some((pp.clone(), preds.iter().map(|p| p.label).collect()));
    }
    let (p, y): (Vec<Vec<f64>>, Vec<usize>) = preds.iter().filter_map(|p| p.probs.get(m).map(|q| (q.clone(), p.label))).unzip();
    (!p.is_empty()).then_some((p, y))
}

/// Draws the controls; returns the recomputed rows when the settings differ from the stored
/// metrics' (15 equal-width bins, no intervals) or the set is a shift set.
pub fn stats_controls<'a>(
    ui: &mut egui::Ui,
    s: &RunStore,
    set: &str,
    methods: &[String],
    st: &mut StatsSettings,
    cache: &'a mut Option<StatsCache>,
) -> Option<&'a StatsCache> {
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("Bins:").on_hover_text("how many confidence bins the reliability diagrams, ECE and MCE use (the stored metrics: 15 of equal width)");
        ui.add(egui::DragValue::new(&mut st.binning.bins).range(2..=50)).labelled_by(l.id);
        let mut mass = st.binning.scheme == Scheme::EqualMass;
        if ui.checkbox(&mut mass, "equal mass").on_hover_text("each bin holds the same number of items (adaptive ECE) instead of covering the same width of confidence").changed() {
            st.binning.scheme = if mass { Scheme::EqualMass } else { Scheme::EqualWidth };
        }
        ui.checkbox(&mut st.bootstrap, "95% bootstrap intervals").on_hover_text("resample the items with replacement (1,000 times) and show the middle 95% of each metric: how much the numbers would move on another draw of a test set this size");
        if *st != StatsSettings::default() && ui.small_button("reset").clicked() {
            *st = StatsSettings::default();
        }
    });
    let shift = set != TEST_SET;
    if *st == StatsSettings::default() && !shift {
        return None;
    }
    let key = (s.revision, set.to_string(), *st);
    if cache.as_ref().map(|c| &c.key) != Some(&key) {
        let mut rows = Vec::new();
        for m in methods {
            let Some((p, y)) = probs_of(s, set, m) else { continue };
            let metrics = metrics_binned(&p, &y, &st.binning);
            let iv = st.bootstrap.then(|| intervals(&p, &y, &st.binning, draws(p.len()), 0));
            let shift_auroc = (shift).then(|| probs_of(s, TEST_SET, m)).flatten().map(|(tp, _)| {
                let pos: Vec<f64> = p.iter().map(|q| uncertainty(q)).collect();
                let neg: Vec<f64> = tp.iter().map(|q| uncertainty(q)).collect();
                auroc(&pos, &neg)
            });
            rows.push(MethodStats { method: m.clone(), metrics, intervals: iv, shift_auroc });
        }
        *cache = Some(StatsCache { key, rows });
    }
    cache.as_ref()
}

fn iv(i: &Interval) -> String {
    format!("[{:.3}, {:.3}]", i.lo, i.hi)
}

/// The intervals and the shift AUROC under the metrics table.
pub fn stats_table(ui: &mut egui::Ui, c: &StatsCache, set: &str) {
    let any_iv = c.rows.iter().any(|r| r.intervals.is_some());
    let any_shift = c.rows.iter().any(|r| r.shift_auroc.is_some());
    if !any_iv && !any_shift {
        return;
    }
    ui.add_space(4.0);
    egui::Grid::new("stats_table").striped(true).min_col_width(60.0).show(ui, |ui| {
        ui.label(RichText::new("method").strong());
        if any_iv {
            for h in ["ACC 95%", "ECE 95%", "NLL 95%", "Brier 95%"] {
                ui.label(RichText::new(h).strong());
            }
        }
        if any_shift {
            ui.label(RichText::new(format!("AUROC {set} vs test")).strong()).on_hover_text(
                "how well the method's uncertainty (1 - its top probability) tells this set's items from the test split's: the chance that a random item of this set is more uncertain than a random test item (0.5: no better than a coin)",
            );
        }
        ui.end_row();
        for r in &c.rows {
            ui.colored_label(method_color(&r.method), crate::app::store::method_label(&r.method));
            if any_iv {
                match &r.intervals {
                    Some(i) => {
                        for x in [&i.accuracy, &i.ece, &i.nll, &i.brier] {
                            ui.label(RichText::new(iv(x)).monospace());
                        }
                    }
                    None => {
                        for _ in 0..4 {
                            ui.weak("-");
                        }
                    }
                }
            }
            if any_shift {
                match r.shift_auroc {
                    Some(a) if a.is_finite() => ui.label(RichText::new(format!("{a:.3}")).monospace()),
                    _ => ui.weak("-"),
                };
            }
            ui.end_row();
        }
    });
}
