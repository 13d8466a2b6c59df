//! The sweep file and its expansion into points (DESIGN.md section 5, "Sweeps").
//!
//! A sweep is a base experiment configuration plus axes; the points are the Cartesian product of
//! the axes' values, each one configuration with its overrides applied:
//!
//! ```toml
//! [sweep]
//! name = "lr-seeds"            # optional: default the file's stem
//! out = "sweeps/lr-seeds"      # optional: default sweeps/<name>
//! executor = "local"           # "local" | "slurm"
//! jobs = 2                     # local: runs at a time
//!
//! base = "assets/configs/compare4.toml"   # a configuration file; or a [base] table instead
//!                                         # ([base.model], [base.data], ...)
//!
//! [[axis]]                     # one key
//! key = "train.seed"
//! values = [0, 1, 2]
//!
//! [[axis]]                     # several keys set together (values zipped with keys)
//! name = "data"
//! keys = ["data.train", "data.test"]
//! values = [["a/train.jsonl", "a/test.jsonl"], ["b/train.jsonl", "b/test.jsonl"]]
//! labels = ["a", "b"]          # optional: names in the run directories and the report
//!
//! [[axis]]                     # or each value a table of keys (nested or dotted)
//! name = "data"
//! values = [{ label = "yesno", data.train = "...", data.test = "..." }]
//! ```
//!
//! Paths in the base configuration are taken from the current folder or else from its file's
//! folder; paths in axis values from the current folder or else from the sweep file's folder
//! (the same rule as `ExperimentConfig::from_file`), and stored absolute.

use super::labels::{check_label, default_axis_name, point_name, unique_labels, value_label};
use crate::experiment::ExperimentConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// `[sweep]`: how the sweep runs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    pub name: Option<String>,
    pub out: Option<PathBuf>,
    pub executor: Option<String>,
    pub jobs: Option<usize>,
    pub retries: Option<u32>,
    /// The base configuration's path (as the top-level `base = "..."`, which a TOML file can only
    /// give before its first [table]).
    pub base: Option<String>,
}

/// `[slurm]`: the array job's resources (each a `#SBATCH` line; command-line flags win).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    pub partition: Option<String>,
    /// `--time`, e.g. "02:00:00" or "1-00:00:00".
    pub time: Option<String>,
    /// GPUs per task (`--gres=gpu:N`, or `gpu:TYPE:N` with `gpu_type`).
    pub gpus: Option<u32>,
    pub gpu_type: Option<String>,
    /// CPUs per task (`--cpus-per-task`; the run's thread count).
    pub cpus: Option<u32>,
    /// Memory per task (`--mem`, e.g. "32G").
    pub mem: Option<String>,
    /// At most this many tasks at once (`--array=...%N`).
    pub max_parallel: Option<u32>,
    /// Further `sbatch` options, one `#SBATCH` line each (e.g. "--account=proj", "--qos=short").
    #[serde(default)]
    pub extra: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    sweep: SweepSection,
    base: Option<Value>,
    #[serde(default)]
    axis: Vec<RawAxis>,
    #[serde(default)]
    slurm: SlurmSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAxis {
    name: Option<String>,
    key: Option<String>,
    keys: Option<Vec<String>>,
    values: Option<Vec<Value>>,
    labels: Option<Vec<String>>,
}

/// One value of an axis: the keys it sets and its label.
#[derive(Clone, Debug)]
pub struct AxisValue {
    /// As written in the report (a user's label, or one made from the value).
    pub label: String,
    /// Dotted configuration key -> value, in key order.
    pub overrides: Vec<(String, Value)>,
}

#[derive(Clone, Debug)]
pub struct Axis {
    pub name: String,
    /// Every key some value of the axis sets.
    pub keys: Vec<String>,
    pub values: Vec<AxisValue>,
}

