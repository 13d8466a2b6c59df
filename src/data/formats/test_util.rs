//! Helpers for the format tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::load_items;
use crate::data::Format;

/// Writes `content` to `dir/name` and returns the path.
pub(crate) fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::File::create(&p).unwrap().write_all(content).unwrap();
    p
}

pub(crate) fn err(path: &Path, format: Format) -> String {
    match load_items(path, format) {
        Ok(items) => panic!("expected an error, got {} items", items.len()),
        Err(e) => e.to_string(),
    }
}

/// The message names the file, the line and the field.
pub(crate) fn assert_located(msg: &str, file: &str, line: usize, field: &str) {
    assert!(msg.contains(&format!("{file}:{line}:")), "no {file}:{line} in: {msg}");
    assert!(msg.contains(&format!("`{field}`")), "no field `{field}` in: {msg}");
}
