//! The `sweep` and `report` verbs.

use super::local::{self, LocalOptions, LocalOutcome};
use super::manifest::{Manifest, Status, SweepLock};
use super::spec::{describe, SlurmSection, SweepSpec};
use super::{plan, render, report, slurm, status, Executor};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// The sweep file: a base configuration plus axes (see assets/sweeps/).
    #[arg(required_unless_present = "status")]
    pub file: Option<PathBuf>,
    /// Print the status of the sweep in this folder (its sweep.json, the run directories, and
    /// `squeue`/`sacct` for Slurm jobs), then exit.
    #[arg(long, value_name = "DIR", conflicts_with = "file")]
    pub status: Option<PathBuf>,
    /// The sweep folder (default: [sweep] out of the file, else sweeps/<name>). Running the same
    /// sweep into the same folder again resumes it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// "local" (runs on this machine, --jobs at a time) or "slurm" (one sbatch array job).
    #[arg(long)]
    pub executor: Option<String>,
    /// Local executor: runs at a time (default [sweep] jobs, else 1); the machine's threads are
    /// shared out between them.
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Local executor: further attempts for a run that fails (default [sweep] retries, else 0).
    #[arg(long)]
    pub retries: Option<u32>,
    /// Expand and validate the points, print them (and the Slurm job script), write and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run again points whose finished runs were made with another configuration.
    #[arg(long)]
    pub force: bool,
    /// Slurm: after submitting, follow the job until every task has ended, then write the report.
    #[arg(long)]
    pub wait: bool,
    /// Slurm partition (`--partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm time limit per run (`--time`, e.g. 02:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm GPUs per run (`--gres=gpu:N`).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Slurm CPUs per run (`--cpus-per-task`; also the run's thread count).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Slurm memory per run (`--mem`, e.g. 32G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Slurm: at most this many runs at once (`--array=...%N`).
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// Further sbatch option for the job script (repeatable), e.g. --sbatch-arg=--account=proj.
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A sweep folder written by `laplace-lora sweep`.
    pub dir: PathBuf,
    /// The axis to average over (default: the one over train.seed).
    #[arg(long)]
    pub over: Option<String>,
    /// Write the files only; do not print the Markdown table.
    #[arg(long)]
    pub quiet: bool,
}

pub const SWEEP_ABOUT: &str = "Expand a sweep file (a base configuration plus axes over any of its keys: data sets, seeds, \
learning rates, ranks, methods, priors) into one run directory per point under the sweep folder, with a \
sweep.json manifest, and run them: locally (--jobs at a time, each a child `laplace-lora run`; Ctrl-C stops \
every run at its next batch) or as one Slurm array job (--executor slurm; --dry-run prints the job script). \
Every point's configuration is validated before anything runs. Running the same command again resumes: \
finished runs are kept, interrupted and failed ones run again. When runs have finished, the report \
(`laplace-lora report DIR`) is written.\n\nExamples:\n  laplace-lora sweep assets/sweeps/sample-table.toml --jobs 2\n  \
laplace-lora sweep assets/sweeps/paper-table.toml --executor slurm --partition gpu --gpus 1 --cpus 8 --time 04:00:00 --dry-run\n  \
laplace-lora sweep --status sweeps/paper-table";

pub const REPORT_ABOUT: &str = "Write the paper's table for a sweep folder: per data set (and any other axis but the seeds) \
and method, mean and standard deviation over seeds of ACC, ECE, NLL and Brier on the test set and on each \
shift set (eval/NAME/metrics.json), and the paired differences of each method against MAP (per seed, then \
mean and standard deviation). The standard deviation is the sample one (n - 1 denominator). Writes \
report.md, report.csv, report-vs-map.csv and report.tex into the folder and prints the Markdown.\n\n\
Example: laplace-lora report sweeps/paper-table";

fn slurm_options(file: &SlurmSection, a: &SweepArgs) -> Result<SlurmSection> {
    let mut s = file.clone();
    if a.partition.is_some() {
        s.partition = a.partition.clone();
    }
    if a.time.is_some() {
        s.time = a.time.clone();
    }
    if a.gpus.is_some() {
        s.gpus = a.gpus;
    }
    if a.cpus.is_some() {
        s.cpus = a.cpus;
    }
    if a.mem.is_some() {
        s.mem = a.mem.clone();
    }
    if a.max_parallel.is_some() {
        s.max_parallel = a.max_parallel;
    }
    s.extra.extend(a.sbatch_args.iter().cloned());
    slurm::validate(&s).context("the Slurm options")?;
    Ok(s)
}

