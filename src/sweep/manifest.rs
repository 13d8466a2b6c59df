//! `sweep.json`, the sweep folder's manifest: its axes and points, each point's overrides, files
//! and status; and what a run directory on disk says about its run.
//!
//! Layout of a sweep folder:
//!
//! ```text
//! sweep.json            this manifest (written atomically)
//! configs/NAME.toml     each point's resolved configuration (what `laplace-lora run` reads)
//! runs/NAME/            each point's run directory
//! logs/NAME.log         the output of each local run; logs/slurm-JOB_TASK.log under Slurm
//! sweep.sbatch          the last Slurm array job script
//! report.md, report.csv, report-vs-map.csv, report.tex   written by `laplace-lora report`
//! ```
//!
//! Paths in the manifest are relative to the sweep folder, so the folder can be moved.

use crate::runio::write_json_atomic;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "sweep.json";
pub const VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started.
    Pending,
    /// A local child process is on it.
    Running,
    /// In a Slurm array job, not yet known to have started.
    Submitted,
    Finished,
    Failed,
    /// Stopped by Ctrl-C (or a Slurm signal) at a batch boundary.
    Cancelled,
    /// Started, then stopped without a word (a killed process, a lost node): rerun.
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Submitted => "submitted",
            Status::Finished => "finished",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AxisInfo {
    pub name: String,
    /// Every configuration key the axis sets.
    pub keys: Vec<String>,
    /// Its values' labels, in order.
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointEntry {
    pub name: String,
    /// Axis name -> label.
    pub labels: BTreeMap<String, String>,
    /// Dotted configuration key -> value.
    pub overrides: BTreeMap<String, serde_json::Value>,
    /// The dataset's short name (`ExperimentConfig::dataset_name`).
    pub dataset: String,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub log: PathBuf,
    pub status: Status,
    /// Times this sweep folder started the run.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// "JOB_TASK" of its last Slurm array task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlurmJob {
    pub job_id: String,
    /// The array task ids (indices into `points`).
    pub tasks: Vec<usize>,
    pub submitted_unix: u64,
    pub script: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub name: String,
    /// The sweep file the points came from (absolute).
    pub sweep_file: PathBuf,
    pub created_unix: u64,
    pub updated_unix: u64,
    pub executor: String,
    pub axes: Vec<AxisInfo>,
    pub points: Vec<PointEntry>,
    #[serde(default)]
    pub slurm_jobs: Vec<SlurmJob>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST)
    }

    /// Reads `DIR/sweep.json`; an error names the file and what is wrong with it.
    pub fn load(dir: &Path) -> Result<Self> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p).with_context(|| format!("{} is not a sweep folder: cannot read {}", dir.display(), p.display()))?;
        let m: Manifest = serde_json::from_str(&text).with_context(|| format!("{} is not a valid sweep manifest", p.display()))?;
        if m.version > VERSION {
            bail!("{} was written by a newer laplace-lora (manifest version {}, this one reads {VERSION})", p.display(), m.version);
        }
        for e in &m.points {
            for f in [&e.run_dir, &e.config, &e.log] {
                if f.is_absolute() || f.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                    bail!("{}: point {} names {} outside the sweep folder", p.display(), e.name, f.display());
                }
            }
        }
        Ok(m)
    }

    pub fn load_if_present(dir: &Path) -> Result<Option<Self>> {
        if Self::path(dir).exists() {
            Self::load(dir).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn save(&mut self, dir: &Path) -> Result<()> {
        self.updated_unix = unix_now();
        write_json_atomic(&Self::path(dir), self)
    }

    pub fn count(&self, s: Status) -> usize {
        self.points.iter().filter(|p| p.status == s).count()
    }

    /// "3 finished, 1 failed" in a fixed order.
    pub fn summary(&self) -> String {
        let all = [Status::Finished, Status::Running, Status::Submitted, Status::Pending, Status::Failed, Status::Cancelled, Status::Interrupted];
        let parts: Vec<String> = all.iter().filter(|s| self.count(**s) > 0).map(|s| format!("{} {}", self.count(*s), s.as_str())).collect();
        format!("{} points: {}", self.points.len(), parts.join(", "))
    }
}

/// What a run directory's `events.jsonl` says about its run.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// No run directory or no events yet.
    Absent,
    /// Started, no end yet: running, or stopped without a word.
    Started,
    Finished {
        seconds: Option<f64>,
    },
    Failed(String),
    Cancelled,
}

