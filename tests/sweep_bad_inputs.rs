//! Bad inputs to `sweep` and `report` (the bad-input corpus of tests/bad_inputs.rs, for the
//! sweep verbs): each case runs the real binary and must exit non-zero with a message naming
//! what is wrong (the file, and the line, key or point where there is one), never a panic.
//! Nothing here needs a model: every case fails before a run would start.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_laplace-lora");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A base configuration on the sample data (its model folder exists but is never loaded:
/// nothing runs).
fn base(dir: &Path) -> PathBuf {
    let d = repo().join("sample_data/compare4");
    std::fs::create_dir_all(dir.join("no-model-needed")).unwrap();
    let p = dir.join("base.toml");
    std::fs::write(
        &p,
        format!(
            "[model]\nsource = \"{}\"\n[data]\ntrain = \"{}\"\ntest = \"{}\"\n",
            dir.join("no-model-needed").display(),
            d.join("train.jsonl").display(),
            d.join("test.jsonl").display()
        ),
    )
    .unwrap();
    p
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (o.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn expect_error(name: &str, args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let (code, out) = run(args, env);
    assert_ne!(code, 0, "{name}: succeeded\n{out}");
    assert!(!out.contains("panicked"), "{name}: panicked\n{out}");
    for n in needles {
        assert!(out.contains(n), "{name}: {n:?} missing from\n{out}");
    }
}

#[test]
fn sweep_files_with_errors_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    base(t);
    let seeds = "[[axis]]\nkey = \"train.seed\"\nvalues = [0, 1]\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("missing model", format!("base = \"base.toml\"\n{seeds}[[axis]]\nkey = \"model.source\"\nvalues = [\"models/absent.gguf\"]\n"), vec!["model.source", "absent.gguf", "does not exist", "2 of 2 points"]),
        ("toml syntax", format!("base = \"base.toml\"\n{seeds}[[axis]\n"), vec!["line 5"]),
        ("unknown [sweep] key", format!("[sweep]\nbase = \"base.toml\"\nworkers = 2\n{seeds}"), vec!["workers", "line 3"]),
        ("no base", seeds.to_string(), vec!["no base configuration"]),
        ("missing base file", format!("base = \"nowhere.toml\"\n{seeds}"), vec!["nowhere.toml"]),
        ("two bases", format!("base = \"base.toml\"\n[sweep]\nbase = \"base.toml\"\n{seeds}"), vec!["two base configurations"]),
        ("base not a table", format!("base = 3\n{seeds}"), vec!["base must be"]),
        ("wrong value type", "base = \"base.toml\"\n[[axis]]\nkey = \"train.learning_rate\"\nvalues = [1e-3, \"fast\"]\n".into(), vec!["learning_rate=fast", "1 of 2 points", "invalid type"]),
        ("unknown config key", "base = \"base.toml\"\n[[axis]]\nkey = \"train.seeed\"\nvalues = [1]\n".into(), vec!["seeed", "seeed=1"]),
        ("invalid value", "base = \"base.toml\"\n[[axis]]\nkey = \"lora.rank\"\nvalues = [0, 4]\n".into(), vec!["rank=0", "lora.rank"]),
        (
            "missing data file",
            "base = \"base.toml\"\n[[axis]]\nname = \"data\"\nvalues = [{ label = \"gone\", data.train = \"gone/train.jsonl\", data.test = \"gone/test.jsonl\" }]\n".into(),
            vec!["data=gone", "gone/train.jsonl", "does not exist"],
        ),
        ("keys and values", "base = \"base.toml\"\n[[axis]]\nkeys = [\"train.seed\", \"lora.rank\"]\nvalues = [[1, 2, 3]]\n".into(), vec!["axis", "has 3 entries"]),
        ("duplicate axis names", format!("base = \"base.toml\"\n{seeds}{seeds}"), vec!["two axes are named \"seed\""]),
        ("bad executor", format!("[sweep]\nbase = \"base.toml\"\nexecutor = \"cluster\"\n{seeds}"), vec!["cluster", "local"]),
        ("zero jobs", format!("[sweep]\nbase = \"base.toml\"\njobs = 0\n{seeds}"), vec!["sweep.jobs"]),
        ("bad slurm time", format!("base = \"base.toml\"\n{seeds}[slurm]\ntime = \"two hours\"\n"), vec!["two hours", "time limit"]),
        ("unknown slurm key", format!("base = \"base.toml\"\n{seeds}[slurm]\nqueue = \"gpu\"\n"), vec!["queue"]),
    ];
    for (name, text, needles) in cases {
        let f = t.join(format!("{}.toml", name.replace(' ', "-")));
        std::fs::write(&f, text).unwrap();
        let out = t.join("out").join(name.replace(' ', "-"));
        let mut n = needles.clone();
        let fname = f.file_name().unwrap().to_string_lossy().to_string();
        n.push(&fname);
        expect_error(name, &["sweep", f.to_str().unwrap(), "--out", out.to_str().unwrap()], &[], &n);
        assert!(!out.exists(), "{name}: the sweep folder was created before the points were validated");
    }
    expect_error("no sweep file", &["sweep", t.join("absent.toml").to_str().unwrap()], &[], &["absent.toml"]);
    expect_error("no arguments", &["sweep"], &[], &["required"]);
    let good = t.join("good.toml");
    std::fs::write(&good, format!("base = \"base.toml\"\n{seeds}")).unwrap();
    expect_error("bad executor flag", &["sweep", good.to_str().unwrap(), "--executor", "cloud", "--dry-run"], &[], &["--executor", "cloud"]);
    expect_error("jobs 0 flag", &["sweep", good.to_str().unwrap(), "--jobs", "0", "--dry-run"], &[], &["--jobs"]);
    expect_error(
        "bad partition flag",
        &["sweep", good.to_str().unwrap(), "--executor", "slurm", "--partition", "a b", "--dry-run"],
        &[],
        &["partition", "one word"],
    );
    // No Slurm on the PATH: a clear error, and the manifest says nothing was submitted.
    let out = t.join("out/no-sbatch");
    expect_error(
        "no sbatch",
        &["sweep", good.to_str().unwrap(), "--out", out.to_str().unwrap(), "--executor", "slurm"],
        &[("PATH", "/nonexistent")],
        &["sbatch", "--executor local"],
    );
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert!(m["points"].as_array().unwrap().iter().all(|p| p["status"] == "pending"), "{m}");
}

