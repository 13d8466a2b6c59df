//! Labels of axis values and names of points: they name the run directories
//! (`data=yesno_seed=1`) and the report's rows and columns, so they are short, unique within
//! their axis and safe in a folder name.

use super::spec::is_path_key;
use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::path::Path;
use toml::Value;

/// Labels and names go into folder names: letters, digits and `.`, `_`, `+`, `-` only.
pub(super) fn check_label(what: &str, l: &str) -> Result<()> {
    if l.is_empty() || l.len() > 64 || !l.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)) || l.starts_with('.') {
        bail!("{what} {l:?} must be 1-64 letters, digits, '.', '_', '+' or '-' (it becomes part of a folder name)");
    }
    Ok(())
}

pub(super) fn default_axis_name(keys: &[String], i: usize) -> String {
    if keys.iter().all(|k| k.starts_with("data.")) && keys.iter().any(|k| matches!(k.as_str(), "data.train" | "data.test" | "data.validation")) {
        return "data".into();
    }
    if super::spec::is_methods_axis(keys) {
        return "methods".into();
    }
    match keys {
        [one] => one.rsplit('.').next().unwrap_or(one).to_string(),
        _ => {
            let firsts: BTreeSet<&str> = keys.iter().filter_map(|k| k.split('.').next()).collect();
            if firsts.len() == 1 {
                firsts.into_iter().next().unwrap().to_string()
            } else {
                format!("axis{}", i + 1)
            }
        }
    }
}

/// A label made from a value: a dataset name for data paths, the number or string otherwise.
pub(super) fn value_label(ov: &[(String, Value)]) -> String {
    if let Some((k, v)) = ov.iter().find(|(k, _)| k == "data.train") {
        return sanitize(&leaf_label(k, v));
    }
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in ov {
        let l = leaf_label(k, v);
        if !parts.contains(&l) {
            parts.push(l);
        }
    }
    sanitize(&parts.join("+"))
}

fn leaf_label(key: &str, v: &Value) -> String {
    match v {
        Value::String(s) if is_path_key(key) => dataset_label(Path::new(s)),
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => float_label(*f),
        Value::Boolean(b) => b.to_string(),
        Value::Array(items) => items.iter().map(|x| leaf_label(key, x)).collect::<Vec<_>>().join("+"),
        Value::Table(t) => t.iter().map(|(k, x)| leaf_label(&format!("{key}.{k}"), x)).collect::<Vec<_>>().join("+"),
        Value::Datetime(d) => d.to_string(),
    }
}

/// The file's stem, or its folder's name for the usual split names (`yesno/train.jsonl` -> yesno).
pub fn dataset_label(p: &Path) -> String {
    let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let generic = ["train", "training", "validation", "valid", "val", "dev", "test", "data"];
    if generic.contains(&stem.as_str()) {
        if let Some(d) = p.parent().and_then(|d| d.file_name()) {
            return d.to_string_lossy().into_owned();
        }
    }
    stem
}

/// 0.0005 -> "0.0005", 5e-5 -> "5e-5", 3.0 -> "3" (exponents below 1e-4 and from 1e6).
pub fn float_label(f: f64) -> String {
    if f != 0.0 && (f.abs() < 1e-4 || f.abs() >= 1e6) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

/// Folder-safe: anything but letters, digits and `._+-` becomes `-`; at most 40 characters.
fn sanitize(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '-' }).collect();
    out = out.trim_start_matches('.').to_string();
    if out.len() > 40 {
        out.truncate(40);
    }
    if out.is_empty() {
        "value".into()
    } else {
        out
    }
}

/// Made-up labels that collide get `-2`, `-3`, ... (in value order).
pub(super) fn unique_labels(labels: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    labels
        .into_iter()
        .map(|l| {
            let mut cand = l.clone();
            let mut k = 2;
            while !seen.insert(cand.clone()) {
                cand = format!("{l}-{k}");
                k += 1;
            }
            cand
        })
        .collect()
}

pub(super) fn point_name(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return "base".into();
    }
    labels.iter().map(|(a, l)| format!("{a}={l}")).collect::<Vec<_>>().join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_values() {
        assert_eq!(float_label(5e-4), "0.0005");
        assert_eq!(float_label(5e-5), "5e-5");
        assert_eq!(float_label(2.0), "2");
        assert_eq!(dataset_label(Path::new("/x/yesno/train.jsonl")), "yesno");
        assert_eq!(dataset_label(Path::new("/x/obqa-main.parquet")), "obqa-main");
        assert_eq!(value_label(&[("methods.list".into(), Value::Array(vec!["map".into(), "laplace".into()]))]), "map+laplace");
        assert_eq!(unique_labels(vec!["a".into(), "a".into(), "b".into(), "a".into()]), ["a", "a-2", "b", "a-3"]);
        assert_eq!(sanitize("a b/c"), "a-b-c");
    }
}
