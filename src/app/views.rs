//! The tabs: training, calibration, examples, prior precision, runs. Each draws from the store.

use super::figure::{csv_button, csv_field, export_buttons, Figure, Series};
use super::store::{conf_correct, interp_prior, map_probs, method_label, RunEntry, RunStore, PRIOR_METHOD};
use egui::{Color32, RichText};
use laplace_lora::calibration::{self, Metrics};
use std::path::Path;
use std::sync::mpsc::Sender;

/// A method's colour: fixed for the known methods (so a figure reads the same in every run), a
/// hash of the name into a palette for any other.
pub fn method_color(m: &str) -> Color32 {
    match m {
        "zero_shot" => Color32::from_rgb(140, 140, 150),
        "map" => Color32::from_rgb(230, 85, 60),
        "temperature" => Color32::from_rgb(70, 130, 230),
        "llla" => Color32::from_rgb(225, 170, 30),
        "laplace" => Color32::from_rgb(50, 175, 95),
        "mc_dropout" => Color32::from_rgb(0, 180, 180),
        "checkpoint_ensemble" => Color32::from_rgb(160, 110, 70),
        "deep_ensemble" => Color32::from_rgb(235, 120, 180),
        "blob" => Color32::from_rgb(120, 120, 240),
        PRIOR_METHOD => Color32::from_rgb(175, 95, 215),
        other => {
            const PALETTE: [Color32; 4] =
                [Color32::from_rgb(200, 200, 90), Color32::from_rgb(90, 200, 140), Color32::from_rgb(210, 140, 90), Color32::from_rgb(150, 150, 210)];
            PALETTE[other.bytes().map(|b| b as usize).sum::<usize>() % PALETTE.len()]
        }
    }
}

/// The prior tab's markers: the run's chosen delta and the slider's.
const CHOSEN_COLOR: Color32 = Color32::from_rgb(120, 220, 120);
const SLIDER_COLOR: Color32 = Color32::from_rgb(240, 200, 60);

pub struct ViewCtx<'a> {
    pub run_dir: Option<&'a Path>,
    pub status: &'a Sender<String>,
}

pub fn explain(ui: &mut egui::Ui, text: &str) {
    egui::CollapsingHeader::new("What am I looking at?").id_salt(text.len()).show(ui, |ui| {
        ui.label(RichText::new(text).size(13.0));
    });
}

fn figure(ui: &mut egui::Ui, fig: &Figure, height: f32, vc: &ViewCtx) {
    ui.vertical(|ui| {
        // The PNG is a crop of everything the figure drew: title, plot, axes and their labels.
        let drawn = ui.scope(|ui| fig.show(ui, height)).response.rect;
        export_buttons(ui, fig, drawn.expand(2.0), vc.run_dir, vc.status);
    });
}

// ---------------------------------------------------------------------------------------------
// Training

