//! Explicit column names (`question_column`, `choices_column`, ... in `[data]`) for files whose
//! columns have other names than the ones the formats detect. Each named column is moved to the
//! name the record's format reads before parsing, so every format check and error applies as
//! usual.

use serde_json::{Map, Value};

use super::record::Rec;
use crate::data::error::DataError;
use crate::data::Format;

/// The columns (JSON fields, CSV headers) to read instead of the standard names. `None`: the
/// standard name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnKeys {
    /// The question (WinoGrande: the sentence with its blank).
    pub question: Option<String>,
    /// The choices: a list of strings, or ARC's `{text: [...], label: [...]}`.
    pub choices: Option<String>,
    /// The answer: an index or letter (ARC: the label of the right choice; BoolQ: a boolean;
    /// classification: the class label).
    pub answer: Option<String>,
    /// A context shown before the question (BoolQ: the passage).
    pub context: Option<String>,
    /// The item's id.
    pub id: Option<String>,
    /// Classification: the text to classify.
    pub text: Option<String>,
}

/// What a [`ColumnKeys`] entry is called in `[data]`, for messages.
const KEY_NAMES: [&str; 6] = ["question_column", "choices_column", "answer_column", "context_column", "id_column", "text_column"];

impl ColumnKeys {
    pub fn is_empty(&self) -> bool {
        self.entries().iter().all(|(_, c)| c.is_none())
    }

    fn entries(&self) -> [(usize, Option<&str>); 6] {
        [
            (0, self.question.as_deref()),
            (1, self.choices.as_deref()),
            (2, self.answer.as_deref()),
            (3, self.context.as_deref()),
            (4, self.id.as_deref()),
            (5, self.text.as_deref()),
        ]
    }

    /// The standard name of entry `i` for records of `format`.
    fn target(i: usize, format: Format) -> &'static str {
        match (i, format) {
            (0, Format::Winogrande) => "sentence",
            (0, _) => "question",
            (1, _) => "choices",
            (2, Format::Arc) => "answerKey",
            (2, Format::Classification) => "label",
            (2, _) => "answer",
            (3, Format::Boolq) => "passage",
            (3, _) => "context",
            (4, Format::Winogrande) => "qID",
            (4, _) => "id",
            _ => "text",
        }
    }

    /// Checks the settings: names not empty, no column named twice.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (i, c) in self.entries() {
            let Some(c) = c else { continue };
            if c.trim().is_empty() {
                return Err(format!("data.{} is empty; remove it or name a column", KEY_NAMES[i]));
            }
            if let Some((other, _)) = seen.iter().find(|(_, s)| *s == c) {
                return Err(format!("data.{} and data.{other} both name the column {c:?}; each column can play one part", KEY_NAMES[i]));
            }
            seen.push((KEY_NAMES[i], c));
        }
        Ok(())
    }

    /// Moves the named columns of one record to the names `format` reads (a column of that name
    /// already there is replaced). A named column absent from the record is an error naming it
    /// and the `[data]` key that asked for it.
    pub(crate) fn apply(&self, rec: &mut Rec, format: Format) -> Result<(), DataError> {
        if self.is_empty() {
            return Ok(());
        }
        let obj: &mut Map<String, Value> = &mut rec.obj;
        let mut moved: Vec<(&'static str, Value)> = Vec::new();
        for (i, c) in self.entries() {
            let Some(c) = c else { continue };
            match obj.remove(c) {
                Some(v) => moved.push((Self::target(i, format), v)),
                None => return Err(rec.ctx.missing(c, &format!("data.{} names this column; fix the name or remove the key", KEY_NAMES[i]))),
            }
        }
        for (name, v) in moved {
            obj.insert(name.to_string(), v);
        }
        Ok(())
    }

    /// A CSV header as the CSV reader matches it: lower case, and renamed to its standard name
    /// when a key names it (CSV holds the multiple-choice columns only).
    pub(crate) fn csv_header(&self, header: &str) -> String {
        for (i, c) in self.entries() {
            if c.is_some_and(|c| c.trim().eq_ignore_ascii_case(header)) {
                return Self::target(i, Format::Csv).to_string();
            }
        }
        header.to_ascii_lowercase()
    }
}
