//! Where two methods differ: every item with both methods' answers and the probability each
//! gives the true answer. By default the prediction flips come first, then the largest change
//! |p_B(true) - p_A(true)| in the confidence of the true answer.

use super::*;
use crate::app::figure::{csv_button, csv_field};
use crate::app::store::{method_label, PredRow};
use egui::{Color32, RichText};
use laplace_lora::calibration::top_label;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DiffSort {
    /// Flips first, then |delta| (the default).
    Disagreement,
    Index,
    TrueA,
    TrueB,
    Delta,
}

pub struct DiffState {
    pub a: Option<String>,
    pub b: Option<String>,
    pub sort: DiffSort,
    pub descending: bool,
    pub flips_only: bool,
}

impl Default for DiffState {
    fn default() -> Self {
        Self { a: None, b: None, sort: DiffSort::Disagreement, descending: true, flips_only: false }
    }
}

/// One item's difference between methods A and B.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    pub i: usize,
    pub pred_a: usize,
    pub pred_b: usize,
    /// p_A(true answer), p_B(true answer).
    pub true_a: f64,
    pub true_b: f64,
}

impl Diff {
    pub fn flip(&self) -> bool {
        self.pred_a != self.pred_b
    }
    pub fn delta(&self) -> f64 {
        self.true_b - self.true_a
    }
    /// Flips above every non-flip (|delta| <= 1), then by |delta|.
    pub fn disagreement(&self) -> f64 {
        self.flip() as u8 as f64 * 2.0 + self.delta().abs()
    }
}

/// The differences of the items that have both methods' probabilities.
pub fn diffs(preds: &[PredRow], a: &str, b: &str) -> Vec<Diff> {
    preds
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let (qa, qb) = (p.probs.get(a)?, p.probs.get(b)?);
            Some(Diff {
                i,
                pred_a: top_label(qa).0,
                pred_b: top_label(qb).0,
                true_a: qa.get(p.label).copied().unwrap_or(0.0),
                true_b: qb.get(p.label).copied().unwrap_or(0.0),
            })
        })
        .collect()
}

fn pick(ui: &mut egui::Ui, label: &str, id: &str, slot: &mut Option<String>, methods: &[String]) {
    let l = ui.label(label);
    let cur = slot.clone().unwrap_or_default();
    egui::ComboBox::from_id_salt(id)
        .selected_text(RichText::new(method_label(&cur)).color(method_color(&cur)))
        .show_ui(ui, |ui| {
            for m in methods {
                ui.selectable_value(slot, Some(m.clone()), RichText::new(method_label(m)).color(method_color(m)));
            }
        })
        .response
        .labelled_by(l.id);
}