pub fn training_tab(ui: &mut egui::Ui, s: &RunStore, vc: &ViewCtx) {
    explain(ui, "Each dot of the loss curve is one gradient step of fine-tuning: the cross-entropy of the correct answer on a batch of training items (the thick line is a running average). Falling loss means the model fits its training items. The validation panels are measured after each epoch on items the model never trains on: accuracy should rise, but watch ECE (expected calibration error: the gap between how confident the model is and how often it is right) and NLL: when they start to climb while the training loss keeps falling, fine-tuning is making the model overconfident. That is the problem Laplace-LoRA addresses. The last panel is the learning-rate schedule (warm-up, then linear decay).");
    if s.steps.is_empty() && s.validation.is_empty() {
        ui.add_space(20.0);
        if s.is_running() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Waiting for the first training step (the model is loaded and evaluated zero-shot first)...");
            });
        } else {
            ui.label("No training yet: choose a model and dataset on the left and press Run all, or open a run in the Runs tab.");
        }
        return;
    }
    let mut loss = Figure::new("training_loss", "Training loss per step", "step", "cross-entropy");
    let raw: Vec<[f64; 2]> = s.steps.iter().map(|p| [p.step as f64, p.loss]).collect();
    loss.series.push(Series::line("loss (batch)", Color32::from_rgba_unmultiplied(230, 85, 60, 110), raw).width(1.0));
    loss.series.push(Series::line("smoothed", Color32::from_rgb(230, 85, 60), ema(s.steps.iter().map(|p| [p.step as f64, p.loss]), 0.8)).width(2.5));
    let mut acc = Figure::new("accuracy", "Accuracy", "step", "accuracy");
    acc.y_range = Some((0.0, 1.05));
    acc.series.push(Series::line(
        "train batches (smoothed)",
        Color32::from_rgb(230, 140, 60),
        ema(s.steps.iter().map(|p| [p.step as f64, p.batch_accuracy]), 0.8),
    ));
    acc.series.push(
        Series::line("validation", Color32::from_rgb(70, 130, 230), s.validation.iter().map(|v| [v.step as f64, v.summary.accuracy]).collect()).width(2.5),
    );
    let mut ece = Figure::new("validation_calibration", "Validation calibration per epoch", "step", "ECE / NLL");
    ece.series.push(Series::line("ECE", Color32::from_rgb(175, 95, 215), s.validation.iter().map(|v| [v.step as f64, v.summary.ece]).collect()).width(2.5));
    ece.series.push(Series::line("NLL", Color32::from_rgb(50, 175, 95), s.validation.iter().map(|v| [v.step as f64, v.summary.nll]).collect()).width(2.5));
    let mut lr = Figure::new("learning_rate", "Learning rate", "step", "learning rate");
    lr.series.push(Series::line("learning rate", Color32::from_rgb(120, 120, 200), s.steps.iter().map(|p| [p.step as f64, p.learning_rate]).collect()));
    // Loss falls and accuracy rises as training goes on: the legends go where the curves are not.
    loss.legend_corner = egui_plot::Corner::RightTop;
    acc.legend_corner = egui_plot::Corner::RightBottom;
    ece.legend_corner = egui_plot::Corner::RightTop;
    lr.legend = false;
    if s.total_steps > 0 {
        for f in [&mut loss, &mut acc, &mut ece, &mut lr] {
            f.x_range = Some((0.0, s.total_steps as f64 + 0.5));
        }
    }
    let h = ((ui.available_height() - 120.0) / 2.0 - 60.0).clamp(140.0, 320.0);
    ui.columns(2, |c| {
        figure(&mut c[0], &loss, h, vc);
        figure(&mut c[1], &acc, h, vc);
        figure(&mut c[0], &ece, h, vc);
        figure(&mut c[1], &lr, h, vc);
    });
    if let Some(last) = s.steps.last() {
        ui.weak(format!(
            "step {}/{} (epoch {}{}): loss {:.4}, gradient norm {:.3}, {:.2} s/step",
            last.step,
            s.total_steps,
            last.epoch + 1,
            s.config.as_ref().map(|c| format!(" of {}", c.train.epochs)).unwrap_or_default(),
            last.loss,
            last.grad_norm,
            last.seconds
        ));
    }
}

