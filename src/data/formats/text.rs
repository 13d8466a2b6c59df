//! Reading text files line by line, with UTF-8 checked per line so that errors name the line.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::record::{Ctx, Rec};
use crate::data::error::{DataError, Loc};

// ---------------------------------------------------------------------------------------------
// Reading lines

/// Reads a text file, returning its non-blank lines with their 1-based line numbers.
/// Checks UTF-8 line by line (so the error names the line), strips a leading BOM and `\r`.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<(usize, String)>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { file: path.to_path_buf(), error: source })?;
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let mut raw = raw;
        if i == 0 && raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
            raw = &raw[3..];
        }
        let s = std::str::from_utf8(raw).map_err(|_| DataError::InvalidUtf8 { at: Loc::line(path, line_no) })?;
        let s = s.strip_suffix('\r').unwrap_or(s);
        if !s.trim().is_empty() {
            out.push((line_no, s.to_string()));
        }
    }
    if out.is_empty() {
        return Err(DataError::EmptyFile { file: path.to_path_buf() });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Format detection

/// The first non-blank line of a file, with its number (reads only as far as needed).
pub(crate) fn first_record(path: &Path) -> Result<(usize, String), DataError> {
    let f = std::fs::File::open(path).map_err(|source| DataError::Io { file: path.to_path_buf(), error: source })?;
    let mut r = BufReader::new(f);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|source| DataError::Io { file: path.to_path_buf(), error: source })?;
        if n == 0 {
            return Err(DataError::EmptyFile { file: path.to_path_buf() });
        }
        line_no += 1;
        let mut raw: &[u8] = &buf;
        if line_no == 1 && raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
            raw = &raw[3..];
        }
        let s = std::str::from_utf8(raw).map_err(|_| DataError::InvalidUtf8 { at: Loc::line(path, line_no) })?;
        if !s.trim().is_empty() {
            return Ok((line_no, s.trim().to_string()));
        }
    }
}

/// A JSONL file's records: one JSON object a non-blank line.
pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<Rec>, DataError> {
    read_lines(path)?
        .into_iter()
        .map(|(line, text)| {
            let ctx = Ctx::new(Loc::line(path, line));
            let obj = ctx.parse_object(&text)?;
            Ok(Rec { ctx, obj })
        })
        .collect()
}

/// The first record of a JSONL file (reads only as far as needed).
pub(crate) fn first_jsonl(path: &Path) -> Result<Rec, DataError> {
    let (line, text) = first_record(path)?;
    let ctx = Ctx::new(Loc::line(path, line));
    let obj = ctx.parse_object(&text)?;
    Ok(Rec { ctx, obj })
}
