//! The decoder on tiny random checkpoints of each supported architecture variant, against the
//! logits transformers computed for them (float32, eager attention), committed by
//! `scripts/arch_fixtures.py` under tests/fixtures/arch/: llama (untied and tied head), mistral
//! with a sliding window shorter than the prompts, qwen2 with qkv bias (untied and tied), and
//! llama3 rope scaling with frequencies in all three bands. The configs are transformers 5's
//! (`rope_parameters`, no top-level `rope_theta`).
//!
//! Every prefix of three prompts (1, 5 and 11 tokens) one at a time, and the three together as a
//! right-padded batch. Tolerance 1e-5 absolute on logits of magnitude up to 3.5 (measured: 2.5e-6 at most): both sides are
//! f32 with the same operations in a different order (fused norm, attention and SwiGLU here).

use candle_core::{Device, Tensor};
use laplace_lora::model::{hf, Batch, Config, ForwardOpts, Llama};
use std::path::PathBuf;

const VARIANTS: &[&str] = &["llama", "llama_tied", "mistral_window", "qwen2_bias", "qwen2_tied", "llama3_rope"];
const TOL: f32 = 1e-5;

fn load(name: &str) -> anyhow::Result<(Config, Llama, serde_json::Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arch").join(name);
    let cfg = Config::from_hf_json(&dir.join("config.json"))?;
    let model = Llama::from_tensors(cfg.clone(), hf::load_tensors(&dir)?, &Device::Cpu)?;
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("logits.json"))?)?;
    Ok((cfg, model, expected))
}

fn max_diff(a: &[f32], b: &[serde_json::Value]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y.as_f64().unwrap() as f32).abs()).fold(0.0, f32::max)
}

#[test]
fn configs_are_read_as_transformers_wrote_them() -> anyhow::Result<()> {
    let (c, ..) = load("mistral_window")?;
    assert_eq!((c.model_type.as_str(), c.sliding_window), ("mistral", Some(4)));
    let (c, ..) = load("qwen2_tied")?;
    assert!(c.qkv_bias && c.tie_word_embeddings && c.rope_theta == 1e6 && c.sliding_window.is_none());
    let (c, ..) = load("llama3_rope")?;
    let s = c.rope_scaling.expect("llama3 rope scaling is read from rope_parameters");
    assert_eq!((c.rope_theta, s.factor, s.original_max_position_embeddings), (100.0, 4.0, 32));
    Ok(())
}

#[test]
fn every_variant_matches_transformers_at_every_position() -> anyhow::Result<()> {
    for name in VARIANTS {
        let (_, m, e) = load(name)?;
        let prompts = e["prompts"].as_array().unwrap();
        let mut worst = 0f32;
        for (p, want) in prompts.iter().zip(e["logits"].as_array().unwrap()) {
            let ids: Vec<u32> = p.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            for t in 1..=ids.len() {
                let x = Tensor::new(&ids[..t], &Device::Cpu)?.unsqueeze(0)?;
                let got = m.next_token_logits(&x, &[t], None)?.squeeze(0)?.to_vec1::<f32>()?;
                let d = max_diff(&got, want[t - 1].as_array().unwrap());
                assert!(d < TOL, "{name}: prompt {ids:?}, position {}: logits differ from transformers by {d}", t - 1);
                worst = worst.max(d);
            }
        }
        // The prompts together, right-padded: each one's last position as alone.
        let all: Vec<Vec<u32>> = prompts.iter().map(|p| p.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect();
        let refs: Vec<&[u32]> = all.iter().map(|v| v.as_slice()).collect();
        let vocab: Vec<u32> = (0..64).collect();
        let batch = Batch::new(&refs, &[64; 3], 64, 0, &Device::Cpu)?;
        let f = m.answer_logits(&batch, &vocab, &mut ForwardOpts::new(None))?;
        for (b, (ids, want)) in all.iter().zip(e["logits"].as_array().unwrap()).enumerate() {
            let got = f.get(b)?.to_vec1::<f32>()?;
            let d = max_diff(&got, want[ids.len() - 1].as_array().unwrap());
            assert!(d < TOL, "{name}: batched prompt {b} differs from transformers by {d}");
        }
        eprintln!("{name}: largest logit difference {worst:e}");
    }
    Ok(())
}
