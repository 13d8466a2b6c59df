//! The Slurm executor: one `sbatch --array` job script whose task N runs `laplace-lora run` for
//! point N of the manifest; Slurm does the queueing, placing and retrying. The state of the
//! tasks comes from `squeue` (and `sacct` where accounting is on) and from the run directories,
//! which are the truth about each run.

use super::manifest::{unix_now, Manifest, SlurmJob, Status};
use super::spec::SlurmSection;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SCRIPT: &str = "sweep.sbatch";

/// Seconds before the time limit at which Slurm sends SIGINT, so a run stops at a batch
/// boundary with a `cancelled` event instead of being killed mid-write.
const SIGNAL_LEAD_S: u32 = 120;

/// How long a Slurm command may take to answer. Slurm's clients retry an unreachable controller
/// for about a minute (measured: `sinfo` 59 s with slurmctld stopped); a status should not hang.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs a command and collects its output, killing it after `timeout` (an error then).
pub fn output_within(mut cmd: Command, timeout: std::time::Duration) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Readers on threads, so that a large answer cannot block the child on a full pipe.
    let read = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {} s (is slurmctld running?)", timeout.as_secs())));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(std::process::Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

/// Shell single quotes: 'a'\''b'.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Slurm's filename patterns give `%` a meaning: a literal one is `%%`.
fn slurm_pattern_escape(s: &str) -> String {
    s.replace('%', "%%")
}

/// `0-3` for a run of consecutive ids, `0,2,5-7` otherwise.
pub fn array_spec(tasks: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("{}-{}", tasks[i], tasks[j]) } else { tasks[i].to_string() });
        i = j + 1;
    }
    out.join(",")
}

/// Checks a few values that would otherwise reach sbatch as a confusing error.
pub fn validate(s: &SlurmSection) -> Result<()> {
    if let Some(t) = &s.time {
        let ok = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '-') || t == "UNLIMITED" || t == "infinite";
        if !ok {
            bail!("slurm time {t:?} is not a Slurm time limit (MINUTES, HH:MM:SS or DAYS-HH:MM:SS)");
        }
    }
    for (what, v) in [("partition", &s.partition), ("gpu_type", &s.gpu_type), ("mem", &s.mem)] {
        if let Some(v) = v {
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"') {
                bail!("slurm {what} {v:?} must be one word");
            }
        }
    }
    if s.cpus == Some(0) || s.max_parallel == Some(0) {
        bail!("slurm cpus and max_parallel must be at least 1");
    }
    for x in &s.extra {
        if !x.starts_with('-') || x.contains('\n') {
            bail!("slurm extra option {x:?} must be one sbatch option (e.g. \"--account=proj\")");
        }
    }
    Ok(())
}

/// The array job script for `tasks` (indices into the manifest's points).
pub fn job_script(dir: &Path, m: &Manifest, tasks: &[usize], s: &SlurmSection, exe: &Path) -> Result<String> {
    let dir = std::path::absolute(dir)?;
    let d = dir.display().to_string();
    let mut sb = vec![
        format!("--job-name={}", m.name),
        format!("--array={}{}", array_spec(tasks), s.max_parallel.map(|n| format!("%{n}")).unwrap_or_default()),
        format!("--output={}/logs/slurm-%A_%a.log", slurm_pattern_escape(&d)),
        "--ntasks=1".into(),
        format!("--signal=B:INT@{SIGNAL_LEAD_S}"),
    ];
    if let Some(p) = &s.partition {
        sb.push(format!("--partition={p}"));
    }
    if let Some(t) = &s.time {
        sb.push(format!("--time={t}"));
    }
    if let Some(c) = s.cpus {
        sb.push(format!("--cpus-per-task={c}"));
    }
    if let Some(g) = s.gpus.filter(|&g| g > 0) {
        sb.push(match &s.gpu_type {
            Some(t) => format!("--gres=gpu:{t}:{g}"),
            None => format!("--gres=gpu:{g}"),
        });
    }
    if let Some(mem) = &s.mem {
        sb.push(format!("--mem={mem}"));
    }
    sb.extend(s.extra.iter().cloned());
    let mut out = String::new();
    out.push_str("#!/bin/bash\n");
    out.push_str(&format!("# Written by `laplace-lora sweep` for the sweep {} in {d}.\n", m.name));
    out.push_str("# Array task N runs point N of sweep.json. To submit it again by hand (finished runs are\n");
    out.push_str("# rerun then; `laplace-lora sweep SWEEP.toml --executor slurm` keeps them):\n");
    out.push_str(&format!("#   sbatch {}\n", sh_quote(&format!("{d}/{SCRIPT}"))));
    for l in &sb {
        out.push_str(&format!("#SBATCH {l}\n"));
    }
    out.push_str("set -euo pipefail\n");
    out.push_str("points=(\n");
    for p in &m.points {
        out.push_str(&format!("  {}\n", sh_quote(&p.name)));
    }
    out.push_str(")\n");
    out.push_str("task=${SLURM_ARRAY_TASK_ID:?submit this script with sbatch (it is an array job)}\n");
    out.push_str("name=${points[$task]}\n");
    out.push_str(&format!("sweep={}\n", sh_quote(&d)));
    out.push_str("# As many compute threads as CPUs given to the task.\n");
    out.push_str("export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n");
    out.push_str("echo \"laplace-lora sweep: task $task = point $name on $(hostname)\"\n");
    out.push_str(&format!("exec {} run \"$sweep/configs/$name.toml\" --out \"$sweep/runs/$name\" --force\n", sh_quote(&exe.display().to_string())));
    Ok(out)
}

