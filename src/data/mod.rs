//! Datasets: formats, prompt templates, splits, answer tokens.
//!
//! Every dataset reduces to K-way classification items (`Item`): a prompt ending with `Answer:`,
//! the K choices, the K answer labels whose single tokens are read at the last position, and the
//! index of the correct choice. See DESIGN.md section 4 for the formats.

mod error;
mod formats;
pub mod known;
mod prompt;
pub mod question;
pub mod section;
mod split;

use std::fmt;
use std::str::FromStr;

pub use error::{DataError, Loc, Record};
pub use formats::{
    classification_labels, classification_labels_with, detect_format, detect_format_with, is_table_path, load_items, load_items_opts, load_items_with_labels,
    read_table_unguarded, ColumnKeys,
};
pub use prompt::{boolq_prompt, classification_prompt, letter_labels, mcq_prompt, LETTERS};
pub use section::{load_eval_sets, load_splits, DataSection, EvalItems, EvalSet, EvalSets};
pub use split::{make_splits, SplitSpec, Splits};

/// The most choices an item may have (letters A..H).
pub const MAX_CHOICES: usize = 8;

/// A dataset file's format (`format` in the `[data]` section).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detect from the extension and the first record's keys.
    #[default]
    Auto,
    /// JSONL `question`, `choices`, `answer` (index or letter), optional `context`, `id`.
    Mcq,
    /// ARC / OpenBookQA JSONL as published (`question.stem`, `question.choices`, `answerKey`).
    Arc,
    /// BoolQ JSONL as published (`question`, `passage`, `answer` bool).
    Boolq,
    /// WinoGrande JSONL as published (`sentence`, `option1`, `option2`, `answer` "1"/"2").
    Winogrande,
    /// JSONL `text`, `label`.
    Classification,
    /// CSV with the mcq columns.
    Csv,
}

impl Format {
    pub const ALL: [Format; 7] = [Format::Auto, Format::Mcq, Format::Arc, Format::Boolq, Format::Winogrande, Format::Classification, Format::Csv];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Mcq => "mcq",
            Format::Arc => "arc",
            Format::Boolq => "boolq",
            Format::Winogrande => "winogrande",
            Format::Classification => "classification",
            Format::Csv => "csv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        // "openbookqa" is an alias: it shares ARC's layout.
        if t == "openbookqa" {
            return Ok(Format::Arc);
        }
        Format::ALL.iter().copied().find(|f| f.as_str() == t).ok_or_else(|| DataError::BadFormatName(s.to_string()))
    }
}

/// One K-way classification example.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// The file's id, else `<file name>:<line>` (e.g. `train.jsonl:17`).
    pub id: String,
    /// The full rendered prompt, ending with `Answer:` (no trailing space).
    pub prompt: String,
    /// The choice texts as shown.
    pub choices: Vec<String>,
    /// The strings whose single tokens are the K answer tokens (`" A"`, `" True"`, ...).
    pub answer_labels: Vec<String>,
    /// Index of the correct choice.
    pub label: usize,
}

impl Item {
    /// K, the number of classes.
    pub fn num_choices(&self) -> usize {
        self.answer_labels.len()
    }
}

