//! Cancels and crashes lose nothing (issue 6, point 3), on a tiny random model:
//!
//! - a cancel at every stage (library, the worker the GUI uses, and Ctrl-C in the CLI) leaves a
//!   run directory whose every file parses and whose `events.jsonl` ends with a `cancelled`
//!   event naming the stage where the run stopped;
//! - SIGKILL at many moments of a CLI run never leaves a half-written file under a final name
//!   (every file is written to a temporary name and renamed; `events.jsonl` is appended a whole
//!   line at a time).

use laplace_lora::experiment::{self, Event, ExperimentConfig, Outcome, Stage};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_laplace-lora");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config_text(model: &Path, max_train: usize, epochs: usize) -> String {
    laplace_lora::testing::tiny_experiment_toml(model, max_train, epochs, 3)
}

fn is_temporary(name: &str) -> bool {
    name.starts_with(".tmp") || name.ends_with(".tmp")
}

/// Parses every file of a run directory by its kind and returns the events and the files seen.
/// `killed`: temporary files may remain (a SIGKILL skips their clean-up) and `events.jsonl` may
/// lack its closing event; never may a file under a final name be cut short.
fn check_run_dir(dir: &Path, killed: bool) -> (Vec<Event>, Vec<String>) {
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if is_temporary(&name) {
                assert!(killed, "a temporary file {rel} was left behind by a clean stop");
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let what = |e: &dyn std::fmt::Display| format!("{rel} does not parse: {e} ({} bytes)", bytes.len());
            match p.extension().and_then(|x| x.to_str()).unwrap_or("") {
                "json" => {
                    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| panic!("{}", what(&e)));
                }
                "jsonl" => {
                    let text = std::str::from_utf8(&bytes).unwrap_or_else(|e| panic!("{}", what(&e)));
                    assert!(text.is_empty() || text.ends_with('\n'), "{rel}: the last line is cut short: {:?}", text.lines().last());
                    for (i, line) in text.lines().enumerate() {
                        if name == "events.jsonl" {
                            events.push(serde_json::from_str::<Event>(line).unwrap_or_else(|e| panic!("{}:{}: {e}: {line}", rel, i + 1)));
                        } else {
                            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{}:{}: {e}", rel, i + 1));
                        }
                    }
                }
                "csv" => {
                    let mut r = csv::Reader::from_reader(bytes.as_slice());
                    let cols = r.headers().unwrap_or_else(|e| panic!("{}", what(&e))).len();
                    let mut rows = 0;
                    for rec in r.records() {
                        let rec = rec.unwrap_or_else(|e| panic!("{}", what(&e)));
                        assert_eq!(rec.len(), cols, "{rel}");
                        for v in rec.iter() {
                            v.parse::<f64>().unwrap_or_else(|e| panic!("{rel}: {v:?}: {e}"));
                        }
                        rows += 1;
                    }
                    assert!(rows > 0, "{rel} has no rows");
                }
                "toml" => {
                    let text = std::str::from_utf8(&bytes).unwrap_or_else(|e| panic!("{}", what(&e)));
                    ExperimentConfig::from_toml_str(text).unwrap_or_else(|e| panic!("{}", what(&e)));
                }
                "safetensors" => {
                    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}", what(&e)));
                    assert!(!st.is_empty(), "{rel} holds no tensors");
                }
                other => panic!("unexpected file {rel} (extension {other:?}) in a run directory"),
            }
            seen.push(rel);
        }
    }
    seen.sort();
    (events, seen)
}

fn stage_of_end(events: &[Event]) -> Option<(String, Option<Stage>)> {
    match events.last()? {
        Event::Cancelled { stage, .. } => Some(("cancelled".into(), Some(*stage))),
        Event::Failed { stage, .. } => Some(("failed".into(), Some(*stage))),
        Event::Finished { .. } => Some(("finished".into(), None)),
        _ => None,
    }
}

fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&m, 11, false).unwrap();
    m
}

type Trigger = fn(&Event) -> bool;