#[test]
fn status_and_report_of_bad_sweep_folders_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let empty = t.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    expect_error("status of a plain folder", &["sweep", "--status", empty.to_str().unwrap()], &[], &["not a sweep folder", "sweep.json"]);
    expect_error("report of a plain folder", &["report", empty.to_str().unwrap()], &[], &["not a sweep folder", "sweep.json"]);
    expect_error("report of a missing folder", &["report", t.join("absent").to_str().unwrap()], &[], &["absent"]);

    let bad = t.join("bad-manifest");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("sweep.json"), "{\"version\": 1, \"points\": [}").unwrap();
    expect_error("malformed manifest", &["report", bad.to_str().unwrap()], &[], &["sweep.json", "line 1"]);
    expect_error("malformed manifest status", &["sweep", "--status", bad.to_str().unwrap()], &[], &["sweep.json"]);

    // A manifest from a dry sweep of the sample data, then broken run directories.
    base(t);
    let f = t.join("s.toml");
    std::fs::write(&f, "base = \"base.toml\"\n[[axis]]\nkey = \"train.seed\"\nvalues = [0, 1]\n").unwrap();
    let dir = t.join("sweep");
    let (code, out) = run(&["sweep", f.to_str().unwrap(), "--out", dir.to_str().unwrap(), "--executor", "slurm"], &[("PATH", "/nonexistent")]);
    assert_ne!(code, 0, "{out}");
    expect_error("report with no finished run", &["report", dir.to_str().unwrap()], &[], &["no finished run", "seed=0: not started"]);
    let run0 = dir.join("runs/seed=0");
    std::fs::create_dir_all(&run0).unwrap();
    std::fs::write(run0.join("events.jsonl"), "{\"event\":\"started\"}\n{\"event\":\"finished\",\"seconds\":1.0}\n").unwrap();
    std::fs::write(run0.join("metrics.json"), "{\"map\": {\"accuracy\": 0.5,}").unwrap();
    expect_error("malformed metrics.json", &["report", dir.to_str().unwrap()], &[], &["no finished run", "metrics.json", "line 1"]);
    expect_error("unknown --over axis", &["report", dir.to_str().unwrap(), "--over", "lr"], &[], &["--over", "lr", "seed"]);
    // A manifest that points outside its folder.
    let m = std::fs::read_to_string(dir.join("sweep.json")).unwrap().replacen("\"runs/seed=0\"", "\"../elsewhere\"", 1);
    std::fs::write(dir.join("sweep.json"), m).unwrap();
    expect_error("run dir outside the folder", &["report", dir.to_str().unwrap()], &[], &["outside the sweep folder", "../elsewhere"]);
}
