//! The events a run emits: one line each of `events.jsonl` (stamped with the seconds since the
//! run started), and what the faces (GUI, CLI) receive while it goes on.

use crate::calibration::Metrics;
use crate::train::StepReport;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    LoadModel,
    LoadData,
    ZeroShot,
    Train,
    Evaluate,
    Calibrate,
    Laplace,
    Write,
}

/// The compact numbers of a metrics set, for curves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub accuracy: f64,
    pub ece: f64,
    pub nll: f64,
    pub brier: f64,
}

impl From<&Metrics> for Summary {
    fn from(m: &Metrics) -> Self {
        Self { accuracy: m.accuracy, ece: m.ece, nll: m.nll, brier: m.brier }
    }
}

/// One line of `events.jsonl`, and what the faces receive while a run goes on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        run_dir: PathBuf,
        unix_time: u64,
    },
    Stage {
        stage: Stage,
        message: String,
    },
    Progress {
        stage: Stage,
        done: u64,
        total: u64,
    },
    TrainStep {
        step: usize,
        total_steps: usize,
        epoch: usize,
        loss: f64,
        batch_accuracy: f64,
        learning_rate: f64,
        grad_norm: f64,
        seconds: f64,
    },
    Validation {
        epoch: usize,
        step: usize,
        split: String,
        summary: Summary,
    },
    /// A method's metrics on the test split (`set` absent) or on an evaluation set.
    Metrics {
        name: String,
        metrics: Metrics,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set: Option<String>,
    },
    Artifact {
        path: String,
    },
    Finished {
        seconds: f64,
    },
    Cancelled {
        stage: Stage,
        message: String,
    },
    Failed {
        stage: Stage,
        error: String,
    },
}

impl From<&StepReport> for Event {
    fn from(r: &StepReport) -> Self {
        Event::TrainStep {
            step: r.step,
            total_steps: r.total_steps,
            epoch: r.epoch,
            loss: r.loss,
            batch_accuracy: r.batch_accuracy,
            learning_rate: r.learning_rate,
            grad_norm: r.grad_norm,
            seconds: r.seconds,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished,
    Cancelled,
}

/// One line of `events.jsonl`: the event and when it happened, in seconds since the run (or the
/// refit, or the evaluation) started, so that a reader sees where the time went
/// (`laplace-lora run` prints the same per stage at the end).
#[derive(Serialize)]
pub struct Stamped<'a> {
    pub t: f64,
    #[serde(flatten)]
    pub event: &'a Event,
}

/// Seconds spent in each stage during the last session (run, refit or evaluation) recorded in an
/// `events.jsonl`: the time between one stamped event and the next goes to the stage the first
/// one belongs to (a training step to Train, a metrics event to the stage before it). Stages in
/// the order they first appear.
pub fn time_by_stage(path: &std::path::Path) -> anyhow::Result<Vec<(Stage, f64)>> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let start = lines.iter().rposition(|v| v.get("event").and_then(|e| e.as_str()) == Some("started")).unwrap_or(0);
    let mut out: Vec<(Stage, f64)> = Vec::new();
    let mut current = Stage::LoadModel;
    let mut last_t = 0.0;
    for v in &lines[start..] {
        let t = v.get("t").and_then(|x| x.as_f64()).unwrap_or(last_t);
        match out.iter_mut().find(|(s, _)| *s == current) {
            Some(slot) => slot.1 += t - last_t,
            None => out.push((current, t - last_t)),
        }
        last_t = t;
        let stage = match v.get("event").and_then(|e| e.as_str()) {
            Some("train_step") | Some("validation") => Some(Stage::Train),
            _ => v.get("stage").and_then(|s| serde_json::from_value::<Stage>(s.clone()).ok()),
        };
        if let Some(s) = stage {
            current = s;
        }
    }
    Ok(out)
}
