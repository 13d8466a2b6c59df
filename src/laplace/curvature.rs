//! One pass over the training set that collects the curvature of the K-way softmax likelihood
//! over the LoRA parameters (MATH.md sections 3 and 4).
//!
//! For each batch: one forward with a `Tap` on every adapted projection, then K backward passes
//! with the columns of R = diag(sqrt p) - p sqrt(p)^T (R R^T = diag(p) - p p^T, so the K
//! "pseudo-gradients" sum to the exact GGN), or one with p - onehot(y~) for the sampled Fisher.
//! Each backward yields e_t = dL/dy_t at every position of every adapted projection, from which
//! each LoRA matrix's input side x_t and output side o_t follow (MATH.md section 2).

use super::eigen::Factor;
pub use super::tapped::{column_reps, input_side, output_side, sides, RowLayout, TappedBatch};
use super::{BlockId, CurvatureKind, LaplaceConfig, Mat, Structure};
use crate::lora::LoraSet;
use crate::model::llama::{Tap, TapEntry};
use crate::model::Llama;
use crate::train::Encoded;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};

/// The curvature of one block.
pub enum BlockCurvature {
    Kron {
        x: Factor,
        o: Factor,
    },
    Diag {
        d: Vec<f64>,
    },
    /// Covered by `Curvature::full`.
    InFull,
}

pub struct Curvature {
    pub blocks: Vec<BlockId>,
    pub per_block: Vec<BlockCurvature>,
    /// The dense GGN over all blocks of the subset (structure "full"), row-major P x P, in the
    /// order of `blocks`, each block's gradient flattened row-major (n_o x n_x).
    pub full: Option<(usize, Vec<f64>)>,
    /// sum_n log p(y_n | f_n(theta*)) over the training set.
    pub log_lik: f64,
    pub n_examples: usize,
    /// The answer logits of every training example at the adapters the curvature was taken at
    /// (the MAP), in data order, -inf for classes it lacks: the pass's own forward, so that the
    /// training split's MAP metrics need no pass of their own. Empty where not collected.
    pub map_logits: Vec<Vec<f64>>,
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// What rows V (m, n) add to a factor (F += V^T V), read back from the device: V^T itself for a
/// low-rank factor, the product V^T V (on the device) for a dense one.
enum Pending {
    Outer { cols: Vec<f64>, m: usize },
    Dense(Vec<f64>),
}

impl Pending {
    fn of(f: &Factor, rows: &Tensor) -> Result<Self> {
        Ok(if f.is_low_rank() {
            Pending::Outer { cols: to_f64(&rows.t()?.contiguous()?)?, m: rows.dim(0)? }
        } else {
            Pending::Dense(to_f64(&rows.t()?.matmul(rows)?)?)
        })
    }

    fn apply(self, f: &mut Factor) -> Result<()> {
        match self {
            Pending::Outer { cols, m } => {
                f.add_outer(&cols, m, 1.0);
                Ok(())
            }
            Pending::Dense(mat) => f.add_dense(&mat),
        }
    }
}

/// Low-rank factor updates waiting to run, applied in parallel over blocks: each is a QR and an
/// eigendecomposition on the host, which would otherwise run one block after another. Dense
/// updates (an addition) are applied at once. The waiting rows are flushed at ~256 MB.
#[derive(Default)]
struct Deferred {
    /// (block, X side?, rows)
    items: Vec<(usize, bool, Pending)>,
    bytes: usize,
}

impl Deferred {
    const MAX_BYTES: usize = 256 << 20;

    fn add(&mut self, per_block: &mut [BlockCurvature], block: usize, x_side: bool, rows: &Tensor) -> Result<()> {
        let BlockCurvature::Kron { x, o } = &mut per_block[block] else { return Ok(()) };
        let f = if x_side { x } else { o };
        match Pending::of(f, rows)? {
            Pending::Outer { cols, m } => {
                self.bytes += cols.len() * 8;
                self.items.push((block, x_side, Pending::Outer { cols, m }));
                if self.bytes > Self::MAX_BYTES {
                    self.flush(per_block)?;
                }
                Ok(())
            }
            dense => dense.apply(f),
        }
    }