/// Reads `events.jsonl` line by line (only the `event` tags, so other event kinds may come and
/// go). A run is finished when a `finished` event was written and `metrics.json` exists: a later
/// Laplace refit that fails or is cancelled leaves the run's own results in place.
pub fn run_state(run_dir: &Path) -> RunState {
    let Ok(text) = std::fs::read_to_string(run_dir.join("events.jsonl")) else { return RunState::Absent };
    let (mut finished, mut last) = (None, RunState::Absent);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        match v.get("event").and_then(|e| e.as_str()) {
            Some("started") => last = RunState::Started,
            Some("finished") => {
                let seconds = v.get("seconds").and_then(|s| s.as_f64());
                finished.get_or_insert(seconds);
                last = RunState::Finished { seconds };
            }
            Some("failed") => last = RunState::Failed(v.get("error").and_then(|e| e.as_str()).unwrap_or("failed").to_string()),
            Some("cancelled") => last = RunState::Cancelled,
            _ => {}
        }
    }
    match finished {
        Some(seconds) if run_dir.join("metrics.json").is_file() => RunState::Finished { seconds },
        _ if last == RunState::Absent => RunState::Absent,
        _ => {
            if matches!(last, RunState::Finished { .. }) {
                RunState::Started // finished event but no metrics.json: not a usable run
            } else {
                last
            }
        }
    }
}

/// An exclusive lock on a sweep folder (`.sweep.lock`, flock): one `sweep` process at a time
/// writes its manifest. Released when dropped or when the process dies.
pub struct SweepLock {
    _file: std::fs::File,
}

impl SweepLock {
    pub fn acquire(dir: &Path) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        let p = dir.join(".sweep.lock");
        let mut f =
            std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&p).with_context(|| format!("opening {}", p.display()))?;
        if !Self::try_lock(&f) {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            bail!("another `laplace-lora sweep` (pid {}) is working on {}; wait for it or stop it first", pid.trim(), dir.display());
        }
        f.set_len(0)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        write!(f, "{}", std::process::id())?;
        Ok(Self { _file: f })
    }

    /// Whether a sweep process holds the folder's lock now.
    pub fn is_held(dir: &Path) -> bool {
        let Ok(f) = std::fs::File::open(dir.join(".sweep.lock")) else { return false };
        if Self::try_lock(&f) {
            // SAFETY: unlocking the descriptor we just locked.
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_UN) };
            false
        } else {
            true
        }
    }

    fn try_lock(f: &std::fs::File) -> bool {
        // SAFETY: flock on a descriptor we own; non-blocking.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(f), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_state_reads_the_event_tags() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(run_state(d.path()), RunState::Absent);
        let ev = |lines: &[&str]| std::fs::write(d.path().join("events.jsonl"), lines.join("\n")).unwrap();
        ev(&[r#"{"event":"started","run_dir":"x","unix_time":1}"#, r#"{"event":"stage","stage":"train","message":"m"}"#]);
        assert_eq!(run_state(d.path()), RunState::Started);
        ev(&[r#"{"event":"started"}"#, r#"{"event":"failed","stage":"train","error":"out of memory"}"#]);
        assert_eq!(run_state(d.path()), RunState::Failed("out of memory".into()));
        ev(&[r#"{"event":"started"}"#, r#"{"event":"cancelled","stage":"train","message":"m"}"#]);
        assert_eq!(run_state(d.path()), RunState::Cancelled);
        // Finished without metrics.json is not a usable run; with it, a later failed refit
        // leaves it finished; a torn last line is skipped.
        ev(&[r#"{"event":"started"}"#, r#"{"event":"finished","seconds":2.5}"#, r#"{"event":"started"}"#, r#"{"event":"failed","error":"refit"}"#, r#"{"eve"#]);
        assert_eq!(run_state(d.path()), RunState::Failed("refit".into()));
        std::fs::write(d.path().join("metrics.json"), "{}").unwrap();
        assert_eq!(run_state(d.path()), RunState::Finished { seconds: Some(2.5) });
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        assert!(!SweepLock::is_held(d.path()));
        let l = SweepLock::acquire(d.path()).unwrap();
        assert!(SweepLock::is_held(d.path()));
        let e = format!("{:#}", SweepLock::acquire(d.path()).err().unwrap());
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(l);
        assert!(!SweepLock::is_held(d.path()));
        let _again = SweepLock::acquire(d.path()).unwrap();
    }
}
