//! A sweep's status now: each point's run directory (the truth about its run), what Slurm says
//! about its array task, and whether a local sweep process still holds the folder.

use super::manifest::{run_state, Manifest, RunState, Status, SweepLock};
use super::slurm::{self, SlurmView};
use std::path::Path;

/// Updates every point's status in `m`; returns the Slurm view it used (with its notes).
pub fn refresh(dir: &Path, m: &mut Manifest) -> SlurmView {
    let jobs: Vec<String> = m.slurm_jobs.iter().map(|j| j.job_id.clone()).collect();
    let view = slurm::query(&jobs);
    let slurm_answered = !jobs.is_empty() && !view.notes.iter().any(|n| n.starts_with("squeue"));
    let local_alive = SweepLock::is_held(dir);
    for e in m.points.iter_mut() {
        let task = e.slurm_job.as_ref().and_then(|j| view.tasks.get(j));
        let live = task.is_some_and(|(s, _)| slurm::is_live(s));
        let state = run_state(&dir.join(&e.run_dir));
        let (status, error) = match state {
            RunState::Finished { seconds } => {
                e.seconds = seconds.or(e.seconds);
                (Status::Finished, None)
            }
            // A task that Slurm requeued may be running again over a failed or cancelled run.
            RunState::Started | RunState::Failed(_) | RunState::Cancelled if live => (Status::Running, None),
            RunState::Failed(msg) => (Status::Failed, Some(msg)),
            RunState::Cancelled => (Status::Cancelled, None),
            RunState::Started if e.status == Status::Running && local_alive => (Status::Running, None),
            RunState::Started => match task {
                Some((s, _)) => (Status::Interrupted, Some(format!("Slurm says {s}; the run did not end (rerun it)"))),
                None => (Status::Interrupted, e.error.clone()),
            },
            RunState::Absent => match (e.status, task) {
                (_, Some((s, _))) if s == "RUNNING" => (Status::Running, None),
                (_, Some((s, _))) if slurm::is_live(s) => (Status::Submitted, None),
                (Status::Submitted, Some((s, _))) if s == "CANCELLED" => (Status::Cancelled, Some("cancelled in Slurm before it started".into())),
                (Status::Submitted, Some((s, _))) => (
                    Status::Failed,
                    Some(format!("the Slurm task ended ({s}) before the run started; see logs/slurm-{}.log", e.slurm_job.as_deref().unwrap_or("?"))),
                ),
                (Status::Submitted, None) if slurm_answered => (
                    Status::Failed,
                    Some(format!("the Slurm task is gone and never started the run; see logs/slurm-{}.log", e.slurm_job.as_deref().unwrap_or("?"))),
                ),
                (Status::Running, _) if !local_alive => (Status::Pending, None),
                (s, _) => (s, e.error.clone()),
            },
        };
        e.status = status;
        e.error = error;
    }
    view
}

/// The status table: one line a point.
pub fn table(m: &Manifest, view: &SlurmView) -> String {
    let w = m.points.iter().map(|p| p.name.len()).max().unwrap_or(4).max(5);
    let mut o = format!("{:<w$}  {:<11}  {:>8}  {:<22}  {}\n", "point", "status", "seconds", "slurm", "error");
    for p in &m.points {
        let slurm = match p.slurm_job.as_ref() {
            Some(j) => match view.tasks.get(j) {
                Some((s, t)) => format!("{j} {s} {t}"),
                None => j.clone(),
            },
            None => String::new(),
        };
        let secs = p.seconds.map(|s| format!("{s:.1}")).unwrap_or_default();
        o.push_str(&format!("{:<w$}  {:<11}  {:>8}  {:<22}  {}\n", p.name, p.status.as_str(), secs, slurm, p.error.as_deref().unwrap_or("")));
    }
    o
}