/// Cancels at the first event `trigger` accepts, at every stage of the pipeline, and checks
/// where the run says it stopped and that everything it left parses.
#[test]
fn cancel_at_every_stage_leaves_a_consistent_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let cfg = ExperimentConfig::from_toml_str(&config_text(&model, 16, 2)).unwrap();
    // (name, trigger, the stage the cancelled event must name; None: the run is past its last
    // check and finishes).
    let cases: Vec<(&str, Trigger, Option<Stage>)> = vec![
        ("load_model", |e| matches!(e, Event::Stage { stage: Stage::LoadModel, .. }), Some(Stage::LoadModel)),
        ("load_data", |e| matches!(e, Event::Stage { stage: Stage::LoadData, .. }), Some(Stage::LoadData)),
        // The stage's first message: on these short prompts an evaluation pass is one batch
        // (`train::pass_batches`), so its first progress event comes when the pass is done.
        ("zero_shot", |e| matches!(e, Event::Stage { stage: Stage::ZeroShot, .. }), Some(Stage::ZeroShot)),
        ("train", |e| matches!(e, Event::TrainStep { step: 2, .. }), Some(Stage::Train)),
        ("validation", |e| matches!(e, Event::Validation { .. }), Some(Stage::Train)),
        // Likewise the MAP method's message: its test pass is one batch, and the training
        // split's MAP metrics take no pass of their own with a Laplace method in the run (the
        // curvature pass's logits), so no evaluate-stage progress comes before the Laplace stage.
        ("evaluate", |e| matches!(e, Event::Stage { stage: Stage::Evaluate, .. }), Some(Stage::Evaluate)),
        ("calibrate", |e| matches!(e, Event::Metrics { name, .. } if name == "temperature"), Some(Stage::Laplace)),
        ("laplace", |e| matches!(e, Event::Progress { stage: Stage::Laplace, .. }), Some(Stage::Laplace)),
        ("write", |e| matches!(e, Event::Metrics { name, .. } if name == "laplace"), None),
    ];
    for (name, trigger, expect) in cases {
        let dir = tmp.path().join("runs").join(name);
        experiment::prepare_run_dir(&dir, false).unwrap();
        let cancel = AtomicBool::new(false);
        let mut fired = false;
        let out = experiment::run(&cfg, &dir, &cancel, &mut |e| {
            if !fired && trigger(e) {
                fired = true;
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(fired, "{name}: the trigger never fired");
        let (events, files) = check_run_dir(&dir, false);
        let end = stage_of_end(&events).unwrap_or_else(|| panic!("{name}: events.jsonl has no closing event"));
        match expect {
            Some(stage) => {
                assert_eq!(out, Outcome::Cancelled, "{name}");
                assert_eq!(end, ("cancelled".to_string(), Some(stage)), "{name}: events.jsonl ends {end:?}");
                let Some(Event::Cancelled { message, .. }) = events.last() else { unreachable!() };
                assert!(message.contains("cancelled during"), "{message}");
            }
            None => assert_eq!((out, end.0.as_str()), (Outcome::Finished, "finished"), "{name}"),
        }
        // What each stage leaves: the adapter from training on (the last good state), metrics and
        // predictions from the first finished method on (zero-shot, before training), the Laplace
        // files only when the stage ended.
        let has = |f: &str| files.iter().any(|x| x == f);
        assert!(has("config.toml") && has("events.jsonl"), "{name}: {files:?}");
        let trained = events.iter().any(|e| matches!(e, Event::TrainStep { .. }));
        assert_eq!(has("adapter/adapter_model.safetensors"), trained, "{name}: {files:?}");
        assert_eq!(has("adapter/adapter_config.json"), trained, "{name}: {files:?}");
        if trained {
            let lora = laplace_lora::peft::load(&dir.join("adapter"), 2, None, &candle_core::Device::Cpu).unwrap();
            assert!(!lora.layers.is_empty());
        }
        let first_done = events.iter().any(|e| matches!(e, Event::Metrics { .. }));
        assert_eq!(has("metrics.json"), first_done, "{name}: {files:?}");
        assert_eq!(has("predictions.jsonl"), first_done, "{name}: {files:?}");
        let temperature_done = events.iter().any(|e| matches!(e, Event::Metrics { name, .. } if name == "temperature"));
        let laplace_done = expect.is_none();
        for f in ["laplace/posterior.safetensors", "laplace/laplace.json", "prior_curve.csv", "laplace/spectral_cache.safetensors"] {
            assert_eq!(has(f), laplace_done, "{name}: {f} in {files:?}");
        }
        if temperature_done {
            let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
            assert!(m["map"]["accuracy"].is_number() && m["temperature"]["temperature"].is_number(), "{name}: {m}");
            assert_eq!(m.get("laplace").is_some(), laplace_done, "{name}");
        }
        eprintln!("cancel at {name}: stopped as {end:?}; files {files:?}");
    }
}

/// The GUI's Cancel goes through the worker: the same consistent stop, and the worker returns.
#[test]
fn worker_cancel_as_the_gui_does() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let cfg = ExperimentConfig::from_toml_str(&config_text(&model, 16, 50)).unwrap();
    for (name, trigger, stage) in [
        ("train", (|e: &Event| matches!(e, Event::TrainStep { step: 3, .. })) as Trigger, Stage::Train),
        ("zero_shot", |e: &Event| matches!(e, Event::Progress { stage: Stage::ZeroShot, .. }), Stage::ZeroShot),
    ] {
        let dir = tmp.path().join(name);
        experiment::prepare_run_dir(&dir, false).unwrap();
        let w = laplace_lora::worker::Worker::spawn(cfg.clone(), dir.clone());
        let t = Instant::now();
        let mut cancelled = false;
        for e in w.events.iter() {
            if !cancelled && trigger(&e) {
                w.cancel();
                cancelled = true;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "the worker did not stop");
        }
        assert_eq!(w.join().unwrap(), Outcome::Cancelled);
        let (events, _) = check_run_dir(&dir, false);
        // The worker runs ahead of this reader (the tiny model is fast), so the cancel may be
        // noticed at the trigger's stage or at a later one, never an earlier one.
        let order = [Stage::LoadModel, Stage::LoadData, Stage::ZeroShot, Stage::Train, Stage::Write, Stage::Evaluate, Stage::Calibrate, Stage::Laplace];
        let rank = |s: Stage| order.iter().position(|x| *x == s).unwrap_or(order.len());
        match stage_of_end(&events) {
            Some((end, Some(at))) if end == "cancelled" => assert!(rank(at) >= rank(stage), "{name}: cancelled at {at:?}, before {stage:?}"),
            other => panic!("{name}: the run did not end cancelled: {other:?}"),
        }
    }
}

/// Spawns the CLI on a configuration; stderr lines arrive on the channel.
fn spawn_cli(cfg: &Path, out: &Path) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["run", &cfg.display().to_string(), "--out", &out.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn signal(child: &std::process::Child, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap();
    assert!(st.success(), "kill -{sig} failed");
}

/// Waits for a stderr line containing `needle`; returns the lines read so far.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, needle: &str, secs: u64) -> Vec<String> {
    let t = Instant::now();
    let mut lines = Vec::new();
    loop {
        let left = Duration::from_secs(secs).saturating_sub(t.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                lines.push(l);
                if hit {
                    return lines;
                }
            }
            Err(_) => panic!("no line with {needle:?} within {secs} s; got:\n{}", lines.join("\n")),
        }
    }
}

fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("the CLI did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ctrl-C (SIGINT) in the CLI during training and during the Laplace stage: exit code 130, a
/// consistent run directory, `events.jsonl` ending with `cancelled` at that stage.
#[test]
fn ctrl_c_in_the_cli_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // Training: many epochs, so the run is surely inside the loop when the signal comes.
    // Laplace: a large curvature pass (every training item, the GGN's K backward passes each).
    for (name, max_train, epochs, line, stage) in [("train", 32, 400, "[train] fine-tuning", Stage::Train), ("laplace", 2000, 1, "[laplace]", Stage::Laplace)] {
        let cfg = tmp.path().join(format!("{name}.toml"));
        let mut text = config_text(&model, max_train, epochs);
        if stage == Stage::Laplace {
            // The tiny model fits Laplace on the 100 sample items in well under the signal's
            // delay; 20x the items (fresh ids) keep the stage busy for seconds.
            let train = repo().join("sample_data").join("compare4").join("train.jsonl");
            let lines: Vec<String> = std::fs::read_to_string(&train).unwrap().lines().map(String::from).collect();
            let big: String = (0..20 * lines.len())
                .map(|i| {
                    let mut v: serde_json::Value = serde_json::from_str(&lines[i % lines.len()]).unwrap();
                    v["id"] = serde_json::Value::from(format!("big-{i}"));
                    format!("{v}\n")
                })
                .collect();
            let big_path = tmp.path().join("big-train.jsonl");
            std::fs::write(&big_path, big).unwrap();
            text = text.replace(&train.display().to_string(), &big_path.display().to_string());
        }
        std::fs::write(&cfg, text).unwrap();
        let out = tmp.path().join(format!("run-{name}"));
        let (mut child, rx) = spawn_cli(&cfg, &out);
        wait_for(&rx, line, 120);
        std::thread::sleep(Duration::from_millis(100));
        signal(&child, "INT");
        let status = wait_exit(&mut child, 120);
        let rest: Vec<String> = rx.try_iter().collect();
        assert_eq!(status.code(), Some(130), "{name}: {status:?}\n{}", rest.join("\n"));
        assert!(rest.iter().any(|l| l.contains("cancelled")), "{name}: {}", rest.join("\n"));
        let (events, files) = check_run_dir(&out, false);
        assert_eq!(stage_of_end(&events), Some(("cancelled".into(), Some(stage))), "{name}");
        assert!(files.contains(&"adapter/adapter_model.safetensors".to_string()), "{name}: {files:?}");
    }
}

