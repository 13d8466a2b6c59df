//! The fuzz targets' checks (fuzz/fuzz_targets/common.rs) as ordinary tests, so they run on the
//! stable toolchain in every `cargo test`:
//! - every file under tests/fuzz_regressions/<target>/ (inputs the fuzzer found, and seeds) is
//!   replayed through its target's check;
//! - a short seeded mutation loop over those inputs (the same checks, no libFuzzer), so the
//!   parsers' no-panic promise is exercised even where cargo-fuzz is not installed.
//!   `FUZZ_ITERATIONS=N` runs it longer.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("dataset_jsonl", common::dataset_jsonl),
    ("dataset_csv", common::dataset_csv),
    ("config_toml", common::config_toml),
    ("dataset_parquet", common::dataset_parquet),
    ("dataset_arrow", common::dataset_arrow),
];

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fuzz_regressions").join(target);
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

/// Runs a check and turns a panic into a message naming the input.
fn run_check(check: Check, what: &str, bytes: &[u8]) -> Result<(), String> {
    std::panic::catch_unwind(|| check(bytes)).map_err(|p| {
        let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
        format!("{what}: {msg}\ninput ({} bytes): {:?}", bytes.len(), String::from_utf8_lossy(bytes))
    })
}

#[test]
fn replay_fuzz_regression_inputs() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let ins = inputs(target);
        assert!(!ins.is_empty(), "no inputs for {target}");
        for (p, bytes) in ins {
            if let Err(e) = run_check(check, &p.display().to_string(), &bytes) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// xorshift64*: a small seeded generator (the mutation loop must be reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that matter to the parsers, spliced in by the mutator.
const DICT: &[&[u8]] = &[
    b"\"answer\": ",
    b"\"choices\": [",
    b"\"question\": ",
    b"\"label\": ",
    b"\"text\": ",
    b"\"answerKey\": \"",
    b"\"passage\": ",
    b"\"sentence\": \"_\"",
    b"\"option1\": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b"\n",
    b"\r\n",
    b"-1",
    b"99999999999999999999",
    b"1e400",
    b"null",
    b"true",
    b"\xff",
    b"\xef\xbb\xbf",
    b"|",
    b"\"\"",
    b"[max_train]",
    b"[train]\n",
    b"[laplace]\n",
    b"prior = ",
    b"rank = ",
    b"= -0.0",
    b"nan",
    b"inf",
    b"\"E\"",
    b"\"8\"",
    b"\x00",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below(16).min(v.len() - i);
                v.drain(i..i + n);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let d = DICT[rng.below(DICT.len())];
                v.splice(i..i, d.iter().copied());
            }
            3 if !v.is_empty() => {
                let a = rng.below(v.len());
                let b = a + rng.below((v.len() - a).min(64) + 1);
                let chunk = v[a..b].to_vec();
                let i = rng.below(v.len() + 1);
                v.splice(i..i, chunk);
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = b"0123456789-.eE\"{}[],:\n"[rng.below(22)];
            }
            _ => v.truncate(rng.below(v.len() + 1)),
        }
    }
    v
}

/// A seeded mutation loop over the regression inputs (a stand-in for libFuzzer where its
/// instrumented build is not at hand): byte flips, deletions, splices of parser tokens and of the
/// input itself, truncations; some inputs that pass join the pool, so mutations build on them.
/// `FUZZ_ITERATIONS=N` (default 300 per target) or `FUZZ_SECONDS=S` (per target) runs it longer;
/// `FUZZ_SAVE=1` writes each failing input to tests/fuzz_regressions/<target>/.
#[test]
fn seeded_mutation_loop_finds_no_panic() {
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    let seconds = env("FUZZ_SECONDS");
    let iterations = env("FUZZ_ITERATIONS").unwrap_or(if seconds.is_some() { u64::MAX } else { 300 });
    let save = std::env::var_os("FUZZ_SAVE").is_some();
    let mut failures = Vec::new();
    for (t, (target, check)) in TARGETS.iter().enumerate() {
        let mut pool: Vec<Vec<u8>> = inputs(target).into_iter().map(|(_, b)| b).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
        let start = std::time::Instant::now();
        let mut n = 0u64;
        while n < iterations && seconds.is_none_or(|s| start.elapsed().as_secs() < s) {
            let pick = rng.below(pool.len());
            let input = mutate(&mut rng, &pool[pick]);
            n += 1;
            match run_check(*check, &format!("{target} iteration {n}"), &input) {
                Ok(()) => {
                    if pool.len() < 2000 && rng.below(8) == 0 {
                        pool.push(input);
                    }
                }
                Err(e) => {
                    if save {
                        let h = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
                        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fuzz_regressions").join(target);
                        std::fs::write(dir.join(format!("crash-{h:016x}")), &input).unwrap();
                    }
                    failures.push(e);
                    if failures.len() > 20 {
                        break;
                    }
                }
            }
        }
        eprintln!("{target}: {n} inputs in {:.1} s, pool {}", start.elapsed().as_secs_f64(), pool.len());
    }
    assert!(failures.is_empty(), "{} failing inputs:\n{}", failures.len(), failures.join("\n\n"));
}