impl Axis {
    /// The axis of replicates: the seeds a report averages over.
    pub fn is_seed(&self) -> bool {
        self.keys == ["train.seed"]
    }
    /// The axis of method lists (`methods.list`): its runs are one setting in the report.
    pub fn is_methods(&self) -> bool {
        is_methods_axis(&self.keys)
    }
    /// An axis over data sets (it sets the training data).
    pub fn is_data(&self) -> bool {
        self.keys.iter().any(|k| k == "data.train")
    }
}

/// A parsed sweep file.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub file: PathBuf,
    pub name: String,
    pub section: SweepSection,
    pub slurm: SlurmSection,
    /// The base configuration, paths made absolute.
    pub base: Table,
    pub axes: Vec<Axis>,
}

/// One point of the sweep: a validated configuration.
#[derive(Clone, Debug)]
pub struct Point {
    /// Readable and unique: `axis=label` joined by `_` (`data=yesno_seed=1`), "base" with no axes.
    pub name: String,
    /// (axis name, label), in axis order.
    pub labels: Vec<(String, String)>,
    /// Dotted key -> value, every axis' overrides of this point.
    pub overrides: Vec<(String, Value)>,
    pub config: ExperimentConfig,
}

impl SweepSpec {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading sweep file {}", path.display()))?;
        Self::from_toml_str(&text, path).with_context(|| format!("in sweep file {}", path.display()))
    }

    /// Parses a sweep file's text; `path` names it (its folder resolves relative paths).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        let raw: RawFile = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let base = match (raw.base, &raw.sweep.base) {
            (Some(_), Some(_)) => bail!("two base configurations: give `base` once (in [sweep], at the top, or as a [base] table)"),
            (b, None) => b,
            (None, Some(p)) => Some(Value::String(p.clone())),
        };
        let base = match base {
            None => bail!("no base configuration: add `base = \"CONFIG.toml\"` or a [base] table ([base.model], [base.data], ...)"),
            Some(Value::String(p)) => {
                let p = locate(Path::new(&p), &dir);
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading base configuration {}", p.display()))?;
                let mut t: Table = toml::from_str(&text).map_err(|e| anyhow!("{e}")).with_context(|| format!("in base configuration {}", p.display()))?;
                let bdir = p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
                resolve_paths_in_table("", &mut t, &bdir);
                t
            }
            Some(Value::Table(mut t)) => {
                resolve_paths_in_table("", &mut t, &dir);
                t
            }
            Some(other) => bail!("base must be a configuration file's path or a [base] table, not {}", a_type(&other)),
        };
        let mut axes = Vec::new();
        for (i, a) in raw.axis.into_iter().enumerate() {
            axes.push(parse_axis(i, a, &dir).with_context(|| format!("in [[axis]] number {}", i + 1))?);
        }
        let mut seen = BTreeSet::new();
        for a in &axes {
            if !seen.insert(a.name.clone()) {
                bail!("two axes are named {:?}: give one of them another `name`", a.name);
            }
        }
        let name = match &raw.sweep.name {
            Some(n) => {
                check_label("sweep.name", n)?;
                n.clone()
            }
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into()),
        };
        if let Some(e) = &raw.sweep.executor {
            crate::sweep::Executor::parse(e).context("sweep.executor")?;
        }
        crate::sweep::slurm::validate(&raw.slurm).context("in [slurm]")?;
        if raw.sweep.jobs == Some(0) {
            bail!("sweep.jobs = 0: at least one run must go at a time");
        }
        Ok(Self { file: path.to_path_buf(), name, section: raw.sweep, slurm: raw.slurm, base, axes })
    }

    /// Every point, validated: an error names each point whose configuration is invalid.
    pub fn points(&self) -> Result<Vec<Point>> {
        let mut points = Vec::new();
        let mut errors = Vec::new();
        let n: usize = self.axes.iter().map(|a| a.values.len()).product();
        for flat in 0..n {
            // Mixed radix: the last axis varies fastest.
            let mut rest = flat;
            let mut pick = vec![0; self.axes.len()];
            for (j, a) in self.axes.iter().enumerate().rev() {
                pick[j] = rest % a.values.len();
                rest /= a.values.len();
            }
            let labels: Vec<(String, String)> = self.axes.iter().zip(&pick).map(|(a, &k)| (a.name.clone(), a.values[k].label.clone())).collect();
            let name = point_name(&labels);
            let overrides: Vec<(String, Value)> = self.axes.iter().zip(&pick).flat_map(|(a, &k)| a.values[k].overrides.clone()).collect();
            match self.point_config(&overrides) {
                Ok(config) => points.push(Point { name, labels, overrides, config }),
                Err(e) => errors.push(format!("point {name} ({}): {e:#}", describe(&overrides))),
            }
        }
        if !errors.is_empty() {
            let shown = errors.len().min(10);
            let more = if errors.len() > shown { format!("\n... and {} more", errors.len() - shown) } else { String::new() };
            bail!("{} of {n} points have an invalid configuration:\n{}{more}", errors.len(), errors[..shown].join("\n"));
        }
        Ok(points)
    }

    fn point_config(&self, overrides: &[(String, Value)]) -> Result<ExperimentConfig> {
        let mut t = self.base.clone();
        for (k, v) in overrides {
            set_dotted(&mut t, k, v.clone())?;
        }
        let text = toml::to_string(&t).map_err(|e| anyhow!("{e}"))?;
        let cfg = ExperimentConfig::from_toml_str(&text)?;
        check_files(&cfg)?;
        Ok(cfg)
    }
}

