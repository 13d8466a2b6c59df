//! `laplace-lora sweep` and `laplace-lora report` end to end, through the real binary on a tiny
//! random model (src/testing.rs): a 2 x 2 sweep (two sample data sets x two seeds) on the local
//! executor and, where a Slurm cluster answers, through `sbatch`; the report's means, standard
//! deviations and paired differences against MAP checked against a computation by hand from
//! the run directories' metrics.json; resuming, changed configurations, failures and Ctrl-C.
//!
//! The Slurm test skips loudly when no cluster answers `sinfo`; CI starts one
//! (scripts/slurm/start.sh) and sets LAPLACE_LORA_REQUIRE_SLURM=1, so there it must run.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_laplace-lora");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny model, a base configuration file (relative data paths, taken from its folder), and a
/// sweep file with a data axis (several keys at once, as tables) and a seed axis.
struct Fx {
    root: PathBuf,
    sweep: PathBuf,
}

/// The pipeline tests' tiny experiment, its data paths made relative (to the base file's folder).
fn base_toml(model: &Path, epochs: usize, max_train: usize) -> String {
    let abs = repo().join("sample_data").join("compare4");
    laplace_lora::testing::tiny_experiment_toml(model, max_train, epochs, 0).replace(&abs.display().to_string(), "data/compare4")
}

const AXES: &str = r#"
[[axis]]
name = "data"
values = [
  { label = "compare4", data.train = "data/compare4/train.jsonl", data.validation = "data/compare4/validation.jsonl", data.test = "data/compare4/test.jsonl" },
  { label = "yesno", data = { train = "data/yesno/train.jsonl", validation = "data/yesno/validation.jsonl", test = "data/yesno/test.jsonl" } },
]

[[axis]]
key = "train.seed"
values = [3, 4]
"#;

