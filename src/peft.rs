//! LoRA adapters in PEFT's on-disk format, so that Python's `PeftModel.from_pretrained(base,
//! "RUN/adapter")` loads what the workbench trained:
//! - `adapter_config.json`: PEFT's `LoraConfig` fields;
//! - `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` (r, d_in) and
//!   `lora_B.weight` (d_out, r). The LM head's B is written with all vocabulary rows (zeros except
//!   the answer rows, which are the only ones trained); the answer token ids ride along in the
//!   safetensors metadata, which PEFT ignores.

use crate::lora::{LoraConfig, LoraLayer, LoraSet, Target};
use crate::runio::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

#[derive(serde::Serialize, serde::Deserialize)]
struct PeftConfig {
    peft_type: String,
    task_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    lora_dropout: f64,
    target_modules: serde_json::Value,
    bias: String,
    fan_in_fan_out: bool,
    inference_mode: bool,
    init_lora_weights: bool,
    use_rslora: bool,
    use_dora: bool,
    base_model_name_or_path: Option<String>,
    modules_to_save: Option<serde_json::Value>,
    layers_to_transform: Option<serde_json::Value>,
    layers_pattern: Option<serde_json::Value>,
    rank_pattern: serde_json::Value,
    alpha_pattern: serde_json::Value,
    revision: Option<String>,
}

fn key(module: &str, which: &str) -> String {
    format!("base_model.model.{module}.{which}.weight")
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (atomically).
pub fn save(lora: &LoraSet, vocab_size: usize, base_model: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names: Vec<&str> = lora.config.targets.iter().map(|t| t.name()).collect();
    names.sort();
    let cfg = PeftConfig {
        peft_type: "LORA".into(),
        task_type: Some("CAUSAL_LM".into()),
        r: lora.config.rank,
        lora_alpha: lora.config.alpha,
        lora_dropout: lora.config.dropout,
        target_modules: serde_json::json!(names),
        bias: "none".into(),
        fan_in_fan_out: false,
        inference_mode: true,
        init_lora_weights: true,
        use_rslora: false,
        use_dora: false,
        base_model_name_or_path: Some(base_model.to_string()),
        modules_to_save: None,
        layers_to_transform: None,
        layers_pattern: None,
        rank_pattern: serde_json::json!({}),
        alpha_pattern: serde_json::json!({}),
        revision: None,
    };
    write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for l in &lora.layers {
        let m = l.module_path();
        tensors.insert(key(&m, "lora_A"), l.a.as_tensor().to_device(&Device::Cpu)?);
        let b = l.b.as_tensor().to_device(&Device::Cpu)?;
        let b = if l.target == Target::LmHead {
            // Scatter the K answer rows into a (vocab, r) matrix of zeros.
            let r = lora.config.rank;
            let rows = b.to_vec2::<f32>()?;
            let mut full = vec![0f32; vocab_size * r];
            for (row, &tok) in rows.iter().zip(&lora.answer_token_ids) {
                full[tok as usize * r..(tok as usize + 1) * r].copy_from_slice(row);
            }
            Tensor::from_vec(full, (vocab_size, r), &Device::Cpu)?
        } else {
            b
        };
        tensors.insert(key(&m, "lora_B"), b);
    }
    let ids = serde_json::to_string(&lora.answer_token_ids)?;
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string()), ("answer_token_ids".to_string(), ids)].into_iter().collect();
    let views: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let bytes = safetensors::tensor::serialize(views.iter().map(|(k, t)| (k.clone(), SafeView(t))).collect::<Vec<_>>(), Some(metadata))
        .map_err(|e| anyhow!("serializing adapter: {e}"))?;
    write_atomic(&dir.join("adapter_model.safetensors"), &sorted_header(bytes))?;
    Ok(())
}

/// safetensors writes `__metadata__` from a HashMap, whose iteration order changes from one map to
/// the next, so two saves of the same adapter differed in their header bytes. The same entries
/// with sorted keys have the same length: rewrite the header in place (trailing spaces are the
/// format's padding). Left as it is if anything is unexpected.
fn sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    use std::collections::BTreeMap;
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else { return bytes };
    let Some(raw) = bytes.get(8..8 + n) else { return bytes };
    let Ok(top) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(raw) else { return bytes };
    let top: BTreeMap<String, serde_json::Value> = top
        .into_iter()
        .map(|(k, v)| match (k.as_str(), &v) {
            ("__metadata__", serde_json::Value::Object(m)) => {
                let sorted: BTreeMap<&String, &serde_json::Value> = m.iter().collect();
                let v = serde_json::to_value(sorted).unwrap_or(v.clone());
                (k, v)
            }
            _ => (k, v),
        })
        .collect();
    let Ok(mut text) = serde_json::to_vec(&top) else { return bytes };
    if text.len() > n {
        return bytes;
    }
    text.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&text);
    bytes
}