/// "key = value, ..." for messages.
pub fn describe(overrides: &[(String, Value)]) -> String {
    if overrides.is_empty() {
        return "the base configuration".into();
    }
    overrides.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

/// A data or model path that looks like a file (a folder separator or an extension) must exist;
/// anything else may be a known name, which the run resolves.
fn check_files(cfg: &ExperimentConfig) -> Result<()> {
    let looks_like_file = |p: &Path| p.components().count() > 1 || p.extension().is_some();
    let mut files: Vec<(&str, PathBuf)> = vec![("data.train", cfg.data.train.clone()), ("data.test", cfg.data.test.clone())];
    if let Some(v) = &cfg.data.validation {
        files.push(("data.validation", v.clone()));
    }
    files.push(("model.source", PathBuf::from(&cfg.model.source)));
    for (key, p) in files {
        if looks_like_file(&p) && !p.exists() {
            bail!("{key} = {:?} does not exist", p.display().to_string());
        }
    }
    Ok(())
}

fn parse_axis(i: usize, a: RawAxis, dir: &Path) -> Result<Axis> {
    let values = a.values.ok_or_else(|| anyhow!("the axis has no `values`"))?;
    if values.is_empty() {
        bail!("the axis has an empty `values` list");
    }
    let mut out: Vec<(Option<String>, Vec<(String, Value)>)> = Vec::new();
    match (&a.key, &a.keys) {
        (Some(_), Some(_)) => bail!("give `key` (one key) or `keys` (several set together), not both"),
        (Some(k), None) => {
            check_key(k)?;
            for v in values {
                out.push((None, vec![(k.clone(), v)]));
            }
        }
        (None, Some(ks)) => {
            if ks.is_empty() {
                bail!("`keys` is empty");
            }
            for k in ks {
                check_key(k)?;
            }
            for (j, v) in values.into_iter().enumerate() {
                let Value::Array(items) = v else {
                    bail!("value {} must be a list of {} values, one for each of `keys` {ks:?}", j + 1, ks.len());
                };
                if items.len() != ks.len() {
                    bail!("value {} has {} entries but `keys` has {}: {ks:?}", j + 1, items.len(), ks.len());
                }
                out.push((None, ks.iter().cloned().zip(items).collect()));
            }
        }
        (None, None) => {
            for (j, v) in values.into_iter().enumerate() {
                let Value::Table(mut t) = v else {
                    bail!("value {} is {}: without `key` or `keys`, each value is a table of configuration keys, e.g. {{ label = \"a\", data.train = \"a/train.jsonl\" }}", j + 1, a_type(&v));
                };
                let label = match t.remove("label") {
                    None => None,
                    Some(Value::String(s)) => Some(s),
                    Some(other) => bail!("value {}: label must be a string, not {}", j + 1, a_type(&other)),
                };
                let mut flat = Vec::new();
                flatten("", &t, &mut flat);
                if flat.is_empty() {
                    bail!("value {} sets no key", j + 1);
                }
                for (k, _) in &flat {
                    check_key(k)?;
                }
                out.push((label, flat));
            }
        }
    }
    for (_, ov) in out.iter_mut() {
        for (k, v) in ov.iter_mut() {
            resolve_paths_in(k, v, dir);
        }
    }
    let keys: Vec<String> = out.iter().flat_map(|(_, ov)| ov.iter().map(|(k, _)| k.clone())).collect::<BTreeSet<_>>().into_iter().collect();
    let name = match &a.name {
        Some(n) => {
            check_label("name", n)?;
            n.clone()
        }
        None => default_axis_name(&keys, i),
    };
    let given = a.labels.is_some() || out.iter().any(|(own, _)| own.is_some());
    let labels: Vec<String> = match a.labels {
        Some(l) => {
            if l.len() != out.len() {
                bail!("`labels` has {} entries but `values` has {}", l.len(), out.len());
            }
            if out.iter().any(|(own, _)| own.is_some()) {
                bail!("give labels either in `labels` or as `label` inside the values, not both");
            }
            l
        }
        None => out.iter().map(|(own, ov)| own.clone().unwrap_or_else(|| value_label(ov))).collect(),
    };
    let labels = if given {
        let mut seen = BTreeSet::new();
        for l in &labels {
            check_label("label", l)?;
            if !seen.insert(l.clone()) {
                bail!("the label {l:?} is given to two values of the axis");
            }
        }
        labels
    } else {
        unique_labels(labels)
    };
    Ok(Axis { name, keys, values: labels.into_iter().zip(out).map(|(label, (_, overrides))| AxisValue { label, overrides }).collect() })
}

/// A key must be dotted table names of the configuration ("train.seed"); whether it exists is
/// checked when the points are validated (unknown keys are an error there).
fn check_key(k: &str) -> Result<()> {
    if k.split('.').any(|s| s.trim().is_empty() || s != s.trim()) || !k.contains('.') {
        bail!("{k:?} is not a configuration key: write SECTION.KEY, e.g. \"train.seed\" or \"data.train\"");
    }
    Ok(())
}

/// Dotted leaves of a table: {data = {train = "x"}} and {"data.train" = "x"} both give data.train.
fn flatten(prefix: &str, t: &Table, out: &mut Vec<(String, Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(sub) => flatten(&key, sub, out),
            _ => out.push((key, v.clone())),
        }
    }
}

