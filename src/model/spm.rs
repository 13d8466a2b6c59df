//! A SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral, TinyLlama)
//! rebuilt from GGUF metadata alone: tokens, scores, token types, BOS flag and space handling.
//!
//! As transformers' GGUF conversion builds it (`LlamaTokenizer`): a BPE over the pieces with
//! byte fallback (a character outside the vocabulary becomes its UTF-8 bytes, `<0x..>` tokens),
//! spaces written as "▁" and one "▁" put before the text (`Metaspace`, prepend "first": not after a
//! special token), and the merges recovered from the scores where the file lists none
//! (`generate_merges`): every split of a token into two tokens is a merge, ranked by the merged
//! token's score, then by the lengths of its two halves, longest first, then by vocabulary order.
//! That ranking reproduces SentencePiece's own BPE, which merges the highest-scoring pair first.

use super::tokenizer::{add_marked_tokens, meta_bool, meta_u32, set_bos, strings, token_types, TOKEN_UNKNOWN};
use anyhow::{anyhow, bail, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

const SPACE: char = '\u{2581}';

fn scores(md: &HashMap<String, Value>, n: usize) -> Result<Vec<f32>> {
    let v = md
        .get("tokenizer.ggml.scores")
        .ok_or_else(|| anyhow!("GGUF metadata has no tokenizer.ggml.scores (a SentencePiece vocabulary needs them)"))?
        .to_vec()
        .map_err(|_| anyhow!("GGUF metadata tokenizer.ggml.scores is not an array"))?;
    if v.len() != n {
        bail!("GGUF metadata tokenizer.ggml.scores has {} entries for {n} tokens", v.len());
    }
    v.iter()
        .map(|x| x.to_f32().or_else(|_| x.to_i32().map(|i| i as f32)).map_err(|_| anyhow!("GGUF metadata tokenizer.ggml.scores holds a non-number")))
        .collect()
}

/// transformers' `generate_merges(vocab, vocab_scores)`: see the module comment.
pub fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let id: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    // (left, right, score of the merged token, chars of left, chars of right)
    let mut merges: Vec<(usize, usize, f32, usize, usize)> = Vec::new();
    for (t, &score) in tokens.iter().zip(scores) {
        let mut local: Vec<(usize, usize, f32, usize, usize)> = Vec::new();
        let cuts: Vec<usize> = t.char_indices().map(|(b, _)| b).skip(1).collect();
        for (k, &cut) in cuts.iter().enumerate() {
            let (l, r) = t.split_at(cut);
            if let (Some(&li), Some(&ri)) = (id.get(l), id.get(r)) {
                local.push((li, ri, score, k + 1, t.chars().count() - k - 1));
            }
        }
        local.sort_by_key(|m| (m.0, m.1));
        merges.extend(local);
    }
    // Python's sorted(reverse=True) is stable: equal keys keep the order above.
    merges.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal).then(b.3.cmp(&a.3)).then(b.4.cmp(&a.4)));
    merges.into_iter().map(|(l, r, ..)| (tokens[l].clone(), tokens[r].clone())).collect()
}

pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Tokenizer> {
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let scores = scores(md, tokens.len())?;
    let types = token_types(md, tokens.len())?;
    let merges = match md.get("tokenizer.ggml.merges") {
        Some(_) => strings(md, "tokenizer.ggml.merges")?
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| anyhow!("malformed BPE merge {m:?} in GGUF metadata")))
            .collect::<Result<_>>()?,
        None => merges_from_scores(&tokens, &scores),
    };
    let unk_id = meta_u32(md, "tokenizer.ggml.unknown_token_id").unwrap_or(0) as usize;
    let unk = tokens.get(unk_id).ok_or_else(|| anyhow!("tokenizer.ggml.unknown_token_id {unk_id} is outside the vocabulary"))?.clone();
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk.clone())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| anyhow!("building the SentencePiece vocabulary from GGUF metadata: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    // `tokenizer.ggml.add_space_prefix` (llama.cpp's flag; absent in most files) defaults to true.
    let prefix = meta_bool(md, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
    let scheme = if prefix { PrependScheme::First } else { PrependScheme::Never };
    tok.with_pre_tokenizer(Some(Metaspace::new(SPACE, scheme, false)));
    let mut decoders: Vec<DecoderWrapper> =
        vec![Replace::new(SPACE.to_string(), " ").map_err(|e| anyhow!("decoder: {e}"))?.into(), ByteFallback::new().into(), Fuse::new().into()];
    if prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    add_marked_tokens(&mut tok, &tokens, &types)?;
    // The unknown token is special as well (transformers adds unk, bos and eos as special tokens).
    if types.get(unk_id) == Some(&TOKEN_UNKNOWN) {
        tok.add_special_tokens(vec![AddedToken::from(unk, true).normalized(false)]).map_err(|e| anyhow!("adding the unknown token: {e}"))?;
    }
    // llama.cpp and transformers both default to a BOS for SentencePiece vocabularies.
    let add_bos = meta_bool(md, "tokenizer.ggml.add_bos_token").unwrap_or(true);
    set_bos(&mut tok, md, &tokens, add_bos)?;
    Ok(tok)
}
