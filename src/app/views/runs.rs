//! The Runs tab: run directories under the runs folder; open one, compare two.

use super::*;
use crate::app::figure::csv_button;
use crate::app::store::{method_label, RunEntry, RunStore};
use egui::RichText;
use laplace_lora::calibration::Metrics;
use std::path::Path;

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
