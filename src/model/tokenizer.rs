//! Tokenizers: a Hugging Face `tokenizer.json`, or one rebuilt from a GGUF file's
//! `tokenizer.ggml.*` metadata: byte-level BPE (`tokenizer.ggml.model = "gpt2"`: SmolLM, Qwen2,
//! Llama 3, ...) with the pre-tokenizer its `tokenizer.ggml.pre` names (`pretokenize.rs`), or a
//! SentencePiece vocabulary (`"llama"`: Llama 2, Mistral, TinyLlama; `spm.rs`).
//!
//! The rebuilt tokenizers follow transformers' GGUF conversion (`integrations/gguf`), which is
//! what the parity checks compare against, except where transformers departs from llama.cpp's
//! reading of the same metadata: transformers splits every byte-level vocabulary whose
//! pre-tokenizer it does not list (smollm, starcoder, deepseek-*, falcon, ...) with GPT-2's regex,
//! where llama.cpp (and the model's own tokenizer.json) use the family's split; here the family's.

use super::{pretokenize, spm};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_UNKNOWN: i32 = 2;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_USER_DEFINED: i32 = 4;
pub const TOKEN_BYTE: i32 = 6;

pub fn from_file(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))
}

pub(super) fn strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let v = md.get(key).ok_or_else(|| anyhow!("GGUF metadata has no {key}"))?;
    v.to_vec()
        .map_err(|_| anyhow!("GGUF metadata {key} is not an array"))?
        .iter()
        .map(|s| s.to_string().cloned().map_err(|_| anyhow!("GGUF metadata {key} holds a non-string")))
        .collect()
}

pub(super) fn meta_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_string().ok()).map(String::as_str)
}

pub(super) fn meta_bool(md: &HashMap<String, Value>, key: &str) -> Option<bool> {
    md.get(key).and_then(|v| v.to_bool().ok())
}

pub(super) fn meta_u32(md: &HashMap<String, Value>, key: &str) -> Option<u32> {
    let v = md.get(key)?;
    v.to_u32().ok().or_else(|| v.to_i32().ok().map(|x| x as u32)).or_else(|| v.to_u64().ok().map(|x| x as u32))
}

/// Token types, one per token (normal where the file has none).
pub(super) fn token_types(md: &HashMap<String, Value>, n: usize) -> Result<Vec<i32>> {
    let Some(v) = md.get("tokenizer.ggml.token_type") else { return Ok(vec![TOKEN_NORMAL; n]) };
    let v = v.to_vec().map_err(|_| anyhow!("GGUF metadata tokenizer.ggml.token_type is not an array"))?;
    if v.len() != n {
        bail!("GGUF metadata tokenizer.ggml.token_type has {} entries for {n} tokens", v.len());
    }
    v.iter().map(|x| x.to_i32().map_err(|_| anyhow!("GGUF metadata tokenizer.ggml.token_type holds a non-integer"))).collect()
}

/// Rebuilds the tokenizer stored in GGUF metadata.
pub fn from_gguf_metadata(md: &HashMap<String, Value>) -> Result<Tokenizer> {
    let model = meta_str(md, "tokenizer.ggml.model").ok_or_else(|| anyhow!("GGUF metadata has no tokenizer.ggml.model"))?;
    match model {
        "gpt2" => byte_level_from_gguf(md),
        "llama" => spm::from_gguf(md),
        other => bail!(
            "the GGUF's tokenizer is of kind {other:?}; byte-level BPE (\"gpt2\") and SentencePiece (\"llama\") can be \
             rebuilt from GGUF metadata. Put the model's tokenizer.json next to the .gguf file (same folder) and try again"
        ),
    }
}