/// SIGKILL at many moments of a CLI run (spread over a whole run's duration, and right at stage
/// changes): every file under a final name parses; at most temporary files remain.
#[test]
fn sigkill_never_leaves_a_half_written_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(&cfg, config_text(&model, 32, 3)).unwrap();
    // One full run for its duration (and a finished directory that parses).
    let t = Instant::now();
    let (mut child, _rx) = spawn_cli(&cfg, &tmp.path().join("full"));
    assert!(wait_exit(&mut child, 300).success());
    let full = t.elapsed();
    let (events, _) = check_run_dir(&tmp.path().join("full"), false);
    assert!(matches!(events.last(), Some(Event::Finished { .. })));

    let mut moments: Vec<String> = [0.02, 0.08, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.82, 0.88, 0.93, 0.97].iter().map(|f| format!("t{f}")).collect();
    moments.extend(["[data]", "[train] fine-tuning", "[train] epoch 2", "[evaluate]", "[calibrate]", "[laplace]"].iter().map(|s| s.to_string()));
    let mut report = Vec::new();
    for (i, m) in moments.iter().enumerate() {
        let out = tmp.path().join(format!("kill-{i}"));
        let (mut child, rx) = spawn_cli(&cfg, &out);
        if let Some(f) = m.strip_prefix('t') {
            std::thread::sleep(full.mul_f64(f.parse().unwrap()));
        } else {
            wait_for(&rx, m, 120);
        }
        signal(&child, "KILL");
        let status = child.wait().unwrap();
        if status.success() {
            report.push(format!("{m}: finished before the kill"));
        }
        if !out.join("events.jsonl").exists() {
            report.push(format!("{m}: killed before events.jsonl"));
            continue;
        }
        let (events, files) = check_run_dir(&out, true);
        let temps: Vec<String> =
            std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| is_temporary(n)).collect();
        let last = events.last().map(|e| serde_json::to_value(e).unwrap()["event"].as_str().unwrap().to_string());
        report.push(format!("{m}: {} events (last {last:?}), {} files, temporaries {temps:?}", events.len(), files.len()));
    }
    eprintln!("SIGKILL after a {:.1} s run:\n  {}", full.as_secs_f64(), report.join("\n  "));
}
