//! The runs table's rows: one per run directory under the runs root and under each sweep folder's
//! `runs/` (a sweep folder is one with `sweep.json`). A row is read from the small files only:
//! config.toml, metrics.json and the first and last lines of events.jsonl, never
//! predictions.jsonl. Rows are cached per directory and re-read only when the directory's or one
//! of those files' modification time or size changes, so a rescan costs a few `stat` calls a run.

use laplace_lora::sweep::report::{self, SweepReport};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The metrics the table can show: (metrics.json key, header); the index into
/// `RunEntry::metrics`' arrays (same order as `sweep::report::METRICS`).
pub const TABLE_METRICS: [(&str, &str); 4] = [("accuracy", "ACC"), ("ece", "ECE"), ("nll", "NLL"), ("brier", "Brier")];

/// A run directory found under the runs root.
#[derive(Clone, Debug)]
pub struct RunEntry {
    pub path: PathBuf,
    pub name: String,
    /// The sweep folder that holds it (`<sweep>/runs/NAME`), if any.
    pub sweep: Option<PathBuf>,
    /// config.toml's data.train, short: a known name (`obqa`) or the file's parent folder name.
    pub dataset: String,
    /// config.toml's model.source, short: the last path component.
    pub model: String,
    /// metrics.json's methods in order, else config.toml's `[methods] list`.
    pub methods: Vec<String>,
    pub status: String,
    pub modified: SystemTime,
    /// Seconds from the first to the last stamped event (`t`) of events.jsonl, else the
    /// `finished` event's seconds, else the sum of the methods' costs in metrics.json.
    pub seconds: Option<f64>,
    /// Method -> [ACC, ECE, NLL, Brier] on the test set (NaN where metrics.json has none).
    pub metrics: BTreeMap<String, [f64; 4]>,
    /// What could not be read (shown in the row's tooltip; the row is still listed).
    pub problems: Vec<String>,
}

/// A sweep folder and its report (mean and sd over seeds), or why it could not be read.
pub struct SweepEntry {
    pub dir: PathBuf,
    pub name: String,
    pub report: Result<SweepReport, String>,
    key: u64,
}

/// Modification time and size of each file a row is read from, to tell when to re-read it.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(dir: &Path) -> Stamp {
    let one = |p: PathBuf| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
    let mut v = vec![one(dir.to_path_buf())];
    for f in ["config.toml", "metrics.json", "events.jsonl", "prior_curve.csv"] {
        v.push(one(dir.join(f)));
    }
    v
}

/// The cache of rows and sweep reports, kept by the app between scans.
#[derive(Default)]
pub struct RunIndex {
    rows: HashMap<PathBuf, (Stamp, RunEntry)>,
    pub sweeps: Vec<SweepEntry>,
}

fn is_run_dir(p: &Path) -> bool {
    p.is_dir() && (p.join("events.jsonl").exists() || p.join("config.toml").exists())
}

/// The sub-folders of `dir` (hidden ones, like `.trash`, left out), by name.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    let mut v: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))).collect();
    v.sort();
    v
}

impl RunIndex {
    /// Every run directory under `root` (sweeps' runs with `sweep` set), newest first; re-reads
    /// only the directories whose files changed since the last scan.
    pub fn scan(&mut self, root: &Path) -> Vec<RunEntry> {
        let mut found: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
        let mut sweep_dirs = Vec::new();
        for p in subdirs(root) {
            if p.join("sweep.json").is_file() {
                for r in subdirs(&p.join("runs")) {
                    if is_run_dir(&r) {
                        found.push((r, Some(p.clone())));
                    }
                }
                sweep_dirs.push(p);
            } else if is_run_dir(&p) {
                found.push((p, None));
            }
        }
        let mut out = Vec::new();
        let mut keep = HashMap::new();
        for (p, sweep) in found {
            let st = stamp(&p);
            let row = match self.rows.remove(&p) {
                Some((old, row)) if old == st => row,
                _ => read_row(&p, sweep),
            };
            out.push(row.clone());
            keep.insert(p, (st, row));
        }
        self.rows = keep;
        // A sweep's report is re-read when sweep.json or one of its runs changed.
        let mut sweeps = Vec::new();
        for d in sweep_dirs {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::metadata(d.join("sweep.json")).ok().map(|m| (m.modified().ok(), m.len())).hash(&mut h);
            for (p, (st, _)) in self.rows.iter().filter(|(_, (_, r))| r.sweep.as_ref() == Some(&d)).collect::<BTreeMap<_, _>>() {
                p.hash(&mut h);
                st.hash(&mut h);
            }
            let key = h.finish();
            let old = self.sweeps.iter().position(|s| s.dir == d && s.key == key);
            let entry = match old {
                Some(i) => self.sweeps.swap_remove(i),
                None => SweepEntry {
                    name: d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    report: report::load(&d, None).map_err(|e| format!("{e:#}")),
                    dir: d,
                    key,
                },
            };
            sweeps.push(entry);
        }
        self.sweeps = sweeps;
        out.sort_by(|a, b| b.modified.cmp(&a.modified));
        out
    }
}