/// Submits the script, returning the job id (`sbatch --parsable` prints `ID` or `ID;CLUSTER`).
pub fn submit(script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| anyhow!("cannot run sbatch ({e}): is Slurm installed here (a login node)? Use --executor local to run on this machine"))?;
    if !out.status.success() {
        bail!("sbatch refused the job script {}: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: {text:?}");
    }
    Ok(id)
}

/// Writes the script into the sweep folder, submits it, records the job in the manifest.
pub fn submit_sweep(dir: &Path, m: &mut Manifest, tasks: &[usize], s: &SlurmSection, exe: &Path) -> Result<String> {
    let script = job_script(dir, m, tasks, s, exe)?;
    let path = dir.join(SCRIPT);
    crate::runio::write_atomic(&path, script.as_bytes())?;
    let job = submit(&path)?;
    m.slurm_jobs.push(SlurmJob { job_id: job.clone(), tasks: tasks.to_vec(), submitted_unix: unix_now(), script: PathBuf::from(SCRIPT) });
    for &t in tasks {
        let e = &mut m.points[t];
        e.status = Status::Submitted;
        e.slurm_job = Some(format!("{job}_{t}"));
        e.error = None;
        e.attempts += 1;
    }
    m.save(dir)?;
    Ok(job)
}

/// What Slurm says about array tasks: "JOB_TASK" -> (state, elapsed).
#[derive(Default, Debug)]
pub struct SlurmView {
    pub tasks: BTreeMap<String, (String, String)>,
    /// Why a source was not available (no squeue, accounting disabled, ...).
    pub notes: Vec<String>,
}

/// A state in which the task may still run.
pub fn is_live(state: &str) -> bool {
    matches!(state, "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "RESIZING" | "SIGNALING" | "STAGE_OUT")
}

/// Asks `squeue` (every state, array tasks one a line) and then `sacct` about the jobs.
pub fn query(jobs: &[String]) -> SlurmView {
    let mut v = SlurmView::default();
    if jobs.is_empty() {
        return v;
    }
    let list = jobs.join(",");
    let mut squeue = Command::new("squeue");
    squeue.args(["-h", "-r", "-t", "all", "-o", "%i|%T|%M", "-j", &list]);
    match output_within(squeue, ANSWER_TIMEOUT) {
        Err(e) => v.notes.push(format!("squeue unavailable: {e}")),
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let f: Vec<&str> = line.trim().split('|').collect();
                if f.len() == 3 {
                    v.tasks.insert(f[0].to_string(), (f[1].to_string(), f[2].to_string()));
                }
            }
            let err = String::from_utf8_lossy(&o.stderr);
            // A job that has left slurmctld's memory is "invalid" to squeue: sacct may know it.
            if !o.status.success() && !err.contains("Invalid job id") {
                v.notes.push(format!("squeue: {}", err.trim()));
            }
        }
    }
    let mut sacct = Command::new("sacct");
    sacct.args(["-n", "-P", "-X", "-o", "JobID,State,Elapsed", "-j", &list]);
    match output_within(sacct, ANSWER_TIMEOUT) {
        Err(e) => v.notes.push(format!("sacct unavailable: {e}")),
        Ok(o) if !o.status.success() || String::from_utf8_lossy(&o.stderr).contains("disabled") => {
            let text = String::from_utf8_lossy(&o.stderr).trim().to_string() + String::from_utf8_lossy(&o.stdout).trim();
            v.notes.push(format!("sacct: {}", if text.is_empty() { "no answer".into() } else { text }));
        }
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let f: Vec<&str> = line.trim().split('|').collect();
                // squeue's view of a live task wins; sacct adds the ones squeue has forgotten.
                if f.len() == 3 && !v.tasks.contains_key(f[0]) {
                    // "CANCELLED by 0" -> "CANCELLED"
                    let state = f[1].split_whitespace().next().unwrap_or(f[1]).to_string();
                    v.tasks.insert(f[0].to_string(), (state, f[2].to_string()));
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_does_not_answer_is_stopped() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let t0 = std::time::Instant::now();
        let e = output_within(c, std::time::Duration::from_millis(300)).unwrap_err();
        assert!(t0.elapsed() < std::time::Duration::from_secs(5) && e.to_string().contains("no answer"), "{e}");
        let mut c = Command::new("sh");
        c.args(["-c", "head -c 200000 /dev/zero; echo done >&2"]);
        let o = output_within(c, std::time::Duration::from_secs(20)).unwrap();
        assert_eq!((o.stdout.len(), String::from_utf8_lossy(&o.stderr).trim()), (200000, "done"));
    }

    #[test]
    fn array_specs_compress_runs() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[0, 2, 5, 6, 7, 9]), "0,2,5-7,9");
        assert_eq!(array_spec(&[4]), "4");
    }

    #[test]
    fn quoting_survives_odd_paths() {
        assert_eq!(sh_quote("a'b c"), "'a'\\''b c'");
        assert_eq!(slurm_pattern_escape("/x/100%/y"), "/x/100%%/y");
    }

    #[test]
    fn bad_resources_are_refused() {
        for (s, needle) in [
            (SlurmSection { time: Some("two hours".into()), ..Default::default() }, "time limit"),
            (SlurmSection { partition: Some("gpu large".into()), ..Default::default() }, "one word"),
            (SlurmSection { cpus: Some(0), ..Default::default() }, "at least 1"),
            (SlurmSection { extra: vec!["account=x".into()], ..Default::default() }, "one sbatch option"),
        ] {
            assert!(format!("{:#}", validate(&s).unwrap_err()).contains(needle), "{s:?}");
        }
        validate(&SlurmSection { time: Some("1-02:00:00".into()), gpus: Some(1), mem: Some("32G".into()), ..Default::default() }).unwrap();
    }
}