pub fn cmd_sweep(a: SweepArgs) -> Result<i32> {
    if let Some(dir) = &a.status {
        return cmd_status(dir);
    }
    let file = a.file.clone().context("a sweep file is needed")?;
    let spec = SweepSpec::from_file(&file)?;
    let points = spec.points().with_context(|| format!("in sweep file {}", file.display()))?;
    let executor = Executor::parse(a.executor.as_deref().or(spec.section.executor.as_deref()).unwrap_or("local")).context("--executor")?;
    let dir = a.out.clone().or_else(|| spec.section.out.clone()).unwrap_or_else(|| PathBuf::from("sweeps").join(&spec.name));
    let slurm_opts = slurm_options(&spec.slurm, &a)?;
    let jobs = a.jobs.or(spec.section.jobs).unwrap_or(1);
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let retries = a.retries.or(spec.section.retries).unwrap_or(0);
    let axes: Vec<String> = spec.axes.iter().map(|x| format!("{} ({})", x.name, x.values.len())).collect();
    eprintln!(
        "sweep {}: {} points{}; folder {}",
        spec.name,
        points.len(),
        if axes.is_empty() { String::new() } else { format!(" over {}", axes.join(" x ")) },
        dir.display()
    );

    if a.dry_run {
        let plan = plan::plan(&spec, &points, &dir, executor, a.force)?;
        for (i, p) in points.iter().enumerate() {
            let what = if plan.todo.contains(&i) { "run " } else { "keep" };
            println!("{what} {:>3}  {}  ({})", i, p.name, describe(&p.overrides));
        }
        println!("{} to run, {} finished runs kept", plan.todo.len(), plan.kept);
        if executor == Executor::Slurm && !plan.todo.is_empty() {
            println!("\n# the job script ({}/{}):", dir.display(), slurm::SCRIPT);
            print!("{}", slurm::job_script(&dir, &plan.manifest, &plan.todo, &slurm_opts, &std::env::current_exe()?)?);
        }
        return Ok(0);
    }

    std::fs::create_dir_all(&dir).with_context(|| format!("creating sweep folder {}", dir.display()))?;
    let lock = SweepLock::acquire(&dir)?;
    let mut plan = plan::plan(&spec, &points, &dir, executor, a.force)?;
    if executor == Executor::Slurm {
        // Points whose previous task is still queued or running are not submitted again.
        let jobs: Vec<String> = plan.manifest.slurm_jobs.iter().map(|j| j.job_id.clone()).collect();
        let view = slurm::query(&jobs);
        let man = &mut plan.manifest;
        plan.todo.retain(|&i| {
            let live = man.points[i].slurm_job.as_ref().and_then(|j| view.tasks.get(j)).is_some_and(|(s, _)| slurm::is_live(s));
            if live {
                eprintln!("  {} is still queued or running as {}; not submitted again", man.points[i].name, man.points[i].slurm_job.as_deref().unwrap_or(""));
                man.points[i].status = Status::Submitted;
            }
            !live
        });
    }
    plan::write_configs(&dir, &points, &plan)?;
    let mut m = plan.manifest;
    m.save(&dir)?;
    if plan.kept > 0 {
        eprintln!("  {} finished runs kept, {} to run", plan.kept, plan.todo.len());
    }
    let exe = std::env::current_exe().context("finding the laplace-lora binary")?;
    match executor {
        Executor::Local => {
            let presses = Arc::new(AtomicUsize::new(0));
            let p = presses.clone();
            let _ = ctrlc::set_handler(move || {
                // Counted; the sweep passes each one on to its runs. A third stops the sweep.
                if p.fetch_add(1, Ordering::SeqCst) >= 2 {
                    std::process::exit(130);
                }
            });
            let opts = LocalOptions { jobs, retries, threads_per_run: local::threads_per_run(jobs), exe };
            eprintln!("  {} at a time, {} threads each; logs in {}", jobs, opts.threads_per_run, dir.join("logs").display());
            let outcome = local::run_local(&dir, &mut m, &plan.todo, &opts, &presses, &mut |line| eprintln!("{line}"))?;
            drop(lock);
            eprintln!("{}", m.summary());
            finish_report(&dir, &m);
            Ok(match outcome {
                LocalOutcome::Finished => 0,
                LocalOutcome::Cancelled => {
                    eprintln!("cancelled; run the same command again to resume ({} points still to run)", m.points.len() - m.count(Status::Finished));
                    130
                }
                LocalOutcome::Failed(names) => {
                    eprintln!(
                        "{} runs failed: {}; their logs are in {}; run the same command again to retry them",
                        names.len(),
                        names.join(", "),
                        dir.join("logs").display()
                    );
                    1
                }
            })
        }
        Executor::Slurm => {
            if plan.todo.is_empty() {
                eprintln!("nothing to submit: {}", m.summary());
                drop(lock);
                if !a.wait {
                    return Ok(0);
                }
            } else {
                let job = slurm::submit_sweep(&dir, &mut m, &plan.todo, &slurm_opts, &exe)?;
                drop(lock);
                println!("submitted Slurm job {job}: {} array tasks ({})", plan.todo.len(), slurm::array_spec(&plan.todo));
                eprintln!("follow it with `laplace-lora sweep --status {}`; `laplace-lora report {}` when it is done", dir.display(), dir.display());
            }
            if a.wait {
                return wait_slurm(&dir);
            }
            Ok(0)
        }
    }
}

