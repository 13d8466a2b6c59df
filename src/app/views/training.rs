//! The Training tab: loss per step, validation metrics per epoch, the learning-rate schedule.

use super::*;
use crate::app::figure::{Figure, Series};
use crate::app::store::RunStore;
use egui::Color32;

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