/// "a string", "an integer", ... for messages.
fn a_type(v: &Value) -> String {
    let t = v.type_str();
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {t}")
    } else {
        format!("a {t}")
    }
}

/// Sets `a.b.c = v` in a nested table, creating the tables on the way.
pub fn set_dotted(t: &mut Table, key: &str, v: Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = t;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur.entry(p.to_string()).or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(sub) => sub,
            other => bail!("cannot set {key}: {} is {}, not a table", parts[..=i].join("."), a_type(other)),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), v);
    Ok(())
}

/// Keys whose string values are file or folder paths.
pub(super) fn is_path_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    (key.starts_with("data.") && matches!(last, "train" | "validation" | "test" | "path")) || key == "model.source"
}

fn resolve_paths_in_table(prefix: &str, t: &mut Table, dir: &Path) {
    for (k, v) in t.iter_mut() {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        resolve_paths_in(&key, v, dir);
    }
}

/// Makes the paths under `key` absolute where they exist (from the current folder, else `dir`);
/// anything else (a known dataset or model name) stays as written.
fn resolve_paths_in(key: &str, v: &mut Value, dir: &Path) {
    match v {
        Value::String(s) if is_path_key(key) => {
            let p = Path::new(s.as_str());
            let found = if p.is_absolute() || p.exists() {
                Some(p.to_path_buf())
            } else if dir.join(p).exists() {
                Some(dir.join(p))
            } else {
                None
            };
            if let Some(f) = found {
                *s = std::path::absolute(&f).unwrap_or(f).to_string_lossy().into_owned();
            }
        }
        Value::Table(t) => resolve_paths_in_table(key, t, dir),
        Value::Array(items) => items.iter_mut().for_each(|x| resolve_paths_in(key, x, dir)),
        _ => {}
    }
}

