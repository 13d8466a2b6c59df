use super::*;

pub(super) fn looks_like_path(s: &str) -> bool {
    s.contains('/')
        || s.contains('\\')
        || s.starts_with('.')
        || s.starts_with('~')
        || s.to_ascii_lowercase().ends_with(".gguf")
        || s.to_ascii_lowercase().ends_with(".safetensors")
        || s.to_ascii_lowercase().ends_with(".json")
        || Path::new(s).is_absolute()
}

pub(super) fn expand_home(s: &str) -> PathBuf {
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
pub(super) fn resolve_local(source: &str) -> Result<Option<ModelFiles>> {
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

pub(super) fn has_gguf_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

/// What a Hugging Face folder lacks (empty when complete).
pub(super) fn hf_folder_missing(dir: &Path) -> Vec<String> {
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

pub(super) fn has_any_safetensors(dir: &Path) -> bool {
    fs::read_dir(dir).map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().to_ascii_lowercase().ends_with(".safetensors"))).unwrap_or(false)
}

pub(super) fn check_hf_folder(dir: &Path) -> Result<()> {
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
pub(super) fn safetensors_shards(index: &Path) -> Result<Vec<String>> {
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
