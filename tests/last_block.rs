//! The last block on the read rows only (`Llama::last_block`): the answer logits read each prompt's
//! last position, so the last block's queries, o_proj and MLP run on those B rows. It must give the
//! logits and the LoRA gradients of the full last block (the same sums: within 1e-5 relative) on
//! the tiny model with adapters on every projection, grouped KV heads, prompts of different
//! lengths (right padding), with and without q/k/v biases, and with a sliding window.

use candle_core::Device;
use laplace_lora::lora::Target;
use laplace_lora::model::llama::with_full_last_block;
use laplace_lora::model::{Llama, LoadedModel};

#[path = "common/adapted.rs"]
mod adapted;
use adapted::{logits_and_grads, rel};

fn model(qkv_bias: bool) -> Llama {
    let dir = tempfile::tempdir().unwrap();
    laplace_lora::testing::write_tiny_hf_model(dir.path(), 7, qkv_bias).unwrap();
    LoadedModel::load_hf(dir.path(), &Device::Cpu).unwrap().model
}

/// Adapters on all seven projections and the head.
fn adapters(m: &Llama) -> laplace_lora::lora::LoraSet {
    let targets = vec![Target::QProj, Target::KProj, Target::VProj, Target::OProj, Target::GateProj, Target::UpProj, Target::DownProj, Target::LmHead];
    adapted::adapters(m, targets)
}

fn check(m: &Llama, what: &str) {
    let lora = adapters(m);
    let (f, g) = logits_and_grads(m, &lora);
    let (f0, g0) = with_full_last_block(|| logits_and_grads(m, &lora));
    let d = rel(&f, &f0);
    assert!(d < 1e-5, "{what}: logits differ by {d:.2e} of the largest");
    let last = m.cfg.num_hidden_layers - 1;
    let mut last_block_grads = 0;
    for (i, (a, b)) in g.iter().zip(&g0).enumerate() {
        let d = rel(a, b);
        assert!(d < 1e-5, "{what}: gradient {i} differs by {d:.2e} of its largest");
        assert!(!b.is_empty() && b.iter().any(|v| *v != 0.0), "{what}: gradient {i} is zero (the check would prove nothing)");
        let layer = &lora.layers[i / 2];
        if layer.layer == Some(last) {
            last_block_grads += 1;
        }
    }
    assert_eq!(last_block_grads, 14, "{what}: the last block's seven adapters (A and B each) are checked");
}

#[test]
fn last_block_on_the_read_rows_gives_the_full_blocks_logits_and_gradients() {
    check(&model(false), "llama");
    check(&model(true), "qwen2 (q/k/v biases)");
    let mut m = model(false);
    m.cfg.sliding_window = Some(3);
    check(&m, "sliding window 3");
}
