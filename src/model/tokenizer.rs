//! Tokenizers: a Hugging Face `tokenizer.json`, or a byte-level BPE rebuilt from a GGUF file's
//! `tokenizer.ggml.*` metadata (GPT-2 style vocabularies, as SmolLM, Qwen2 and Llama 3 use).

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

pub fn from_file(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))
}

fn strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let v = md.get(key).ok_or_else(|| anyhow!("GGUF metadata has no {key}"))?;
    v.to_vec()
        .map_err(|_| anyhow!("GGUF metadata {key} is not an array"))?
        .iter()
        .map(|s| s.to_string().cloned().map_err(|_| anyhow!("GGUF metadata {key} holds a non-string")))
        .collect()
}

/// Rebuilds the tokenizer stored in GGUF metadata. Only byte-level BPE (`tokenizer.ggml.model =
/// "gpt2"`) is supported; SentencePiece vocabularies (`llama`) need the model's tokenizer.json.
pub fn from_gguf_metadata(md: &HashMap<String, Value>) -> Result<Tokenizer> {
    let model = md.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).ok_or_else(|| anyhow!("GGUF metadata has no tokenizer.ggml.model"))?;
    if model != "gpt2" {
        bail!(
            "the GGUF's tokenizer is of kind {model:?}; only byte-level BPE (\"gpt2\") can be rebuilt from GGUF metadata. \
             Put the model's tokenizer.json next to the .gguf file (same folder) and try again"
        );
    }
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges = strings(md, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok()) {
        Some(v) => v.iter().map(|x| x.to_i32().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| anyhow!("malformed BPE merge {m:?} in GGUF metadata")))
        .collect::<Result<_>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| anyhow!("building BPE from GGUF metadata: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    // SmolLM ("smollm") splits digits one by one before the byte-level split; GPT-2-style others don't.
    let byte_level = ByteLevel::new(false, true, true);
    let mut pres: Vec<PreTokenizerWrapper> = Vec::new();
    if pre == "smollm" || pre == "starcoder" || pre == "refact" {
        pres.push(Digits::new(true).into());
    }
    pres.push(byte_level.into());
    tok.with_pre_tokenizer(Some(Sequence::new(pres)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    // Control tokens (token_type 3) are matched whole, never split.
    let specials: Vec<AddedToken> = tokens.iter().zip(types.iter()).filter(|(_, &ty)| ty == 3).map(|(t, _)| AddedToken::from(t.clone(), true)).collect();
    tok.add_special_tokens(specials).map_err(|e| anyhow!("adding special tokens: {e}"))?;
    Ok(tok)
}

/// Token ids of a text, without special tokens.
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(text, false).map_err(|e| anyhow!("tokenizing {text:?}: {e}")).context("tokenizer")?.get_ids().to_vec())
}

/// A padding id: the tokenizer's pad or eos token where it has one, else 0. Padding positions
/// are never read (right padding under a causal mask), so any valid id serves.
pub fn pad_id(tok: &Tokenizer) -> u32 {
    for name in ["<|endoftext|>", "<|im_end|>", "</s>", "<pad>", "<|end_of_text|>"] {
        if let Some(id) = tok.token_to_id(name) {
            return id;
        }
    }
    0
}
