//! The paper's table from a sweep folder: per setting (data set, and any other axis but the
//! seeds) and method, the mean and standard deviation over seeds of ACC, ECE, NLL and Brier, on
//! the test set and on each shift set (`eval/NAME/metrics.json`); and the paired differences of
//! each method against MAP (per seed, then mean and standard deviation).
//!
//! The standard deviation is the sample one, with the n - 1 denominator (Bessel's correction):
//! sd = sqrt(sum_i (x_i - mean)^2 / (n - 1)); with one seed it is undefined and left blank.
//!
//! This is a library API (the GUI's runs view draws from `SweepReport`); `render` writes it as
//! Markdown, CSV and LaTeX.

use super::manifest::{run_state, Manifest, RunState};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The metrics of the table: metrics.json key, header, whether higher is better.
pub const METRICS: [(&str, &str, bool); 4] = [("accuracy", "ACC", true), ("ece", "ECE", false), ("nll", "NLL", false), ("brier", "Brier", false)];

/// Methods in the order the paper lists them; others follow by name.
pub const KNOWN_METHODS: [&str; 9] = ["zero_shot", "map", "temperature", "llla", "laplace", "mc_dropout", "checkpoint_ensemble", "deep_ensemble", "blob"];

/// The in-distribution test set's name in the report.
pub const TEST_SET: &str = "test";

/// Mean and sample standard deviation of some values.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    /// n - 1 denominator; None for n = 1.
    pub sd: Option<f64>,
    pub values: Vec<f64>,
}

impl Stats {
    pub fn of(values: Vec<f64>) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Some(Self { n, mean, sd, values })
    }
}

/// One column of the table: a combination of the non-seed axes' labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// (column, label), one per entry of `SweepReport::setting_columns`.
    pub labels: Vec<(String, String)>,
    /// The seeds (replicate labels) of its finished runs.
    pub replicates: Vec<String>,
    /// Its finished runs (point names).
    pub runs: Vec<String>,
}

impl Setting {
    /// "compare4" for one column, "data=compare4, learning_rate=0.001" for several.
    pub fn title(&self) -> String {
        match &self.labels[..] {
            [(_, l)] => l.clone(),
            ls => ls.iter().map(|(c, l)| format!("{c}={l}")).collect::<Vec<_>>().join(", "),
        }
    }
}

/// A row: one evaluation set, setting and method.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub eval: String,
    /// Index into `SweepReport::settings`.
    pub setting: usize,
    pub method: String,
    /// Per entry of `METRICS`: over the setting's seeds that have the method.
    pub metrics: Vec<Option<Stats>>,
    /// Per entry of `METRICS`: method - MAP, per seed that has both, then over seeds. None for MAP
    /// itself and where no seed has both.
    pub vs_map: Vec<Option<Stats>>,
}

/// One point's run as the report saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub dataset: String,
    /// "finished", "failed", ... (from the run directory).
    pub state: String,
    pub seconds: Option<f64>,
    /// Evaluation set -> method -> the four metrics (NaN where metrics.json has none).
    pub metrics: BTreeMap<String, BTreeMap<String, [f64; 4]>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SweepReport {
    pub name: String,
    pub dir: PathBuf,
    /// The axis averaged over (the seeds), if any.
    pub replicate_axis: Option<String>,
    pub setting_columns: Vec<String>,
    pub settings: Vec<Setting>,
    /// "test" first, then the shift sets by name.
    pub eval_sets: Vec<String>,
    pub methods: Vec<String>,
    pub rows: Vec<Row>,
    pub runs: Vec<RunSummary>,
    /// Points left out of the table, and why.
    pub missing: Vec<(String, String)>,
    /// Runs that give the same method for the same setting and seed twice (a methods axis): the
    /// first one's numbers are used.
    pub notes: Vec<String>,
}

impl SweepReport {
    pub fn row(&self, eval: &str, setting: usize, method: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.eval == eval && r.setting == setting && r.method == method)
    }
}

pub fn method_order(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    v.sort_by_key(|n| (KNOWN_METHODS.iter().position(|k| k == n).unwrap_or(KNOWN_METHODS.len()), n.clone()));
    v
}

