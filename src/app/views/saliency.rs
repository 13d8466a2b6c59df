//! Which prompt tokens drive an answer (Examples tab item detail and "Ask your own question"):
//! gradient x input of the answer's logit over the prompt's tokens
//! (`laplace_lora::model::saliency`), computed on demand on the run's thread, drawn as the prompt
//! with each token's background coloured by its score.

use super::*;
use crate::app::ask::{AskState, ItemOf};
use egui::text::{LayoutJob, TextFormat};
use laplace_lora::data::LETTERS;
use laplace_lora::experiment::session::Saliency;

/// How many of the strongest tokens are listed under the prompt.
pub const TOP_TOKENS: usize = 6;

/// The colour of "raises the answer" and "lowers it" (as the supports list's signs).
const UP: (u8, u8, u8) = (50, 175, 95);
const DOWN: (u8, u8, u8) = (230, 85, 60);

/// The scores shown for `class`: of the centred logit f_c - mean_k f_k unless `raw`.
pub fn shown_scores(s: &Saliency, class: usize, raw: bool) -> Vec<f64> {
    if raw {
        s.scores.per_class[class].clone()
    } else {
        s.scores.centred(class)
    }
}

/// The `n` tokens of largest |score|, strongest first: (position, score).
pub fn strongest(scores: &[f64], n: usize) -> Vec<(usize, f64)> {
    let mut v: Vec<(usize, f64)> = scores.iter().copied().enumerate().collect();
    v.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    v.truncate(n);
    v
}

/// The saliency section for the item `of` (keyed by `of.key`) of the run at `dir`.
pub fn saliency_ui(ui: &mut egui::Ui, a: &mut AskState, dir: &Path, of: ItemOf) {
    ui.add_space(6.0);
    ui.label(RichText::new("Which tokens drive the answer").strong()).on_hover_text(
        "Gradient × input: each prompt token's embedding times the gradient of the answer's logit with respect to it, \
         at the run's fine-tuned (MAP) adapter, which is also Laplace-LoRA's mean. Green tokens raise the answer, red ones lower it; \
         the stronger the colour, the larger the effect. By default the logit is taken relative to the other choices' mean \
         (a softmax ignores what moves all answers together).",
    );
    let key = of.key.clone();
    match a.saliency.get(&key) {
        None if a.saliency_pending(&key) => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.weak(format!("computing... {}", crate::app::setup::short(&a.status, 60)));
            });
        }
        None => {
            if ui.button("Show which tokens drive the answer").on_hover_text("One forward and one backward pass per answer on the run's thread").clicked() {
                a.request_saliency(dir, of);
            }
        }
        Some(Err(e)) => {
            ui.colored_label(Color32::from_rgb(220, 160, 40), format!("not computed: {e}"));
        }
        Some(Ok(sal)) => {
            let sal = sal.clone();
            let k = sal.scores.per_class.len();
            let predicted = sal.scores.predicted();
            let class = a.saliency_class.get(&key).copied().filter(|c| *c < k).unwrap_or(predicted);
            ui.horizontal(|ui| {
                let l = ui.label("for the answer");
                egui::ComboBox::from_id_salt(("saliency_class", &key))
                    .selected_text(answer_name(class, predicted))
                    .show_ui(ui, |ui| {
                        for c in 0..k {
                            if ui.selectable_label(c == class, answer_name(c, predicted)).clicked() {
                                a.saliency_class.insert(key.clone(), c);
                            }
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.checkbox(&mut a.saliency_raw, "raw logit").on_hover_text("The logit itself instead of its difference from the other choices' mean");
            });
            let scores = shown_scores(&sal, class, a.saliency_raw);
            tokens_ui(ui, &sal.tokens, &scores);
            let top = strongest(&scores, TOP_TOKENS);
            ui.horizontal_wrapped(|ui| {
                ui.weak("strongest:");
                for (t, v) in top {
                    let c = if v >= 0.0 { UP } else { DOWN };
                    ui.colored_label(Color32::from_rgb(c.0, c.1, c.2), format!("{:?} {v:+.3}", sal.tokens[t]));
                }
            });
        }
    }
}

fn answer_name(c: usize, predicted: usize) -> String {
    let l = LETTERS.get(c).copied().unwrap_or("?");
    if c == predicted {
        format!("{l} (predicted)")
    } else {
        l.to_string()
    }
}

/// The prompt, one token after another, each on a background whose opacity is |score| / max.
fn tokens_ui(ui: &mut egui::Ui, tokens: &[String], scores: &[f64]) {
    let max = scores.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    let font = egui::FontId::monospace(11.0);
    let text = ui.visuals().text_color();
    let mut job = LayoutJob::default();
    for (tok, v) in tokens.iter().zip(scores) {
        let (r, g, b) = if *v >= 0.0 { UP } else { DOWN };
        let alpha = (v.abs() / max * 200.0) as u8;
        job.append(
            tok,
            0.0,
            TextFormat { font_id: font.clone(), color: text, background: Color32::from_rgba_unmultiplied(r, g, b, alpha), ..Default::default() },
        );
    }
    job.wrap.max_width = ui.available_width();
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.label(job);
    });
}