    fn flush(&mut self, per_block: &mut [BlockCurvature]) -> Result<()> {
        use rayon::prelude::*;
        // Queue 2b is block b's X factor, 2b + 1 its O factor; each queue in arrival order.
        let mut queues: Vec<Vec<Pending>> = (0..2 * per_block.len()).map(|_| Vec::new()).collect();
        for (b, x_side, p) in std::mem::take(&mut self.items) {
            queues[2 * b + usize::from(!x_side)].push(p);
        }
        self.bytes = 0;
        let factors: Vec<Option<&mut Factor>> = per_block
            .iter_mut()
            .flat_map(|c| match c {
                BlockCurvature::Kron { x, o } => [Some(x), Some(o)],
                _ => [None, None],
            })
            .collect();
        factors.into_par_iter().zip(queues).try_for_each(|(f, q)| match f {
            Some(f) => q.into_iter().try_for_each(|p| p.apply(f)),
            None => Ok(()),
        })
    }
}

/// For each A block, the first earlier A block whose projection reads the very same tensor (the
/// same storage, offset and shape: q_proj, k_proj and v_proj of one layer read one normed input);
/// their X factors are identical.
fn shared_inputs(blocks: &[BlockId], tap: &Tap) -> Vec<Option<usize>> {
    let mut first: std::collections::HashMap<(usize, usize, Vec<usize>), usize> = std::collections::HashMap::new();
    blocks
        .iter()
        .enumerate()
        .map(|(bi, b)| {
            let e = tap.entries.iter().find(|e| e.layer == b.layer).filter(|_| b.mat == Mat::A)?;
            let (st, layout) = e.input.storage_and_layout();
            let key = (&*st as *const candle_core::Storage as usize, layout.start_offset(), e.input.dims().to_vec());
            match first.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => Some(*o.get()),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(bi);
                    None
                }
            }
        })
        .collect()
}

/// The backward columns of one batch: (B, K) weights whose product with the logits is
/// backpropagated. GGN: the columns of a square root R of diag(p) - pp^T (R R^T equal to it), so
/// that the K-way Hessian of the log-likelihood is the sum of the columns' outer products.
/// Fisher: p - onehot(y~), y~ ~ p.
pub fn pseudo_columns(p: &[Vec<f32>], kind: CurvatureKind, rng: &mut rand::rngs::StdRng) -> Vec<Vec<Vec<f32>>> {
    let k = p.first().map(|r| r.len()).unwrap_or(0);
    match kind {
        CurvatureKind::Ggn => {
            // K - 1 columns suffice: diag(p) - pp^T has the null vector 1 (its rows sum to
            // p_c - p_c sum(p) = 0), so its K - 1 leading eigenpairs reproduce it exactly, and
            // one backward pass of K is saved (half of them for yes/no).
            let roots: Vec<Vec<Vec<f32>>> = p.iter().map(|pb| softmax_hessian_root(pb)).collect();
            (0..column_count(k, kind)).map(|j| roots.iter().map(|r| r[j].clone()).collect()).collect()
        }
        CurvatureKind::Fisher => {
            let col = p
                .iter()
                .map(|pb| {
                    let u: f32 = rng.random();
                    let mut acc = 0.0;
                    let mut y = pb.len() - 1;
                    for (j, &q) in pb.iter().enumerate() {
                        acc += q;
                        if u < acc {
                            y = j;
                            break;
                        }
                    }
                    (0..k).map(|j| pb[j] - if j == y { 1.0 } else { 0.0 }).collect()
                })
                .collect();
            vec![col]
        }
    }
}

/// The most answer choices an example of batch `idx` has (at most `k`, at least 1): the classes
/// a backward pass can matter for.
pub fn batch_choices(data: &[Encoded], idx: &[usize], k: usize) -> usize {
    idx.iter().map(|&i| data[i].num_choices).max().unwrap_or(k).clamp(1, k.max(1))
}

/// How many columns `pseudo_columns` gives for K classes.
pub fn column_count(k: usize, kind: CurvatureKind) -> usize {
    match kind {
        CurvatureKind::Ggn => k.saturating_sub(1).max(1),
        CurvatureKind::Fisher => 1,
    }
}

/// Columns sqrt(l_j) v_j (j < max(K - 1, 1)) of diag(p) - pp^T = sum_j l_j v_j v_j^T.
pub fn softmax_hessian_root(p: &[f32]) -> Vec<Vec<f32>> {
    let k = p.len();
    let mut m = vec![0f64; k * k];
    for a in 0..k {
        for b in 0..k {
            m[a * k + b] = if a == b { p[a] as f64 } else { 0.0 } - p[a] as f64 * p[b] as f64;
        }
    }
    let e = super::eigen::sym_eig(&m, k);
    (0..k.saturating_sub(1).max(1)).map(|j| e.vector(j).iter().map(|v| (v * e.values[j].sqrt()) as f32).collect()).collect()
}

