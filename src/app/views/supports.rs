//! The training items behind a prediction (Examples tab, item detail): the training items whose
//! answer logits co-vary most with the open item's under the linearised Laplace posterior,
//! s_n = (C J(x) Sigma J(x_n)^T C^T)[predicted, labelled] (`laplace_lora::laplace::kernel`),
//! computed on demand on the run's thread.

use super::*;
use crate::app::ask::{AskState, ItemOf, TOP_SUPPORTS};
use crate::app::store::PredRow;
use laplace_lora::data::LETTERS;

pub fn supports_ui(ui: &mut egui::Ui, a: &mut AskState, s: &RunStore, set: &str, p: &PredRow, vc: &ViewCtx) {
    let Some(dir) = vc.run_dir.filter(|_| !s.is_running() && s.metrics.contains_key("laplace")) else { return };
    ui.add_space(6.0);
    ui.label(RichText::new("Training items behind this prediction").strong()).on_hover_text(
        "Ranked by the posterior covariance of this item's predicted answer logit with each training item's labelled answer logit, \
         k = J(x) Σ J(x_n)^T, both centred over the choices (softmax ignores a common shift). \
         Positive: the training item pulls the prediction's way; negative: against it.",
    );
    let key = format!("{set}/{}", p.id);
    let pending = a.supports_pending(&key);
    match a.supports.get(&key) {
        None if pending => {
            ui.horizontal(|ui| {
                ui.spinner();
                let pr = a
                    .progress
                    .filter(|(_, t)| *t > 0)
                    .map(|(d, t)| format!("{d} / {t} training items"))
                    .unwrap_or_else(|| crate::app::setup::short(&a.status, 60));
                ui.weak(format!("computing... {pr}"));
                if ui.button("Cancel").clicked() {
                    a.cancel();
                }
            });
        }
        None => {
            if ui
                .button(format!("Find the top {TOP_SUPPORTS} training items"))
                .on_hover_text("K backward passes per training item: a while on a large training set")
                .clicked()
            {
                let of = ItemOf { key, id: p.id.clone(), prompt: p.prompt.clone(), choices: p.choices.clone(), label: p.label };
                a.request_supports(dir, of);
            }
        }
        Some(Err(e)) => {
            ui.colored_label(Color32::from_rgb(220, 160, 40), format!("not computed: {e}"));
        }
        Some(Ok(sup)) => {
            ui.weak(format!("about the predicted answer {} ({} training items scored)", LETTERS.get(sup.predicted).copied().unwrap_or("?"), sup.n_train));
            egui::Grid::new("supports_grid").striped(true).show(ui, |ui| {
                for h in ["#", "label", "covariance", "|C k C|", "prompt"] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for (r, row) in sup.rows.iter().enumerate() {
                    ui.label(format!("{}", r + 1));
                    ui.label(format!("{}: {}", LETTERS.get(row.label).copied().unwrap_or("?"), crate::app::setup::short(&row.label_text, 18)));
                    let c = if row.score >= 0.0 { Color32::from_rgb(50, 175, 95) } else { Color32::from_rgb(230, 85, 60) };
                    ui.colored_label(c, format!("{:+.3e}", row.score));
                    ui.label(format!("{:.3e}", row.frobenius));
                    ui.label(crate::app::setup::short(first_line(&row.prompt), 60)).on_hover_text(&row.prompt);
                    ui.end_row();
                }
            });
        }
    }
}

/// The prompt's first line without the template's instruction ("Select one of the choices that
/// answers the following question: ", "Answer the question with only True or False: ").
fn first_line(prompt: &str) -> &str {
    let first = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    for pre in ["Select one of the choices that answers the following question: ", "Answer the question with only True or False: "] {
        if let Some(rest) = first.strip_prefix(pre) {
            return rest;
        }
    }
    first
}