/// A contiguous f32 CPU tensor seen as a safetensors view.
struct SafeView<'a>(&'a Tensor);

impl safetensors::tensor::View for SafeView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.0.dims()
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let v: Vec<f32> = self.0.flatten_all().and_then(|t| t.to_vec1()).unwrap_or_default();
        std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.elem_count() * 4
    }
}

/// Reads a PEFT LoRA adapter for a model of `num_layers` blocks. `answer_token_ids` picks the LM
/// head rows (read from the file's metadata when None).
pub fn load(dir: &Path, num_layers: usize, answer_token_ids: Option<Vec<u32>>, device: &Device) -> Result<LoraSet> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
    let cfg: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", cfg_path.display()))?;
    let field = |k: &str| cfg.get(k).ok_or_else(|| anyhow!("{}: field {k} is missing", cfg_path.display()));
    if field("peft_type")?.as_str() != Some("LORA") {
        bail!("{}: peft_type is not \"LORA\"", cfg_path.display());
    }
    let rank = field("r")?.as_u64().ok_or_else(|| anyhow!("{}: r is not an integer", cfg_path.display()))? as usize;
    let alpha = field("lora_alpha")?.as_f64().ok_or_else(|| anyhow!("{}: lora_alpha is not a number", cfg_path.display()))?;
    let dropout = cfg.get("lora_dropout").and_then(|v| v.as_f64()).unwrap_or(0.0);
    if cfg.get("use_rslora").and_then(|v| v.as_bool()) == Some(true) || cfg.get("use_dora").and_then(|v| v.as_bool()) == Some(true) {
        bail!("{}: rsLoRA and DoRA adapters are not supported", cfg_path.display());
    }
    let st_path = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&st_path).with_context(|| format!("reading {}", st_path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{}: {e}", st_path.display()))?;
    let answer_token_ids = match answer_token_ids {
        Some(a) => a,
        None => {
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| anyhow!("{}: {e}", st_path.display()))?;
            meta.metadata().as_ref().and_then(|m| m.get("answer_token_ids")).map(|s| serde_json::from_str(s)).transpose()?.unwrap_or_default()
        }
    };
    let get = |name: &str| -> Result<Option<Tensor>> {
        match st.tensor(name) {
            Ok(v) => {
                let t = candle_core::safetensors::Load::load(&v, &Device::Cpu)?;
                Ok(Some(t.to_dtype(DType::F32)?))
            }
            Err(_) => Ok(None),
        }
    };
    let mut layers = Vec::new();
    let mut targets = Vec::new();
    let mut add = |layer: Option<usize>, t: Target, a: Tensor, b: Tensor| -> Result<()> {
        if !targets.contains(&t) {
            targets.push(t);
        }
        layers.push(LoraLayer { layer, target: t, a: Var::from_tensor(&a.to_device(device)?)?, b: Var::from_tensor(&b.to_device(device)?)? });
        Ok(())
    };
    for l in 0..num_layers {
        for t in Target::ALL {
            if t == Target::LmHead {
                continue;
            }
            let m = t.module_path(l);
            if let (Some(a), Some(b)) = (get(&key(&m, "lora_A"))?, get(&key(&m, "lora_B"))?) {
                add(Some(l), t, a, b)?;
            }
        }
    }
    if let (Some(a), Some(b)) = (get(&key("lm_head", "lora_A"))?, get(&key("lm_head", "lora_B"))?) {
        if answer_token_ids.is_empty() {
            bail!("{}: the adapter has an lm_head LoRA but no answer tokens are known", st_path.display());
        }
        let ids = Tensor::from_vec(answer_token_ids.clone(), answer_token_ids.len(), &Device::Cpu)?;
        add(None, Target::LmHead, a, b.index_select(&ids, 0)?)?;
    }
    if layers.is_empty() {
        bail!("{}: no LoRA weights with PEFT key names were found", st_path.display());
    }
    targets.sort();
    let config = LoraConfig { rank, alpha, dropout, targets };
    Ok(LoraSet::from_layers(config, layers, answer_token_ids, num_layers))
}