/// Collects the curvature of `blocks` over `data` (the training set at the MAP adapters).
#[allow(clippy::too_many_arguments)]
pub fn collect(
    model: &Llama,
    lora: &LoraSet,
    blocks: &[BlockId],
    data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    cfg: &LaplaceConfig,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Curvature>> {
    let k = answer_ids.len();
    let mut per_block: Vec<BlockCurvature> = Vec::new();
    let mut full_p = 0;
    for &b in blocks {
        let (nx, no) = sides(lora, b);
        per_block.push(match cfg.structure {
            Structure::Kron => {
                BlockCurvature::Kron { x: Factor::new(nx, cfg.low_rank_threshold, cfg.low_rank_k), o: Factor::new(no, cfg.low_rank_threshold, cfg.low_rank_k) }
            }
            Structure::Diag => BlockCurvature::Diag { d: vec![0.0; nx * no] },
            Structure::Full => {
                full_p += nx * no;
                BlockCurvature::InFull
            }
        });
    }
    if cfg.structure == Structure::Full && full_p > cfg.max_full_params {
        bail!(
            "the full structure over {full_p} parameters needs a {full_p} x {full_p} matrix; it is limited to {} parameters. \
             Use structure = \"kron\" or \"diag\", or subset = \"last_layer\"",
            cfg.max_full_params
        );
    }
    let mut full = if cfg.structure == Structure::Full { Some(vec![0f64; full_p * full_p]) } else { None };
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ 0xF15_4E2);
    let mut log_lik = 0.0;
    let mut map_logits: Vec<Vec<f64>> = vec![Vec::new(); data.len()];
    let order: Vec<usize> = {
        let mut o: Vec<usize> = (0..data.len()).collect();
        o.sort_by_key(|&i| data[i].ids.len());
        o
    };
    let mut done = 0;
    // LAPLACE_LORA_PROFILE=1: seconds spent in the forward, the backward passes and the factors.
    let profile = std::env::var_os("LAPLACE_LORA_PROFILE").is_some();
    let mut deferred = Deferred::default();
    let mut x_alias: Vec<Option<usize>> = vec![None; blocks.len()];
    let (mut t_fwd, mut t_bwd, mut t_fac) = (0.0, 0.0, 0.0);
    for idx in order.chunks(batch_size.max(1)) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let t = std::time::Instant::now();
        // A batch whose examples all have fewer than K choices: the masked classes have p = 0,
        // so diag(p) - pp^T has rank max(choices) - 1 and the other columns are zero.
        let columns = column_count(batch_choices(data, idx, k), cfg.curvature);
        let tb = TappedBatch::forward(model, lora, data, idx, answer_ids, pad, columns)?;
        let f = tb.logits()?;
        for (row, &i) in f.to_vec2::<f32>()?.iter().zip(idx) {
            map_logits[i] = row.iter().enumerate().map(|(c, &v)| if c < data[i].num_choices { v as f64 } else { f64::NEG_INFINITY }).collect();
        }
        t_fwd += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let logp = candle_nn::ops::log_softmax(&f.detach(), D::Minus1)?;
        let p: Vec<Vec<f32>> = logp.exp()?.to_vec2()?;
        let lab = tb.labels.to_vec1::<u32>()?;
        let lp = logp.to_vec2::<f32>()?;
        log_lik += lab.iter().enumerate().map(|(b, &y)| lp[b][y as usize] as f64).sum::<f64>();
        let entry_of = |bid: BlockId| -> Result<&TapEntry> {
            tb.tap.entries.iter().find(|e| e.layer == bid.layer).context("a LoRA layer was not tapped in the forward pass")
        };
        // Input sides do not depend on the backward column; X takes each example once.
        // The A blocks of projections that read the same input (q, k and v of one layer) have
        // identical X factors: accumulate the first, copy it to the others at the end.
        if cfg.structure == Structure::Kron {
            x_alias = shared_inputs(blocks, &tb.tap);
        }
        let mut xs = Vec::with_capacity(blocks.len());
        for (bi, &bid) in blocks.iter().enumerate() {
            let e = entry_of(bid)?;
            let layout = tb.layout(e)?;
            let x = input_side(lora, e, bid.mat)?;
            if cfg.structure == Structure::Kron && x_alias[bi].is_none() {
                deferred.add(&mut per_block, bi, true, &layout.first(tb.b).x_rows(&tb.first_replica(&x)?, cfg.positions)?)?;
            }
            xs.push((layout, x));
        }
        t_fac += t.elapsed().as_secs_f64();
        let cols = pseudo_columns(&p, cfg.curvature, &mut rng)
            .into_iter()
            .take(columns)
            .map(|c| Tensor::new(c, f.device()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let t = std::time::Instant::now();
        let passes = tb.backward(&cols)?;
        t_bwd += t.elapsed().as_secs_f64();
        for (grads, used) in passes {
            let t = std::time::Instant::now();
            let mut full_rows: Vec<Tensor> = Vec::new();
            for (bi, &bid) in blocks.iter().enumerate() {
                let entry = entry_of(bid)?;
                let e = grads.get(entry.probe.as_tensor()).context("no gradient reached a tapped projection")?;
                let o = output_side(lora, entry, bid.mat, &tb.replicas(e, used)?)?;
                let (layout, x) = (&xs[bi].0.first(used * tb.b), &tb.replicas(&xs[bi].1, used)?);
                match &mut per_block[bi] {
                    BlockCurvature::Kron { .. } => deferred.add(&mut per_block, bi, false, &layout.o_rows(&o, cfg.positions)?)?,
                    BlockCurvature::Diag { d } => {
                        let g = layout.per_example_outer(x, &o)?; // (B, n_o, n_x)
                        let sq = to_f64(&g.sqr()?.sum(0)?)?;
                        d.iter_mut().zip(sq).for_each(|(a, b)| *a += b);
                    }
                    BlockCurvature::InFull => {
                        let g = layout.per_example_outer(x, &o)?;
                        full_rows.push(g.flatten_from(1)?);
                    }
                }
            }
            if let Some(full) = full.as_mut() {
                let g = Tensor::cat(&full_rows, 1)?.to_dtype(DType::F64)?; // (B, P)
                let add = to_f64(&g.t()?.matmul(&g)?)?;
                full.iter_mut().zip(add).for_each(|(a, b)| *a += b);
            }
            t_fac += t.elapsed().as_secs_f64();
        }
        done += idx.len();
        progress(done, data.len());
    }
    let t = std::time::Instant::now();
    deferred.flush(&mut per_block)?;
    for (bi, first) in x_alias.iter().enumerate() {
        let Some(first) = *first else { continue };
        let BlockCurvature::Kron { x: src, .. } = &per_block[first] else { bail!("block {bi} shares the X factor of block {first}, which has none") };
        let copy = src.clone();
        if let BlockCurvature::Kron { x, .. } = &mut per_block[bi] {
            *x = copy;
        }
    }
    t_fac += t.elapsed().as_secs_f64();
    if profile {
        eprintln!("curvature: forward {t_fwd:.2} s, backward {t_bwd:.2} s, factors {t_fac:.2} s over {} examples", data.len());
    }
    let n = data.len().max(1) as f64;
    for c in per_block.iter_mut() {
        if let BlockCurvature::Kron { x, .. } = c {
            x.scale(1.0 / n); // X carries the 1/N of MATH.md section 4
        }
    }
    Ok(Some(Curvature { blocks: blocks.to_vec(), per_block, full: full.map(|f| (full_p, f)), log_lik, n_examples: data.len(), map_logits }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ggn_columns_are_a_square_root_of_the_softmax_hessian() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        // Two examples, K = 4; the second with a masked class (p = 0) and a near-certain one.
        let p = vec![vec![0.1f32, 0.2, 0.3, 0.4], vec![0.0, 0.97, 0.02, 0.01]];
        let cols = pseudo_columns(&p, CurvatureKind::Ggn, &mut rng);
        assert_eq!(cols.len(), 3, "K - 1 backward passes");
        for (b, pb) in p.iter().enumerate() {
            for x in 0..4 {
                for y in 0..4 {
                    let want = if x == y { pb[x] as f64 } else { 0.0 } - pb[x] as f64 * pb[y] as f64;
                    let got: f64 = cols.iter().map(|c| c[b][x] as f64 * c[b][y] as f64).sum();
                    // f32 columns of an f64 eigendecomposition: ~1e-7 relative to |p| <= 1.
                    assert!((got - want).abs() < 1e-6, "example {b} ({x},{y}): {got} vs {want}");
                }
            }
        }
        // K = 2: one column, +-sqrt(p0 p1) (1, -1).
        let c2 = pseudo_columns(&[vec![0.3f32, 0.7]], CurvatureKind::Ggn, &mut rng);
        assert_eq!(c2.len(), 1);
        let r = (0.3f64 * 0.7).sqrt();
        assert!((c2[0][0][0].abs() as f64 - r).abs() < 1e-6 && (c2[0][0][0] + c2[0][0][1]).abs() < 1e-6);
    }
}
