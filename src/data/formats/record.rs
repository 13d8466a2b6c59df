//! Field access with located errors: every record (a JSONL line, a CSV row, a table row) is a
//! JSON object and a `Loc`; the parsers read fields through `Ctx` so that each error names the
//! file, the line or row, and the field.

use std::path::Path;

use serde_json::{Map, Value};

use crate::data::error::{DataError, Loc};
use crate::data::prompt::{letter_labels, mcq_prompt, LETTERS};
use crate::data::{Item, MAX_CHOICES};

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// `train.jsonl:17` for a line, `train.parquet#17` for a table row.
pub(crate) fn default_id(at: &Loc) -> String {
    match at.record {
        crate::data::error::Record::Line(l) => format!("{}:{l}", file_name(&at.file)),
        crate::data::error::Record::Row(r) => format!("{}#{r}", file_name(&at.file)),
    }
}

// ---------------------------------------------------------------------------------------------
// Field access with located errors

/// Where a record came from, for the errors of its fields.
pub(crate) struct Ctx {
    pub at: Loc,
    /// A table's columns that were left out because no format reads their Arrow type (name,
    /// type): a parser asking for one is told why it is not there.
    pub dropped: Vec<(String, String)>,
    /// A table's columns (every row has each): a field absent from them is a missing column,
    /// not a null cell.
    pub columns: Option<std::sync::Arc<Vec<String>>>,
}

/// One record of a dataset file: a JSONL line, or a table row turned into the same JSON object
/// (columns as keys, Arrow lists as arrays, structs as objects).
pub(crate) struct Rec {
    pub ctx: Ctx,
    pub obj: Map<String, Value>,
}

pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            format!("the string {short:?}")
        }
        Value::Array(a) => format!("a list of {} element(s)", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

impl Ctx {
    pub(crate) fn new(at: Loc) -> Self {
        Ctx { at, dropped: Vec::new(), columns: None }
    }

    pub(crate) fn missing(&self, field: &str, hint: &str) -> DataError {
        let root = field.split(['.', '[']).next().unwrap_or(field);
        if let Some((column, ty)) = self.dropped.iter().find(|(c, _)| c == root) {
            return DataError::UnsupportedColumnType {
                file: self.at.file.clone(),
                column: column.clone(),
                found: ty.clone(),
                hint: format!("{hint} (strings, numbers, booleans, and lists or structs of them)"),
            };
        }
        if let Some(cols) = self.columns.as_ref().filter(|c| !c.iter().any(|c| c == root)) {
            return DataError::MissingColumn { file: self.at.file.clone(), column: root.to_string(), found: cols.to_vec(), hint: hint.to_string() };
        }
        DataError::MissingField { at: self.at.clone(), field: field.to_string(), hint: hint.to_string() }
    }

    pub(crate) fn wrong(&self, field: &str, expected: &str, found: &Value) -> DataError {
        DataError::WrongType { at: self.at.clone(), field: field.to_string(), expected: expected.to_string(), found: describe(found) }
    }

    pub(crate) fn invalid(&self, field: &str, message: impl Into<String>) -> DataError {
        DataError::InvalidValue { at: self.at.clone(), field: field.to_string(), message: message.into() }
    }

    pub(crate) fn parse_object(&self, text: &str) -> Result<Map<String, Value>, DataError> {
        let v: Value = serde_json::from_str(text).map_err(|e| DataError::Json { at: self.at.clone(), message: e.to_string() })?;
        match v {
            Value::Object(m) => Ok(m),
            other => Err(self.wrong("<record>", "a JSON object", &other)),
        }
    }

    /// A required string field (present, not null).
    pub(crate) fn req_str(&self, obj: &Map<String, Value>, field: &str, hint: &str) -> Result<String, DataError> {
        self.req_str_named(obj.get(field), field, hint)
    }

    pub(crate) fn req_str_named(&self, v: Option<&Value>, field: &str, hint: &str) -> Result<String, DataError> {
        match v {
            None | Some(Value::Null) => Err(self.missing(field, hint)),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.wrong(field, "a string", other)),
        }
    }

    /// An optional string field; numbers are accepted and printed (ids are often numbers).
    pub(crate) fn opt_str_or_num(&self, obj: &Map<String, Value>, field: &str) -> Result<Option<String>, DataError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.wrong(field, "a string or a number", other)),
        }
    }

    pub(crate) fn id(&self, obj: &Map<String, Value>, fields: &[&str]) -> Result<String, DataError> {
        for f in fields {
            if let Some(id) = self.opt_str_or_num(obj, f)? {
                return Ok(id);
            }
        }
        Ok(default_id(&self.at))
    }

    /// Checks 2 <= n <= MAX_CHOICES.
    pub(crate) fn check_choice_count(&self, field: &str, n: usize) -> Result<(), DataError> {
        if n > MAX_CHOICES {
            return Err(DataError::TooManyChoices { at: self.at.clone(), field: field.to_string(), n, max: MAX_CHOICES });
        }
        if n < 2 {
            return Err(DataError::TooFewChoices { at: self.at.clone(), field: field.to_string(), n });
        }
        Ok(())
    }

    pub(crate) fn index_in_range(&self, field: &str, index: i64, n: usize) -> Result<usize, DataError> {
        if index < 0 || index as u64 >= n as u64 {
            Err(DataError::AnswerOutOfRange { at: self.at.clone(), field: field.to_string(), index, n })
        } else {
            Ok(index as usize)
        }
    }

    /// Generic answer: a 0-based index (number or digit string) or a letter "A".."H".
    pub(crate) fn parse_answer(&self, field: &str, v: Option<&Value>, n: usize) -> Result<usize, DataError> {
        const EXPECTED: &str = "a 0-based choice index or a letter A..H";
        match v {
            None | Some(Value::Null) => Err(self.missing(field, "give the correct choice as a 0-based index or a letter A..H")),
            Some(Value::Number(num)) => match num.as_i64() {
                Some(i) => self.index_in_range(field, i, n),
                None => Err(self.wrong(field, EXPECTED, v.unwrap())),
            },
            Some(Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() {
                    return Err(self.missing(field, "give the correct choice as a 0-based index or a letter A..H"));
                }
                if t.chars().all(|c| c.is_ascii_digit()) {
                    return match t.parse::<i64>() {
                        Ok(i) => self.index_in_range(field, i, n),
                        Err(_) => Err(self.wrong(field, EXPECTED, v.unwrap())),
                    };
                }
                let up = t.to_ascii_uppercase();
                if let Some(pos) = LETTERS.iter().position(|l| *l == up) {
                    if pos < n {
                        return Ok(pos);
                    }
                    return Err(DataError::UnknownAnswerLabel {
                        at: self.at.clone(),
                        field: field.to_string(),
                        letter: t.to_string(),
                        labels: LETTERS.iter().take(n).map(|s| s.to_string()).collect(),
                    });
                }
                Err(self.wrong(field, EXPECTED, v.unwrap()))
            }
            Some(other) => Err(self.wrong(field, EXPECTED, other)),
        }
    }

    /// A list of choice texts (strings; numbers are printed).
    pub(crate) fn choice_list(&self, field: &str, v: Option<&Value>) -> Result<Vec<String>, DataError> {
        let arr = match v {
            None | Some(Value::Null) => return Err(self.missing(field, "give the choices as a list of strings")),
            Some(Value::Array(a)) => a,
            Some(other) => return Err(self.wrong(field, "a list of strings", other)),
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, c) in arr.iter().enumerate() {
            match c {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                other => return Err(self.wrong(&format!("{field}[{i}]"), "a string", other)),
            }
        }
        self.check_choice_count(field, out.len())?;
        Ok(out)
    }
}

pub(crate) fn mcq_item(id: String, context: Option<&str>, question: &str, choices: Vec<String>, label: usize) -> Item {
    Item { id, prompt: mcq_prompt(context, question, &choices), answer_labels: letter_labels(choices.len()), choices, label }
}

impl Ctx {
    /// A list of strings without the choice-count check.
    pub(crate) fn choice_list_unchecked(&self, field: &str, v: Option<&Value>) -> Result<Vec<String>, DataError> {
        let arr = match v {
            None | Some(Value::Null) => return Err(self.missing(field, "give a list of strings")),
            Some(Value::Array(a)) => a,
            Some(other) => return Err(self.wrong(field, "a list of strings", other)),
        };
        arr.iter()
            .enumerate()
            .map(|(i, c)| match c {
                Value::String(s) => Ok(s.trim().to_string()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(self.wrong(&format!("{field}[{i}]"), "a string", other)),
            })
            .collect()
    }
}
