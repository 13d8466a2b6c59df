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

/// All tensors of the checkpoint, by name, on the CPU in their stored dtype.
pub fn load_tensors(dir: &Path) -> Result<HashMap<String, Tensor>> {
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
    let mut all = HashMap::new();
    for f in files {
        let t = candle_core::safetensors::load(&f, &Device::Cpu).map_err(|e| anyhow!("cannot read {}: {e}", f.display()))?;
        all.extend(t);
    }
    Ok(all)
}
