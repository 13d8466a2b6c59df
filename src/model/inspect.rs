//! What a model file holds, read from its headers without loading a tensor: the decoder's
//! configuration, its parameter count, and the storage types of its tensors (the quantization
//! mix of a GGUF, the dtypes of a safetensors checkpoint). `laplace-lora check-model` prints it.

use super::{gguf, hf, Config, ModelFiles};
use anyhow::Result;
use std::collections::BTreeMap;

/// Tensors of one storage type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeShare {
    /// "Q4_K", "F32", "BF16", ...
    pub dtype: String,
    pub tensors: usize,
    pub elements: u64,
    /// Bytes on disk (and in memory when kept in this type).
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub config: Config,
    /// "GGUF" or "Hugging Face folder".
    pub container: &'static str,
    /// What the file's tensors add up to (every tensor, also ones the decoder does not read).
    pub file_parameters: u64,
    /// By storage type, largest first.
    pub types: Vec<TypeShare>,
    /// The GGUF's `tokenizer.ggml.model` / `.pre`, or "tokenizer.json".
    pub tokenizer: String,
    /// Stored bytes of the token embedding.
    pub embedding_bytes: u64,
}

impl ModelInfo {
    /// Bytes of the frozen weights stored as the file stores them (dtype "keep").
    pub fn stored_bytes(&self) -> u64 {
        self.types.iter().map(|t| t.bytes).sum()
    }

    /// "210 Q4_1 (73%), 1 Q8_0, 61 F32" style, by bytes.
    pub fn mix(&self) -> String {
        let total = self.stored_bytes().max(1) as f64;
        self.types
            .iter()
            .map(|t| format!("{} x {} ({:.0}% of {:.1} MiB)", t.tensors, t.dtype, 100.0 * t.bytes as f64 / total, total / (1 << 20) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn collect(rows: impl Iterator<Item = (String, u64, u64)>) -> (u64, Vec<TypeShare>) {
    let mut by: BTreeMap<String, TypeShare> = BTreeMap::new();
    let mut params = 0;
    for (dtype, elements, bytes) in rows {
        params += elements;
        let e = by.entry(dtype.clone()).or_insert(TypeShare { dtype, tensors: 0, elements: 0, bytes: 0 });
        e.tensors += 1;
        e.elements += elements;
        e.bytes += bytes;
    }
    let mut v: Vec<TypeShare> = by.into_values().collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes));
    (params, v)
}

/// llama.cpp's spelling of a block type: "Q4_K", "Q8_0", "F16", ...
pub fn ggml_name(t: candle_core::quantized::GgmlDType) -> String {
    let s = format!("{t:?}").to_uppercase();
    match s.strip_suffix('K') {
        Some(q) if q.starts_with('Q') && q.len() == 2 => format!("{q}_K"),
        _ => s,
    }
}

pub fn inspect(files: &ModelFiles) -> Result<ModelInfo> {
    match files {
        ModelFiles::Gguf { path } => {
            let (content, _) = gguf::read_content(path)?;
            let config = gguf::read_config(&content, path)?;
            let bytes = |t: &candle_core::quantized::gguf_file::TensorInfo| {
                t.shape.elem_count() as u64 / t.ggml_dtype.block_size() as u64 * t.ggml_dtype.type_size() as u64
            };
            let rows = content.tensor_infos.values().map(|t| (ggml_name(t.ggml_dtype), t.shape.elem_count() as u64, bytes(t)));
            let (file_parameters, types) = collect(rows);
            let embedding_bytes = content.tensor_infos.get("token_embd.weight").map(bytes).unwrap_or(0);
            let md = &content.metadata;
            let s = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
            let tokenizer = if path.with_file_name("tokenizer.json").exists() {
                "tokenizer.json beside the file".to_string()
            } else {
                format!(
                    "{} (pre-tokenizer {})",
                    s("tokenizer.ggml.model").unwrap_or_else(|| "?".into()),
                    s("tokenizer.ggml.pre").unwrap_or_else(|| "none".into())
                )
            };
            Ok(ModelInfo { config, container: "GGUF", file_parameters, types, tokenizer, embedding_bytes })
        }
        ModelFiles::HfFolder { path } => {
            let config = hf::load_config(path)?;
            let mut rows = Vec::new();
            let mut embedding_bytes = 0;
            for f in hf::safetensors_files(path)? {
                for (name, dtype, n, b) in hf::safetensors_header(&f)? {
                    if name == "model.embed_tokens.weight" {
                        embedding_bytes = b;
                    }
                    rows.push((dtype, n, b));
                }
            }
            let (file_parameters, types) = collect(rows.into_iter());
            Ok(ModelInfo { config, container: "Hugging Face folder", file_parameters, types, tokenizer: "tokenizer.json".into(), embedding_bytes })
        }
    }
}