/// A path as given, from the current folder if it exists there, else from `dir`.
fn locate(p: &Path, dir: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() || !dir.join(p).exists() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// The dotted keys whose values differ between two configurations (for messages).
pub fn config_differences(a: &ExperimentConfig, b: &ExperimentConfig) -> Vec<String> {
    let (Ok(Value::Table(ta)), Ok(Value::Table(tb))) = (Value::try_from(a), Value::try_from(b)) else {
        return vec!["(the configurations do not convert to TOML)".into()];
    };
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    flatten("", &ta, &mut fa);
    flatten("", &tb, &mut fb);
    let keys: BTreeSet<&String> = fa.iter().chain(&fb).map(|(k, _)| k).collect();
    keys.into_iter().filter(|k| fa.iter().find(|(x, _)| x == *k).map(|(_, v)| v) != fb.iter().find(|(x, _)| x == *k).map(|(_, v)| v)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<SweepSpec> {
        SweepSpec::from_toml_str(text, Path::new("/nonexistent/s.toml"))
    }

    const BASE: &str = "[base.data]\ntrain = \"arc-easy\"\ntest = \"arc-easy\"\n";

    #[test]
    fn product_of_axes_last_varies_fastest() {
        let s = spec(&format!("{BASE}[[axis]]\nkey = \"train.learning_rate\"\nvalues = [5e-4, 1e-3]\n[[axis]]\nkey = \"train.seed\"\nvalues = [0, 1, 2]\n"))
            .unwrap();
        let p = s.points().unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "learning_rate=0.0005_seed=0",
                "learning_rate=0.0005_seed=1",
                "learning_rate=0.0005_seed=2",
                "learning_rate=0.001_seed=0",
                "learning_rate=0.001_seed=1",
                "learning_rate=0.001_seed=2"
            ]
        );
        assert_eq!(p[4].config.train.learning_rate, 1e-3);
        assert_eq!(p[4].config.train.seed, 1);
        assert!(s.axes[1].is_seed() && !s.axes[0].is_seed());
    }

    #[test]
    fn several_keys_zipped_or_as_tables_give_the_same_points() {
        let zipped = spec(&format!(
            "{BASE}[[axis]]\nkeys = [\"data.train\", \"data.test\", \"lora.rank\"]\nvalues = [[\"/d/yesno/train.jsonl\", \"/d/yesno/test.jsonl\", 4], [\"obqa\", \"obqa\", 2]]\n"
        ))
        .unwrap();
        let tables = spec(&format!(
            "{BASE}[[axis]]\nvalues = [{{ data.train = \"/d/yesno/train.jsonl\", \"data.test\" = \"/d/yesno/test.jsonl\", lora = {{ rank = 4 }} }}, {{ data = {{ train = \"obqa\", test = \"obqa\" }}, lora.rank = 2 }}]\n"
        ))
        .unwrap();
        assert_eq!(zipped.axes[0].name, "axis1");
        for s in [&zipped, &tables] {
            let labels: Vec<&str> = s.axes[0].values.iter().map(|v| v.label.as_str()).collect();
            assert_eq!(labels, ["yesno", "obqa"]);
        }
        // The files do not exist: the points are refused, naming the key.
        let e = format!("{:#}", zipped.points().unwrap_err());
        assert!(e.contains("data.train") && e.contains("does not exist") && e.contains("1 of 2 points"), "{e}");
    }

    #[test]
    fn bad_axes_are_refused_with_a_reason() {
        for (axis, needle) in [
            ("key = \"train.seed\"", "no `values`"),
            ("key = \"train.seed\"\nvalues = []", "empty"),
            ("key = \"seed\"\nvalues = [1]", "not a configuration key"),
            ("key = \"train.seed\"\nkeys = [\"train.seed\"]\nvalues = [1]", "not both"),
            ("keys = [\"train.seed\", \"lora.rank\"]\nvalues = [[1]]", "has 1 entries"),
            ("keys = [\"train.seed\", \"lora.rank\"]\nvalues = [1]", "must be a list"),
            ("values = [1, 2]", "table of configuration keys"),
            ("key = \"train.seed\"\nvalues = [1, 2]\nlabels = [\"a\"]", "`labels` has 1"),
            ("key = \"train.seed\"\nvalues = [1, 2]\nlabels = [\"a\", \"a\"]", "given to two"),
            ("key = \"train.seed\"\nvalues = [1]\nlabels = [\"a/b\"]", "folder name"),
            ("key = \"train.seed\"\nvalues = [1]\nvalue = 3", "unknown field"),
        ] {
            let e = format!("{:#}", spec(&format!("{BASE}[[axis]]\n{axis}\n")).unwrap_err());
            assert!(e.contains(needle), "{axis}: {e}");
            assert!(e.contains("axis") || e.contains("line"), "{axis}: {e}");
        }
        let e = format!("{:#}", spec("[[axis]]\nkey = \"train.seed\"\nvalues = [1]\n").unwrap_err());
        assert!(e.contains("no base configuration"), "{e}");
    }

    #[test]
    fn invalid_points_are_named_before_anything_runs() {
        let s =
            spec(&format!("{BASE}[[axis]]\nkey = \"train.learning_rate\"\nvalues = [1e-3, -1.0, \"fast\"]\n[[axis]]\nkey = \"train.seeed\"\nvalues = [0]\n"))
                .unwrap();
        let e = format!("{:#}", s.points().unwrap_err());
        assert!(e.contains("3 of 3 points"), "{e}");
        assert!(e.contains("learning_rate=0.001_seeed=0") && e.contains("seeed"), "{e}");
        let s = spec(&format!("{BASE}[[axis]]\nkey = \"train.learning_rate\"\nvalues = [1e-3, -1.0]\n")).unwrap();
        let e = format!("{:#}", s.points().unwrap_err());
        assert!(e.contains("1 of 2") && e.contains("learning_rate=-1") && e.contains("train.learning_rate must be a positive"), "{e}");
        let s = spec(&format!("{BASE}[base.train]\nseed = 1\n[[axis]]\nkey = \"train.seed.x\"\nvalues = [1]\n")).unwrap();
        let e = format!("{:#}", s.points().unwrap_err());
        assert!(e.contains("cannot set train.seed.x: train.seed is an integer"), "{e}");
    }

    #[test]
    fn no_axes_is_one_point_and_differences_are_named() {
        let s = spec(BASE).unwrap();
        let p = s.points().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "base");
        let mut b = p[0].config.clone();
        b.train.seed = 9;
        b.lora.rank = 3;
        assert_eq!(config_differences(&p[0].config, &b), ["lora.rank", "train.seed"]);
    }
}

/// Whether an axis with these keys is an axis of method lists: it sets `methods.list` and nothing
/// outside `[methods]`. An axis that also sets data (each data set with the methods to run on it)
/// is a data axis, whose values stay apart in the report.
pub fn is_methods_axis(keys: &[String]) -> bool {
    keys.iter().any(|k| k == "methods.list") && keys.iter().all(|k| k.starts_with("methods."))
}

#[cfg(test)]
mod methods_axis_tests {
    use super::is_methods_axis;

    #[test]
    fn only_an_axis_of_method_settings_is_a_methods_axis() {
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_methods_axis(&k(&["methods.list"])));
        assert!(is_methods_axis(&k(&["methods.list", "methods.mc_dropout.p"])));
        assert!(!is_methods_axis(&k(&["data.train", "data.test", "methods.list"])));
        assert!(!is_methods_axis(&k(&["train.seed"])));
    }
}
