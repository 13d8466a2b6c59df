//! Errors for dataset loading. Every variant names the file, the 1-based line or the 0-based
//! table row where there is one, the field (column), and what to do about it. Nothing in `crate::data` panics on user data.

use std::path::PathBuf;

/// Shows a path the way a user typed it (lossy for non-UTF-8 names).
pub(crate) fn show(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Where a record is: a line of a text file (JSONL, CSV; 1-based, as editors count) or a row of
/// a table (Parquet, Arrow; 0-based, as `dataset[i]` counts in Python).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    pub record: Record,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Line(usize),
    Row(usize),
}

impl Loc {
    pub fn line(file: &std::path::Path, line: usize) -> Self {
        Loc { file: file.to_path_buf(), record: Record::Line(line) }
    }

    pub fn row(file: &std::path::Path, row: usize) -> Self {
        Loc { file: file.to_path_buf(), record: Record::Row(row) }
    }

    /// "missing field `x`" in a JSON record; in a table, whose rows all have every column, the
    /// cell is null or the column absent.
    pub fn missing(&self, field: &str) -> String {
        match self.record {
            Record::Line(_) => format!("missing field `{field}`"),
            Record::Row(_) => format!("column `{field}` is missing or null"),
        }
    }

    /// What a record's parts are called: a JSON object has fields, a table has columns.
    pub fn noun(&self) -> &'static str {
        match self.record {
            Record::Line(_) => "field",
            Record::Row(_) => "column",
        }
    }
}

/// `train.jsonl:17` or `train.parquet, row 17`.
impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record {
            Record::Line(l) => write!(f, "{}:{l}", show(&self.file)),
            Record::Row(r) => write!(f, "{}, row {r}", show(&self.file)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    // The reason is in the message, not a `source`: `{:#}` would print it twice.
    #[error("{}: cannot read the file: {error}; check the path in the [data] section", show(file))]
    Io { file: PathBuf, error: std::io::Error },

    #[error("{}: the file has no records (it is empty or holds only blank lines); point [data] at a file with at least one item", show(file))]
    EmptyFile { file: PathBuf },

    #[error("{at}: the line is not valid UTF-8; save the file as UTF-8")]
    InvalidUtf8 { at: Loc },

    #[error("{at}: malformed JSON: {message}; each line must hold one JSON object (JSONL)")]
    Json { at: Loc, message: String },

    #[error("{at}: {}; {hint}", at.missing(field))]
    MissingField { at: Loc, field: String, hint: String },

    #[error(
        "{at}: {} `{field}` should be {expected}, found {found}", at.noun()
    )]
    WrongType { at: Loc, field: String, expected: String, found: String },

    #[error("{at}: {} `{field}` is invalid: {message}", at.noun())]
    InvalidValue { at: Loc, field: String, message: String },

    #[error("{at}: {} `{field}`: answer index {index} is out of range for {n} choices (indices are 0-based: 0..={max}); fix the answer", at.noun(), max = n.saturating_sub(1))]
    AnswerOutOfRange { at: Loc, field: String, index: i64, n: usize },

    #[error("{at}: {} `{field}`: answer {letter:?} is not among the choice labels {labels:?}; fix the answer", at.noun())]
    UnknownAnswerLabel { at: Loc, field: String, letter: String, labels: Vec<String> },

    #[error("{at}: {} `{field}`: {n} choices, more than the maximum of {max}; split the item or drop choices", at.noun())]
    TooManyChoices { at: Loc, field: String, n: usize, max: usize },

    #[error(
        "{at}: {} `{field}`: {n} choice(s); an item needs at least 2 choices", at.noun()
    )]
    TooFewChoices { at: Loc, field: String, n: usize },

    #[error("{at}: {} `{field}`: label {label:?} is not in the label set {labels:?}; add it to the label set or fix the item", at.noun())]
    UnknownClassLabel { at: Loc, field: String, label: String, labels: Vec<String> },

    #[error("{}: {} `{field}`: the file has {n} distinct label(s) {labels:?}; classification needs between 2 and {max}", show(file), if *table { "column" } else { "field" })]
    BadLabelSet { file: PathBuf, field: String, table: bool, n: usize, labels: Vec<String>, max: usize },

    #[error("{}: missing CSV column `{column}` (found columns: {found:?}); {hint}", show(file))]
    CsvMissingColumn { file: PathBuf, column: String, found: Vec<String>, hint: String },

    #[error("{}{}: CSV error: {message}; fix the CSV (quote fields that hold commas or newlines)", show(file), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Csv { file: PathBuf, line: Option<usize>, message: String },

    #[error("{at}: cannot tell the dataset format from the first record (keys: {keys:?}); set [data] format to one of auto, mcq, arc, boolq, winogrande, classification, csv")]
    UnknownFormat { at: Loc, keys: Vec<String> },

    #[error("{}: cannot read the table: {message}; {hint}", show(file))]
    Table { file: PathBuf, message: String, hint: String },

    #[error("{}: missing column `{column}` (the table's columns: {found:?}); {hint}", show(file))]
    MissingColumn { file: PathBuf, column: String, found: Vec<String>, hint: String },

    #[error("{}: column `{column}` has the Arrow type {found}, which no dataset format reads; {hint}", show(file))]
    UnsupportedColumnType { file: PathBuf, column: String, found: String, hint: String },

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