/// Lists the run directories under `root` without a cache (reads every row).
pub fn list_runs(root: &Path) -> Vec<RunEntry> {
    RunIndex::default().scan(root)
}

/// The short form of a data.train value: a known dataset name as its canonical name, a file as
/// its parent folder's name (`.../obqa/train.parquet` -> `obqa`), else the file stem.
pub fn short_dataset(train: &str) -> String {
    if let Some(Ok(k)) = laplace_lora::data::known::parse(train) {
        return k.name;
    }
    let p = Path::new(train);
    let parent = p.parent().and_then(|d| d.file_name()).map(|s| s.to_string_lossy().into_owned());
    let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| train.to_string());
    parent.filter(|s| !s.is_empty()).unwrap_or(stem)
}

fn read_row(p: &Path, sweep: Option<PathBuf>) -> RunEntry {
    let mut problems = Vec::new();
    let mut row = RunEntry {
        path: p.to_path_buf(),
        name: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        sweep,
        dataset: String::new(),
        model: String::new(),
        methods: Vec::new(),
        status: String::new(),
        modified: std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH),
        seconds: None,
        metrics: BTreeMap::new(),
        problems: Vec::new(),
    };
    // config.toml as a plain TOML table: only three keys are needed, and a config that the
    // current program would refuse still shows its row.
    match std::fs::read_to_string(p.join("config.toml")).map(|t| t.parse::<toml::Table>()) {
        Ok(Ok(t)) => {
            let get = |a: &str, b: &str| t.get(a).and_then(|s| s.get(b)).and_then(|v| v.as_str()).map(str::to_string);
            row.dataset = get("data", "train").map(|s| short_dataset(&s)).unwrap_or_default();
            row.model = get("model", "source").map(|s| Path::new(&s).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(s)).unwrap_or_default();
            if let Some(l) = t.get("methods").and_then(|m| m.get("list")).and_then(|l| l.as_array()) {
                row.methods = l.iter().filter_map(|x| x.as_str().map(str::to_string)).collect();
            }
        }
        Ok(Err(e)) => problems.push(format!("config.toml: {}", e.message())),
        Err(_) => problems.push("no config.toml".into()),
    }
    let mut cost_seconds = None;
    if let Ok(bytes) = std::fs::read(p.join("metrics.json")) {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => {
                row.metrics = report::methods_of(&v);
                let order: Vec<String> = match v.get("methods").and_then(|m| m.as_array()) {
                    Some(l) => l.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                    None => report::method_order(row.metrics.keys().cloned()),
                };
                row.methods = order.into_iter().filter(|m| row.metrics.contains_key(m)).collect();
                let costs: Vec<f64> = row
                    .methods
                    .iter()
                    .filter_map(|m| v.get(m)?.get("cost"))
                    .flat_map(|c| ["train_seconds", "prepare_seconds", "eval_seconds"].map(|k| c.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0)))
                    .collect();
                if !costs.is_empty() {
                    cost_seconds = Some(costs.iter().sum());
                }
            }
            Err(e) => problems.push(format!("metrics.json: {e}")),
        }
    }
    let events = p.join("events.jsonl");
    let first = first_line(&events).and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok());
    let last_text = last_line(&events).unwrap_or_default();
    let last = serde_json::from_str::<serde_json::Value>(&last_text).ok();
    let tag = last.as_ref().and_then(|v| v.get("event")?.as_str().map(str::to_string)).unwrap_or_default();
    let ended = match tag.as_str() {
        "finished" => "finished",
        "cancelled" => "cancelled",
        "failed" => "failed",
        _ if !events.exists() => "no events",
        _ => "running or interrupted",
    };
    row.status = if p.join("prior_curve.csv").exists() { format!("{ended}, with Laplace") } else { ended.to_string() };
    let t = |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.get("t")?.as_f64());
    row.seconds = match (t(&first), t(&last)) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => last.as_ref().filter(|_| tag == "finished").and_then(|v| v.get("seconds")?.as_f64()).or(cost_seconds),
    };
    row.problems = problems;
    row
}

