#![no_main]
//! See common.rs: the checks are shared with the replay test tests/fuzz_regressions.rs.
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::dataset_arrow(data));
