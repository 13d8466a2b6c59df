//! The arithmetic floor of each bench phase: its floating-point operations (counted from the
//! model's shapes, as a dense implementation does them) divided by the GEMM rate measured on this
//! machine on the model's own projection shapes. A phase at 1.0x its floor spends all its time in
//! products at full GEMM speed; what is above is overhead (or non-GEMM work).
//!
//! # Counts (multiply-adds; FLOPs = 2 x MACs)
//! h hidden, f FFN width, L layers, H / G query / KV heads of width d, B batch, T tokens,
//! N = B T, K answer classes, r LoRA rank on q (h -> H d) and v (h -> G d).
//! - Frozen projections a token a layer: P = h H d + 2 h G d + H d h + 3 h f.
//! - Attention a sequence a layer: A = 2 H T^2 d forward (q k^T, p v; the full T x T of a dense
//!   implementation: our kernels compute only the visible query tiles, (T^2 + 32 T) / 2, so at 256
//!   tokens they do 44% less here than counted), 2 A backward (dP, dq, dk, dv).
//! - LoRA a token a layer: R = r (h + H d) + r (h + G d) forward, 3 R backward (dx, dA, dB).
//! - One pass forward: F = L (N (P + R) + B A); one backward pass (input gradients only, the
//!   frozen matrices get none): W = L (N (P + 3 R) + 2 B A).
//! - LoRA step: F + W (AdamW is O(parameters)).
//! - KFAC pass (exact GGN, K - 1 backward columns, positions "expand"): F + (K - 1) W + the factors:
//!   L N (h^2 + 2 r^2) for the inputs (q's and v's A factors share one) and (K - 1) L N ((H d)^2 +
//!   (G d)^2 + 2 r^2) for the output gradients; per example: / B.
//! - Predictive (K backward columns for the Jacobian, then J Sigma J^T in the Kronecker
//!   eigenbasis): F + K W + K L B sum over (q, v) of (r d_in^2 + r^2 d_in + d_out^2 r + d_out r^2);
//!   per example: / B.

use crate::model::frozen::Frozen;
use crate::model::Config;
use serde::Serialize;
use std::time::Instant;

/// FLOPs of the bench phases.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Flops {
    pub step: f64,
    pub kfac_per_example: f64,
    pub predictive_per_example: f64,
}

/// The counts of the module documentation for `cfg` at batch `b` x `t` tokens, K classes, rank r.
pub fn flops(cfg: &Config, b: usize, t: usize, k: usize, r: usize) -> Flops {
    let (h, f, l) = (cfg.hidden_size as f64, cfg.intermediate_size as f64, cfg.num_hidden_layers as f64);
    let (qd, kvd) = ((cfg.num_attention_heads * cfg.head_dim) as f64, (cfg.num_key_value_heads * cfg.head_dim) as f64);
    let (bf, tf, kf, rf) = (b as f64, t as f64, k as f64, r as f64);
    let n = bf * tf;
    let p = h * qd + 2.0 * h * kvd + qd * h + 3.0 * h * f;
    let a = 2.0 * qd * tf * tf; // H d = qd
    let lora = rf * (h + qd) + rf * (h + kvd);
    let fwd = l * (n * (p + lora) + bf * a);
    let bwd = l * (n * (p + 3.0 * lora) + 2.0 * bf * a);
    let factors = l * n * (h * h + 2.0 * rf * rf) + (kf - 1.0) * l * n * (qd * qd + kvd * kvd + 2.0 * rf * rf);
    let project = |d_in: f64, d_out: f64| rf * d_in * d_in + rf * rf * d_in + d_out * d_out * rf + d_out * rf * rf;
    let sigma = kf * l * bf * (project(h, qd) + project(h, kvd));
    Flops {
        step: 2.0 * (fwd + bwd),
        kfac_per_example: 2.0 * (fwd + (kf - 1.0) * bwd + factors) / bf,
        predictive_per_example: 2.0 * (fwd + kf * bwd + sigma) / bf,
    }
}