/// The first line of a file, reading at most its first 64 KiB.
fn first_line(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path).ok()?.take(65536).read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf).lines().find(|l| !l.trim().is_empty()).map(str::to_string)
}

/// The last non-empty line of a file, reading only its last 64 KiB.
fn last_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(65536))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string)
}

/// Moves a run directory to `<root>/.trash/<name>-<UTC stamp>` (never deletes anything);
/// returns where it went.
pub fn move_to_trash(root: &Path, run: &Path) -> Result<PathBuf, String> {
    if !run.is_dir() {
        return Err(format!("{} is not a directory", run.display()));
    }
    let trash = root.join(".trash");
    std::fs::create_dir_all(&trash).map_err(|e| format!("cannot create {}: {e}", trash.display()))?;
    let name = run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{name}-{}", laplace_lora::runio::utc_stamp(secs));
    let mut dest = trash.join(&base);
    let mut k = 1;
    while dest.exists() {
        dest = trash.join(format!("{base}-{k}"));
        k += 1;
    }
    std::fs::rename(run, &dest).map_err(|e| format!("cannot move {} to {}: {e}", run.display(), dest.display()))?;
    Ok(dest)
}

/// `YYYY-mm-dd HH:MM` (UTC) of a time.
pub fn fmt_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let s = laplace_lora::runio::utc_stamp(secs);
    format!("{}-{}-{} {}:{}", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_run(dir: &Path, train: &str, metrics: &str, events: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.toml"), format!("[model]\nsource = \"/models/tiny.gguf\"\n[data]\ntrain = \"{train}\"\n")).unwrap();
        std::fs::write(dir.join("metrics.json"), metrics).unwrap();
        std::fs::write(dir.join("events.jsonl"), events).unwrap();
    }

    #[test]
    fn rows_sweeps_durations_and_the_trash() {
        let root = tempfile::tempdir().unwrap();
        let m = r#"{"layout":2,"methods":["map","laplace"],"map":{"accuracy":0.5,"ece":0.2,"nll":1.0,"brier":0.6,"cost":{"train_seconds":3}},"laplace":{"accuracy":0.75,"ece":0.1,"nll":0.8,"brier":0.5}}"#;
        let ev = "{\"t\":0.5,\"event\":\"started\"}\n{\"t\":12.5,\"event\":\"finished\",\"seconds\":99}\n";
        fake_run(&root.path().join("r1"), "obqa", m, ev);
        fake_run(&root.path().join("r2"), "/d/compare4/train.jsonl", "{not json", "{\"event\":\"finished\",\"seconds\":7}\n");
        std::fs::create_dir_all(root.path().join("sw")).unwrap();
        std::fs::write(root.path().join("sw/sweep.json"), "{}").unwrap();
        fake_run(&root.path().join("sw/runs/p1"), "arc_easy", m, "");
        let mut ix = RunIndex::default();
        let rows = ix.scan(root.path());
        assert_eq!(rows.len(), 3);
        let r = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(r("r1").dataset, "obqa");
        assert_eq!(r("r1").model, "tiny.gguf");
        assert_eq!(r("r1").methods, ["map", "laplace"]);
        assert_eq!(r("r1").metrics["laplace"], [0.75, 0.1, 0.8, 0.5]);
        assert_eq!(r("r1").seconds, Some(12.0));
        assert_eq!(r("r1").status, "finished");
        assert_eq!(r("r2").dataset, "compare4");
        assert_eq!(r("r2").seconds, Some(7.0));
        assert!(r("r2").problems[0].starts_with("metrics.json"), "{:?}", r("r2").problems);
        assert_eq!(r("p1").dataset, "arc-easy");
        assert_eq!(r("p1").sweep.as_deref(), Some(root.path().join("sw").as_path()));
        assert_eq!(r("p1").seconds, Some(3.0), "from the cost when events have no stamps");
        // The unreadable sweep.json is a message, not a panic.
        assert_eq!(ix.sweeps.len(), 1);
        assert!(ix.sweeps[0].report.is_err());
        let dest = move_to_trash(root.path(), &root.path().join("r1")).unwrap();
        assert!(dest.starts_with(root.path().join(".trash")) && dest.join("metrics.json").is_file());
        assert!(!root.path().join("r1").exists());
        assert_eq!(ix.scan(root.path()).len(), 2, "the trash is not listed");
    }
}