/// The pre-tokenizer: the family's regexes, each an isolated split, then the byte-to-unicode map.
pub fn byte_level_pre_tokenizer(pre: &pretokenize::PreTokenizer) -> Result<Sequence> {
    let mut parts: Vec<PreTokenizerWrapper> = Vec::with_capacity(pre.regexes.len() + 1);
    for r in pre.regexes {
        let split = Split::new(SplitPattern::Regex((*r).to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| anyhow!("pre-tokenizer {}: regex {r:?} does not compile: {e}", pre.family))?;
        parts.push(split.into());
    }
    parts.push(ByteLevel::new(false, true, false).into());
    Ok(Sequence::new(parts))
}

fn byte_level_from_gguf(md: &HashMap<String, Value>) -> Result<Tokenizer> {
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges = strings(md, "tokenizer.ggml.merges")?;
    let types = token_types(md, tokens.len())?;
    let pre = pretokenize::for_gguf_name(meta_str(md, "tokenizer.ggml.pre"))?;
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| anyhow!("malformed BPE merge {m:?} in GGUF metadata")))
        .collect::<Result<_>>()?;
    let bpe =
        BPE::builder().vocab_and_merges(vocab, merges).ignore_merges(pre.ignore_merges).build().map_err(|e| anyhow!("building BPE from GGUF metadata: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(byte_level_pre_tokenizer(&pre)?));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    add_marked_tokens(&mut tok, &tokens, &types)?;
    // llama.cpp adds BOS by default for the llama3, tekken and chameleon families; the file's
    // flag wins (transformers reads only the flag).
    let default_bos = matches!(pre.family, "llama3" | "tekken" | "chameleon");
    let add_bos = meta_bool(md, "tokenizer.ggml.add_bos_token").unwrap_or(default_bos);
    set_bos(&mut tok, md, &tokens, add_bos)?;
    Ok(tok)
}

/// Control tokens (type 3) are matched whole as special tokens, user-defined ones (type 4) whole
/// as ordinary added tokens, as llama.cpp and transformers both do.
pub(super) fn add_marked_tokens(tok: &mut Tokenizer, tokens: &[String], types: &[i32]) -> Result<()> {
    let specials: Vec<AddedToken> =
        tokens.iter().zip(types).filter(|(_, &ty)| ty == TOKEN_CONTROL).map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false)).collect();
    tok.add_special_tokens(specials).map_err(|e| anyhow!("adding special tokens: {e}"))?;
    let user: Vec<AddedToken> =
        tokens.iter().zip(types).filter(|(_, &ty)| ty == TOKEN_USER_DEFINED).map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false)).collect();
    tok.add_tokens(user).map_err(|e| anyhow!("adding user-defined tokens: {e}"))?;
    Ok(())
}

/// A post-processor that puts the BOS token first when `add_bos` (`tokenizer.ggml.bos_token_id`).
pub(super) fn set_bos(tok: &mut Tokenizer, md: &HashMap<String, Value>, tokens: &[String], add_bos: bool) -> Result<()> {
    if !add_bos {
        return Ok(());
    }
    let Some(id) = meta_u32(md, "tokenizer.ggml.bos_token_id") else {
        bail!("the GGUF asks for a BOS token (tokenizer.ggml.add_bos_token) but names none (tokenizer.ggml.bos_token_id)")
    };
    let bos = tokens.get(id as usize).ok_or_else(|| anyhow!("tokenizer.ggml.bos_token_id {id} is outside the vocabulary of {} tokens", tokens.len()))?;
    let post = TemplateProcessing::builder()
        .try_single(format!("{bos}:0 $A:0"))
        .and_then(|b| b.try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1")))
        .map_err(|e| anyhow!("BOS template: {e}"))?
        .special_tokens(vec![(bos.clone(), id)])
        .build()
        .map_err(|e| anyhow!("BOS template: {e}"))?;
    tok.with_post_processor(Some(post));
    Ok(())
}

/// Token ids of a prompt as the model expects it: with the special tokens the tokenizer puts in
/// front (a BOS where the model wants one, as transformers' `tokenizer(text)` does), never with
/// ones it appends (an EOS after the prompt would sit where the answer is read).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let bare = tok.encode(text, false).map_err(|e| anyhow!("tokenizing {text:?}: {e}")).context("tokenizer")?.get_ids().to_vec();
    let full = tok.encode(text, true).map_err(|e| anyhow!("tokenizing {text:?}: {e}")).context("tokenizer")?.get_ids().to_vec();
    // full = leading specials + bare + trailing specials
    match (0..=full.len().saturating_sub(bare.len())).find(|&s| full[s..].starts_with(&bare)) {
        Some(start) => Ok(full[..start + bare.len()].to_vec()),
        None => Ok(bare),
    }
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
