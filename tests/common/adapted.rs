//! A tiny model's answer logits and adapter gradients on a fixed right-padded batch, for tests
//! that compare two ways of computing the same model (`last_block.rs`, `swiglu_mlp.rs`).

use candle_core::{Device, Tensor};
use laplace_lora::lora::{LoraConfig, LoraSet, Target};
use laplace_lora::model::{Batch, ForwardOpts, Llama};

pub const ANSWER: [u32; 3] = [9, 10, 11];

/// Adapters of rank 2 on `targets`, B drawn away from zero (seeded).
pub fn adapters(m: &Llama, targets: Vec<Target>) -> LoraSet {
    let lora = LoraSet::new(LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets }, &m.lora_dims(), ANSWER.to_vec(), 3, &Device::Cpu).unwrap();
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for l in &lora.layers {
        let v: Vec<f32> = (0..l.b.elem_count()).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * 0.4).collect();
        l.b.set(&Tensor::from_vec(v, l.b.shape(), &Device::Cpu).unwrap()).unwrap();
    }
    lora
}

/// Logits of a right-padded batch (4 prompts of 10, 4, 7 and 1 tokens, some with 2 of the 3
/// choices) and every adapter matrix's gradient of sum(logits * r), in `lora.layers` order (A, B).
pub fn logits_and_grads(m: &Llama, lora: &LoraSet) -> (Vec<f32>, Vec<Vec<f32>>) {
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

/// The largest difference relative to b's largest magnitude (masked -1e9 entries left out).
pub fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().filter(|v| v.abs() < 1e8).fold(0f32, |s, v| s.max(v.abs())).max(1e-6);
    a.iter().zip(b).filter(|(_, y)| y.abs() < 1e8).fold(0f32, |w, (x, y)| w.max((x - y).abs() / scale))
}
