//! Errors for dataset loading. Every variant names the file, the 1-based line where there is one,
//! the field, and what to do about it. Nothing in `crate::data` panics on user data.

use std::path::PathBuf;

/// Shows a path the way a user typed it (lossy for non-UTF-8 names).
pub(crate) fn show(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    // The reason is in the message, not a `source`: `{:#}` would print it twice.
    #[error("{}: cannot read the file: {error}; check the path in the [data] section", show(file))]
    Io { file: PathBuf, error: std::io::Error },

    #[error("{}: the file has no records (it is empty or holds only blank lines); point [data] at a file with at least one item", show(file))]
    EmptyFile { file: PathBuf },

    #[error("{}:{line}: the line is not valid UTF-8; save the file as UTF-8", show(file))]
    InvalidUtf8 { file: PathBuf, line: usize },

    #[error("{}:{line}: malformed JSON: {message}; each line must hold one JSON object (JSONL)", show(file))]
    Json { file: PathBuf, line: usize, message: String },

    #[error("{}:{line}: missing field `{field}`; {hint}", show(file))]
    MissingField { file: PathBuf, line: usize, field: String, hint: String },

    #[error("{}:{line}: field `{field}` should be {expected}, found {found}", show(file))]
    WrongType { file: PathBuf, line: usize, field: String, expected: String, found: String },

    #[error("{}:{line}: field `{field}` is invalid: {message}", show(file))]
    InvalidValue { file: PathBuf, line: usize, field: String, message: String },

    #[error("{}:{line}: field `{field}`: answer index {index} is out of range for {n} choices (indices are 0-based: 0..={max}); fix the answer", show(file), max = n.saturating_sub(1))]
    AnswerOutOfRange { file: PathBuf, line: usize, field: String, index: i64, n: usize },

    #[error("{}:{line}: field `{field}`: answer {letter:?} is not among the choice labels {labels:?}; fix the answer", show(file))]
    UnknownAnswerLabel { file: PathBuf, line: usize, field: String, letter: String, labels: Vec<String> },

    #[error("{}:{line}: field `{field}`: {n} choices, more than the maximum of {max}; split the item or drop choices", show(file))]
    TooManyChoices { file: PathBuf, line: usize, field: String, n: usize, max: usize },

    #[error("{}:{line}: field `{field}`: {n} choice(s); an item needs at least 2 choices", show(file))]
    TooFewChoices { file: PathBuf, line: usize, field: String, n: usize },

    #[error("{}:{line}: field `label`: label {label:?} is not in the label set {labels:?}; add it to the label set or fix the item", show(file))]
    UnknownClassLabel { file: PathBuf, line: usize, label: String, labels: Vec<String> },

    #[error("{}: field `label`: the file has {n} distinct label(s) {labels:?}; classification needs between 2 and {max}", show(file))]
    BadLabelSet { file: PathBuf, n: usize, labels: Vec<String>, max: usize },

    #[error("{}: missing CSV column `{column}` (found columns: {found:?}); {hint}", show(file))]
    CsvMissingColumn { file: PathBuf, column: String, found: Vec<String>, hint: String },

    #[error("{}{}: CSV error: {message}; fix the CSV (quote fields that hold commas or newlines)", show(file), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Csv { file: PathBuf, line: Option<usize>, message: String },

    #[error("{}:{line}: cannot tell the dataset format from the first record (keys: {keys:?}); set [data] format to one of auto, mcq, arc, boolq, winogrande, classification, csv", show(file))]
    UnknownFormat { file: PathBuf, line: usize, keys: Vec<String> },

    #[error("unknown dataset format {0:?}; use one of auto, mcq, arc, boolq, winogrande, classification, csv")]
    BadFormatName(String),

    #[error("the {split} split is empty{detail}; provide more items or raise the cap (max_{split} in [data])")]
    EmptySplit { split: String, detail: String },

    #[error("invalid split settings: {0}")]
    InvalidSpec(String),

    #[error("answer label {label:?} is not a single token for this tokenizer: it becomes {tokens:?} (ids {ids:?}); choose labels that are one token each (e.g. \" A\", \" True\", \" yes\")")]
    AnswerNotOneToken { label: String, tokens: Vec<String>, ids: Vec<u32> },

    #[error("answer labels {first:?} and {second:?} both become token id {id}; the K answer tokens must be distinct")]
    DuplicateAnswerToken { first: String, second: String, id: u32 },

    #[error("tokenizer failed on answer label {label:?}: {message}")]
    Tokenizer { label: String, message: String },
}
