//! Hugging Face data files: a Parquet file (the hub's `*.parquet`), an Arrow IPC file or stream
//! (`*.arrow`), or a `save_to_disk` folder (Arrow IPC stream files listed in `state.json`, beside
//! `dataset_info.json`). The Apache Arrow crates read them; each row becomes a JSON object (a
//! column per key, Arrow lists as arrays, structs as objects) that the formats' parsers read as
//! they read a JSONL line, so the tasks' columns are detected and checked the same way.
//!
//! Rows are numbered from 0, as `dataset[i]` counts them; a folder's rows run on across its
//! files in `state.json`'s order.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType};
use serde_json::{Map, Number, Value};

use super::record::{Ctx, Rec};
use crate::data::error::{DataError, Loc};

/// Whether `path` is read as a table: a `.parquet` or `.arrow` file, or a folder.
pub fn is_table_path(path: &Path) -> bool {
    path.is_dir()
        || path.extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            e == "parquet" || e == "arrow"
        })
}

/// Every row of the table at `path`.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<Rec>, DataError> {
    read(path, None)
}

/// The first row only (for format detection).
pub(crate) fn first_row(path: &Path) -> Result<Rec, DataError> {
    read(path, Some(1))?.into_iter().next().ok_or_else(|| DataError::EmptyFile { file: path.to_path_buf() })
}

thread_local! {
    /// Set while this thread reads a table: a panic of the Arrow readers is then reported as an
    /// error naming the file, not printed by the panic hook.
    static READING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent for a thread reading a table and hands every
/// other panic to the hook that was there before.
fn quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !READING.with(|r| r.get()) {
                previous(info)
            }
        }));
    });
}

fn read(path: &Path, limit: Option<usize>) -> Result<Vec<Rec>, DataError> {
    // The readers check what they decode, but not everything: arrow-ipc 60 panics in
    // arrow-buffer (a slice beyond its buffer) on some damaged streams
    // (tests/fuzz_regressions/dataset_arrow/crash-*). Such a panic must not take the program
    // down: it becomes an error naming the file.
    quiet_hook();
    READING.with(|r| r.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_inner(path, limit)));
    READING.with(|r| r.set(false));
    let rows = r.unwrap_or_else(|_| Err(table_error(path, "the Arrow reader failed on a malformed file".into(), "the file is damaged; download it again")))?;
    if rows.is_empty() {
        return Err(DataError::EmptyFile { file: path.to_path_buf() });
    }
    Ok(rows)
}

/// As `read_rows`, without the guard against a panicking reader (the fuzz targets call this).
pub(crate) fn read_inner(path: &Path, limit: Option<usize>) -> Result<Vec<Rec>, DataError> {
    let mut rows = Rows { file: path.to_path_buf(), out: Vec::new(), limit, dropped: Vec::new(), columns: Vec::new() };
    if path.is_dir() {
        for f in folder_files(path)? {
            read_file(&f, &mut rows)?;
            if rows.full() {
                break;
            }
        }
    } else {
        read_file(path, &mut rows)?;
    }
    // A column no format reads was left out of the rows; a parser asking for it is told why.
    let dropped = rows.dropped;
    let mut out = rows.out;
    let columns = std::sync::Arc::new(rows.columns);
    for r in &mut out {
        r.ctx.dropped = dropped.clone();
        r.ctx.columns = Some(columns.clone());
    }
    Ok(out)
}

/// What is being collected: rows from one or several files of one table.
struct Rows {
    /// The table as the user named it (file or folder): errors name it.
    file: PathBuf,
    out: Vec<Rec>,
    limit: Option<usize>,
    /// Columns of a type no format reads, with that type.
    dropped: Vec<(String, String)>,
    /// Every column, in the schema's order.
    columns: Vec<String>,
}

impl Rows {
    fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.out.len() >= l)
    }
}

fn table_error(file: &Path, message: String, hint: &str) -> DataError {
    DataError::Table { file: file.to_path_buf(), message, hint: hint.to_string() }
}

/// The data files of a `save_to_disk` folder: those `state.json` lists, in order, else every
/// `*.arrow` file in name order.
fn folder_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    if dir.join("dataset_dict.json").is_file() {
        let splits = std::fs::read_dir(dir)
            .map(|rd| {
                let mut v: Vec<String> = rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        return Err(table_error(
            dir,
            format!("this is a DatasetDict folder holding the splits {splits:?}, not one split"),
            "give the folder of one split (e.g. its `validation` sub-folder)",
        ));
    }
    let state = dir.join("state.json");
    if state.is_file() {
        let text = std::fs::read_to_string(&state).map_err(|error| DataError::Io { file: state.clone(), error })?;
        let bad = |m: String| table_error(&state, m, "state.json should list the data files as save_to_disk writes it");
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let files = v.get("_data_files").and_then(Value::as_array).ok_or_else(|| bad("no `_data_files` list".into()))?;
        let mut out = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let name = f.get("filename").and_then(Value::as_str).ok_or_else(|| bad(format!("`_data_files[{i}]` has no `filename`")))?;
            // A name, not a path: state.json cannot point outside its folder.
            if name.contains(['/', '\\']) || name == ".." || name.is_empty() {
                return Err(bad(format!("`_data_files[{i}].filename` {name:?} is not a file name")));
            }
            let p = dir.join(name);
            if !p.is_file() {
                return Err(table_error(
                    dir,
                    format!("state.json lists {name}, which is not in the folder"),
                    "the folder is incomplete; save or download it again",
                ));
            }
            out.push(p);
        }
        if out.is_empty() {
            return Err(bad("`_data_files` is empty".into()));
        }
        return Ok(out);
    }
    let mut arrows: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| DataError::Io { file: dir.to_path_buf(), error })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "arrow"))
        .collect();
    arrows.sort();
    if arrows.is_empty() {
        return Err(table_error(
            dir,
            "the folder has no state.json and no .arrow file".into(),
            "a data path that is a folder must be a Hugging Face save_to_disk folder (data-*.arrow, dataset_info.json, state.json)",
        ));
    }
    Ok(arrows)
}