/// Follows a Slurm sweep until no task is queued or running; Ctrl-C stops following only.
fn wait_slurm(dir: &Path) -> Result<i32> {
    let stop = Arc::new(AtomicUsize::new(0));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || {
        s.fetch_add(1, Ordering::SeqCst);
    });
    let poll = std::env::var("LAPLACE_LORA_SWEEP_POLL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000u64);
    let mut last = String::new();
    loop {
        let mut m = Manifest::load(dir)?;
        let view = status::refresh(dir, &mut m);
        if let Ok(_l) = SweepLock::acquire(dir) {
            m.save(dir)?;
        }
        let summary = m.summary();
        if summary != last {
            if last.is_empty() {
                view.notes.iter().for_each(|n| eprintln!("  ({n})"));
            }
            eprintln!("{summary}");
            last = summary;
        }
        if m.count(Status::Submitted) + m.count(Status::Running) == 0 {
            finish_report(dir, &m);
            let bad: Vec<String> = m.points.iter().filter(|p| p.status != Status::Finished).map(|p| format!("{} ({})", p.name, p.status.as_str())).collect();
            if bad.is_empty() {
                return Ok(0);
            }
            eprintln!("{} runs did not finish: {}\n{}", bad.len(), bad.join(", "), status::table(&m, &view));
            return Ok(1);
        }
        if stop.load(Ordering::SeqCst) > 0 {
            eprintln!("stopped following; the job keeps running (scancel it to stop it): laplace-lora sweep --status {}", dir.display());
            return Ok(130);
        }
        std::thread::sleep(Duration::from_millis(poll));
    }
}

/// Writes the report when some run has finished (a failure to is a warning: the runs are safe).
fn finish_report(dir: &Path, m: &Manifest) {
    if m.count(Status::Finished) == 0 {
        return;
    }
    match report::load(dir, None).and_then(|r| render::write_files(dir, &r).map(|f| (r, f))) {
        Ok((r, files)) => {
            println!("{}", render::markdown(&r));
            eprintln!("report: {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
        }
        Err(e) => eprintln!("warning: the report could not be written: {e:#}"),
    }
}

fn cmd_status(dir: &Path) -> Result<i32> {
    let mut m = Manifest::load(dir)?;
    let view = status::refresh(dir, &mut m);
    println!("sweep {} in {} ({} executor): {}", m.name, dir.display(), m.executor, m.summary());
    for j in &m.slurm_jobs {
        println!("  Slurm job {}: tasks {}", j.job_id, slurm::array_spec(&j.tasks));
    }
    for n in &view.notes {
        println!("  ({n})");
    }
    print!("{}", status::table(&m, &view));
    // Only when no sweep process is writing the manifest.
    if let Ok(_l) = SweepLock::acquire(dir) {
        m.save(dir)?;
    }
    Ok(0)
}

pub fn cmd_report(a: ReportArgs) -> Result<i32> {
    let r = report::load(&a.dir, a.over.as_deref())?;
    if r.rows.is_empty() {
        bail!(
            "no finished run with metrics in {} yet ({} points: {})",
            a.dir.display(),
            r.runs.len(),
            r.missing.iter().take(5).map(|(n, w)| format!("{n}: {w}")).collect::<Vec<_>>().join("; ")
        );
    }
    let files = render::write_files(&a.dir, &r)?;
    if !a.quiet {
        println!("{}", render::markdown(&r));
    }
    eprintln!("wrote {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(0)
}
