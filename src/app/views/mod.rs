//! The tabs: training, calibration, examples, prior precision, runs, one file each. Each draws
//! from the store and never blocks.

mod ask;
mod binning_controls;
mod calibration;
mod examples;
mod method_diff;
mod prior;
mod runs;
mod saliency;
mod supports;
mod sweep_plot;
mod training;

pub use ask::*;
#[allow(unused_imports)] // the GUI tests set the statistics controls directly
pub use binning_controls::StatsSettings;
pub use calibration::*;
pub use examples::*;
pub use prior::*;
pub use runs::*;
pub use saliency::*;
pub use supports::*;
pub use training::*;

use super::figure::{export_buttons, Figure};
use super::store::{RunStore, PRIOR_METHOD, TEST_SET};
use egui::{Color32, RichText};
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

/// What the "sd" of a logit under the posterior is.
pub(crate) const SD_HELP: &str = "Standard deviation of the logit under the linearised posterior. With a shift-invariant \
predictive (quadrature, probit, mc: the default) it is the sd of the centred logit f_c - mean of the choices' logits, \
the only part a probability depends on; with probit_torch or bridge, of the raw logit (laplace/laplace.json, \"logit_cov\").";

/// The prior tab's markers: the run's chosen delta and the slider's.
pub(crate) const CHOSEN_COLOR: Color32 = Color32::from_rgb(120, 220, 120);
pub(crate) const SLIDER_COLOR: Color32 = Color32::from_rgb(240, 200, 60);

pub struct ViewCtx<'a> {
    pub run_dir: Option<&'a Path>,
    pub status: &'a Sender<String>,
}

pub fn explain(ui: &mut egui::Ui, text: &str) {
    egui::CollapsingHeader::new("What am I looking at?").id_salt(text.len()).show(ui, |ui| {
        ui.label(RichText::new(text).size(13.0));
    });
}

pub(crate) fn figure(ui: &mut egui::Ui, fig: &Figure, height: f32, vc: &ViewCtx) {
    ui.vertical(|ui| {
        // The PNG is a crop of everything the figure drew: title, plot, axes and their labels.
        let drawn = ui.scope(|ui| fig.show(ui, height)).response.rect;
        export_buttons(ui, fig, drawn.expand(2.0), vc.run_dir, vc.status);
    });
}

/// "Evaluation set: test | NAME..." when the run has sets beyond the test split (eval/NAME/);
/// the Calibration, Examples and Prior tabs draw the chosen one.
pub fn eval_set_selector(ui: &mut egui::Ui, s: &RunStore, set: &mut String) {
    let names = s.eval_set_names();
    if names.is_empty() {
        if set != TEST_SET {
            *set = TEST_SET.to_string();
        }
        return;
    }
    ui.horizontal(|ui| {
        let l = ui.label("Evaluation set:");
        egui::ComboBox::from_id_salt("eval_set")
            .selected_text(set.as_str())
            .show_ui(ui, |ui| {
                ui.selectable_value(set, TEST_SET.to_string(), "test (in-distribution)");
                for n in &names {
                    ui.selectable_value(set, n.clone(), n);
                }
            })
            .response
            .labelled_by(l.id);
        if set != TEST_SET {
            ui.weak("(a distribution-shift set: evaluated with every method after training)");
        }
    });
}

/// A table's sortable column header: a button showing the column's name and, when it is the sort
/// column, the direction; a click sorts by it (descending first) or reverses the order.
pub(crate) fn sort_header<S: PartialEq + Copy>(ui: &mut egui::Ui, label: &str, by: S, sort: &mut S, descending: &mut bool, hover: &str) {
    let arrow = match (*sort == by, *descending) {
        (true, true) => " (desc)",
        (true, false) => " (asc)",
        _ => "",
    };
    if ui.button(RichText::new(format!("{label}{arrow}")).strong()).on_hover_text(hover).clicked() {
        if *sort == by {
            *descending = !*descending;
        } else {
            *sort = by;
            *descending = true;
        }
    }
}