/// Reads one Parquet or Arrow file into `rows`.
fn read_file(path: &Path, rows: &mut Rows) -> Result<(), DataError> {
    let io = |error| DataError::Io { file: path.to_path_buf(), error };
    let mut f = File::open(path).map_err(io)?;
    let mut magic = [0u8; 6];
    let n = f.read(&mut magic).map_err(io)?;
    drop(f);
    let magic = &magic[..n];
    let is_parquet = magic.starts_with(b"PAR1");
    let ext_parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if is_parquet || (ext_parquet && n < 4) {
        return read_parquet(path, rows);
    }
    if ext_parquet {
        return Err(table_error(
            path,
            "not a Parquet file (it does not start with PAR1)".into(),
            "give a .parquet file as written by pyarrow or the Hugging Face hub",
        ));
    }
    let f = File::open(path).map_err(io)?;
    let reader = std::io::BufReader::new(f);
    let hint = "give an Arrow IPC file as written by Hugging Face datasets (save_to_disk) or pyarrow";
    if magic.starts_with(b"ARROW1") {
        let r = arrow_ipc::reader::FileReader::try_new(reader, None).map_err(|e| table_error(path, format!("not a readable Arrow IPC file: {e}"), hint))?;
        collect(path, "Arrow IPC file", r, rows)
    } else {
        let r = arrow_ipc::reader::StreamReader::try_new(reader, None)
            .map_err(|e| table_error(path, format!("not a readable Arrow IPC stream: {}", arrow_msg(&e)), hint))?;
        collect(path, "Arrow IPC stream", r, rows)
    }
}

fn read_parquet(path: &Path, rows: &mut Rows) -> Result<(), DataError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let f = File::open(path).map_err(|error| DataError::Io { file: path.to_path_buf(), error })?;
    let hint = "the file is not a complete Parquet file (truncated or damaged?); download it again";
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| table_error(path, format!("not a readable Parquet file: {e}"), hint))?;
    let builder = match rows.limit {
        Some(l) => builder.with_batch_size(l.max(1)),
        None => builder,
    };
    let reader = builder.build().map_err(|e| table_error(path, format!("cannot read its row groups: {e}"), hint))?;
    collect(path, "Parquet file", reader, rows)
}

fn arrow_msg(e: &ArrowError) -> String {
    e.to_string()
}

/// Turns the record batches of one file into rows.
fn collect(path: &Path, what: &str, batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>, rows: &mut Rows) -> Result<(), DataError> {
    for b in batches {
        let b = b.map_err(|e| {
            table_error(
                path,
                format!("reading the {what} after row {}: {}", rows.out.len(), arrow_msg(&e)),
                "the file is truncated or damaged; download it again",
            )
        })?;
        let schema = b.schema();
        let mut columns: Vec<(&str, &dyn Array)> = Vec::new();
        for (field, col) in schema.fields().iter().zip(b.columns()) {
            let name = field.name().as_str();
            if !rows.columns.iter().any(|c| c == name) {
                rows.columns.push(name.to_string());
            }
            if readable(field.data_type()) {
                columns.push((name, col.as_ref()));
            } else if !rows.dropped.iter().any(|(c, _)| c == name) {
                rows.dropped.push((name.to_string(), field.data_type().to_string()));
            }
        }
        for i in 0..b.num_rows() {
            if rows.full() {
                return Ok(());
            }
            let at = Loc::row(&rows.file, rows.out.len());
            let mut obj = Map::new();
            for (name, col) in &columns {
                obj.insert(name.to_string(), cell(*col, i));
            }
            rows.out.push(Rec { ctx: Ctx::new(at), obj });
        }
    }
    Ok(())
}

/// The Arrow types a row can hold: what the datasets' features become (strings, booleans,
/// integers, floats, lists, structs, dictionary-encoded strings).
fn readable(dt: &DataType) -> bool {
    match dt {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => readable(f.data_type()),
        DataType::Struct(fs) => fs.iter().all(|f| readable(f.data_type())),
        DataType::Dictionary(k, v) => k.is_dictionary_key_type() && readable(v),
        _ => false,
    }
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

/// Row `i` of `a` as JSON (`readable` types only).
fn cell(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float16 => float(a.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::List(_) => list(a.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => list(a.as_list::<i64>().value(i).as_ref()),
        DataType::FixedSizeList(_, _) => list(a.as_fixed_size_list().value(i).as_ref()),
        DataType::Struct(_) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (f, c) in s.fields().iter().zip(s.columns()) {
                m.insert(f.name().clone(), cell(c.as_ref(), i));
            }
            Value::Object(m)
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let k = d.normalized_keys();
            match k.get(i) {
                Some(&k) if k < d.values().len() => cell(d.values().as_ref(), k),
                _ => Value::Null,
            }
        }
        // `readable` lets no other type through.
        _ => Value::Null,
    }
}

fn list(a: &dyn Array) -> Value {
    Value::Array((0..a.len()).map(|j| cell(a, j)).collect())
}
