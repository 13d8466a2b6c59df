//! Loading a Hugging Face model folder: `config.json`, `model.safetensors` or
//! `model.safetensors.index.json` with its shards, and `tokenizer.json`.

use super::config::Config;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

pub fn load_config(dir: &Path) -> Result<Config> {
    let path = dir.join("config.json");
    if !path.exists() {
        bail!("{} has no config.json: a Hugging Face model folder needs config.json, *.safetensors and tokenizer.json", dir.display());
    }
    Config::from_hf_json(&path)
}

/// The checkpoint's safetensors files: `model.safetensors`, or the shards its index names.
pub fn safetensors_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<std::path::PathBuf> = if single.exists() {
        vec![single]
    } else if index.exists() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| anyhow!("{}: no \"weight_map\" object", index.display()))?;
        let shards: BTreeSet<String> = map
            .values()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| anyhow!("{}: weight_map holds a non-string", index.display())))
            .collect::<Result<_>>()?;
        let mut files = Vec::new();
        for s in shards {
            let p = dir.join(&s);
            if !p.exists() {
                bail!("{} names shard {s}, which is missing from {}", index.display(), dir.display());
            }
            files.push(p);
        }
        files
    } else {
        bail!("{} has neither model.safetensors nor model.safetensors.index.json", dir.display());
    };
    Ok(files)
}

/// All tensors of the checkpoint, by name, on the CPU in their stored dtype.
pub fn load_tensors(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let mut all = HashMap::new();
    for f in safetensors_files(dir)? {
        let t = candle_core::safetensors::load(&f, &Device::Cpu).map_err(|e| anyhow!("cannot read {}: {e}", f.display()))?;
        all.extend(t);
    }
    Ok(all)
}

/// (name, dtype, elements, bytes) of every tensor of a safetensors file, from its header alone
/// (8 bytes of little-endian length, then that many bytes of JSON).
pub fn safetensors_header(path: &Path) -> Result<Vec<(String, String, u64, u64)>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).with_context(|| format!("{}: too short for a safetensors header", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!("{}: a safetensors header of {n} bytes is not plausible", path.display());
    }
    let mut head = vec![0u8; n as usize];
    f.read_exact(&mut head).with_context(|| format!("{}: truncated safetensors header", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&head).with_context(|| format!("{}: safetensors header is not JSON", path.display()))?;
    let obj = v.as_object().ok_or_else(|| anyhow!("{}: safetensors header is not an object", path.display()))?;
    let mut out = Vec::new();
    for (name, t) in obj.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let bad = || anyhow!("{}: tensor {name} has a malformed header entry", path.display());
        let dtype = t.get("dtype").and_then(|d| d.as_str()).ok_or_else(bad)?.to_string();
        let shape = t.get("shape").and_then(|d| d.as_array()).ok_or_else(bad)?;
        let elements = shape.iter().map(|d| d.as_u64().ok_or_else(bad)).product::<Result<u64>>()?;
        let off = t.get("data_offsets").and_then(|d| d.as_array()).ok_or_else(bad)?;
        let (a, b) = (off.first().and_then(|x| x.as_u64()).ok_or_else(bad)?, off.get(1).and_then(|x| x.as_u64()).ok_or_else(bad)?);
        out.push((name.clone(), dtype, elements, b.saturating_sub(a)));
    }
    Ok(out)
}
