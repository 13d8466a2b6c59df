//! Decoder configuration for the llama family (Llama, Mistral, Qwen2, SmolLM), read from a
//! Hugging Face `config.json` or from GGUF metadata.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// Llama 3 style frequency-dependent rope scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// "llama", "mistral" or "qwen2" (SmolLM checkpoints say "llama").
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q, k, v (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    /// Mistral's sliding attention window, if any.
    pub sliding_window: Option<usize>,
}

/// The fields of `config.json` we read; unknown fields are ignored (HF configs carry many).
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers >= 5 writes `rope_parameters` (`rope_theta` and the scaling, with
    /// `rope_type`) instead of a top-level `rope_theta` and `rope_scaling`.
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
}

impl Config {
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading model config {}", path.display()))?;
        Self::from_hf_str(&text).with_context(|| format!("parsing model config {}", path.display()))
    }

    pub fn from_hf_str(text: &str) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(text)?;
        let model_type = c.model_type.unwrap_or_else(|| "llama".into());
        if !matches!(model_type.as_str(), "llama" | "mistral" | "qwen2") {
            bail!("unsupported model_type {model_type:?}: this decoder handles the llama family (llama, mistral, qwen2)");
        }
        let params = c.rope_parameters.as_ref().filter(|v| v.is_object());
        let rope_theta = c.rope_theta.or_else(|| params.and_then(|p| p.get("rope_theta")).and_then(|t| t.as_f64()));
        let rope_scaling = match params.or(c.rope_scaling.as_ref()) {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str());
                match kind {
                    Some("llama3") => Some(serde_json::from_value(v.clone()).context("rope_scaling")?),
                    Some("default") | None => None,
                    Some(other) => bail!("unsupported rope_scaling type {other:?} (supported: llama3)"),
                }
            }
        };
        let heads = c.num_attention_heads;
        if heads == 0 || c.hidden_size % heads != 0 && c.head_dim.is_none() {
            bail!("hidden_size {} is not divisible by num_attention_heads {}", c.hidden_size, heads);
        }
        let qwen = model_type == "qwen2";
        let sliding_window = match (model_type.as_str(), c.use_sliding_window) {
            ("mistral", _) => c.sliding_window,
            (_, Some(true)) => c.sliding_window,
            _ => None,
        };
        let cfg = Config {
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            vocab_size: c.vocab_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(heads),
            head_dim: c.head_dim.unwrap_or(c.hidden_size / heads),
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: qwen || c.attention_bias.unwrap_or(false),
            sliding_window,
            model_type,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_key_value_heads == 0 || self.num_attention_heads % self.num_key_value_heads != 0 {
            bail!("num_attention_heads {} is not a multiple of num_key_value_heads {}", self.num_attention_heads, self.num_key_value_heads);
        }
        if self.head_dim % 2 != 0 {
            bail!("head_dim {} must be even for rotary embeddings", self.head_dim);
        }
        if self.sliding_window == Some(0) {
            bail!("sliding_window 0 would let a token attend to no key, not even itself; it must be at least 1");
        }
        Ok(())
    }

    /// Parameters of the decoder: embedding (vocab x hidden), per block q, k, v, o, gate, up,
    /// down, two norms and the qkv biases, the final norm, and an LM head unless tied.
    pub fn num_parameters(&self) -> u64 {
        let (h, f, v) = (self.hidden_size as u64, self.intermediate_size as u64, self.vocab_size as u64);
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let bias = if self.qkv_bias { q + 2 * kv } else { 0 };
        let block = h * q + 2 * h * kv + q * h + 3 * h * f + 2 * h + bias;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * block + h + head
    }

    /// Rotary inverse frequencies theta_i = base^(-2i/d), with llama3 scaling where configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / d as f64)).collect();
        let Some(s) = &self.rope_scaling else {
            return base.into_iter().map(|f| f as f32).collect();
        };
        let orig = s.original_max_position_embeddings as f64;
        let low_wavelen = orig / s.low_freq_factor;
        let high_wavelen = orig / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let g = if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                };
                g as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smollm_and_qwen_configs() {
        let smol = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
            "intermediate_size":1536,"vocab_size":49152,"num_hidden_layers":30,"num_attention_heads":9,
            "num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000,"max_position_embeddings":8192,
            "tie_word_embeddings":true}"#;
        let c = Config::from_hf_str(smol).unwrap();
        assert_eq!((c.head_dim, c.num_key_value_heads, c.qkv_bias, c.tie_word_embeddings), (64, 3, false, true));
        let qwen = r#"{"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,"vocab_size":151936,
            "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"sliding_window":32768,
            "use_sliding_window":false}"#;
        let c = Config::from_hf_str(qwen).unwrap();
        assert!(c.qkv_bias && c.sliding_window.is_none());
        assert!(Config::from_hf_str(
            r#"{"model_type":"gpt2","hidden_size":8,"intermediate_size":8,"vocab_size":8,"num_hidden_layers":1,"num_attention_heads":1}"#
        )
        .is_err());
    }

    /// A sliding window of 0 keys is refused by name (the attention needs at least the query's own key).
    #[test]
    fn a_zero_sliding_window_is_refused() {
        let cfg = |w: usize| {
            Config::from_hf_str(&format!(
                r#"{{"model_type":"mistral","hidden_size":8,"intermediate_size":8,"vocab_size":8,
                "num_hidden_layers":1,"num_attention_heads":1,"sliding_window":{w}}}"#
            ))
        };
        let e = cfg(0).unwrap_err().to_string();
        assert!(e.contains("sliding_window 0"), "{e}");
        assert_eq!(cfg(1).unwrap().sliding_window, Some(1));
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let mut c = Config::from_hf_str(
            r#"{"hidden_size":64,"intermediate_size":8,"vocab_size":8,
            "num_hidden_layers":1,"num_attention_heads":1,"rope_theta":500000,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#,
        )
        .unwrap();
        let scaled = c.rope_inv_freq();
        c.rope_scaling = None;
        let plain = c.rope_inv_freq();
        // Highest frequency: wavelength 2 pi < 8192/4, unchanged. Lowest: wavelength > 8192, divided by 8.
        assert_eq!(scaled[0], plain[0]);
        let last = plain.len() - 1;
        assert!((scaled[last] * 8.0 / plain[last] - 1.0).abs() < 1e-6);
    }
}
