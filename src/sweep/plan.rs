//! From a sweep's points to its folder: the manifest entries, each point's configuration file,
//! and which points need to run (resuming: a finished run made with the same configuration is
//! kept; an interrupted, failed or cancelled one runs again).

use super::manifest::{unix_now, AxisInfo, Manifest, PointEntry, RunState, Status, VERSION};
use super::spec::{config_differences, Point, SweepSpec};
use super::Executor;
use crate::experiment::ExperimentConfig;
use crate::runio::write_atomic;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub struct Plan {
    pub manifest: Manifest,
    /// Indices into `manifest.points` of the points to run now.
    pub todo: Vec<usize>,
    /// Finished runs kept from before.
    pub kept: usize,
}

fn entry(p: &Point) -> Result<PointEntry> {
    Ok(PointEntry {
        name: p.name.clone(),
        labels: p.labels.iter().cloned().collect(),
        overrides: p.overrides.iter().map(|(k, v)| Ok((k.clone(), serde_json::to_value(v)?))).collect::<Result<_>>()?,
        dataset: p.config.dataset_name(),
        config: PathBuf::from("configs").join(format!("{}.toml", p.name)),
        run_dir: PathBuf::from("runs").join(&p.name),
        log: PathBuf::from("logs").join(format!("{}.log", p.name)),
        status: Status::Pending,
        attempts: 0,
        started_unix: None,
        seconds: None,
        exit_code: None,
        error: None,
        slurm_job: None,
    })
}

/// The configuration a point's existing run was made with: its configs/ file, else the run's own.
fn stored_config(dir: &Path, e: &PointEntry) -> Option<ExperimentConfig> {
    [dir.join(&e.config), dir.join(&e.run_dir).join("config.toml")]
        .iter()
        .find(|p| p.exists())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| ExperimentConfig::from_toml_str(&t).ok())
}

/// The manifest a new or resumed sweep starts from. Writes nothing; `write_configs` does.
/// A finished run whose configuration differs from its point's now is an error unless `force`
/// (then it runs again).
pub fn plan(spec: &SweepSpec, points: &[Point], dir: &Path, executor: Executor, force: bool) -> Result<Plan> {
    let old = Manifest::load_if_present(dir)?;
    let mut entries = Vec::new();
    let (mut todo, mut kept, mut changed) = (Vec::new(), 0, Vec::new());
    for (i, p) in points.iter().enumerate() {
        let mut e = entry(p)?;
        if let Some(prev) = old.as_ref().and_then(|m| m.points.iter().find(|q| q.name == p.name)) {
            e.attempts = prev.attempts;
            e.slurm_job = prev.slurm_job.clone();
        }
        let state = super::manifest::run_state(&dir.join(&e.run_dir));
        let same = stored_config(dir, &e).map(|c| c == p.config);
        match (state, same) {
            (RunState::Finished { seconds }, Some(true)) => {
                e.status = Status::Finished;
                e.seconds = seconds;
                if let Some(prev) = old.as_ref().and_then(|m| m.points.iter().find(|q| q.name == p.name)) {
                    e.started_unix = prev.started_unix;
                    e.exit_code = prev.exit_code;
                }
                kept += 1;
            }
            (RunState::Finished { .. }, _) if !force => {
                let what = match stored_config(dir, &e) {
                    Some(c) => format!("differs in {}", config_differences(&c, &p.config).join(", ")),
                    None => "cannot be read".into(),
                };
                changed.push(format!("{}: the configuration of its finished run {what}", p.name));
                todo.push(i);
            }
            _ => todo.push(i),
        }
        entries.push(e);
    }
    if !changed.is_empty() {
        bail!(
            "{} finished runs in {} were made with another configuration than the sweep file gives now:\n{}\nUse another --out for the new sweep, or --force to run these points again",
            changed.len(),
            dir.display(),
            changed.join("\n")
        );
    }
    let now = unix_now();
    let manifest = Manifest {
        version: VERSION,
        name: spec.name.clone(),
        sweep_file: std::path::absolute(&spec.file).unwrap_or_else(|_| spec.file.clone()),
        created_unix: old.as_ref().map(|m| m.created_unix).unwrap_or(now),
        updated_unix: now,
        executor: executor.as_str().into(),
        axes: spec
            .axes
            .iter()
            .map(|a| AxisInfo { name: a.name.clone(), keys: a.keys.clone(), labels: a.values.iter().map(|v| v.label.clone()).collect() })
            .collect(),
        points: entries,
        slurm_jobs: old.map(|m| m.slurm_jobs).unwrap_or_default(),
    };
    Ok(Plan { manifest, todo, kept })
}

/// Writes the configuration files of the points to run (`configs/NAME.toml`), and creates the
/// `runs/` and `logs/` folders.
pub fn write_configs(dir: &Path, points: &[Point], plan: &Plan) -> Result<()> {
    for f in ["configs", "runs", "logs"] {
        std::fs::create_dir_all(dir.join(f)).with_context(|| format!("creating {}", dir.join(f).display()))?;
    }
    for &i in &plan.todo {
        let e = &plan.manifest.points[i];
        let text = format!(
            "# Point {} of sweep {} (written by `laplace-lora sweep`; overrides: {})\n{}",
            e.name,
            plan.manifest.name,
            super::spec::describe(&points[i].overrides),
            points[i].config.to_toml()?
        );
        write_atomic(&dir.join(&e.config), text.as_bytes())?;
    }
    Ok(())
}