/// The methods of a metrics.json: every top-level object with a numeric `accuracy` ("train",
/// which holds the training split's numbers one level down, is not one).
pub fn methods_of(v: &serde_json::Value) -> BTreeMap<String, [f64; 4]> {
    let mut out = BTreeMap::new();
    let Some(obj) = v.as_object() else { return out };
    for (name, m) in obj {
        if m.get("accuracy").and_then(|a| a.as_f64()).is_none() {
            continue;
        }
        let get = |k: &str| m.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
        out.insert(name.clone(), [get("accuracy"), get("ece"), get("nll"), get("brier")]);
    }
    out
}

fn read_metrics(p: &Path) -> Result<BTreeMap<String, [f64; 4]>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    if !v.is_object() {
        bail!("{} is not a JSON object of methods", p.display());
    }
    Ok(methods_of(&v))
}

/// Test set and shift sets of one run directory.
fn run_metrics(run: &Path) -> Result<BTreeMap<String, BTreeMap<String, [f64; 4]>>> {
    let mut out = BTreeMap::new();
    out.insert(TEST_SET.to_string(), read_metrics(&run.join("metrics.json"))?);
    if let Ok(rd) = std::fs::read_dir(run.join("eval")) {
        let mut names: Vec<String> =
            rd.filter_map(|e| e.ok()).filter(|e| e.path().join("metrics.json").is_file()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for n in names {
            let key = if n == TEST_SET { format!("eval/{n}") } else { n.clone() };
            out.insert(key, read_metrics(&run.join("eval").join(&n).join("metrics.json"))?);
        }
    }
    Ok(out)
}

/// Reads a sweep folder. `over` names the axis to average over (default: the `train.seed` axis,
/// else one named "seed").
pub fn load(dir: &Path, over: Option<&str>) -> Result<SweepReport> {
    let m = Manifest::load(dir)?;
    let replicate_axis = match over {
        Some(a) => {
            if !m.axes.iter().any(|x| x.name == a) {
                bail!("--over {a:?}: the sweep has no such axis (its axes: {})", m.axes.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", "));
            }
            Some(a.to_string())
        }
        None => m.axes.iter().find(|a| a.keys == ["train.seed"]).or_else(|| m.axes.iter().find(|a| a.name == "seed")).map(|a| a.name.clone()),
    };
    let is_methods = |a: &super::manifest::AxisInfo| super::spec::is_methods_axis(&a.keys);
    let mut setting_columns: Vec<String> = Vec::new();
    if !m.axes.iter().any(|a| a.keys.iter().any(|k| k == "data.train")) {
        setting_columns.push("data".into());
    }
    setting_columns.extend(m.axes.iter().filter(|a| Some(&a.name) != replicate_axis.as_ref() && !is_methods(a)).map(|a| a.name.clone()));

    let mut runs = Vec::new();
    let mut missing = Vec::new();
    let mut settings: Vec<Setting> = Vec::new();
    // (eval, setting, replicate, method) -> metrics, first run wins.
    let mut cells: BTreeMap<(String, usize, String, String), [f64; 4]> = BTreeMap::new();
    let mut notes = Vec::new();
    for p in &m.points {
        let run = dir.join(&p.run_dir);
        let state = run_state(&run);
        let (state_name, seconds) = match &state {
            RunState::Absent => ("not started".to_string(), None),
            RunState::Started => ("running or interrupted".to_string(), None),
            RunState::Finished { seconds } => ("finished".to_string(), *seconds),
            RunState::Failed(e) => (format!("failed: {e}"), None),
            RunState::Cancelled => ("cancelled".to_string(), None),
        };
        if !matches!(state, RunState::Finished { .. }) {
            missing.push((p.name.clone(), state_name.clone()));
            runs.push(RunSummary {
                name: p.name.clone(),
                labels: p.labels.clone(),
                dataset: p.dataset.clone(),
                state: state_name,
                seconds,
                metrics: BTreeMap::new(),
            });
            continue;
        }
        let metrics = match run_metrics(&run) {
            Ok(x) => x,
            Err(e) => {
                missing.push((p.name.clone(), format!("{e:#}")));
                runs.push(RunSummary {
                    name: p.name.clone(),
                    labels: p.labels.clone(),
                    dataset: p.dataset.clone(),
                    state: "unreadable".into(),
                    seconds,
                    metrics: BTreeMap::new(),
                });
                continue;
            }
        };
        let labels: Vec<(String, String)> = setting_columns
            .iter()
            .map(|c| (c.clone(), if c == "data" && !p.labels.contains_key(c) { p.dataset.clone() } else { p.labels.get(c).cloned().unwrap_or_default() }))
            .collect();
        let s = match settings.iter().position(|s| s.labels == labels) {
            Some(s) => s,
            None => {
                settings.push(Setting { labels, replicates: Vec::new(), runs: Vec::new() });
                settings.len() - 1
            }
        };
        let rep = replicate_axis.as_ref().and_then(|a| p.labels.get(a)).cloned().unwrap_or_default();
        if !settings[s].replicates.contains(&rep) {
            settings[s].replicates.push(rep.clone());
        }
        settings[s].runs.push(p.name.clone());
        for (eval, methods) in &metrics {
            for (method, v) in methods {
                let key = (eval.clone(), s, rep.clone(), method.clone());
                if cells.contains_key(&key) {
                    notes.push(format!("{}: {method} on {eval} is also in an earlier run of the same setting and seed; the earlier one is used", p.name));
                } else {
                    cells.insert(key, *v);
                }
            }
        }
        runs.push(RunSummary { name: p.name.clone(), labels: p.labels.clone(), dataset: p.dataset.clone(), state: state_name, seconds, metrics });
    }
    let mut eval_sets: Vec<String> = cells.keys().map(|k| k.0.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    eval_sets.sort_by_key(|e| (e != TEST_SET, e.clone()));
    let methods = method_order(cells.keys().map(|k| k.3.clone()));
    let mut rows = Vec::new();
    for eval in &eval_sets {
        for (si, s) in settings.iter().enumerate() {
            for method in &methods {
                let per_rep: Vec<(&String, &[f64; 4])> =
                    s.replicates.iter().filter_map(|r| cells.get(&(eval.clone(), si, r.clone(), method.clone())).map(|v| (r, v))).collect();
                if per_rep.is_empty() {
                    continue;
                }
                let metrics = (0..4).map(|j| Stats::of(per_rep.iter().map(|(_, v)| v[j]).collect())).collect();
                let vs_map = (0..4)
                    .map(|j| {
                        if method == "map" {
                            return None;
                        }
                        let d: Vec<f64> = per_rep
                            .iter()
                            .filter_map(|(r, v)| cells.get(&(eval.clone(), si, (*r).clone(), "map".to_string())).map(|mp| v[j] - mp[j]))
                            .collect();
                        Stats::of(d)
                    })
                    .collect();
                rows.push(Row { eval: eval.clone(), setting: si, method: method.clone(), metrics, vs_map });
            }
        }
    }
    Ok(SweepReport { name: m.name.clone(), dir: dir.to_path_buf(), replicate_axis, setting_columns, settings, eval_sets, methods, rows, runs, missing, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation_uses_n_minus_1() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum to 32; sd = sqrt(32 / 7).
        let s = Stats::of(vec![2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.sd.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-15);
        assert_eq!(Stats::of(vec![0.25]).unwrap().sd, None);
        assert!(Stats::of(vec![]).is_none());
    }

    #[test]
    fn methods_are_objects_with_a_numeric_accuracy_in_a_stable_order() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"train": {"map": {"accuracy": 1}}, "blob": {"accuracy": 0.5, "ece": 0.1, "nll": 0.7, "brier": 0.4},
                "aaa_new": {"accuracy": 0.5}, "map": {"accuracy": 0.6, "ece": 0.2, "nll": 0.9, "brier": 0.5},
                "zero_shot": {"accuracy": 0.25}, "note": "x", "laplace": {"accuracy": "high"}}"#,
        )
        .unwrap();
        let m = methods_of(&v);
        assert_eq!(method_order(m.keys().cloned()), ["zero_shot", "map", "blob", "aaa_new"]);
        assert_eq!(m["map"], [0.6, 0.2, 0.9, 0.5]);
        assert!(m["aaa_new"][2].is_nan());
    }
}
