//! A sweep's figure: per setting (data set, ...) and method, the report's mean over seeds of one
//! metric on the test set as a bar, with a whisker from mean - sd to mean + sd (the sample
//! standard deviation, n - 1 denominator; no whisker for one seed).

use super::method_color;
use crate::app::figure::{Figure, Series};
use crate::app::runs_index::TABLE_METRICS;
use crate::app::store::method_label;
use egui::Color32;
use laplace_lora::sweep::report::{SweepReport, TEST_SET};

/// `metric` indexes `TABLE_METRICS` (the report's `METRICS` order). None when no row has it.
pub fn sweep_figure(rep: &SweepReport, metric: usize) -> Option<Figure> {
    let (_, header) = TABLE_METRICS[metric];
    let methods: Vec<&String> =
        rep.methods.iter().filter(|m| rep.rows.iter().any(|r| r.eval == TEST_SET && &r.method == *m && r.metrics[metric].is_some())).collect();
    if methods.is_empty() || rep.settings.is_empty() {
        return None;
    }
    let seeds = rep.replicate_axis.as_deref().map(|a| format!("the {a} axis")).unwrap_or_else(|| "its runs".into());
    let mut f = Figure::new(
        &format!("sweep_{}_{}", crate::app::figure::sanitize(&rep.name), header.to_lowercase()),
        &format!("Sweep {}: {header} on the test set, mean ± sd over {seeds}", rep.name),
        "setting (named above its bars)",
        header,
    );
    f.legend_corner = egui_plot::Corner::RightTop;
    let bw = 0.8 / methods.len() as f64;
    let mut top: f64 = 0.0;
    let mut whiskers = Vec::new();
    for (j, m) in methods.iter().enumerate() {
        let mut bars = Vec::new();
        for si in 0..rep.settings.len() {
            let Some(s) = rep.row(TEST_SET, si, m).and_then(|r| r.metrics[metric].as_ref()) else { continue };
            if !s.mean.is_finite() {
                continue;
            }
            let x = si as f64 - 0.4 + bw * (j as f64 + 0.5);
            bars.push([x, s.mean]);
            top = top.max(s.mean);
            if let Some(sd) = s.sd.filter(|v| v.is_finite()) {
                let (lo, hi) = (s.mean - sd, s.mean + sd);
                top = top.max(hi);
                let cap = (bw * 0.12).min(0.04);
                let c = Color32::from_gray(230);
                whiskers.push(Series::line("± sd", c, vec![[x, lo], [x, hi]]).width(1.5).hidden_from_legend());
                whiskers.push(Series::line("± sd", c, vec![[x - cap, lo], [x + cap, lo]]).width(1.5).hidden_from_legend());
                whiskers.push(Series::line("± sd", c, vec![[x - cap, hi], [x + cap, hi]]).width(1.5).hidden_from_legend());
            }
        }
        f.series.push(Series::bars(method_label(m), method_color(m), bw, bars));
    }
    f.series.extend(whiskers);
    // The settings' names above their groups (the x axis counts settings 0, 1, ...).
    let (pts, labels): (Vec<[f64; 2]>, Vec<String>) = rep.settings.iter().enumerate().map(|(si, s)| ([si as f64, top * 1.1], s.title())).unzip();
    f.series.push(Series::labels(Color32::from_gray(200), pts, labels));
    f.y_range = Some((0.0, (top * 1.2).max(1e-6)));
    // Room right of the last group for the legend (one entry a method), so it hides no bar.
    f.x_range = Some((-0.5, rep.settings.len() as f64 - 0.5 + 0.7));
    Some(f)
}
