//! The Examples tab: every item of the chosen evaluation set with each method's probabilities,
//! the split of one method's uncertainty into aleatoric and epistemic parts, the posterior
//! logits and their spread; or the items where two methods disagree most.

use super::method_diff::{method_diff, DiffState};
use super::*;
use crate::app::ask::ItemOf;
use crate::app::figure::{csv_button, csv_field, Figure, Series};
use crate::app::store::{conf_correct, map_probs, method_label, split_methods, PredRow, RunStore, PRIOR_METHOD, SPLIT_DRAWS, TEST_SET};
use crate::app::uncertainty::{self, Split};
use egui::{Color32, RichText};
use laplace_lora::calibration::{self};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SortBy {
    Index,
    MapConf,
    LaplaceConf,
    Correct,
    Overconfidence,
    /// The chosen method's total / aleatoric / epistemic uncertainty.
    Total,
    Aleatoric,
    Epistemic,
}

pub struct ExamplesState {
    pub sort: SortBy,
    pub descending: bool,
    pub wrong_confident: bool,
    pub threshold: f64,
    pub selected: Option<usize>,
    /// The method whose uncertainty split the table shows (one with samples or a logit Gaussian).
    pub split_method: Option<String>,
    /// Show the two-method difference list instead of the items table.
    pub diff_mode: bool,
    /// Show "Ask your own question" instead of the items.
    pub ask_mode: bool,
    pub diff: DiffState,
    /// The set the selection belongs to (a new set clears it).
    shown_set: String,
    mc_cache: Option<(String, usize, u64, Vec<f64>)>,
}

impl Default for ExamplesState {
    fn default() -> Self {
        Self {
            sort: SortBy::Overconfidence,
            descending: true,
            wrong_confident: false,
            threshold: 0.7,
            selected: None,
            split_method: None,
            diff_mode: false,
            ask_mode: false,
            diff: Default::default(),
            shown_set: TEST_SET.to_string(),
            mc_cache: None,
        }
    }
}

struct Row {
    i: usize,
    pred: usize,
    conf: f64,
    correct: bool,
    lap: Option<f64>,
    split: Option<Split>,
}

/// The Bayesian probabilities shown for an item: the prior slider's (test set only), else the
/// run's Laplace ones.
fn laplace_probs<'a>(s: &'a RunStore, preds: &'a [PredRow], on_test: bool, i: usize) -> Option<(&'static str, &'a [f64])> {
    if let Some(p) = s.prior_probs.as_ref().filter(|_| on_test).and_then(|p| p.get(i)) {
        return Some((PRIOR_METHOD, p.as_slice()));
    }
    preds.get(i)?.probs.get("laplace").map(|p| ("laplace", p.as_slice()))
}

/// The logit mean and covariance of an item: the store's (at the prior slider) on the test set,
/// else the item's own Laplace-LoRA ones.
fn item_logits(s: &RunStore, preds: &[PredRow], on_test: bool, i: usize) -> Option<(Vec<f64>, Vec<Vec<f64>>, bool)> {
    if on_test {
        return s.item_logits(i);
    }
    let p = preds.get(i)?;
    Some((p.logit_mean.get("laplace")?.clone(), p.logit_cov.get("laplace")?.clone(), false))
}

