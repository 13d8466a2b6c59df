//! "Ask your own question" (Examples tab): a question and its choices typed by the user,
//! rendered with the open run's prompt template, and every method's predictive for it, computed
//! on the run's own thread from its adapter and posterior (loaded once, kept for more questions).

use super::*;
use crate::app::ask::{AskState, ItemOf};
use crate::app::figure::Series;
use crate::app::store::method_label;
use laplace_lora::data::question::{kind_of, Kind};
use laplace_lora::data::LETTERS;

pub fn ask_view(ui: &mut egui::Ui, a: &mut AskState, s: &RunStore, vc: &ViewCtx) {
    let Some(dir) = vc.run_dir.filter(|_| !s.is_running()) else {
        ui.weak("Open a finished run (Runs tab) to ask it a question.");
        return;
    };
    let kind = a.info.as_ref().and_then(|i| i.as_ref().ok()).map(|i| (kind_of(&i.answer_labels), i.answer_labels.len()));
    ui.label(match kind {
        Some((Kind::TrueFalse, _)) => "This run answers True or False about a passage: type the passage and a yes/no question.".to_string(),
        Some((Kind::MultipleChoice, k)) => format!("This run answers with letters A..{}: type a question and 2 to {k} choices, one a line.", LETTERS[k.clamp(1, 8) - 1]),
        Some((Kind::Classification, _)) => "This run classifies a text: type it as the question.".to_string(),
        None => "Type a question and its choices (one a line), or a passage and a yes/no question for a True/False run. The item is rendered with the run's prompt template.".to_string(),
    });
    egui::Grid::new("ask_grid").num_columns(2).show(ui, |ui| {
        let l = ui.label("Passage / context");
        ui.add(egui::TextEdit::multiline(&mut a.question.context).desired_rows(2).desired_width(520.0)).labelled_by(l.id);
        ui.end_row();
        let l = ui.label("Question");
        ui.add(egui::TextEdit::singleline(&mut a.question.question).desired_width(520.0)).labelled_by(l.id);
        ui.end_row();
        let l = ui.label("Choices (one a line)");
        ui.add(egui::TextEdit::multiline(&mut a.question.choices).desired_rows(4).desired_width(520.0)).labelled_by(l.id);
        ui.end_row();
    });
    ui.horizontal(|ui| {
        let asking = a.asking();
        if ui.add_enabled(!asking, egui::Button::new("Ask")).clicked() {
            a.ask(dir);
        }
        if a.busy() {
            ui.spinner();
            let p = a.progress.filter(|(_, t)| *t > 0).map(|(d, t)| format!(" ({d} / {t})")).unwrap_or_default();
            ui.weak(format!("computing... {}{p}", crate::app::setup::short(&a.status, 80)));
            if ui.button("Cancel").clicked() {
                a.cancel();
            }
        }
    });
    if let Some(m) = &a.message {
        ui.colored_label(Color32::from_rgb(220, 160, 40), m);
    }
    // A copy: the saliency section below borrows the state mutably.
    let Some((item, preds)) = a.answer.clone() else { return };
    let (item, preds) = (&item, &preds);
    ui.separator();
    ui.columns(2, |c| {
        let ui = &mut c[0];
        ui.label(RichText::new("The item as the run sees it").strong());
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(RichText::new(&item.prompt).monospace().size(11.0));
        });
        egui::Grid::new("ask_probs").striped(true).show(ui, |ui| {
            ui.label("method");
            for k in 0..item.choices.len() {
                ui.label(LETTERS.get(k).copied().unwrap_or("?"));
            }
            ui.end_row();
            for p in preds {
                ui.label(RichText::new(method_label(&p.method)).color(method_color(&p.method)));
                for q in &p.probs {
                    ui.label(RichText::new(format!("{q:.4}")).monospace());
                }
                ui.end_row();
            }
        });
        if let Some(lap) = preds.iter().find(|p| p.method == "laplace").filter(|p| p.logit_mean.is_some()) {
            ui.add_space(6.0);
            ui.label(RichText::new("Laplace-LoRA's logits under the posterior").strong());
            let (mu, cov) = (lap.logit_mean.as_ref().unwrap(), lap.logit_cov.as_ref());
            egui::Grid::new("ask_logits").striped(true).show(ui, |ui| {
                ui.label("class");
                ui.label("mean");
                ui.label("sd").on_hover_text(super::SD_HELP);
                ui.end_row();
                for (k, m) in mu.iter().enumerate() {
                    let sd = cov.and_then(|c| c.get(k)).and_then(|r| r.get(k)).copied().unwrap_or(0.0).max(0.0).sqrt();
                    ui.label(LETTERS.get(k).copied().unwrap_or("?"));
                    ui.label(format!("{m:.3}"));
                    ui.label(format!("{sd:.3}"));
                    ui.end_row();
                }
            });
        }
        let of =
            ItemOf { key: format!("ask/{}", item.prompt), id: item.id.clone(), prompt: item.prompt.clone(), choices: item.choices.clone(), label: item.label };
        saliency_ui(ui, a, dir, of);
        let ui = &mut c[1];
        let k = item.choices.len();
        let mut f = Figure::new("ask_probabilities", "Probabilities per answer (your question)", "answer (0 = A)", "probability");
        f.y_range = Some((0.0, 1.05));
        let bw = 0.8 / preds.len().max(1) as f64;
        for (j, p) in preds.iter().enumerate() {
            let pts = (0..k).map(|c| [c as f64 - 0.4 + bw * (j as f64 + 0.5), p.probs.get(c).copied().unwrap_or(0.0)]).collect();
            f.series.push(Series::bars(method_label(&p.method), method_color(&p.method), bw, pts));
        }
        figure(ui, &f, 220.0, vc);
    });
}