impl Fx {
    fn new(root: &Path, epochs: usize, max_train: usize) -> Self {
        let model = root.join("tiny");
        laplace_lora::testing::write_tiny_hf_model(&model, 5, false).unwrap();
        // The sample data under the sweep's folder, so that relative paths are exercised.
        for d in ["compare4", "yesno"] {
            let to = root.join("data").join(d);
            std::fs::create_dir_all(&to).unwrap();
            for f in ["train.jsonl", "validation.jsonl", "test.jsonl"] {
                std::fs::copy(repo().join("sample_data").join(d).join(f), to.join(f)).unwrap();
            }
        }
        std::fs::write(root.join("base.toml"), base_toml(&model, epochs, max_train)).unwrap();
        let sweep = root.join("tiny-sweep.toml");
        std::fs::write(&sweep, format!("[sweep]\nname = \"tiny\"\n\nbase = \"base.toml\"\n{AXES}")).unwrap();
        Fx { root: root.to_path_buf(), sweep }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// Runs the binary from a folder that is not the fixture's (relative paths must resolve from
/// the sweep file's folder).
fn cli(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(std::env::temp_dir());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}\n--- stderr\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

const METRICS: [&str; 4] = ["accuracy", "ece", "nll", "brier"];

/// By hand from the run directories: for two seeds a and b, mean = (a + b) / 2 and the sample
/// standard deviation (n - 1) is |a - b| / sqrt(2). Returns (data, method) -> metric -> (mean, sd)
/// and the same for method - MAP.
type Table = BTreeMap<(String, String), BTreeMap<String, (f64, f64)>>;

fn by_hand(dir: &Path) -> (Table, Table) {
    let (mut t, mut d) = (Table::new(), Table::new());
    for data in ["compare4", "yesno"] {
        let m3 = read_json(&dir.join(format!("runs/data={data}_seed=3/metrics.json")));
        let m4 = read_json(&dir.join(format!("runs/data={data}_seed=4/metrics.json")));
        // metrics.json lists its methods in order (layout 2).
        let methods: Vec<String> = m3["methods"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
        assert!(methods.len() >= 5, "{methods:?}");
        for method in methods {
            for k in METRICS {
                let (a, b) = (m3[&method][k].as_f64().unwrap(), m4[&method][k].as_f64().unwrap());
                t.entry((data.into(), method.clone())).or_default().insert(k.into(), ((a + b) / 2.0, (a - b).abs() / 2f64.sqrt()));
                let (da, db) = (a - m3["map"][k].as_f64().unwrap(), b - m4["map"][k].as_f64().unwrap());
                if method != "map" {
                    d.entry((data.into(), method.clone())).or_default().insert(k.into(), ((da + db) / 2.0, (da - db).abs() / 2f64.sqrt()));
                }
            }
        }
    }
    (t, d)
}

/// report.csv (or report-vs-map.csv) as (data, method) -> metric -> (mean, sd), test set only.
fn read_csv(p: &Path, suffix: &str) -> Table {
    let mut r = csv::Reader::from_path(p).unwrap();
    let head: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let col = |name: &str| head.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {head:?}"));
    let mut t = Table::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        if &rec[col("eval")] != "test" {
            continue;
        }
        assert_eq!(&rec[col("n")], "2");
        let e = t.entry((rec[col("data")].to_string(), rec[col("method")].to_string())).or_default();
        for k in METRICS {
            let mean: f64 = rec[col(&format!("{k}{suffix}_mean"))].parse().unwrap();
            let sd: f64 = rec[col(&format!("{k}{suffix}_sd"))].parse().unwrap();
            e.insert(k.into(), (mean, sd));
        }
    }
    t
}

/// Equal to 1e-12: both sides add, halve and square the same doubles, in another order; the
/// CSV holds each number's shortest round-trip decimal form.
fn assert_tables_equal(what: &str, got: &Table, want: &Table) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: rows");
    for (k, w) in want {
        for (m, (wm, ws)) in w {
            let (gm, gs) = got[k][m];
            assert!((gm - wm).abs() < 1e-12 && (gs - ws).abs() < 1e-12, "{what} {k:?} {m}: report {gm} ± {gs}, by hand {wm} ± {ws}");
        }
    }
}

/// Every check of a finished 2 x 2 sweep folder; returns the hand-computed table.
fn check_finished_sweep(dir: &Path) -> Table {
    let m = read_json(&dir.join("sweep.json"));
    let points = m["points"].as_array().unwrap();
    let names: Vec<&str> = points.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["data=compare4_seed=3", "data=compare4_seed=4", "data=yesno_seed=3", "data=yesno_seed=4"]);
    for p in points {
        assert_eq!(p["status"], "finished", "{p}");
        // Each run was made with its own point's configuration (an executor that mixed points
        // up, e.g. an array task index off by one, fails here).
        let run = dir.join(p["run_dir"].as_str().unwrap());
        let cfg = laplace_lora::experiment::ExperimentConfig::from_toml_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
        assert_eq!(cfg.train.seed.to_string(), p["labels"]["seed"].as_str().unwrap());
        assert_eq!(cfg.dataset_name(), p["labels"]["data"].as_str().unwrap());
        assert_eq!(p["overrides"]["train.seed"], cfg.train.seed);
        assert!(cfg.data.train.is_absolute() && cfg.data.train.exists());
    }
    let out = cli(&["report", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let (want, want_diff) = by_hand(dir);
    assert_tables_equal("report.csv", &read_csv(&dir.join("report.csv"), ""), &want);
    assert_tables_equal("report-vs-map.csv", &read_csv(&dir.join("report-vs-map.csv"), "_minus_map"), &want_diff);
    // The library API the GUI reads gives the same numbers.
    let r = laplace_lora::sweep::report::load(dir, None).unwrap();
    assert_eq!(r.replicate_axis.as_deref(), Some("seed"));
    assert_eq!(r.setting_columns, ["data"]);
    let s = r.settings.iter().position(|s| s.title() == "yesno").unwrap();
    let row = r.row("test", s, "laplace").expect("a laplace row");
    let (wm, ws) = want[&("yesno".to_string(), "laplace".to_string())]["nll"];
    let st = row.metrics[2].as_ref().unwrap();
    assert!((st.mean - wm).abs() < 1e-12 && (st.sd.unwrap() - ws).abs() < 1e-12);
    assert_eq!(r.methods[..5], ["zero_shot", "map", "temperature", "llla", "laplace"]);
    // The Markdown shows the same cell to three decimals, printed and in report.md.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let cell = format!("{wm:.3} ± {ws:.3}");
    assert!(md.contains(&cell) && String::from_utf8_lossy(&out.stdout).contains(&cell), "{cell} not in\n{md}");
    assert!(md.contains("n − 1"), "the report says which standard deviation it uses");
    let tex = std::fs::read_to_string(dir.join("report.tex")).unwrap();
    assert!(tex.contains(&format!("${wm:.3}_{{\\pm {ws:.3}}}$")) && tex.contains("Laplace-LoRA") && tex.contains("\\toprule"), "{tex}");
    want
}

fn run_sweep(fx: &Fx, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["sweep", fx.sweep.to_str().unwrap(), "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli(&args, &[])
}

#[test]
fn local_sweep_runs_resumes_and_reports_what_a_hand_computation_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path(), 1, 8);
    let dir = fx.out("local");
    let t0 = Instant::now();
    let out = run_sweep(&fx, &dir, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("2 x 2 local sweep: {:.1} s", t0.elapsed().as_secs_f64());
    check_finished_sweep(&dir);
    for n in ["data=compare4_seed=3", "data=yesno_seed=4"] {
        assert!(dir.join(format!("configs/{n}.toml")).is_file() && dir.join(format!("logs/{n}.log")).is_file());
    }

    // Again: every run is kept, nothing reruns.
    let metrics = |n: &str| dir.join(format!("runs/{n}/metrics.json"));
    let before: Vec<SystemTime> =
        ["data=compare4_seed=3", "data=compare4_seed=4", "data=yesno_seed=3", "data=yesno_seed=4"].iter().map(|n| mtime(&metrics(n))).collect();
    let out = run_sweep(&fx, &dir, &[]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("4 finished runs kept, 0 to run"), "{}", text(&out));

    // A run that was interrupted (its events.jsonl without the finished event) runs again; the
    // others are kept.
    let ev = dir.join("runs/data=yesno_seed=3/events.jsonl");
    let kept: String = std::fs::read_to_string(&ev).unwrap().lines().filter(|l| !l.contains("\"finished\"")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&ev, kept).unwrap();
    let out = run_sweep(&fx, &dir, &[]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("3 finished runs kept, 1 to run"), "{}", text(&out));
    let after: Vec<SystemTime> =
        ["data=compare4_seed=3", "data=compare4_seed=4", "data=yesno_seed=3", "data=yesno_seed=4"].iter().map(|n| mtime(&metrics(n))).collect();
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    assert_ne!(after[2], before[2], "the interrupted run did not run again");
    assert_eq!(after[3], before[3]);
    let m = read_json(&dir.join("sweep.json"));
    assert_eq!(m["points"][2]["attempts"], 2);
    check_finished_sweep(&dir);

    // The sweep file changed under finished runs (compare4's points now set lora.rank): refused,
    // naming the key, unless --force.
    let changed = AXES.replace("data.test = \"data/compare4/test.jsonl\" }", "data.test = \"data/compare4/test.jsonl\", lora.rank = 3 }");
    assert_ne!(changed, AXES);
    std::fs::write(&fx.sweep, format!("[sweep]\nname = \"tiny\"\n\nbase = \"base.toml\"\n{changed}")).unwrap();
    let out = run_sweep(&fx, &dir, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another configuration") && err.contains("lora.rank") && err.contains("--force"), "{}", text(&out));
    // Nothing ran and the manifest still describes the finished sweep.
    assert_eq!(read_json(&dir.join("sweep.json"))["points"][0]["status"], "finished");
}

#[test]
fn a_failing_run_leaves_the_others_and_is_retried_then_reported_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path(), 1, 8);
    // yesno's test file exists (so the sweep validates) but holds a broken line: its runs fail
    // when they read it.
    let test = fx.root.join("data/yesno/test.jsonl");
    let mut t = std::fs::read_to_string(&test).unwrap();
    t.push_str("{\"question\": \"broken\", \"passage\": 3}\n");
    std::fs::write(&test, t).unwrap();
    let dir = fx.out("failing");
    let out = run_sweep(&fx, &dir, &["--jobs", "2", "--retries", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 runs failed") && err.contains("data=yesno_seed=3") && err.contains("retrying"), "{}", text(&out));
    let m = read_json(&dir.join("sweep.json"));
    for p in m["points"].as_array().unwrap() {
        let yes = p["name"].as_str().unwrap().contains("yesno");
        assert_eq!(p["status"], if yes { "failed" } else { "finished" }, "{p}");
        if yes {
            assert_eq!(p["attempts"], 2, "{p}");
            let e = p["error"].as_str().unwrap();
            assert!(e.contains("test.jsonl") && e.contains(":101"), "the error names the file and line: {e}");
        }
    }
    // The report holds what finished and says what is missing.
    let out = cli(&["report", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("Runs not in the table") && md.contains("`data=yesno_seed=4`: failed"), "{md}");
    assert!(md.contains("| compare4 |") && !md.contains("| yesno |"), "{md}");
    // --status reads the same.
    let out = cli(&["sweep", "--status", dir.to_str().unwrap()], &[]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && s.contains("2 finished, 2 failed"), "{}", text(&out));
}

/// The pids of processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) && pid != std::process::id() {
                v.push(pid);
            }
        }
    }
    v
}

