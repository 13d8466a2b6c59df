use super::*;

/// The cache root: `$LAPLACE_LORA_CACHE` if set, else `<user cache dir>/laplace-lora`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_CACHE) {
        if !dir.is_empty() {
            return Ok(PathBuf::from(dir));
        }
    }
    dirs::cache_dir().map(|d| d.join("laplace-lora")).ok_or_else(|| anyhow!("no cache directory on this system: set {ENV_CACHE} to a writable folder"))
}

pub(super) fn model_dir(cache: &Path, model: &KnownModel) -> PathBuf {
    cache.join("models").join(model.name)
}

pub(super) fn gguf_name(model: &KnownModel) -> String {
    format!("{}.gguf", model.name)
}

pub(super) fn sidecar_path(gguf: &Path) -> PathBuf {
    let mut s = gguf.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

pub(super) fn cached_in(model: &KnownModel, cache: &Path) -> Option<ModelFiles> {
    let dir = model_dir(cache, model);
    if dir.join("config.json").is_file() && hf_folder_missing(&dir).is_empty() {
        let intact = !dir.join(HF_MANIFEST).is_file() || verify_hf_manifest(&dir, &mut |_| {}).is_ok_and(|bad| bad.is_empty());
        return intact.then_some(ModelFiles::HfFolder { path: dir });
    }
    let gguf = dir.join(gguf_name(model));
    verify_cached_gguf(&gguf, &mut |_| {}).ok()?;
    Some(ModelFiles::Gguf { path: gguf })
}

/// Step 2: a complete copy in the cache. A corrupt or incomplete GGUF is reported on the progress
/// stream and deleted, and `Ok(None)` asks for a fresh fetch.
pub(super) fn check_cache(model: &KnownModel, dir: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<Option<ModelFiles>> {
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

/// Drops a file from the hub client's cache (`<cache>/hub`), so that the next fetch downloads
/// it again: the copy in the model folder may be a hard link to the same (damaged) bytes.
pub(super) fn forget_hub_copy(model: &KnownModel, dir: &Path, name: &str) {
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

pub(super) fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {}", p.display())),
    }
}

/// Write a small file atomically: a temporary file in the same folder, then a rename.
pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
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
pub(super) fn make_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Hard-link `src` (resolving the hub cache's symlinks) to `dst`, or copy it; atomically.
pub(super) fn place_file(src: &Path, dst: &Path) -> Result<()> {
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
