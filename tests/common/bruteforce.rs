//! Shared brute-force machinery for the Laplace tests: a tiny llama (2 layers, hidden 32, LoRA
//! rank 2 on q, v and the LM head: P = 520 parameters) whose full Jacobian (K x P, from candle's
//! own gradients of the LoRA variables, not from the taps) and dense GGN fit in memory.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use laplace_lora::laplace::curvature::collect;
use laplace_lora::laplace::jacobian::{functional, Functional, Group, Rows};
use laplace_lora::laplace::posterior::Posterior;
use laplace_lora::laplace::spectral::SpectralGrid;
use laplace_lora::laplace::{subset_blocks, LaplaceConfig, Mat, Positions, Structure, Subset};
use laplace_lora::lora::{LoraConfig, LoraSet, Target};
use laplace_lora::model::{Batch, ForwardOpts, Llama, LoadedModel};
use laplace_lora::train::Encoded;
use std::sync::atomic::AtomicBool;

pub const K: usize = 3;
pub const ANSWER: [u32; K] = [9, 10, 11];

pub struct Setup {
    pub model: Llama,
    pub lora: LoraSet,
}

pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    laplace_lora::testing::write_tiny_hf_model(dir.path(), 21, false).unwrap();
    let model = LoadedModel::load_hf(dir.path(), &Device::Cpu).unwrap().model;
    let lora = LoraSet::new(
        LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets: vec![Target::QProj, Target::VProj, Target::LmHead] },
        &model.lora_dims(),
        ANSWER.to_vec(),
        5,
        &Device::Cpu,
    )
    .unwrap();
    // A trained-looking adapter: B away from zero, so that every block has curvature.
    // Seeded (candle's randn draws from an unseeded thread RNG): every run sees the same adapter.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for l in &lora.layers {
        let v: Vec<f32> = (0..l.b.elem_count()).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * 0.4).collect();
        l.b.set(&Tensor::from_vec(v, l.b.shape(), &Device::Cpu).unwrap()).unwrap();
    }
    Setup { model, lora }
}

pub fn examples() -> Vec<Encoded> {
    vec![
        Encoded { ids: vec![4, 20, 31, 22, 3], label: 0, num_choices: 3 },
        Encoded { ids: vec![4, 23, 3], label: 2, num_choices: 3 },
        Encoded { ids: vec![4, 25, 26, 27, 28, 29, 3], label: 1, num_choices: 3 },
    ]
}

/// The LoRA matrices of the posterior's blocks, flattened row-major, concatenated: theta.
pub fn block_vars(s: &Setup, blocks: &[laplace_lora::laplace::BlockId]) -> Vec<Tensor> {
    blocks
        .iter()
        .map(|b| {
            let l = &s.lora.layers[b.layer];
            if b.mat == Mat::A {
                l.a.as_tensor().clone()
            } else {
                l.b.as_tensor().clone()
            }
        })
        .collect()
}

/// Dense Jacobian (K x P) and probabilities of one example, from candle's gradients of the vars.
/// Classes the example lacks (c >= num_choices) get probability 0 and their logits' Jacobian.
pub fn dense_jacobian(s: &Setup, e: &Encoded, vars: &[Tensor]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let batch = Batch::new(&[&e.ids], &[e.num_choices], K, 0, &Device::Cpu).unwrap();
    let f = s.model.answer_logits(&batch, &ANSWER, &mut ForwardOpts::new(Some(&s.lora))).unwrap();
    let fv: Vec<f64> = f.get(0).unwrap().to_vec1::<f32>().unwrap().iter().map(|x| *x as f64).collect();
    let p = laplace_lora::calibration::softmax(&fv);
    let rows = (0..K)
        .map(|c| {
            let g = f.get(0).unwrap().get(c).unwrap().backward().unwrap();
            vars.iter()
                .flat_map(|v| match g.get(v) {
                    Some(t) => t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(|x| x as f64).collect::<Vec<_>>(),
                    None => vec![0.0; v.elem_count()],
                })
                .collect()
        })
        .collect();
    (rows, p)
}

/// Dense GGN = sum_n J_n^T (diag p - p p^T) J_n.
pub fn dense_ggn(s: &Setup, data: &[Encoded], vars: &[Tensor]) -> (usize, Vec<f64>) {
    let p_n: usize = vars.iter().map(|v| v.elem_count()).sum();
    let mut g = vec![0.0; p_n * p_n];
    for e in data {
        let (j, p) = dense_jacobian(s, e, vars);
        for a in 0..K {
            for b in 0..K {
                let lam = if a == b { p[a] } else { 0.0 } - p[a] * p[b];
                if lam == 0.0 {
                    continue;
                }
                for x in 0..p_n {
                    let ja = j[a][x] * lam;
                    if ja == 0.0 {
                        continue;
                    }
                    for y in 0..p_n {
                        g[x * p_n + y] += ja * j[b][y];
                    }
                }
            }
        }
    }
    (p_n, g)
}

