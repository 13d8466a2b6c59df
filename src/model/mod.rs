//! The base model: a LoRA-capable llama-family decoder, its loaders, tokenizer and sources.

pub mod config;
mod fast;
mod fastmath;
mod fused;
pub mod gguf;
pub mod hf;
pub mod inspect;
pub mod llama;
pub mod memory;
pub mod ops;
pub mod pretokenize;
pub mod source;
pub mod spm;
#[cfg(test)]
mod test_support;
pub mod tokenizer;

pub use config::Config;
pub use llama::{Batch, ForwardOpts, Llama};
pub use source::{resolve_model, FetchProgress, ModelFiles};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// A base model ready to use: the frozen decoder and its tokenizer.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    /// Where it came from (file or folder).
    pub path: PathBuf,
}

impl LoadedModel {
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        match files {
            ModelFiles::Gguf { path } => Self::load_gguf(path, device),
            ModelFiles::HfFolder { path } => Self::load_hf(path, device),
        }
    }

    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        let g = gguf::load(path, device)?;
        let sidecar = path.with_file_name("tokenizer.json");
        let tokenizer = if sidecar.exists() {
            tokenizer::from_file(&sidecar)?
        } else {
            tokenizer::from_gguf_metadata(&g.metadata).with_context(|| format!("tokenizer of {}", path.display()))?
        };
        let model = Llama::from_tensors(g.config, g.tensors, device).with_context(|| format!("building model from {}", path.display()))?;
        Ok(Self { model, tokenizer, path: path.to_path_buf() })
    }

    pub fn load_hf(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = hf::load_config(dir)?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            bail!("{} has no tokenizer.json", dir.display());
        }
        let tokenizer = tokenizer::from_file(&tok_path)?;
        let tensors = hf::load_tensors(dir)?;
        let model = Llama::from_tensors(cfg, tensors, device).with_context(|| format!("building model from {}", dir.display()))?;
        Ok(Self { model, tokenizer, path: dir.to_path_buf() })
    }
}

/// The tokenizer of a model alone (no tensor is read): `tokenizer.json` of a folder, or beside a
/// GGUF file, else the GGUF's metadata.
pub fn load_tokenizer(files: &ModelFiles) -> Result<Tokenizer> {
    match files {
        ModelFiles::HfFolder { path } => tokenizer::from_file(&path.join("tokenizer.json")),
        ModelFiles::Gguf { path } => {
            let sidecar = path.with_file_name("tokenizer.json");
            if sidecar.exists() {
                return tokenizer::from_file(&sidecar);
            }
            let (content, _) = gguf::read_content(path)?;
            tokenizer::from_gguf_metadata(&content.metadata).with_context(|| format!("tokenizer of {}", path.display()))
        }
    }
}

/// The dtype the frozen matrices are stored in (`Llama::cast_frozen`): "f32" (the default),
/// "bf16" or "f16". Half precision halves the weights' memory (a larger model on a GPU) but did
/// not pay in time on an H200 at 135M or 1.1B parameters (batch 4 x 64: the step is bound by
/// kernel launches, and the casts add some; README, "GPU"), and it moves the answer logits by
/// ~2e-2 relative. On the CPU candle converts half-precision matmuls to f32 on every call.
pub fn parse_frozen_dtype(s: &str) -> Result<candle_core::DType> {
    use candle_core::DType;
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => bail!("unknown dtype {other:?}; expected \"f32\", \"bf16\" or \"f16\""),
    }
}

/// Parses a device string from the configuration: "cpu", "cuda", "cuda:N", "metal".
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0).context("device \"metal\": this build has no Metal support (build with --features metal) or no Metal device is present"),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().with_context(|| format!("device {s:?}: expected cuda:N"))?,
                None => 0,
            };
            Device::new_cuda(idx).with_context(|| format!("device {s:?}: this build has no CUDA support (build with --features cuda) or no such GPU"))
        }
        _ => bail!("unknown device {s:?}; expected \"cpu\", \"cuda\", \"cuda:N\" or \"metal\""),
    }
}
