//! The Examples tab: every test item with each method's probabilities, the posterior logits and their spread.

use super::*;
use crate::app::figure::{csv_button, csv_field, Figure, Series};
use crate::app::store::{conf_correct, map_probs, method_label, RunStore, PRIOR_METHOD};
use egui::{Color32, RichText};
use laplace_lora::calibration::{self};

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