pub fn cfg(structure: Structure, positions: Positions) -> LaplaceConfig {
    LaplaceConfig { structure, positions, low_rank_threshold: 1024, ..Default::default() }
}

pub fn fit(s: &Setup, data: &[Encoded], c: &LaplaceConfig) -> Posterior {
    fit_batched(s, data, c, 2)
}

pub fn fit_batched(s: &Setup, data: &[Encoded], c: &LaplaceConfig, batch_size: usize) -> Posterior {
    let blocks = subset_blocks(&s.lora, Subset::All);
    let curv = collect(&s.model, &s.lora, &blocks, data, &ANSWER, 0, batch_size, c, &AtomicBool::new(false), &mut |_, _| {}).unwrap().unwrap();
    Posterior::from_curvature(curv, &s.lora).unwrap()
}

/// Dense block-diagonal KFAC matrix and its side P.
pub fn dense_kron(post: &Posterior) -> (usize, Vec<f64>) {
    (post.n_params(), post.dense_kron())
}

/// Cholesky of an SPD matrix (lower, row-major), for log det and solves.
pub fn cholesky(m: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = m[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = if i == j { s.sqrt() } else { s / l[j * n + j] };
        }
    }
    l
}

pub fn solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= l[i * n + k] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= l[k * n + i] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    y
}

/// Sigma_f of `functional` for `group` against the dense J (F + delta I)^-1 J^T on each example's
/// own classes, `l` the Cholesky factor of F + delta I and J from candle's gradients of `vars`.
/// f32 Jacobians: 1e-4 relative to the diagonal's scale.
pub fn check_sigma_f(s: &Setup, post: &Posterior, data: &[Encoded], group: Group, l: &[f64], vars: &[Tensor], what: &str) {
    check_sigma_f_rows(s, post, data, group, l, vars, Rows::Raw, 2, what);
}

/// `functional` on the tiny model (pad 0, the slider's default grid of 200 bins over 1e-4..1e4).
pub fn functional_of(s: &Setup, post: &Posterior, data: &[Encoded], batch: usize, rows: Rows, exact: &[Group], spectral: &[Vec<usize>]) -> Vec<Functional> {
    let grid = SpectralGrid::for_deltas(1e-4, 1e4, 200);
    functional(&s.model, &s.lora, post, data, &ANSWER, 0, batch, rows, exact, spectral, &grid, &AtomicBool::new(false), &mut |_, _| {}).unwrap().unwrap()
}

/// The n x n matrix `m` (row-major) as the given rows describe it: itself for raw rows, C m C
/// (C = I - 11^T / n) for centred ones.
pub fn as_rows(m: &[f64], n: usize, rows: Rows) -> Vec<f64> {
    if rows == Rows::Raw {
        return m.to_vec();
    }
    let k = n as f64;
    let all: f64 = m.iter().sum::<f64>() / (k * k);
    let row = |a: usize| (0..n).map(|c| m[a * n + c]).sum::<f64>() / k;
    let col = |b: usize| (0..n).map(|c| m[c * n + b]).sum::<f64>() / k;
    (0..n * n).map(|i| m[i] - row(i / n) - col(i % n) + all).collect()
}

/// As [`check_sigma_f`] for either kind of rows at a batch size: with `Rows::Centred` against
/// C J (F + delta I)^-1 J^T C, C = I - 11^T / n over the example's own n choices (the centred
/// rows come from n - 1 backward passes and a sum, the dense J from all K gradients).
#[allow(clippy::too_many_arguments)]
pub fn check_sigma_f_rows(s: &Setup, post: &Posterior, data: &[Encoded], group: Group, l: &[f64], vars: &[Tensor], rows: Rows, batch: usize, what: &str) {
    let p: usize = vars.iter().map(|v| v.elem_count()).sum();
    let grid = SpectralGrid::for_deltas(1e-4, 1e4, 50);
    let fs =
        functional(&s.model, &s.lora, post, data, &ANSWER, 0, batch, rows, &[group], &[], &grid, &AtomicBool::new(false), &mut |_, _| {}).unwrap().unwrap();
    for (n, (e, f)) in data.iter().zip(&fs).enumerate() {
        let (j, _) = dense_jacobian(s, e, vars);
        let sol: Vec<Vec<f64>> = (0..K).map(|c| solve(l, p, &j[c])).collect();
        let nc = e.num_choices;
        let raw = |a: usize, b: usize| -> f64 { j[a].iter().zip(&sol[b]).map(|(x, y)| x * y).sum() };
        let dense = as_rows(&(0..nc * nc).map(|i| raw(i / nc, i % nc)).collect::<Vec<f64>>(), nc, rows);
        for a in 0..nc {
            for b in 0..nc {
                let want = dense[a * nc + b];
                let got = f.sigma[0][a * K + b];
                let scale = (dense[a * nc + a] * dense[b * nc + b]).sqrt();
                assert!((got - want).abs() <= 1e-4 * scale, "{what} ({rows:?}): example {n} ({nc} choices): Sigma_f[{a},{b}] {got} vs {want}");
            }
        }
    }
}