/// The distinct (d_out, d_in) of a block's frozen projections, with how many of each a block has.
fn projection_shapes(cfg: &Config) -> Vec<((usize, usize), usize)> {
    let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
    let (qd, kvd) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let mut v: Vec<((usize, usize), usize)> = Vec::new();
    for s in [(qd, h), (kvd, h), (kvd, h), (h, qd), (f, h), (f, h), (h, f)] {
        match v.iter_mut().find(|(x, _)| *x == s) {
            Some(e) => e.1 += 1,
            None => v.push((s, 1)),
        }
    }
    v
}

/// GFLOP/s of the frozen products y = x W^T and dx = dy W of one block (every projection shape,
/// weighted as a block has them) on `rows` rows, with W stored as `store` makes it (f32 dense
/// through gemm, or packed bf16), on the current thread pool. Best of 3 timings of at least
/// `min_s` seconds each (the machine is shared: the best is the least disturbed).
pub fn gemm_rate(cfg: &Config, rows: usize, store: impl Fn(Frozen) -> anyhow::Result<Frozen>, min_s: f64) -> anyhow::Result<f64> {
    use candle_core::{Device, Tensor};
    let dev = Device::Cpu;
    let mut work = Vec::new();
    for ((d_out, d_in), count) in projection_shapes(cfg) {
        let w = store(Frozen::Dense(Tensor::randn(0f32, 0.02, (d_out, d_in), &dev)?))?;
        let x = Tensor::randn(0f32, 1.0, (rows, d_in), &dev)?;
        let dy = Tensor::randn(0f32, 1.0, (rows, d_out), &dev)?;
        work.push((w, x, dy, count, 2.0 * (rows * d_in * d_out) as f64));
    }
    let work: Vec<_> = work
        .into_iter()
        .map(|(w, x, dy, count, f)| Ok((w, x.flatten_all()?.to_vec1::<f32>()?, dy.flatten_all()?.to_vec1::<f32>()?, count, f)))
        .collect::<anyhow::Result<_>>()?;
    let once = || -> anyhow::Result<f64> {
        let mut flop = 0.0;
        for (w, x, dy, count, f) in &work {
            for _ in 0..*count {
                // The products the frozen linear runs forward and backward, without the graph.
                std::hint::black_box(w.forward_rows(x, rows)?);
                std::hint::black_box(w.backward_rows(dy, rows)?);
                flop += 2.0 * f;
            }
        }
        Ok(flop)
    };
    once()?; // warm-up: packing buffers, page faults, thread pool
    let mut best = 0f64;
    for _ in 0..3 {
        let (t0, mut flop) = (Instant::now(), 0.0);
        while t0.elapsed().as_secs_f64() < min_s {
            flop += once()?;
        }
        best = best.max(flop / t0.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step count against the figure STACK-NOTES gives for the default model (about 108 GFLOP
    /// for 256 tokens: 106M body parameters, 2 FLOPs each, forward and input gradients), and the
    /// counts' structure: KFAC = forward + 3 backward passes + factors at K = 4, etc.
    #[test]
    fn counts_match_the_default_model_figures() -> anyhow::Result<()> {
        let cfg = Config::from_hf_str(super::super::SMOLLM2_135M_CONFIG)?;
        let f = flops(&cfg, 4, 64, 4, 8);
        assert!((f.step / 1e9 - 108.0).abs() < 6.0, "step {:.1} GFLOP", f.step / 1e9);
        // One example's KFAC work is about (1 + 3) / 2 of a step's per example, plus the factors.
        let per_pass = f.step / 2.0 / 4.0;
        assert!(f.kfac_per_example > 4.0 * per_pass && f.kfac_per_example < 4.6 * per_pass, "{}", f.kfac_per_example / per_pass);
        assert!(f.predictive_per_example > 5.0 * per_pass && f.predictive_per_example < 5.3 * per_pass);
        // Four times the tokens: more than four times the work (attention grows as T^2).
        let g = flops(&cfg, 4, 256, 4, 8);
        assert!(g.step > 4.0 * f.step && g.step < 4.4 * f.step);
        let shapes = projection_shapes(&cfg);
        assert_eq!(shapes.iter().map(|s| s.1).sum::<usize>(), 7);
        assert_eq!(shapes.len(), 4); // (576, 576) q and o, (192, 576) k and v, (1536, 576) gate and up, (576, 1536) down
        Ok(())
    }
}