pub fn examples_tab(ui: &mut egui::Ui, s: &mut RunStore, st: &mut ExamplesState, ask: &mut crate::app::ask::AskState, set: &mut String, vc: &ViewCtx) {
    explain(ui, "Every test item with the fine-tuned (MAP) model's answer and confidence. Overconfidence is confidence minus correctness (1 if right, 0 if wrong): a wrong answer given with 95% confidence scores 0.95, the worst kind of mistake. Sort by a column (click its header) or tick \"wrong and confident\" to list only the mistakes the model was sure about. Select an item to see its prompt, how each method spreads probability over the choices and, when the Laplace stage has run, the uncertainty of each logit: error bars show one standard deviation of the logit mapped through the softmax, and the histogram shows Monte Carlo samples of the top answer's probability. Below them, \"Find the top 10 training items\" lists the training items whose labelled answer co-varies most with this item's predicted answer under the Laplace posterior. \"Ask your own question\" evaluates every method of the run on an item you type.");
    if st.ask_mode {
        if ui.button("Back to the items").clicked() {
            st.ask_mode = false;
        }
        ask_view(ui, ask, s, vc);
        return;
    }
    eval_set_selector(ui, s, set);
    let set = set.as_str();
    if st.shown_set != set {
        st.shown_set = set.to_string();
        st.selected = None;
        st.mc_cache = None;
    }
    let on_test = set == TEST_SET;
    s.request_set(set);
    // The uncertainty split of the chosen method, computed once per (set, method) off the UI thread.
    let split_ms = match s.set_predictions(set) {
        Some(Ok(p)) => split_methods(p),
        _ => vec![],
    };
    if st.split_method.as_ref().is_none_or(|m| !split_ms.contains(m)) {
        st.split_method = split_ms.iter().find(|m| *m == "laplace").or(split_ms.first()).cloned();
    }
    if let Some(m) = &st.split_method {
        s.request_split(set, m);
    }
    let s: &RunStore = s;
    let preds: &[PredRow] = match s.set_predictions(set) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            ui.colored_label(Color32::from_rgb(220, 160, 40), format!("cannot show the items of {set}: {e}"));
            return;
        }
        None => {
            ui.label(format!("reading the predictions of {set}..."));
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(100));
            return;
        }
    };
    if preds.is_empty() {
        ui.add_space(20.0);
        ui.label("No test predictions yet: they are written when a run finishes (predictions.jsonl).");
        return;
    }
    let split_m = st.split_method.clone();
    let splits: Option<Result<&[Option<Split>], &str>> = split_m.as_deref().and_then(|m| s.split_of(set, m));
    if split_m.is_some() && splits.is_none() {
        ui.ctx().request_repaint_after(std::time::Duration::from_millis(100));
    }
    let split_at = |i: usize| -> Option<Split> { splits.and_then(|r| r.ok()).and_then(|v| v.get(i).copied().flatten()) };
    ui.horizontal(|ui| {
        ui.selectable_value(&mut st.diff_mode, false, "Items");
        ui.selectable_value(&mut st.diff_mode, true, "Where two methods differ");
        ui.selectable_value(&mut st.ask_mode, true, "Ask your own question");
        if !split_ms.is_empty() {
            ui.separator();
            let l = ui.label("Uncertainty split for:");
            let cur = split_m.clone().unwrap_or_default();
            egui::ComboBox::from_id_salt("split_method")
                .selected_text(RichText::new(method_label(&cur)).color(method_color(&cur)))
                .show_ui(ui, |ui| {
                    for m in &split_ms {
                        ui.selectable_value(&mut st.split_method, Some(m.clone()), RichText::new(method_label(m)).color(method_color(m)));
                    }
                })
                .response
                .labelled_by(l.id);
            match splits {
                None => {
                    ui.spinner();
                    ui.weak("computing...");
                }
                Some(Err(e)) => {
                    ui.colored_label(Color32::from_rgb(220, 160, 40), e);
                }
                Some(Ok(_)) => {}
            }
        }
    });
    if st.diff_mode {
        let methods: Vec<String> = s.method_order.iter().filter(|m| preds.iter().take(20).any(|p| p.probs.contains_key(*m))).cloned().collect();
        if let Some(i) = method_diff(ui, preds, &methods, &mut st.diff, st.selected, vc) {
            st.selected = Some(i);
        }
    } else {
        let mut rows: Vec<Row> = preds
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (pred, conf, correct) = conf_correct(map_probs(p), p.label);
                let lap = laplace_probs(s, preds, on_test, i).map(|(_, q)| calibration::top_label(q).1);
                Row { i, pred, conf, correct, lap, split: split_at(i) }
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
                SortBy::Total => r.split.map(|x| x.total).unwrap_or(-1.0),
                SortBy::Aleatoric => r.split.map(|x| x.aleatoric).unwrap_or(-1.0),
                SortBy::Epistemic => r.split.map(|x| x.epistemic).unwrap_or(-1.0),
            }
        };
        rows.sort_by(|a, b| {
            let o = key(a).total_cmp(&key(b));
            if st.descending { o.reverse() } else { o }.then(a.i.cmp(&b.i))
        });
        ui.horizontal(|ui| {
            ui.checkbox(&mut st.wrong_confident, "wrong and confident").on_hover_text("Only the items the MAP model got wrong with at least this confidence");
            ui.add(egui::Slider::new(&mut st.threshold, 0.3..=0.99).text("confidence at least"));
            ui.label(format!("{} of {} items", rows.len(), preds.len()));
            let has_lap = preds.iter().any(|p| p.probs.contains_key("laplace")) || (on_test && s.prior_probs.is_some());
            let name = if on_test { "examples".to_string() } else { format!("examples_{}", crate::app::figure::sanitize(set)) };
            csv_button(
                ui,
                &name,
                || {
                    let m = split_m.clone().unwrap_or_default();
                    let mut c =
                        format!("id,label,map_prediction,map_confidence,correct,overconfidence,laplace_confidence,{m}_total,{m}_aleatoric,{m}_epistemic\n");
                    let f = |x: Option<f64>| x.map(|x| x.to_string()).unwrap_or_default();
                    for r in &rows {
                        c += &format!(
                            "{},{},{},{},{},{},{},{},{},{}\n",
                            csv_field(&preds[r.i].id),
                            preds[r.i].label,
                            r.pred,
                            r.conf,
                            r.correct,
                            r.conf - r.correct as u8 as f64,
                            f(r.lap),
                            f(r.split.map(|x| x.total)),
                            f(r.split.map(|x| x.aleatoric)),
                            f(r.split.map(|x| x.epistemic)),
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
            super::sort_header(ui, label, by, &mut st.sort, &mut st.descending, "Sort by this column; click again to reverse the order")
        };
        egui::ScrollArea::vertical().id_salt("examples_table").max_height(230.0).auto_shrink([false, true]).show(ui, |ui| {
            egui::Grid::new("examples_grid").striped(true).num_columns(10).show(ui, |ui| {
                header(ui, "#", SortBy::Index);
                ui.label(RichText::new("id").strong());
                ui.label(RichText::new("answer / MAP").strong());
                header(ui, "MAP conf.", SortBy::MapConf);
                header(ui, "Laplace conf.", SortBy::LaplaceConf);
                header(ui, "correct", SortBy::Correct);
                header(ui, "overconf.", SortBy::Overconfidence);
                if split_m.is_some() {
                    header(ui, "total H", SortBy::Total);
                    header(ui, "aleatoric", SortBy::Aleatoric);
                    header(ui, "epistemic", SortBy::Epistemic);
                }
                ui.end_row();
                for r in &rows {
                    let p = &preds[r.i];
                    if ui.selectable_label(st.selected == Some(r.i), format!("{}", r.i + 1)).clicked() {
                        st.selected = Some(r.i);
                    }
                    if ui.selectable_label(st.selected == Some(r.i), crate::app::setup::short(&p.id, 28)).clicked() {
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
                    if split_m.is_some() {
                        for v in [r.split.map(|x| x.total), r.split.map(|x| x.aleatoric), r.split.map(|x| x.epistemic)] {
                            ui.label(v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into()));
                        }
                    }
                    ui.end_row();
                }
            });
        });
        if st.selected.is_none() {
            // Show the first row's details (the most overconfident item by default).
            st.selected = rows.first().map(|r| r.i);
        }
    }
    ui.separator();
    let Some(i) = st.selected.filter(|i| *i < preds.len()) else {
        ui.weak("Select an item to see its prompt and predictive distribution.");
        return;
    };
    let p = &preds[i];
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
                let lap = laplace_probs(s, preds, on_test, i).and_then(|(_, q)| q.get(k).copied()).map(|x| format!("   Laplace {x:.3}")).unwrap_or_default();
                let t = format!("{}: {ch}   MAP {:.3}{lap} {mark}", letter(k), map_probs(p).get(k).copied().unwrap_or(f64::NAN));
                if k == p.label {
                    ui.colored_label(Color32::from_rgb(50, 175, 95), t);
                } else {
                    ui.label(t);
                }
            }
            if let Some(dir) = vc.run_dir.filter(|_| !s.is_running()) {
                let of = ItemOf { key: format!("{set}/{}", p.id), id: p.id.clone(), prompt: p.prompt.clone(), choices: p.choices.clone(), label: p.label };
                saliency_ui(ui, ask, dir, of);
            }
            if let (Some(m), Some(x)) = (&split_m, split_at(i)) {
                ui.add_space(6.0);
                split_ui(ui, m, &x, p);
            }
            let logits = item_logits(s, preds, on_test, i);
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
                    ui.label("sd").on_hover_text(super::SD_HELP);
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
            supports_ui(ui, ask, s, set, p, vc);
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
            if let Some((name, l)) = laplace_probs(s, preds, on_test, i) {
                methods.push((name, l));
            }
            let mut f = Figure::new(&format!("example_{}", crate::app::figure::sanitize(&p.id)), "Probabilities per answer", "answer (0 = A)", "probability");
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
                if st.mc_cache.as_ref().map(|(n, a, b, _)| (n.as_str(), *a, *b)) != Some((set, i, rev)) {
                    let flat: Vec<f64> = cov.iter().flat_map(|r| r.iter().copied()).collect();
                    let samples = if flat.len() == mu.len() * mu.len() {
                        laplace_lora::laplace::predictive::mc_samples_top(mu, &flat, 1000, i as u64)
                    } else {
                        mc_top_prob(mu, cov, 1000, i as u64)
                    };
                    st.mc_cache = Some((set.to_string(), i, rev, samples));
                }
                let samples = &st.mc_cache.as_ref().unwrap().3;
                let mut h = vec![0f64; 20];
                for v in samples {
                    h[((v * 20.0) as usize).min(19)] += 1.0;
                }
                let mut f = Figure::new(
                    &format!("example_mc_{}", crate::app::figure::sanitize(&p.id)),
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

/// The item's split for one method: the three numbers and a plain sentence.
fn split_ui(ui: &mut egui::Ui, m: &str, x: &Split, p: &PredRow) {
    let how = if p.samples.contains_key(m) {
        format!("from its {} samples", p.samples[m].len())
    } else {
        format!("{SPLIT_DRAWS} Monte Carlo draws of its Gaussian over the logits, at the run's chosen δ")
    };
    ui.label(RichText::new(format!("Uncertainty of {} ({how})", method_label(m))).strong().color(method_color(m)));
    egui::Grid::new("split_grid").striped(true).show(ui, |ui| {
        for (name, v, hover) in [
            ("total  H[E p]", x.total, "entropy of the averaged prediction (nats; ln K at most)"),
            ("aleatoric  E[H p]", x.aleatoric, "the average entropy of each sample: unsure even at a single setting of the weights"),
            ("epistemic  H[E p] - E[H p]", x.epistemic, "mutual information: how much the samples disagree with one another"),
        ] {
            ui.label(name).on_hover_text(hover);
            ui.label(RichText::new(format!("{v:.4}")).monospace());
            ui.end_row();
        }
    });
    ui.label(uncertainty::explain(x));
}

fn letter(k: usize) -> String {
    laplace_lora::data::LETTERS.get(k).map(|s| s.to_string()).unwrap_or_else(|| k.to_string())
}

/// Probability of the mean's top class under samples f ~ N(mu, cov) (Cholesky with jitter).
pub fn mc_top_prob(mu: &[f64], cov: &[Vec<f64>], n: usize, seed: u64) -> Vec<f64> {
    let top = calibration::top_label(&calibration::softmax(mu)).0;
    uncertainty::gaussian_prob_samples(mu, cov, n, seed).iter().map(|q| q[top]).collect()
}
