//! Runs a list of methods over the evaluation sets and writes what they predict: per set,
//! `predictions.jsonl` and `metrics.json` (the test split in the run directory itself, each
//! `[[data.eval]]` set in `eval/NAME/`), rewritten after every method so that a cancel or a
//! failure keeps every method finished so far. Each method's entry carries its cost: training
//! seconds, preparation seconds (its own training and fitting), evaluation seconds, and the peak
//! resident memory while it prepared and predicted.

use super::{Context, EvalSet, LaplaceShared, Method, SetPrediction};
use crate::bench::{peak_rss_mib, reset_peak_rss};
use crate::calibration;
use crate::data::Item;
use crate::experiment::{Event, MetricsFile, Outcome, Prediction, Stage};
use anyhow::Result;
use std::path::PathBuf;

/// One evaluation set and the files it is written to.
pub struct SetOutput<'a> {
    pub set: EvalSet<'a>,
    /// The folder of its `predictions.jsonl` and `metrics.json`.
    pub dir: PathBuf,
    pub preds: Vec<Prediction>,
    pub metrics: MetricsFile,
}

impl<'a> SetOutput<'a> {
    /// A set with no predictions yet: one line per item, no method.
    pub fn new(set: EvalSet<'a>, dir: PathBuf, answer_ids: &[u32]) -> Self {
        let preds = set.items.iter().map(|it| base_prediction(it, answer_ids)).collect();
        SetOutput { set, dir, preds, metrics: MetricsFile::default() }
    }

    /// A set whose files exist (a refit or an evaluation of a finished run): their predictions
    /// and metrics are kept and the methods run now are replaced or added.
    pub fn existing(set: EvalSet<'a>, dir: PathBuf, preds: Vec<Prediction>, metrics: MetricsFile) -> Self {
        SetOutput { set, dir, preds, metrics }
    }

    fn labels(&self) -> Vec<usize> {
        self.set.items.iter().map(|it| it.label).collect()
    }

    pub fn write(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        crate::experiment::write_predictions(&self.dir.join("predictions.jsonl"), &self.preds)?;
        self.metrics.write(&self.dir.join("metrics.json"))
    }

    /// Puts a method's predictions into the lines (each truncated to the item's choices).
    fn record(&mut self, name: &str, p: &SetPrediction) {
        for (i, line) in self.preds.iter_mut().enumerate() {
            let nc = line.choices.len();
            line.probs.insert(name.to_string(), p.probs[i][..nc].to_vec());
            if name == "map" {
                if let Some(l) = &p.logits {
                    line.map_logits = Some(l[i][..nc].to_vec());
                }
            }
            if let (Some(m), Some(c)) = (&p.logit_mean, &p.logit_cov) {
                let k = m[i].len();
                line.logit_mean.insert(name.to_string(), m[i][..nc].to_vec());
                line.logit_cov.insert(name.to_string(), (0..nc).map(|a| c[i][a * k..a * k + nc].to_vec()).collect());
            }
            if let Some(s) = &p.samples {
                line.samples.insert(name.to_string(), s[i].iter().map(|r| r[..nc].to_vec()).collect());
            }
        }
    }
}

/// The item part of a `predictions.jsonl` line.
pub fn base_prediction(it: &Item, answer_ids: &[u32]) -> Prediction {
    let nc = it.num_choices();
    Prediction {
        id: it.id.clone(),
        prompt: it.prompt.clone(),
        choices: it.choices.clone(),
        label: it.label,
        answer_token_ids: answer_ids[..nc].to_vec(),
        ..Default::default()
    }
}

/// Builds each method of `names` in turn (or, given the finished run's `metrics.json` as
/// `restore`, loads it from the run directory without training), prepares it, predicts on every
/// set, records metrics and cost, writes the files, and saves the method. Ok(Cancelled) on a
/// cancel, with the files of the methods finished so far written.
pub fn run_methods(cx: &Context, names: &[String], outputs: &mut [SetOutput], restore: Option<&MetricsFile>, shared: &LaplaceShared) -> Result<Outcome> {
    for name in names {
        reset_peak_rss();
        let mut m: Box<dyn Method> = match restore {
            Some(run_metrics) => {
                let entry = run_metrics.methods.iter().find(|(n, _)| n == name).map(|(_, e)| e.clone()).unwrap_or_default();
                super::restore(name, cx, &entry, shared)?
            }
            None => super::build(name, cx.cfg, shared)?,
        };
        let restore = restore.is_some();
        let stage = match name.as_str() {
            "zero_shot" => Stage::ZeroShot,
            "temperature" => Stage::Calibrate,
            "laplace" | "llla" => Stage::Laplace,
            _ => Stage::Evaluate,
        };
        let sets: Vec<&str> = outputs.iter().map(|o| o.set.name).collect();
        cx.message(stage, format!("{name}: {} on {}", if restore { "predicting" } else { "preparing, then predicting" }, sets.join(", ")))?;
        let t0 = std::time::Instant::now();
        if !restore && !m.prepare(cx)? {
            return Ok(Outcome::Cancelled);
        }
        let prepare_seconds = t0.elapsed().as_secs_f64();
        let mut eval_seconds = 0.0;
        for out in outputs.iter_mut() {
            let t = std::time::Instant::now();
            let Some(p) = m.predict(cx, &out.set)? else { return Ok(Outcome::Cancelled) };
            eval_seconds += t.elapsed().as_secs_f64();
            let metrics = calibration::metrics(&p.probs, &out.labels());
            cx.emit(Event::Metrics { name: name.clone(), metrics: metrics.clone(), set: (out.set.name != "test").then(|| out.set.name.to_string()) })?;
            out.record(name, &p);
            if name == "laplace" && out.set.name != "test" {
                // The prior slider's cache for this set (the test split's is the fit's own).
                shared.borrow().write_set_cache(out.set.name, &out.dir)?;
            }
            let mut entry = serde_json::to_value(&metrics)?;
            for (k, v) in m.details() {
                entry[k] = v;
            }
            out.metrics.set(name, entry);
        }
        let cost = serde_json::json!({
            "train_seconds": m.train_seconds(),
            "prepare_seconds": prepare_seconds,
            "eval_seconds": eval_seconds,
            "peak_rss_mib": peak_rss_mib(),
        });
        for out in outputs.iter_mut() {
            if let Some((_, e)) = out.metrics.methods.iter_mut().find(|(n, _)| n == name) {
                if restore {
                    // An evaluation of a finished run: only this set's evaluation is new.
                    e["cost"] = serde_json::json!({ "eval_seconds": eval_seconds, "peak_rss_mib": peak_rss_mib() });
                } else {
                    e["cost"] = cost.clone();
                }
            }
            out.write()?;
        }
        if !restore {
            m.save(cx)?;
        }
        cx.message(Stage::Write, format!("{name}: done (prepare {prepare_seconds:.1} s, evaluation {eval_seconds:.1} s, peak {:.0} MiB)", peak_rss_mib()))?;
    }
    Ok(Outcome::Finished)
}