/// The token ids of the K answer labels: each label encoded without special tokens must be exactly
/// one token, and the K tokens must be distinct.
pub fn answer_token_ids(tok: &tokenizers::Tokenizer, answer_labels: &[String]) -> Result<Vec<u32>, DataError> {
    let mut ids: Vec<u32> = Vec::with_capacity(answer_labels.len());
    for (i, label) in answer_labels.iter().enumerate() {
        let enc = tok.encode(label.as_str(), false).map_err(|e| DataError::Tokenizer { label: label.clone(), message: e.to_string() })?;
        if enc.get_ids().len() != 1 {
            return Err(DataError::AnswerNotOneToken { label: label.clone(), tokens: enc.get_tokens().to_vec(), ids: enc.get_ids().to_vec() });
        }
        let id = enc.get_ids()[0];
        if let Some(j) = ids.iter().position(|&x| x == id) {
            return Err(DataError::DuplicateAnswerToken { first: answer_labels[j].clone(), second: answer_labels[i].clone(), id });
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::str::FromStr;

    fn tiny_tokenizer() -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::from_str(crate::testing::TINY_BPE_TOKENIZER_JSON).expect("tiny tokenizer parses")
    }

    fn labels(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn answer_tokens_single_and_distinct() {
        let tok = tiny_tokenizer();
        assert_eq!(answer_token_ids(&tok, &labels(&[" A", " B", " True"])).unwrap(), vec![8, 9, 13]);

        let e = answer_token_ids(&tok, &labels(&[" A", " C"])).unwrap_err().to_string();
        assert!(e.contains("\" C\"") && e.contains("[\"Ġ\", \"C\"]") && e.contains("[0, 3]"), "{e}");

        let e = answer_token_ids(&tok, &labels(&[" A", " B", " A"])).unwrap_err().to_string();
        assert!(e.contains("\" A\" and \" A\" both become token id 8"), "{e}");
    }

    fn manifest_path(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    /// The shipped sample datasets load with `Format::Auto`, have the documented sizes and
    /// roughly balanced labels, and unique ids.
    #[test]
    fn shipped_sample_datasets_load() {
        let expect = [("compare4", Format::Mcq, 4usize), ("yesno", Format::Boolq, 2), ("cloze2", Format::Winogrande, 2)];
        for (name, format, k) in expect {
            let mut all_ids = std::collections::HashSet::new();
            for (split, min) in [("train", 100usize), ("validation", 50), ("test", 100)] {
                let p = manifest_path(&format!("sample_data/{name}/{split}.jsonl"));
                assert_eq!(detect_format(&p).unwrap(), format, "{}", p.display());
                let items = load_items(&p, Format::Auto).unwrap_or_else(|e| panic!("{e}"));
                assert!(items.len() >= min, "{name}/{split}: {} items", items.len());
                let mut counts = vec![0usize; k];
                for it in &items {
                    assert_eq!(it.num_choices(), k);
                    assert_eq!(it.choices.len(), k);
                    assert!(it.prompt.ends_with("\nAnswer:"), "{}", it.prompt);
                    assert!(all_ids.insert(it.id.clone()), "duplicate id {}", it.id);
                    counts[it.label] += 1;
                }
                let fair = items.len() as f64 / k as f64;
                for (c, &n) in counts.iter().enumerate() {
                    assert!((n as f64 - fair).abs() <= 0.2 * fair, "{name}/{split}: class {c} has {n} of {}", items.len());
                }
            }
            // the configs that point at them use the documented keys
            let cfg = std::fs::read_to_string(manifest_path(&format!("assets/configs/{name}.toml"))).unwrap();
            assert!(cfg.contains(&format!("train = \"sample_data/{name}/train.jsonl\"")), "{cfg}");
        }
        // one rendered prompt per dataset, pinned
        let first = |name: &str| load_items(&manifest_path(&format!("sample_data/{name}/train.jsonl")), Format::Auto).unwrap().remove(0);
        let c = first("compare4");
        assert!(c.prompt.starts_with("Select one of the choices that answers the following question: Which "), "{}", c.prompt);
        assert_eq!(c.answer_labels, labels(&[" A", " B", " C", " D"]));
        let y = first("yesno");
        assert!(y.prompt.starts_with("Answer the question with only True or False: ") && y.prompt.contains("\nContext: "));
        assert_eq!(y.answer_labels, labels(&[" True", " False"]));
        let w = first("cloze2");
        assert!(w.prompt.contains(" _ ") && w.prompt.contains("\nA. ") && w.prompt.contains("\nB. "), "{}", w.prompt);
    }

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{}\"", f.as_str()));
        }
    }
}
