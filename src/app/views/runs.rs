//! The Runs tab: a sortable, filterable table of the run directories under the runs folder (the
//! runs of each sweep grouped under it, with the sweep's mean ± sd per method); open one,
//! compare two, move one to the trash.

use super::sweep_plot::sweep_figure;
use super::*;
use crate::app::figure::csv_button;
use crate::app::runs_index::{fmt_date, RunEntry, SweepEntry, TABLE_METRICS};
use crate::app::store::{method_label, RunStore};
use egui::RichText;
use laplace_lora::calibration::Metrics;
use laplace_lora::sweep::report::method_order;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

pub enum RunsAction {
    None,
    Refresh,
    Open(PathBuf),
    Compare(PathBuf, PathBuf),
    /// Move this run directory to the trash (the user has confirmed).
    Trash(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub enum SortCol {
    Name,
    Dataset,
    Model,
    Methods,
    Status,
    Date,
    Duration,
    /// The chosen metric of this method.
    Method(String),
}

pub struct RunsState {
    pub a: Option<PathBuf>,
    pub b: Option<PathBuf>,
    pub sort: SortCol,
    pub descending: bool,
    pub filter: String,
    /// Index into `TABLE_METRICS`.
    pub metric: usize,
    /// A run the user asked to move to the trash, waiting for the confirmation.
    pub confirm_trash: Option<PathBuf>,
}

impl Default for RunsState {
    fn default() -> Self {
        Self { a: None, b: None, sort: SortCol::Date, descending: true, filter: String::new(), metric: 0, confirm_trash: None }
    }
}

fn matches(r: &RunEntry, f: &str) -> bool {
    if f.trim().is_empty() {
        return true;
    }
    let f = f.trim().to_lowercase();
    let sweep = r.sweep.as_ref().and_then(|s| s.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    [&r.name, &r.dataset, &r.model, &r.status, &sweep].iter().any(|s| s.to_lowercase().contains(&f))
        || r.methods.iter().any(|m| m.contains(&f) || method_label(m).to_lowercase().contains(&f))
}

/// Orders two rows by a column; a missing value (no duration, no metric) sorts last either way.
fn compare(a: &RunEntry, b: &RunEntry, col: &SortCol, metric: usize, descending: bool) -> Ordering {
    let num = |x: Option<f64>, y: Option<f64>| match (x.filter(|v| v.is_finite()), y.filter(|v| v.is_finite())) {
        (Some(x), Some(y)) => {
            let o = x.total_cmp(&y);
            if descending {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let dir = |o: Ordering| if descending { o.reverse() } else { o };
    match col {
        SortCol::Name => dir(a.name.cmp(&b.name)),
        SortCol::Dataset => dir(a.dataset.cmp(&b.dataset)),
        SortCol::Model => dir(a.model.cmp(&b.model)),
        SortCol::Methods => dir(a.methods.len().cmp(&b.methods.len())),
        SortCol::Status => dir(a.status.cmp(&b.status)),
        SortCol::Date => dir(a.modified.cmp(&b.modified)),
        SortCol::Duration => num(a.seconds, b.seconds),
        SortCol::Method(m) => num(a.metrics.get(m).map(|v| v[metric]), b.metrics.get(m).map(|v| v[metric])),
    }
    .then_with(|| a.name.cmp(&b.name))
}

/// A column header that sorts by its column (click again to reverse); `first_desc` is the order
/// of the first click.
fn header(ui: &mut egui::Ui, st: &mut RunsState, text: &str, color: Option<egui::Color32>, col: SortCol, first_desc: bool, hover: &str) {
    let arrow = if st.sort == col {
        if st.descending {
            " (desc)"
        } else {
            " (asc)"
        }
    } else {
        ""
    };
    let mut t = RichText::new(format!("{text}{arrow}")).strong();
    if let Some(c) = color {
        t = t.color(c);
    }
    if ui.button(t).on_hover_text(hover).clicked() {
        if st.sort == col {
            st.descending = !st.descending;
        } else {
            st.sort = col;
            st.descending = first_desc;
        }
    }
}

/// One table of runs (the loose runs, or one sweep's).
fn runs_table(ui: &mut egui::Ui, id: &str, rows: &[&RunEntry], st: &mut RunsState, act: &mut RunsAction) {
    let methods = method_order(rows.iter().flat_map(|r| r.methods.iter().cloned()));
    let mut rows: Vec<&RunEntry> = rows.to_vec();
    let (col, metric, desc) = (st.sort.clone(), st.metric, st.descending);
    rows.sort_by(|a, b| compare(a, b, &col, metric, desc));
    let metric_name = TABLE_METRICS[st.metric].1;
    {
        egui::Grid::new(id).striped(true).min_col_width(20.0).show(ui, |ui| {
            ui.label("");
            ui.label(RichText::new("compare").strong()).on_hover_text("Tick one run as A and one as B, then Compare");
            ui.label("");
            for (t, c) in [
                ("run", SortCol::Name),
                ("dataset", SortCol::Dataset),
                ("model", SortCol::Model),
                ("methods", SortCol::Methods),
                ("status", SortCol::Status),
                ("date (UTC)", SortCol::Date),
                ("duration", SortCol::Duration),
            ] {
                let first_desc = matches!(c, SortCol::Date | SortCol::Duration | SortCol::Methods);
                header(ui, st, t, None, c, first_desc, "Sort by this column; click again to reverse");
            }
            for m in &methods {
                // Higher is better only for accuracy: the first click puts the best first.
                let hover = format!("{metric_name} of {} on the test set (metrics.json); click to sort", method_label(m));
                let first_desc = st.metric == 0;
                header(ui, st, &format!("{} {metric_name}", method_label(m)), Some(method_color(m)), SortCol::Method(m.clone()), first_desc, &hover);
            }
            ui.end_row();
            for r in &rows {
                ui.horizontal(|ui| {
                    if ui.button("Open").on_hover_text(r.path.display().to_string()).clicked() {
                        *act = RunsAction::Open(r.path.clone());
                    }
                    if ui.button("Trash").on_hover_text("Move this run directory to the trash folder (asks first)").clicked() {
                        st.confirm_trash = Some(r.path.clone());
                    }
                });
                let mut a = st.a.as_ref() == Some(&r.path);
                if ui.checkbox(&mut a, "A").on_hover_text("Compare this run (A) with another (B)").changed() {
                    st.a = if a { Some(r.path.clone()) } else { None };
                }
                let mut b = st.b.as_ref() == Some(&r.path);
                if ui.checkbox(&mut b, "B").changed() {
                    st.b = if b { Some(r.path.clone()) } else { None };
                }
                let name = ui.label(crate::app::setup::short(&r.name, 36));
                if r.problems.is_empty() {
                    name.on_hover_text(r.path.display().to_string());
                } else {
                    name.on_hover_text(format!("{}\n{}", r.path.display(), r.problems.join("\n")));
                }
                ui.label(&r.dataset);
                ui.label(crate::app::setup::short(&r.model, 24));
                let all: Vec<&str> = r.methods.iter().map(|m| method_label(m)).collect();
                ui.label(format!("{}", r.methods.len())).on_hover_text(all.join(", "));
                if r.problems.is_empty() {
                    ui.weak(&r.status);
                } else {
                    ui.colored_label(egui::Color32::from_rgb(220, 160, 40), format!("{} (!)", r.status)).on_hover_text(r.problems.join("\n"));
                }
                ui.label(fmt_date(r.modified));
                ui.label(r.seconds.map(crate::app::fmt_secs).unwrap_or_else(|| "-".into()));
                for m in &methods {
                    match r.metrics.get(m).map(|v| v[st.metric]).filter(|v| v.is_finite()) {
                        Some(v) => ui.label(RichText::new(format!("{v:.3}")).monospace()),
                        None => ui.weak("-"),
                    };
                }
                ui.end_row();
            }
        });
    }
}

pub fn runs_tab(
    ui: &mut egui::Ui,
    runs: &[RunEntry],
    sweeps: &[SweepEntry],
    root: &Path,
    st: &mut RunsState,
    compare: Option<&(RunStore, RunStore)>,
    vc: &ViewCtx,
) -> RunsAction {
    explain(ui, "Every run directory under runs/ (made here, by `laplace-lora run`, or by a sweep, whose runs are grouped under it). Each row is read from the run's small files (config.toml, metrics.json, events.jsonl); the metric columns give the chosen metric of each method on the test set. Click a column header to sort, type in the filter box to narrow the list. Open a run to show it in every tab; tick A and B on two runs and press Compare to put their metrics and reliability diagrams side by side. For a sweep, the plot gives each method's mean over the seeds with ± one standard deviation (the report's numbers). Trash moves a run directory into the .trash folder of the runs folder (nothing is deleted).");
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
        ui.separator();
        ui.label("Filter:");
        ui.add(egui::TextEdit::singleline(&mut st.filter).hint_text("name, dataset, model, method...").desired_width(180.0));
        ui.separator();
        ui.label("Metric:");
        for (i, (_, h)) in TABLE_METRICS.iter().enumerate() {
            ui.selectable_value(&mut st.metric, i, *h);
        }
    });
    if let Some(p) = st.confirm_trash.clone() {
        egui::Frame::group(ui.style()).fill(egui::Color32::from_rgb(70, 50, 20)).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(format!("Move {} to {}? The folder is moved, not deleted.", p.display(), root.join(".trash").display()));
                if ui.button("Move to trash").clicked() {
                    act = RunsAction::Trash(p.clone());
                    st.confirm_trash = None;
                }
                if ui.button("Cancel").clicked() {
                    st.confirm_trash = None;
                }
            });
        });
    }
    if runs.is_empty() {
        ui.label("No run directories yet.");
    }
    let shown: Vec<&RunEntry> = runs.iter().filter(|r| matches(r, &st.filter)).collect();
    if shown.len() < runs.len() {
        ui.weak(format!("{} of {} runs match the filter", shown.len(), runs.len()));
    }
    // One scroll area both ways, with solid scroll bars beside the table: a floating bar lies
    // over the last row and took the presses of its buttons when the table is wider than the panel.
    ui.spacing_mut().scroll.floating = false;
    // The sweep plots keep to the visible width (the tables may be wider and scroll).
    let panel_w = ui.available_width() - 24.0;
    egui::ScrollArea::both().id_salt("runs_list").max_height(if compare.is_some() { 300.0 } else { 640.0 }).auto_shrink([false, true]).show(ui, |ui| {
        let loose: Vec<&RunEntry> = shown.iter().copied().filter(|r| r.sweep.is_none()).collect();
        if !loose.is_empty() {
            runs_table(ui, "runs_grid", &loose, st, &mut act);
        }
        for sw in sweeps {
            let members: Vec<&RunEntry> = shown.iter().copied().filter(|r| r.sweep.as_ref() == Some(&sw.dir)).collect();
            if members.is_empty() && !st.filter.trim().is_empty() {
                continue;
            }
            egui::CollapsingHeader::new(RichText::new(format!("Sweep {} ({} runs)", sw.name, members.len())).strong())
                .id_salt(&sw.dir)
                .default_open(true)
                .show(ui, |ui| {
                    match &sw.report {
                        Ok(rep) => match sweep_figure(rep, st.metric) {
                            Some(f) => {
                                let svc = ViewCtx { run_dir: Some(&sw.dir), status: vc.status };
                                ui.scope(|ui| {
                                    ui.set_max_width(panel_w);
                                    figure(ui, &f, 200.0, &svc);
                                });
                            }
                            None => {
                                ui.weak("No finished run of this sweep has metrics yet.");
                            }
                        },
                        Err(e) => {
                            ui.colored_label(egui::Color32::from_rgb(230, 85, 60), format!("cannot read the sweep's report: {e}"));
                        }
                    }
                    if !members.is_empty() {
                        runs_table(ui, &format!("sweep_grid_{}", sw.dir.display()), &members, st, &mut act);
                    }
                });
        }
    });
    ui.horizontal(|ui| {
        if ui.add_enabled(st.a.is_some() && st.b.is_some(), egui::Button::new("Compare A and B")).clicked() {
            act = RunsAction::Compare(st.a.clone().unwrap(), st.b.clone().unwrap());
        }
    });
    if let Some((a, b)) = compare {
        compare_ui(ui, a, b, vc);
    }
    act
}

fn compare_ui(ui: &mut egui::Ui, a: &RunStore, b: &RunStore, vc: &ViewCtx) {
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