fn ema(it: impl Iterator<Item = [f64; 2]>, beta: f64) -> Vec<[f64; 2]> {
    let mut m: Option<f64> = None;
    it.map(|[x, y]| {
        let v = match m {
            None => y,
            Some(p) => beta * p + (1.0 - beta) * y,
        };
        m = Some(v);
        [x, v]
    })
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Calibration

pub struct CalibState {
    pub overlay: bool,
    pub hidden: std::collections::BTreeSet<String>,
}

impl Default for CalibState {
    fn default() -> Self {
        Self { overlay: false, hidden: Default::default() }
    }
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
            let w = m.bins.first().map(|b| b.upper - b.lower).unwrap_or(1.0 / 15.0);
            let bars: Vec<[f64; 2]> = m.bins.iter().filter(|b| b.count > 0).map(|b| [(b.lower + b.upper) / 2.0, b.accuracy]).collect();
            f.series.push(Series::bars(&format!("{label} accuracy"), c, w, bars));
            for (i, b) in m.bins.iter().filter(|b| b.count > 0).enumerate() {
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
    egui::Grid::new(id).striped(true).num_columns(7).min_col_width(60.0).show(ui, |ui| {
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

pub fn calibration_tab(ui: &mut egui::Ui, s: &RunStore, st: &mut CalibState, vc: &ViewCtx) {
    explain(ui, "A reliability diagram sorts the test items by how confident the model was in its top answer (15 bins from 0 to 1) and shows, as a bar, how often it was actually right in each bin. A perfectly calibrated model has bars on the dashed diagonal: of the answers given with 80% confidence, 80% are correct. Bars below the diagonal (shaded red gap) mean overconfidence, above it underconfidence; the small numbers are how many items fall in each bin. Compare zero-shot (the base model), MAP (plain fine-tuning), temperature scaling (one number fitted on validation data that softens or sharpens all probabilities) and, when the Laplace stage has run, LLLA and Laplace-LoRA (Bayesian averaging over plausible LoRA weights). The table gives the numbers; lower ECE, NLL and Brier are better.");
    let all: Vec<String> = {
        let mut v = s.methods();
        if s.prior_metrics.is_some() {
            v.push(PRIOR_METHOD.to_string());
        }
        v
    };
    if all.is_empty() {
        ui.add_space(20.0);
        ui.label(if s.is_running() {
            "Metrics appear here as each stage finishes (zero-shot first, then MAP and temperature)."
        } else {
            "No metrics yet: run an experiment or open a run."
        });
        return;
    }
    ui.horizontal(|ui| {
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
    let rows: Vec<(String, &Metrics)> = all.iter().filter(|m| !st.hidden.contains(*m)).filter_map(|m| s.metrics_of(m).map(|x| (m.clone(), x))).collect();
    let temp = s.temperature;
    let extra = move |m: &str| if m == "temperature" { temp.map(|t| format!(" (T = {t:.2})")).unwrap_or_default() } else { String::new() };
    metrics_table(ui, "metrics_table", &rows, Some(&extra));
    csv_button(ui, "metrics", || metrics_csv(&rows), vc.run_dir, vc.status);
    ui.separator();
    egui::ScrollArea::vertical().id_salt("calib_scroll").show(ui, |ui| {
        let h = 260.0;
        if st.overlay {
            ui.columns(2, |c| {
                figure(&mut c[0], &reliability_figure("reliability_overlay", "Reliability diagram (overlaid)", &rows, true), h, vc);
                figure(&mut c[1], &histogram_figure("confidence_histogram", &rows), h, vc);
            });
        } else {
            let per_row = 3.min(rows.len()).max(1);
            for chunk in rows.chunks(per_row) {
                ui.columns(per_row, |c| {
                    for (i, (name, m)) in chunk.iter().enumerate() {
                        let f = reliability_figure(
                            &format!("reliability_{name}"),
                            &format!("{} (ECE {:.3})", method_label(name), m.ece),
                            &[(name.clone(), *m)],
                            false,
                        );
                        figure(&mut c[i], &f, h, vc);
                    }
                });
            }
            figure(ui, &histogram_figure("confidence_histogram", &rows), 200.0, vc);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Examples

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SortBy {
    Index,
    MapConf,
    LaplaceConf,
    Correct,
    Overconfidence,
}

pub struct ExamplesState {
    pub sort: SortBy,
    pub descending: bool,
    pub wrong_confident: bool,
    pub threshold: f64,
    pub selected: Option<usize>,
    mc_cache: Option<(usize, u64, Vec<f64>)>,
}

impl Default for ExamplesState {
    fn default() -> Self {
        Self { sort: SortBy::Overconfidence, descending: true, wrong_confident: false, threshold: 0.7, selected: None, mc_cache: None }
    }
}

struct Row {
    i: usize,
    pred: usize,
    conf: f64,
    correct: bool,
    lap: Option<f64>,
}

/// The Bayesian probabilities shown for an item: the prior slider's, else the run's Laplace ones.
fn laplace_probs<'a>(s: &'a RunStore, i: usize) -> Option<(&'static str, &'a [f64])> {
    if let Some(p) = s.prior_probs.as_ref().and_then(|p| p.get(i)) {
        return Some((PRIOR_METHOD, p.as_slice()));
    }
    s.predictions[i].probs.get("laplace").map(|p| ("laplace", p.as_slice()))
}

pub fn examples_tab(ui: &mut egui::Ui, s: &RunStore, st: &mut ExamplesState, vc: &ViewCtx) {
    explain(ui, "Every test item with the fine-tuned (MAP) model's answer and confidence. Overconfidence is confidence minus correctness (1 if right, 0 if wrong): a wrong answer given with 95% confidence scores 0.95, the worst kind of mistake. Sort by a column (click its header) or tick \"wrong and confident\" to list only the mistakes the model was sure about. Select an item to see its prompt, how each method spreads probability over the choices and, when the Laplace stage has run, the uncertainty of each logit: error bars show one standard deviation of the logit mapped through the softmax, and the histogram shows Monte Carlo samples of the top answer's probability.");
    if s.predictions.is_empty() {
        ui.add_space(20.0);
        ui.label("No test predictions yet: they are written when a run finishes (predictions.jsonl).");
        return;
    }
    let mut rows: Vec<Row> = s
        .predictions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (pred, conf, correct) = conf_correct(map_probs(p), p.label);
            let lap = laplace_probs(s, i).map(|(_, q)| calibration::top_label(q).1);
            Row { i, pred, conf, correct, lap }
        })
        .collect();
    if st.wrong_confident {
        rows.retain(|r| !r.correct && r.conf >= st.threshold);
    }
    let key = |r: &Row| -> f64 {
        match st.sort {
            SortBy::Index => r.i as f64,
            SortBy::MapConf => r.conf,
            SortBy::LaplaceConf => r.lap.unwrap_or(-1.0),
            SortBy::Correct => r.correct as u8 as f64,
            SortBy::Overconfidence => r.conf - r.correct as u8 as f64,
        }
    };
    rows.sort_by(|a, b| {
        let o = key(a).total_cmp(&key(b));
        if st.descending { o.reverse() } else { o }.then(a.i.cmp(&b.i))
    });
    ui.horizontal(|ui| {
        ui.checkbox(&mut st.wrong_confident, "wrong and confident").on_hover_text("Only the items the MAP model got wrong with at least this confidence");
        ui.add(egui::Slider::new(&mut st.threshold, 0.3..=0.99).text("confidence at least"));
        ui.label(format!("{} of {} items", rows.len(), s.predictions.len()));
        let has_lap = s.predictions.iter().any(|p| p.probs.contains_key("laplace")) || s.prior_probs.is_some();
        csv_button(
            ui,
            "examples",
            || {
                let mut c = String::from("id,label,map_prediction,map_confidence,correct,overconfidence,laplace_confidence\n");
                for r in &rows {
                    c += &format!(
                        "{},{},{},{},{},{},{}\n",
                        csv_field(&s.predictions[r.i].id),
                        s.predictions[r.i].label,
                        r.pred,
                        r.conf,
                        r.correct,
                        r.conf - r.correct as u8 as f64,
                        r.lap.map(|x| x.to_string()).unwrap_or_default()
                    );
                }
                c
            },
            vc.run_dir,
            vc.status,
        );
        if !has_lap {
            ui.weak("(Laplace columns appear when the run has the posterior)");
        }
    });
    let mut header = |ui: &mut egui::Ui, label: &str, by: SortBy| {
        let arrow = if st.sort == by {
            if st.descending {
                " (desc)"
            } else {
                " (asc)"
            }
        } else {
            ""
        };
        if ui.button(RichText::new(format!("{label}{arrow}")).strong()).on_hover_text("Sort by this column; click again to reverse the order").clicked() {
            if st.sort == by {
                st.descending = !st.descending;
            } else {
                st.sort = by;
                st.descending = true;
            }
        }
    };
    egui::ScrollArea::vertical().id_salt("examples_table").max_height(230.0).auto_shrink([false, true]).show(ui, |ui| {
        egui::Grid::new("examples_grid").striped(true).num_columns(7).show(ui, |ui| {
            header(ui, "#", SortBy::Index);
            ui.label(RichText::new("id").strong());
            ui.label(RichText::new("answer / MAP").strong());
            header(ui, "MAP conf.", SortBy::MapConf);
            header(ui, "Laplace conf.", SortBy::LaplaceConf);
            header(ui, "correct", SortBy::Correct);
            header(ui, "overconf.", SortBy::Overconfidence);
            ui.end_row();
            for r in &rows {
                let p = &s.predictions[r.i];
                if ui.selectable_label(st.selected == Some(r.i), format!("{}", r.i + 1)).clicked() {
                    st.selected = Some(r.i);
                }
                if ui.selectable_label(st.selected == Some(r.i), super::setup::short(&p.id, 28)).clicked() {
                    st.selected = Some(r.i);
                }
                ui.label(format!("{} / {}", letter(p.label), letter(r.pred)));
                ui.label(format!("{:.3}", r.conf));
                ui.label(r.lap.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into()));
                if r.correct {
                    ui.colored_label(Color32::from_rgb(50, 175, 95), "yes");
                } else {
                    ui.colored_label(Color32::from_rgb(230, 85, 60), "no");
                }
                ui.label(format!("{:+.3}", r.conf - r.correct as u8 as f64));
                ui.end_row();
            }
        });
    });
    ui.separator();
    if st.selected.is_none() {
        // Show the first row's details (the most overconfident item by default).
        st.selected = rows.first().map(|r| r.i);
    }
    let Some(i) = st.selected.filter(|i| *i < s.predictions.len()) else {
        ui.weak("Select an item to see its prompt and predictive distribution.");
        return;
    };
    let p = &s.predictions[i];
    egui::ScrollArea::vertical().id_salt("example_detail").show(ui, |ui| {
        ui.columns(2, |c| {
            let ui = &mut c[0];
            ui.label(RichText::new(format!("Item {}", p.id)).strong());
            egui::Frame::group(ui.style()).show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.label(RichText::new(&p.prompt).monospace().size(11.0));
            });
            for (k, ch) in p.choices.iter().enumerate() {
                let mark = if k == p.label { "(correct)" } else { "" };
                let lap = laplace_probs(s, i).and_then(|(_, q)| q.get(k).copied()).map(|x| format!("   Laplace {x:.3}")).unwrap_or_default();
                let t = format!("{}: {ch}   MAP {:.3}{lap} {mark}", letter(k), map_probs(p).get(k).copied().unwrap_or(f64::NAN));
                if k == p.label {
                    ui.colored_label(Color32::from_rgb(50, 175, 95), t);
                } else {
                    ui.label(t);
                }
            }
            let logits = s.item_logits(i);
            if let Some((mu, cov, at_slider)) = &logits {
                let sd: Vec<f64> = (0..mu.len()).map(|k| cov.get(k).and_then(|r| r.get(k)).copied().unwrap_or(0.0).max(0.0).sqrt()).collect();
                ui.add_space(6.0);
                let when = match (at_slider, s.prior_delta) {
                    (true, Some(d)) => format!(" (δ = {d:.4})"),
                    _ => String::new(),
                };
                ui.label(RichText::new(format!("Logits under the posterior{when}")).strong());
                egui::Grid::new("logit_grid").striped(true).show(ui, |ui| {
                    ui.label("class");
                    ui.label("mean");
                    ui.label("sd");
                    ui.end_row();
                    for k in 0..mu.len() {
                        ui.label(letter(k));
                        ui.label(format!("{:.3}", mu[k]));
                        ui.label(format!("{:.3}", sd.get(k).copied().unwrap_or(0.0)));
                        ui.end_row();
                    }
                });
            } else if let Some(l) = &p.map_logits {
                ui.weak(format!("MAP logits: {}", l.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")));
            }
            let ui = &mut c[1];
            let k = p.choices.len();
            // Every method of the run, in its order; Laplace-LoRA last (at the slider's delta when
            // it has moved), so that its error bars below sit on its bars.
            let mut methods: Vec<(&str, &[f64])> = s
                .methods()
                .iter()
                .filter(|m| m.as_str() != "laplace")
                .filter_map(|m| p.probs.get_key_value(m.as_str()))
                .map(|(m, q)| (m.as_str(), q.as_slice()))
                .collect();
            if let Some((name, l)) = laplace_probs(s, i) {
                methods.push((name, l));
            }
            let mut f = Figure::new(&format!("example_{}", super::figure::sanitize(&p.id)), "Probabilities per answer", "answer (0 = A)", "probability");
            f.y_range = Some((0.0, 1.05));
            let n = methods.len() as f64;
            let bw = 0.8 / n;
            for (j, (name, q)) in methods.iter().enumerate() {
                let pts = (0..k).map(|c| [c as f64 - 0.4 + bw * (j as f64 + 0.5), q.get(c).copied().unwrap_or(0.0)]).collect();
                f.series.push(Series::bars(method_label(name), method_color(name), bw, pts));
            }
            if let Some((mu, cov, _)) = &logits {
                let sd: Vec<f64> = (0..mu.len()).map(|k| cov.get(k).and_then(|r| r.get(k)).copied().unwrap_or(0.0).max(0.0).sqrt()).collect();
                let j = methods.len() - 1;
                for c in 0..k.min(mu.len()) {
                    let at = |dv: f64| {
                        let mut m = mu.clone();
                        m[c] += dv * sd[c];
                        calibration::softmax(&m)[c]
                    };
                    let x = c as f64 - 0.4 + bw * (j as f64 + 0.5);
                    f.series.push(Series::line("±1 sd", Color32::from_gray(235), vec![[x, at(-1.0)], [x, at(1.0)]]).width(2.0).hidden_from_legend());
                }
            }
            figure(ui, &f, 220.0, vc);
            if let Some((mu, cov, _)) = &logits {
                let rev = s.revision;
                if st.mc_cache.as_ref().map(|(a, b, _)| (*a, *b)) != Some((i, rev)) {
                    let flat: Vec<f64> = cov.iter().flat_map(|r| r.iter().copied()).collect();
                    let samples = if flat.len() == mu.len() * mu.len() {
                        laplace_lora::laplace::predictive::mc_samples_top(mu, &flat, 1000, i as u64)
                    } else {
                        mc_top_prob(mu, cov, 1000, i as u64)
                    };
                    st.mc_cache = Some((i, rev, samples));
                }
                let samples = &st.mc_cache.as_ref().unwrap().2;
                let mut h = vec![0f64; 20];
                for v in samples {
                    h[((v * 20.0) as usize).min(19)] += 1.0;
                }
                let mut f = Figure::new(
                    &format!("example_mc_{}", super::figure::sanitize(&p.id)),
                    "MC samples of the top answer's probability",
                    "probability",
                    "samples",
                );
                f.x_range = Some((0.0, 1.0));
                f.legend = false;
                f.series.push(Series::bars(
                    "samples",
                    method_color("laplace"),
                    0.05,
                    h.iter().enumerate().map(|(b, c)| [b as f64 * 0.05 + 0.025, *c]).collect(),
                ));
                figure(ui, &f, 160.0, vc);
            }
        });
    });
}

fn letter(k: usize) -> String {
    laplace_lora::data::LETTERS.get(k).map(|s| s.to_string()).unwrap_or_else(|| k.to_string())
}

/// Probability of the mean's top class under samples f ~ N(mu, cov) (Cholesky with jitter).
pub fn mc_top_prob(mu: &[f64], cov: &[Vec<f64>], n: usize, seed: u64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    let k = mu.len();
    let mut l = vec![vec![0.0; k]; k];
    for i in 0..k {
        for j in 0..=i {
            let mut sum = cov.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0.0);
            for t in 0..j {
                sum -= l[i][t] * l[j][t];
            }
            if i == j {
                l[i][j] = (sum + 1e-9).max(0.0).sqrt();
            } else {
                l[i][j] = if l[j][j] > 0.0 { sum / l[j][j] } else { 0.0 };
            }
        }
    }
    let top = calibration::top_label(&calibration::softmax(mu)).0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
            let f: Vec<f64> = (0..k).map(|i| mu[i] + (0..=i).map(|j| l[i][j] * z[j]).sum::<f64>()).collect();
            calibration::softmax(&f)[top]
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Prior precision

/// The prior-precision tab. Moving the slider recomputes the test predictive before anything
/// below it is drawn, so the readout, metrics and reliability diagram follow in the same frame.
pub fn prior_tab(ui: &mut egui::Ui, s: &mut RunStore, vc: &ViewCtx) {
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
    let mk = |id: &str, title: &str, y: &str, f: &dyn Fn(&super::store::PriorPoint) -> f64, c: Color32| {
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

// ---------------------------------------------------------------------------------------------
// Runs

pub enum RunsAction {
    None,
    Refresh,
    Open(std::path::PathBuf),
    Compare(std::path::PathBuf, std::path::PathBuf),
}

pub struct RunsState {
    pub a: Option<std::path::PathBuf>,
    pub b: Option<std::path::PathBuf>,
}

pub fn runs_tab(ui: &mut egui::Ui, runs: &[RunEntry], root: &Path, st: &mut RunsState, compare: Option<&(RunStore, RunStore)>, vc: &ViewCtx) -> RunsAction {
    explain(ui, "Every run directory under runs/ (made here or by `laplace-lora run`). Open one to show it in every tab: its training curves, calibration, examples and prior curve are read back from its files, so a run that was cancelled opens too (with what it had finished). Tick A and B on two runs and press Compare to put their metrics and reliability diagrams side by side, e.g. two learning rates or two datasets.");
    let mut act = RunsAction::None;
    ui.horizontal(|ui| {
        ui.label(format!("Runs in {}", root.display()));
        if ui.button("Refresh").clicked() {
            act = RunsAction::Refresh;
        }
        if ui.button("Open folder...").on_hover_text("Open any run directory").clicked() {
            if let Some(p) = rfd::FileDialog::new().pick_folder() {
                act = RunsAction::Open(p);
            }
        }
    });
    if runs.is_empty() {
        ui.label("No run directories yet.");
    }
    egui::ScrollArea::vertical().id_salt("runs_list").max_height(260.0).auto_shrink([false, true]).show(ui, |ui| {
        egui::Grid::new("runs_grid").striped(true).num_columns(5).show(ui, |ui| {
            for r in runs {
                if ui.button("Open").on_hover_text(r.path.display().to_string()).clicked() {
                    act = RunsAction::Open(r.path.clone());
                }
                ui.label(&r.name);
                ui.weak(&r.status);
                let mut a = st.a.as_ref() == Some(&r.path);
                if ui.checkbox(&mut a, "A").changed() {
                    st.a = if a { Some(r.path.clone()) } else { None };
                }
                let mut b = st.b.as_ref() == Some(&r.path);
                if ui.checkbox(&mut b, "B").changed() {
                    st.b = if b { Some(r.path.clone()) } else { None };
                }
                ui.end_row();
            }
        });
    });
    ui.horizontal(|ui| {
        if ui.add_enabled(st.a.is_some() && st.b.is_some(), egui::Button::new("Compare A and B")).clicked() {
            act = RunsAction::Compare(st.a.clone().unwrap(), st.b.clone().unwrap());
        }
    });
    if let Some((a, b)) = compare {
        ui.separator();
        let name = |s: &RunStore| s.dir.as_ref().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (na, nb) = (name(a), name(b));
        let mut rows: Vec<(String, &Metrics)> = vec![];
        for (tag, s) in [("A", a), ("B", b)] {
            for m in s.methods() {
                rows.push((format!("{tag}: {}", method_label(&m)), &s.metrics[&m]));
            }
        }
        ui.label(RichText::new(format!("A = {na}    B = {nb}")).strong());
        // Exports of the comparison go to run A's folder, named after both runs.
        let vc = &ViewCtx { run_dir: a.dir.as_deref().or(vc.run_dir), status: vc.status };
        metrics_table(ui, "compare_table", &rows, None);
        csv_button(ui, &format!("compare_{na}_vs_{nb}_metrics"), || metrics_csv(&rows), vc.run_dir, vc.status);
        egui::ScrollArea::vertical().id_salt("compare_scroll").show(ui, |ui| {
            ui.columns(2, |c| {
                for (j, (tag, s)) in [("A", a), ("B", b)].into_iter().enumerate() {
                    let ms: Vec<(String, &Metrics)> = s
                        .methods()
                        .into_iter()
                        .filter(|m| m != "zero_shot")
                        .map(|m| {
                            let x = &s.metrics[&m];
                            (m, x)
                        })
                        .collect();
                    let f = reliability_figure(&format!("compare_{na}_vs_{nb}_{tag}"), &format!("{tag}: {}", if tag == "A" { &na } else { &nb }), &ms, true);
                    figure(&mut c[j], &f, 240.0, vc);
                }
            });
        });
    }
    act
}
