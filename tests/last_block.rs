//! The last block on the read rows only (`Llama::last_block`): the answer logits read each prompt's
//! last position, so the last block's queries, o_proj and MLP run on those B rows. It must give the
//! logits and the LoRA gradients of the full last block (the same sums: within 1e-5 relative) on
//! the tiny model with adapters on every projection, grouped KV heads, prompts of different
//! lengths (right padding), with and without q/k/v biases, and with a sliding window.

use candle_core::{Device, Tensor};
use laplace_lora::lora::{LoraConfig, LoraSet, Target};
use laplace_lora::model::llama::with_full_last_block;
use laplace_lora::model::{Batch, ForwardOpts, Llama, LoadedModel};

const ANSWER: [u32; 3] = [9, 10, 11];

fn model(qkv_bias: bool) -> Llama {
    let dir = tempfile::tempdir().unwrap();
    laplace_lora::testing::write_tiny_hf_model(dir.path(), 7, qkv_bias).unwrap();
    LoadedModel::load_hf(dir.path(), &Device::Cpu).unwrap().model
}

/// Adapters on all seven projections and the head, B drawn away from zero (seeded).
fn adapters(m: &Llama) -> LoraSet {
    let targets = vec![Target::QProj, Target::KProj, Target::VProj, Target::OProj, Target::GateProj, Target::UpProj, Target::DownProj, Target::LmHead];
    let lora = LoraSet::new(LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets }, &m.lora_dims(), ANSWER.to_vec(), 3, &Device::Cpu).unwrap();
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for l in &lora.layers {
        let v: Vec<f32> = (0..l.b.elem_count()).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * 0.4).collect();
        l.b.set(&Tensor::from_vec(v, l.b.shape(), &Device::Cpu).unwrap()).unwrap();
    }
    lora
}

/// Logits of a right-padded batch and every adapter matrix's gradient of sum(logits * r).
fn logits_and_grads(m: &Llama, lora: &LoraSet) -> (Vec<f32>, Vec<Vec<f32>>) {
    let prompts: [&[u32]; 4] = [&[4, 12, 13, 14, 15, 16, 20, 31, 22, 3], &[4, 12, 23, 3], &[4, 25, 26, 27, 28, 29, 3], &[30]];
    let batch = Batch::new(&prompts, &[3, 2, 3, 2], ANSWER.len(), 0, &Device::Cpu).unwrap();
    let mut opts = ForwardOpts::new(Some(lora));
    let f = m.answer_logits(&batch, &ANSWER, &mut opts).unwrap();
    let r = Tensor::from_vec((0..f.elem_count()).map(|i| 0.3 + (i % 5) as f32 * 0.25).collect::<Vec<_>>(), f.shape(), &Device::Cpu).unwrap();
    // Masked choices are -1e9: keep them out of the read-out.
    let r = (r * f.ge(-1e8).unwrap().to_dtype(candle_core::DType::F32).unwrap()).unwrap();
    let g = (f.clone() * r).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = lora
        .layers
        .iter()
        .flat_map(|l| [l.a.as_tensor(), l.b.as_tensor()])
        .map(|t| g.get(t).map(|x| x.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap_or_default())
        .collect();
    (f.flatten_all().unwrap().to_vec1::<f32>().unwrap(), grads)
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().filter(|v| v.abs() < 1e8).fold(0f32, |s, v| s.max(v.abs())).max(1e-6);
    a.iter().zip(b).filter(|(_, y)| y.abs() < 1e8).fold(0f32, |w, (x, y)| w.max((x - y).abs() / scale))
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
