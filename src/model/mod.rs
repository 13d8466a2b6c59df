//! The base model: a LoRA-capable llama-family decoder, its loaders, tokenizer and sources.

pub mod bf16;
pub mod config;
pub mod f32pack;
mod fast;
pub(crate) mod fastmath;
pub mod frozen;
mod fused;
pub mod gguf;
pub mod hf;
pub mod inspect;
pub mod isa;
pub mod llama;
pub mod memory;
pub mod ops;
pub mod prefix;
pub mod pretokenize;
pub mod quant;
pub mod saliency;
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

    /// Loads the model with its frozen matrices stored as `dtype` (`Llama::cast_frozen`); for
    /// "q8_0" and "keep" a GGUF's projection matrices never exist in f32 at once (a 7B model
    /// fits where its f32 weights would not). Returns the dtype used (`auto` resolved).
    pub fn load_as(files: &ModelFiles, device: &Device, dtype: frozen::FrozenDtype) -> Result<(Self, frozen::FrozenDtype)> {
        let mut m = match files {
            ModelFiles::Gguf { path } if dtype.is_quantized() => Self::load_gguf_kept(path, device, dtype)?,
            ModelFiles::HfFolder { path } if dtype == frozen::FrozenDtype::Keep => {
                bail!("model.dtype = \"keep\" keeps a GGUF's quantized blocks; {} is a safetensors folder (use \"q8_0\" or \"f32\")", path.display())
            }
            _ => Self::load(files, device)?,
        };
        let used = m.model.cast_frozen(dtype)?;
        Ok((m, used))
    }

    fn load_gguf_kept(path: &Path, device: &Device, dtype: frozen::FrozenDtype) -> Result<Self> {
        let (g, kept) = gguf::load_kept(path, device, dtype)?;
        let tokenizer = Self::gguf_tokenizer(path, &g.metadata)?;
        let model = Llama::from_parts(g.config, g.tensors, kept, device).with_context(|| format!("building model from {}", path.display()))?;
        Ok(Self { model, tokenizer, path: path.to_path_buf() })
    }

    fn gguf_tokenizer(path: &Path, metadata: &std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>) -> Result<Tokenizer> {
        let sidecar = path.with_file_name("tokenizer.json");
        if sidecar.exists() {
            tokenizer::from_file(&sidecar)
        } else {
            tokenizer::from_gguf_metadata(metadata).with_context(|| format!("tokenizer of {}", path.display()))
        }
    }

    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        let g = gguf::load(path, device)?;
        let tokenizer = Self::gguf_tokenizer(path, &g.metadata)?;
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

/// The frozen matrices' storage from `model.dtype` / `bench --dtype` (`frozen::FrozenDtype`):
/// "auto" (f32 for now: see `FrozenDtype::resolve`), "f32", "bf16", "f16", "q8_0", "keep".
/// On a GPU half precision halves the weights' memory but did not pay in time on an H200 at 135M
/// or 1.1B parameters (the step is bound by kernel launches; README, "GPU").
pub fn parse_frozen_dtype(s: &str) -> Result<frozen::FrozenDtype> {
    frozen::FrozenDtype::parse(s)
}

/// Parses a device string from the configuration: "cpu", "cuda", "cuda:N", "metal".
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "metal" => {
            Device::new_metal(0).context("device \"metal\": this build has no Metal support (build with --features metal) or no Metal device is present")
        }
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

/// A raw output pointer shared by the parallel tasks of the packed products (`f32pack/`,
/// `bf16.rs`, `quant.rs`), each of which writes a disjoint range of the output.
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}