#[test]
fn ctrl_c_stops_every_run_cleanly_and_the_sweep_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    // Runs long enough to be caught in training (24 items, 2,000 epochs: a minute or more each).
    let fx = Fx::new(tmp.path(), 2000, 24);
    let dir = fx.out("ctrlc");
    let mut child = Command::new(BIN)
        .args(["sweep", fx.sweep.to_str().unwrap(), "--out", dir.to_str().unwrap(), "--jobs", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both first runs are training.
    let t0 = Instant::now();
    let training = |n: &str| std::fs::read_to_string(dir.join(format!("runs/{n}/events.jsonl"))).map(|t| t.contains("\"train_step\"")).unwrap_or(false);
    while !(training("data=compare4_seed=3") && training("data=compare4_seed=4")) {
        assert!(t0.elapsed() < Duration::from_secs(120), "the runs did not start training");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it was interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t1 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t1.elapsed() > Duration::from_secs(60) {
            // Ours to clean up: the sweep and the runs it started (their command lines name the folder).
            let _ = child.kill();
            for pid in processes_with(dir.to_str().unwrap()) {
                // SAFETY: a signal to a process this test started (through the sweep).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            panic!("the sweep did not stop within 60 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("stopped {:.1} s after Ctrl-C", t1.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(processes_with(dir.to_str().unwrap()).is_empty(), "runs still alive after the sweep stopped");
    let m = read_json(&dir.join("sweep.json"));
    let st: Vec<&str> = m["points"].as_array().unwrap().iter().map(|p| p["status"].as_str().unwrap()).collect();
    assert_eq!(st, ["cancelled", "cancelled", "pending", "pending"], "{}", text(&out));
    for n in ["data=compare4_seed=3", "data=compare4_seed=4"] {
        let ev = std::fs::read_to_string(dir.join(format!("runs/{n}/events.jsonl"))).unwrap();
        let last: Value = serde_json::from_str(ev.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "cancelled", "{n}: {last}");
    }
    // Resumed (with shorter runs: only finished runs are held to their configuration), every
    // point runs to the end.
    std::fs::write(fx.root.join("base.toml"), base_toml(&fx.root.join("tiny"), 1, 8)).unwrap();
    let out = run_sweep(&fx, &dir, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&dir.join("sweep.json"));
    assert!(m["points"].as_array().unwrap().iter().all(|p| p["status"] == "finished"));
}

/// The sample sweeps parse; sample-table.toml's points validate with today's configuration keys.
/// paper-table.toml is written for the known dataset names and the [methods] section: until the
/// configuration has them its points are refused for exactly those, afterwards they validate.
#[test]
fn the_shipped_sweep_files_expand() {
    use laplace_lora::sweep::spec::SweepSpec;
    let s = SweepSpec::from_file(&repo().join("assets/sweeps/sample-table.toml")).unwrap();
    let p = s.points().unwrap();
    assert_eq!(p.len(), 9);
    assert_eq!(p[4].name, "data=yesno_seed=1");
    assert_eq!((p[4].config.train.learning_rate, p[4].config.train.seed, p[4].config.dataset_name()), (2e-3, 1, "yesno".to_string()));
    assert_eq!(p[0].config.train.epochs, 8, "the base is the compare4 sample configuration");
    let s = SweepSpec::from_file(&repo().join("assets/sweeps/paper-table.toml")).unwrap();
    let labels: Vec<Vec<&str>> = s.axes.iter().map(|a| a.values.iter().map(|v| v.label.as_str()).collect()).collect();
    assert_eq!(labels, [vec!["arc-easy", "arc-challenge", "obqa", "boolq", "winogrande"], vec!["0", "1", "2"]]);
    assert_eq!((s.slurm.gpus, s.slurm.time.as_deref()), (Some(1), Some("04:00:00")));
    match s.points() {
        Ok(p) => assert_eq!(p.len(), 15),
        Err(e) => assert!(format!("{e:#}").contains("15 of 15 points") && format!("{e:#}").contains("methods"), "{e:#}"),
    }
}

#[test]
fn dry_run_prints_the_job_script_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path(), 1, 8);
    let dir = fx.out("dry");
    let out = run_sweep(
        &fx,
        &dir,
        &[
            "--executor",
            "slurm",
            "--dry-run",
            "--partition",
            "gpu",
            "--time",
            "01:30:00",
            "--gpus",
            "1",
            "--cpus",
            "4",
            "--mem",
            "16G",
            "--max-parallel",
            "2",
            "--sbatch-arg=--account=proj",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!dir.exists(), "a dry run wrote {}", dir.display());
    let s = String::from_utf8_lossy(&out.stdout);
    for line in [
        "#SBATCH --array=0-3%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=01:30:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --mem=16G",
        "#SBATCH --account=proj",
        "#SBATCH --signal=B:INT@120",
    ] {
        assert!(s.contains(line), "{line} missing from\n{s}");
    }
    // Task N runs point N.
    let names: Vec<&str> = s.lines().skip_while(|l| *l != "points=(").skip(1).take_while(|l| *l != ")").map(|l| l.trim().trim_matches('\'')).collect();
    assert_eq!(names, ["data=compare4_seed=3", "data=compare4_seed=4", "data=yesno_seed=3", "data=yesno_seed=4"]);
    assert!(s.contains("name=${points[$task]}") && s.contains(&format!("exec '{BIN}' run")), "{s}");
}

// ---------------------------------------------------------------------------------------------
// Slurm

/// Whether a Slurm cluster answers here, waiting up to `timeout` for an idle node.
fn slurm_node_idle(timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    let mut last;
    loop {
        // Bounded: with a configuration but no controller, sinfo retries for about a minute.
        let mut sinfo = Command::new("sinfo");
        sinfo.args(["-h", "-o", "%T"]);
        match laplace_lora::sweep::slurm::output_within(sinfo, Duration::from_secs(5)) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = format!("sinfo: {e}"),
            Err(e) => return Err(format!("sinfo cannot run ({e}): Slurm is not installed")),
            Ok(o) if !o.status.success() => last = format!("sinfo failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
            Ok(o) => {
                let states = String::from_utf8_lossy(&o.stdout).to_string();
                if states.lines().any(|l| l.trim() == "idle" || l.trim() == "mixed") {
                    return Ok(());
                }
                last = format!("node states: {:?}", states.trim());
            }
        }
        if t0.elapsed() > timeout {
            let mut sc = Command::new("scontrol");
            sc.args(["show", "node"]);
            let node = laplace_lora::sweep::slurm::output_within(sc, Duration::from_secs(5))
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            return Err(format!("no idle Slurm node after {} s ({last})\n{node}", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn slurm_array_job_runs_the_sweep_and_matches_the_local_executor() {
    let required = std::env::var_os("LAPLACE_LORA_REQUIRE_SLURM").is_some();
    if let Err(why) = slurm_node_idle(Duration::from_secs(if required { 60 } else { 2 })) {
        if required {
            panic!("LAPLACE_LORA_REQUIRE_SLURM is set but Slurm is not usable: {why}");
        }
        eprintln!("\n!!!!! SKIPPED: no Slurm cluster answers here ({why}); start one with scripts/slurm/start.sh and export SLURM_CONF !!!!!\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::new(tmp.path(), 1, 8);
    let dir = fx.out("slurm");
    let t0 = Instant::now();
    let mut child = Command::new(BIN)
        .args(["sweep", fx.sweep.to_str().unwrap(), "--out", dir.to_str().unwrap(), "--executor", "slurm", "--cpus", "1", "--time", "00:10:00", "--wait"])
        .env("LAPLACE_LORA_SWEEP_POLL_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The job should take seconds; after 5 minutes something is wrong: say what Slurm says.
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let q = Command::new("squeue").args(["-t", "all"]).output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
            let logs: String = std::fs::read_dir(dir.join("logs"))
                .map(|rd| rd.flatten().map(|e| format!("--- {}\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default())).collect())
                .unwrap_or_default();
            panic!("the Slurm sweep did not end within 300 s\nsqueue:\n{q}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let logs: String = std::fs::read_dir(dir.join("logs"))
        .map(|rd| rd.flatten().map(|e| format!("--- {}\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default())).collect())
        .unwrap_or_default();
    assert!(out.status.success(), "{}\n{logs}", text(&out));
    eprintln!("2 x 2 Slurm sweep: {:.1} s", t0.elapsed().as_secs_f64());
    let m = read_json(&dir.join("sweep.json"));
    let job = m["slurm_jobs"][0]["job_id"].as_str().expect("the job is in the manifest").to_string();
    assert_eq!(m["points"][3]["slurm_job"], format!("{job}_3"));
    let script = std::fs::read_to_string(dir.join("sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3") && script.contains("#SBATCH --cpus-per-task=1"), "{script}");
    for t in 0..4 {
        let log = std::fs::read_to_string(dir.join(format!("logs/slurm-{job}_{t}.log"))).unwrap();
        assert!(log.contains(&format!("task {t} = point {}", m["points"][t]["name"].as_str().unwrap())), "{log}");
    }
    let slurm_table = check_finished_sweep(&dir);

    // --status asks Slurm about the job's tasks.
    let out = cli(&["sweep", "--status", dir.to_str().unwrap()], &[]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && s.contains("4 finished") && s.contains(&format!("{job}_0 COMPLETED")), "{}", text(&out));

    // Submitting again submits nothing: every run finished.
    let out = cli(&["sweep", fx.sweep.to_str().unwrap(), "--out", dir.to_str().unwrap(), "--executor", "slurm"], &[]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nothing to submit"), "{}", text(&out));

    // The local executor on the same sweep gives the same numbers (one thread per run either way).
    let local = fx.out("local");
    let out = run_sweep(&fx, &local, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let local_table = check_finished_sweep(&local);
    assert_tables_equal("slurm vs local", &slurm_table, &local_table);
}