/// Draws the list; returns the item the user clicked.
pub fn method_diff(ui: &mut egui::Ui, preds: &[PredRow], methods: &[String], st: &mut DiffState, selected: Option<usize>, vc: &ViewCtx) -> Option<usize> {
    if methods.len() < 2 {
        ui.label("This set has fewer than two methods' probabilities.");
        return None;
    }
    if st.a.as_ref().is_none_or(|m| !methods.contains(m)) {
        st.a = Some(if methods.iter().any(|m| m == "map") { "map".into() } else { methods[0].clone() });
    }
    if st.b.as_ref().is_none_or(|m| !methods.contains(m)) {
        let a = st.a.clone().unwrap();
        st.b = ["laplace", "llla", "deep_ensemble", "mc_dropout", "blob"]
            .iter()
            .map(|m| m.to_string())
            .find(|m| methods.contains(m) && *m != a)
            .or_else(|| methods.iter().rev().find(|m| **m != a).cloned());
    }
    let mut clicked = None;
    ui.horizontal(|ui| {
        pick(ui, "Method A:", "diff_a", &mut st.a, methods);
        pick(ui, "Method B:", "diff_b", &mut st.b, methods);
        ui.checkbox(&mut st.flips_only, "only where the answer flips");
    });
    let (a, b) = (st.a.clone().unwrap_or_default(), st.b.clone().unwrap_or_default());
    let mut rows = diffs(preds, &a, &b);
    let flips = rows.iter().filter(|d| d.flip()).count();
    if st.flips_only {
        rows.retain(|d| d.flip());
    }
    let key = |d: &Diff| match st.sort {
        DiffSort::Disagreement => d.disagreement(),
        DiffSort::Index => d.i as f64,
        DiffSort::TrueA => d.true_a,
        DiffSort::TrueB => d.true_b,
        DiffSort::Delta => d.delta(),
    };
    rows.sort_by(|x, y| {
        let o = key(x).total_cmp(&key(y));
        if st.descending { o.reverse() } else { o }.then(x.i.cmp(&y.i))
    });
    ui.horizontal(|ui| {
        ui.label(format!("{flips} of {} items change their answer from {} to {}", preds.len(), method_label(&a), method_label(&b)));
        csv_button(
            ui,
            &format!("diff_{a}_vs_{b}"),
            || {
                let mut c = format!("id,label,{a}_prediction,{b}_prediction,flip,{a}_p_true,{b}_p_true,delta\n");
                for d in &rows {
                    c += &format!(
                        "{},{},{},{},{},{},{},{}\n",
                        csv_field(&preds[d.i].id),
                        preds[d.i].label,
                        d.pred_a,
                        d.pred_b,
                        d.flip(),
                        d.true_a,
                        d.true_b,
                        d.delta()
                    );
                }
                c
            },
            vc.run_dir,
            vc.status,
        );
    });
    let mut header = |ui: &mut egui::Ui, label: &str, by: DiffSort, hover: &str| super::sort_header(ui, label, by, &mut st.sort, &mut st.descending, hover);
    egui::ScrollArea::vertical().id_salt("diff_table").max_height(230.0).auto_shrink([false, true]).show(ui, |ui| {
        egui::Grid::new("diff_grid").striped(true).num_columns(8).show(ui, |ui| {
            header(ui, "#", DiffSort::Index, "item number");
            ui.label(RichText::new("id").strong());
            ui.label(RichText::new(format!("answer / {} / {}", method_label(&a), method_label(&b))).strong());
            header(ui, "disagreement", DiffSort::Disagreement, "prediction flips first, then the largest change in the true answer's probability");
            header(ui, &format!("{} p(true)", method_label(&a)), DiffSort::TrueA, "the probability method A gives the correct answer");
            header(ui, &format!("{} p(true)", method_label(&b)), DiffSort::TrueB, "the probability method B gives the correct answer");
            header(ui, "change", DiffSort::Delta, "p_B(true) - p_A(true): positive when B puts more weight on the correct answer");
            ui.end_row();
            for d in &rows {
                let p = &preds[d.i];
                if ui.selectable_label(selected == Some(d.i), format!("{}", d.i + 1)).clicked() {
                    clicked = Some(d.i);
                }
                if ui.selectable_label(selected == Some(d.i), crate::app::setup::short(&p.id, 28)).clicked() {
                    clicked = Some(d.i);
                }
                let l = |k: usize| laplace_lora::data::LETTERS.get(k).map(|s| s.to_string()).unwrap_or_else(|| k.to_string());
                ui.label(format!("{} / {} / {}", l(p.label), l(d.pred_a), l(d.pred_b)));
                if d.flip() {
                    let good = d.pred_b == p.label;
                    let (c, t) = if good {
                        (Color32::from_rgb(50, 175, 95), "flip: B right")
                    } else if d.pred_a == p.label {
                        (Color32::from_rgb(230, 85, 60), "flip: B wrong")
                    } else {
                        (Color32::from_rgb(220, 160, 40), "flip: both wrong")
                    };
                    ui.colored_label(c, t);
                } else {
                    ui.weak("same answer");
                }
                ui.label(format!("{:.3}", d.true_a));
                ui.label(format!("{:.3}", d.true_b));
                ui.label(format!("{:+.3}", d.delta()));
                ui.end_row();
            }
        });
    });
    clicked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_come_before_the_largest_changes() {
        let row = |label: usize, a: [f64; 2], b: [f64; 2]| PredRow {
            label,
            probs: [("map".to_string(), a.to_vec()), ("laplace".to_string(), b.to_vec())].into_iter().collect(),
            ..Default::default()
        };
        let preds = vec![row(0, [0.9, 0.1], [0.6, 0.4]), row(0, [0.6, 0.4], [0.4, 0.6]), row(1, [0.5, 0.5], [0.5, 0.5])];
        let mut d = diffs(&preds, "map", "laplace");
        d.sort_by(|x, y| y.disagreement().total_cmp(&x.disagreement()));
        assert_eq!(d.iter().map(|x| x.i).collect::<Vec<_>>(), [1, 0, 2]);
        assert!(d[0].flip() && !d[1].flip());
        assert!((d[1].delta() + 0.3).abs() < 1e-12);
    }
}
