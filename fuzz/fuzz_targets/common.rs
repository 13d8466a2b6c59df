//! The fuzz checks, shared by the cargo-fuzz targets (fuzz/fuzz_targets/*.rs) and the replay
//! test of the main crate (tests/fuzz_regressions.rs, which includes this file by path).
//!
//! Each check feeds arbitrary bytes to a parser; the parser may refuse them with an error, but
//! must never panic, and what it accepts must make sense: every item has 2..=MAX_CHOICES
//! choices, as many answer labels, a label among them and a prompt ending with `Answer:`; a
//! configuration that parses writes out (config.toml of a run) and parses back to itself.

#![allow(dead_code)]

use laplace_lora::data::{self, Format, Item};
use laplace_lora::experiment::ExperimentConfig;
use std::path::PathBuf;

/// A scratch file per process and thread (in memory where /dev/shm exists).
fn scratch(ext: &str, bytes: &[u8]) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let id = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let p = base.join(format!("laplace-lora-fuzz-{}-{id}.{ext}", std::process::id()));
    std::fs::write(&p, bytes).expect("writing the scratch file");
    p
}

fn check_items(items: &[Item], what: &str) {
    for it in items {
        let k = it.num_choices();
        assert!((2..=data::MAX_CHOICES).contains(&k), "{what}: {k} choices accepted: {it:?}");
        assert_eq!(it.choices.len(), k, "{what}: choices and answer labels differ: {it:?}");
        assert!(it.label < k, "{what}: label {} out of range: {it:?}", it.label);
        assert!(it.prompt.ends_with("Answer:"), "{what}: prompt does not end with Answer: {it:?}");
        assert!(!it.id.is_empty(), "{what}: empty id: {it:?}");
    }
}

/// Every JSONL parser (detection, each format, the classification label set) on one file.
pub fn dataset_jsonl(bytes: &[u8]) {
    let p = scratch("jsonl", bytes);
    let _ = data::detect_format(&p);
    for f in [Format::Auto, Format::Mcq, Format::Arc, Format::Boolq, Format::Winogrande, Format::Classification] {
        if let Ok(items) = data::load_items(&p, f) {
            check_items(&items, f.as_str());
        }
    }
    if let Ok(labels) = data::classification_labels(&p) {
        if let Ok(items) = data::load_items_with_labels(&p, Format::Classification, Some(&labels)) {
            check_items(&items, "classification with its labels");
        }
    }
    let _ = std::fs::remove_file(&p);
}

/// The CSV parser, by format name and by detection from the extension.
pub fn dataset_csv(bytes: &[u8]) {
    let p = scratch("csv", bytes);
    for f in [Format::Csv, Format::Auto] {
        if let Ok(items) = data::load_items(&p, f) {
            check_items(&items, "csv");
        }
    }
    let _ = std::fs::remove_file(&p);
}

/// The configuration parser: text that parses writes out and parses back to the same thing.
pub fn config_toml(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(cfg) = ExperimentConfig::from_toml_str(text) {
        let out = cfg.to_toml().expect("a parsed configuration serialises");
        let back = ExperimentConfig::from_toml_str(&out).unwrap_or_else(|e| panic!("the written configuration does not parse back: {e:#}\n{out}"));
        assert_eq!(back, cfg, "the configuration changed on a round trip:\n{out}");
    }
}

/// A Hugging Face table file (Parquet or Arrow IPC) through the Arrow readers and every format.
/// The loaders guard against a panic of the readers (arrow-ipc 60 has one on some damaged
/// streams: `dataset_arrow/crash-*`), so this checks what a user meets; set
/// `FUZZ_TABLE_UNGUARDED=1` to hunt for the readers' own panics (`data::read_table_unguarded`).
fn dataset_table(bytes: &[u8], ext: &str) {
    let p = scratch(ext, bytes);
    if std::env::var_os("FUZZ_TABLE_UNGUARDED").is_some() {
        let _ = data::read_table_unguarded(&p);
    }
    for f in [Format::Auto, Format::Mcq, Format::Arc, Format::Boolq, Format::Winogrande, Format::Classification] {
        if let Ok(items) = data::load_items(&p, f) {
            check_items(&items, f.as_str());
        }
    }
    let _ = std::fs::remove_file(&p);
}

pub fn dataset_parquet(bytes: &[u8]) {
    dataset_table(bytes, "parquet")
}

pub fn dataset_arrow(bytes: &[u8]) {
    dataset_table(bytes, "arrow")
}
