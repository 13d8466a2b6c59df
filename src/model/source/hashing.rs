use super::*;

/// The checksums of a cached Hugging Face folder, `sha256sum` format (`<hex>  <file>`).
pub(super) const HF_MANIFEST: &str = "SHA256SUMS";

/// The files of a cached folder that the manifest covers: every regular file but the manifest
/// and temporaries.
pub(super) fn hf_folder_files(dir: &Path) -> Vec<(String, PathBuf)> {
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
pub(super) fn write_hf_manifest(dir: &Path, files: &[(String, PathBuf)]) -> Result<()> {
    let mut text = String::new();
    for (name, src) in files {
        text.push_str(&format!("{}  {name}\n", sha256_file(src, &mut |_, _| {})?));
    }
    write_atomic(&dir.join(HF_MANIFEST), text.as_bytes())
}

/// Checks a cached folder against its manifest: the names of the files that are missing or
/// differ (empty when all match).
pub(super) fn verify_hf_manifest(dir: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<Vec<String>> {
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

/// The sidecar: a `sha256sum`-compatible line (`<hex>  <file>`) and a `# bytes: N` comment line.
pub(super) struct Sidecar {
    pub(super) sha256: String,
    pub(super) bytes: Option<u64>,
}

pub(super) fn write_sidecar(gguf: &Path, sha256: &str, bytes: u64) -> Result<()> {
    let file_name = gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!("{sha256}  {file_name}\n# bytes: {bytes}\n");
    write_atomic(&sidecar_path(gguf), text.as_bytes())
}

pub(super) fn read_sidecar(gguf: &Path) -> Result<Sidecar> {
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
pub(super) fn verify_cached_gguf(gguf: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<()> {
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

pub(super) fn sha256_file(path: &Path, on_bytes: &mut dyn FnMut(u64, u64)) -> Result<String> {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
