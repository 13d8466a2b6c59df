//! Sweeps: many runs of one experiment over axes of its configuration (data sets, seeds,
//! learning rates, ranks, methods, priors), on a local queue or as one Slurm array job, and the
//! paper's table over them (DESIGN.md section 5).
//!
//! - `spec`, `labels`: the sweep file and its expansion into validated, named points;
//! - `plan`, `manifest`: the sweep folder, `sweep.json`, resuming;
//! - `local`, `slurm`, `status`: the executors and the status of a sweep;
//! - `report`, `render`: the table (a library API for the GUI) and its Markdown, CSV, LaTeX;
//! - `cli`: the `sweep` and `report` verbs.

pub mod cli;
pub mod labels;
pub mod local;
pub mod manifest;
pub mod plan;
pub mod render;
pub mod report;
pub mod slurm;
pub mod spec;
pub mod status;

use anyhow::{bail, Result};

/// Where the runs of a sweep go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// Child processes on this machine, `--jobs` at a time.
    Local,
    /// One `sbatch --array` job.
    Slurm,
}

impl Executor {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "local" => Ok(Executor::Local),
            "slurm" => Ok(Executor::Slurm),
            other => bail!("executor {other:?} is not one of \"local\", \"slurm\""),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        }
    }
}
