//! Dataset formats, one file per format family. A file's records (JSONL lines, table rows of a
//! Parquet file or a `save_to_disk` folder) become JSON objects with a location (`record.rs`);
//! the format's parser turns each into an `Item` or a `DataError` naming the file, the line or
//! row, and the field or column. CSV has its own reader (`csv.rs`).
//!
//! A new format: a parser file here, a `Format` variant, its detection rule in `detect`.

mod arc;
mod boolq;
mod classification;
mod columns;
mod csv;
mod hf_table;
mod mcq;
mod record;
mod text;
mod winogrande;

#[cfg(test)]
pub(crate) mod test_util;

use std::path::Path;

use serde_json::{Map, Value};

pub use columns::ColumnKeys;
pub use hf_table::is_table_path;

use super::error::DataError;
use super::{Format, Item};
use record::Rec;

/// How a file holds its records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Jsonl,
    Csv,
    Table,
}

fn container(path: &Path) -> Container {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if ext == "csv" {
        Container::Csv
    } else if is_table_path(path) {
        Container::Table
    } else {
        Container::Jsonl
    }
}

fn records(path: &Path) -> Result<Vec<Rec>, DataError> {
    match container(path) {
        Container::Table => hf_table::read_rows(path),
        _ => text::read_jsonl(path),
    }
}

fn first(path: &Path) -> Result<Rec, DataError> {
    match container(path) {
        Container::Table => hf_table::first_row(path),
        _ => text::first_jsonl(path),
    }
}

/// The format a record's keys say: ARC / OpenBookQA / CommonsenseQA (`question` object, or
/// `question` / `question_stem` with `choices {text, label}`), BoolQ (`passage`), WinoGrande
/// (`sentence`, `option1`), classification (`text`, `label`), generic multiple choice
/// (`question`, `choices` list: also MMLU's columns).
fn detect(obj: &Map<String, Value>) -> Option<Format> {
    let has = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
    let q = obj.get("question");
    let is_arc = q.is_some_and(|v| v.is_object())
        || (has("question_stem") && has("choices"))
        || (q.is_some_and(|v| v.is_string()) && obj.get("choices").is_some_and(|v| v.is_object()));
    if is_arc {
        Some(Format::Arc)
    } else if has("passage") && has("question") {
        Some(Format::Boolq)
    } else if has("sentence") && has("option1") {
        Some(Format::Winogrande)
    } else if has("text") && has("label") {
        Some(Format::Classification)
    } else if has("question") && has("choices") {
        Some(Format::Mcq)
    } else {
        None
    }
}

/// Detects the format from the extension (`.csv`) and the first record's keys.
pub fn detect_format(path: &Path) -> Result<Format, DataError> {
    detect_format_with(path, &ColumnKeys::default())
}

/// As `detect_format`, with the first record's columns renamed by `cols` first.
pub fn detect_format_with(path: &Path, cols: &ColumnKeys) -> Result<Format, DataError> {
    if container(path) == Container::Csv {
        return Ok(Format::Csv);
    }
    let mut rec = first(path)?;
    // The generic names first; the detected format's own names are applied when loading.
    cols.apply(&mut rec, Format::Mcq)?;
    detect(&rec.obj).ok_or_else(|| {
        let mut keys: Vec<String> = rec.obj.keys().cloned().collect();
        keys.sort();
        DataError::UnknownFormat { at: rec.ctx.at.clone(), keys }
    })
}

/// Loads a dataset file. `Format::Auto` detects the format first.
pub fn load_items(path: &Path, format: Format) -> Result<Vec<Item>, DataError> {
    load_items_opts(path, format, None, &ColumnKeys::default())
}

/// As `load_items`; for `classification`, `labels` fixes the label set and its order (so that the
/// train, validation and test files agree). Other formats ignore `labels`.
pub fn load_items_with_labels(path: &Path, format: Format, labels: Option<&[String]>) -> Result<Vec<Item>, DataError> {
    load_items_opts(path, format, labels, &ColumnKeys::default())
}

/// As `load_items_with_labels`, reading the columns `cols` names (`[data] question_column`, ...).
pub fn load_items_opts(path: &Path, format: Format, labels: Option<&[String]>, cols: &ColumnKeys) -> Result<Vec<Item>, DataError> {
    let format = match format {
        Format::Auto => detect_format_with(path, cols)?,
        f => f,
    };
    if format == Format::Csv {
        return csv::load_csv(path, cols);
    }
    let mut recs = records(path)?;
    for r in &mut recs {
        cols.apply(r, format)?;
    }
    let parse = match format {
        Format::Classification => return classification::load(path, recs, labels),
        Format::Mcq => mcq::parse_mcq,
        Format::Arc => arc::parse_arc,
        Format::Boolq => boolq::parse_boolq,
        Format::Winogrande => winogrande::parse_winogrande,
        Format::Auto | Format::Csv => unreachable!("resolved above"),
    };
    recs.iter().map(|r| parse(&r.ctx, &r.obj)).collect()
}

/// Reads a table's rows without the guard that turns a panic of the Arrow readers into an
/// error (for the fuzz targets, which must see such a panic); the number of rows.
pub fn read_table_unguarded(path: &Path) -> Result<usize, DataError> {
    hf_table::read_inner(path, None).map(|r| r.len())
}

/// The label set of a classification file: distinct labels in order of first appearance.
pub fn classification_labels(path: &Path) -> Result<Vec<String>, DataError> {
    classification_labels_with(path, &ColumnKeys::default())
}

/// As `classification_labels`, reading the columns `cols` names.
pub fn classification_labels_with(path: &Path, cols: &ColumnKeys) -> Result<Vec<String>, DataError> {
    let mut recs = records(path)?;
    for r in &mut recs {
        cols.apply(r, Format::Classification)?;
    }
    classification::label_set(recs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::formats::test_util::*;

    #[test]
    fn unknown_format_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "odd.jsonl", br#"{"foo": 1, "bar": 2}"#);
        let m = detect_format(&p).unwrap_err().to_string();
        assert!(m.contains("odd.jsonl:1:") && m.contains("[\"bar\", \"foo\"]"), "{m}");
        assert_eq!("Winogrande".parse::<Format>().unwrap(), Format::Winogrande);
        assert_eq!("openbookqa".parse::<Format>().unwrap(), Format::Arc);
        assert!("xml".parse::<Format>().unwrap_err().to_string().contains("\"xml\""));
        assert_eq!(serde_json::to_string(&Format::Classification).unwrap(), "\"classification\"");
        assert_eq!(serde_json::from_str::<Format>("\"boolq\"").unwrap(), Format::Boolq);
    }
}
