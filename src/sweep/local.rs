//! The local executor: N runs at a time, each a child process `laplace-lora run CONFIG --out
//! RUN --force`, so a crash of one leaves the others running.
//!
//! Ctrl-C: the children run in process groups of their own (a terminal's Ctrl-C reaches only
//! the sweep), and the sweep passes each Ctrl-C on to every running child as one SIGINT: the
//! first makes each run stop at its next batch and write its `cancelled` event, a second makes
//! them exit at once (as `laplace-lora run` does). No new run starts after a Ctrl-C; the
//! manifest is rewritten after every start and end, so it stays consistent. Should the sweep
//! itself be killed, its children get a SIGINT from the kernel (PR_SET_PDEATHSIG) and stop
//! cleanly instead of running on unwatched.

use super::manifest::{run_state, unix_now, Manifest, RunState, Status};
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct LocalOptions {
    /// Runs at a time.
    pub jobs: usize,
    /// Extra attempts for a run that fails (not for a cancelled one).
    pub retries: u32,
    /// RAYON_NUM_THREADS of each run.
    pub threads_per_run: usize,
    /// The `laplace-lora` binary to run.
    pub exe: PathBuf,
}

/// How a local sweep ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalOutcome {
    /// Every point finished.
    Finished,
    /// Some runs failed (their names), the rest finished.
    Failed(Vec<String>),
    /// Stopped by Ctrl-C.
    Cancelled,
}

struct Running {
    index: usize,
    child: Child,
    started: Instant,
}

/// Threads for each of `jobs` concurrent runs: this process's thread count shared out.
pub fn threads_per_run(jobs: usize) -> usize {
    let total = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    (total / jobs.max(1)).max(1)
}

fn spawn(dir: &Path, m: &mut Manifest, i: usize, opts: &LocalOptions) -> Result<Child> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let e = &mut m.points[i];
    e.attempts += 1;
    let log_path = dir.join(&e.log);
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    writeln!(log, "==== attempt {} at unix time {} ====", e.attempts, unix_now())?;
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("run")
        .arg(dir.join(&e.config))
        .arg("--out")
        .arg(dir.join(&e.run_dir))
        .arg("--force")
        .env("RAYON_NUM_THREADS", opts.threads_per_run.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel for a signal when this
    // (the spawning) thread exits.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {}", opts.exe.display()))?;
    e.status = Status::Running;
    e.started_unix = Some(unix_now());
    e.exit_code = None;
    e.error = None;
    Ok(child)
}

/// The last non-empty lines of a log, for a failure that left no `failed` event.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("====")).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Runs the points `todo` of the manifest, `opts.jobs` at a time, saving the manifest after
/// every change. `presses` counts Ctrl-Cs (the caller's signal handler adds to it). `say`
/// receives one line per start and end.
pub fn run_local(
    dir: &Path,
    m: &mut Manifest,
    todo: &[usize],
    opts: &LocalOptions,
    presses: &AtomicUsize,
    say: &mut dyn FnMut(String),
) -> Result<LocalOutcome> {
    let mut queue: VecDeque<usize> = todo.iter().copied().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut forwarded = 0;
    let total = todo.len();
    let mut ended = 0;
    let mut failed: Vec<String> = Vec::new();
    loop {
        let p = presses.load(Ordering::SeqCst);
        if p > forwarded {
            for r in &running {
                // SAFETY: a signal to our own child's pid.
                unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
            }
            if forwarded == 0 && !running.is_empty() {
                say(format!("stopping: {} running runs finish their current batch (Ctrl-C again to stop them at once)", running.len()));
            }
            forwarded = p;
        }
        let cancelling = p > 0;
        while !cancelling && running.len() < opts.jobs.max(1) {
            let Some(i) = queue.pop_front() else { break };
            let child = spawn(dir, m, i, opts)?;
            say(format!("[{}/{total}] started {} (pid {}, attempt {})", ended + running.len() + 1, m.points[i].name, child.id(), m.points[i].attempts));
            running.push(Running { index: i, child, started: Instant::now() });
            m.save(dir)?;
        }
        if running.is_empty() {
            break;
        }
        let mut changed = false;
        let mut k = 0;
        while k < running.len() {
            let Some(status) = running[k].child.try_wait()? else {
                k += 1;
                continue;
            };
            let r = running.swap_remove(k);
            let secs = r.started.elapsed().as_secs_f64();
            let e = &mut m.points[r.index];
            e.exit_code = status.code();
            e.seconds = Some(secs);
            let state = run_state(&dir.join(&e.run_dir));
            let (st, err) = match (&state, status.code()) {
                (RunState::Finished { .. }, Some(0)) => (Status::Finished, None),
                (RunState::Cancelled, _) | (_, Some(130)) => (Status::Cancelled, None),
                (RunState::Failed(msg), _) => (Status::Failed, Some(msg.clone())),
                (_, Some(c)) => (Status::Failed, Some(format!("exit code {c}: {}", log_tail(&dir.join(&e.log), 3)))),
                (_, None) => {
                    use std::os::unix::process::ExitStatusExt;
                    (Status::Failed, Some(format!("killed by signal {}: {}", status.signal().unwrap_or(0), log_tail(&dir.join(&e.log), 3))))
                }
            };
            e.status = st;
            e.error = err;
            let retry = st == Status::Failed && !cancelling && e.attempts <= opts.retries;
            if retry {
                queue.push_back(r.index);
            } else {
                ended += 1;
            }
            let what = match st {
                Status::Finished => format!("finished {} in {secs:.1} s", e.name),
                Status::Cancelled => format!("cancelled {} after {secs:.1} s", e.name),
                _ => format!(
                    "FAILED {} after {secs:.1} s: {}{} (log: {})",
                    e.name,
                    e.error.as_deref().unwrap_or(""),
                    if retry { "; retrying" } else { "" },
                    dir.join(&e.log).display()
                ),
            };
            if st == Status::Failed && !retry {
                failed.push(e.name.clone());
            }
            say(format!("[{ended}/{total}] {what}"));
            changed = true;
        }
        if changed {
            m.save(dir)?;
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    m.save(dir)?;
    Ok(if presses.load(Ordering::SeqCst) > 0 {
        LocalOutcome::Cancelled
    } else if failed.is_empty() {
        LocalOutcome::Finished
    } else {
        LocalOutcome::Failed(failed)
    })
}
