//! One pass over the training set that collects the curvature of the K-way softmax likelihood
//! over the LoRA parameters (MATH.md sections 3 and 4).
//!
//! For each batch: one forward with a `Tap` on every adapted projection, then K backward passes
//! with the columns of R = diag(sqrt p) - p sqrt(p)^T (R R^T = diag(p) - p p^T, so the K
//! "pseudo-gradients" sum to the exact GGN), or one with p - onehot(y~) for the sampled Fisher.
//! Each backward yields e_t = dL/dy_t at every position of every adapted projection, from which
//! each LoRA matrix's input side x_t and output side o_t follow (MATH.md section 2).

use super::eigen::Factor;
use super::{BlockId, CurvatureKind, LaplaceConfig, Mat, Positions, Structure};
use crate::lora::LoraSet;
use crate::model::llama::{Tap, TapEntry};
use crate::model::{ForwardOpts, Llama};
use crate::train::{make_batch, Encoded};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};

/// How the rows of a tapped tensor map to examples and positions.
#[derive(Clone, Debug)]
pub struct RowLayout {
    /// Rows per example: T for block projections, 1 for the LM head.
    pub t: usize,
    /// Real (non-padding) rows of each example.
    pub lengths: Vec<usize>,
}

impl RowLayout {
    pub fn for_entry(entry: &TapEntry, lengths: &[usize]) -> Result<Self> {
        let n = entry.input.dim(0)?;
        let b = lengths.len();
        if n == b {
            // The LM head sees one row (the last real position) per example.
            Ok(Self { t: 1, lengths: vec![1; b] })
        } else {
            Ok(Self { t: n / b, lengths: lengths.to_vec() })
        }
    }

    fn b(&self) -> usize {
        self.lengths.len()
    }

    /// The layout of the first `b` examples (the first replica of a replicated batch).
    pub fn first(&self, b: usize) -> Self {
        Self { t: self.t, lengths: self.lengths[..b].to_vec() }
    }

    /// (B, N) matrix with `w(len)` at the real rows of each example, 0 elsewhere.
    fn selector(&self, w: impl Fn(usize) -> f32, dev: &candle_core::Device) -> Result<Tensor> {
        let (b, t) = (self.b(), self.t);
        let mut m = vec![0f32; b * b * t];
        for (i, &len) in self.lengths.iter().enumerate() {
            for p in 0..len {
                m[i * b * t + i * t + p] = w(len);
            }
        }
        Ok(Tensor::from_vec(m, (b, b * t), dev)?)
    }

    /// (N, 1) weights: `w(len)` at real rows, 0 at padding.
    fn row_weights(&self, w: impl Fn(usize) -> f32, dev: &candle_core::Device) -> Result<Tensor> {
        let mut v = vec![0f32; self.b() * self.t];
        for (i, &len) in self.lengths.iter().enumerate() {
            for p in 0..len {
                v[i * self.t + p] = w(len);
            }
        }
        Ok(Tensor::from_vec(v, (self.b() * self.t, 1), dev)?)
    }

    fn last_rows(&self, dev: &candle_core::Device) -> Result<Tensor> {
        let idx: Vec<u32> = self.lengths.iter().enumerate().map(|(i, &l)| (i * self.t + l - 1) as u32).collect();
        Ok(Tensor::from_vec(idx, self.b(), dev)?)
    }

    /// Rows that enter the input-side factor X, before the 1/N of MATH.md section 4:
    /// expand: x_t / sqrt(T_n) at every real position; reduce: the mean x_bar_n; last: x at T_n.
    pub fn x_rows(&self, x: &Tensor, positions: Positions) -> Result<Tensor> {
        let dev = x.device();
        Ok(match positions {
            Positions::Expand => x.broadcast_mul(&self.row_weights(|l| 1.0 / (l as f32).sqrt(), dev)?)?,
            Positions::Reduce => self.selector(|l| 1.0 / l as f32, dev)?.matmul(x)?,
            Positions::Last => x.index_select(&self.last_rows(dev)?, 0)?,
        })
    }

    /// Rows that enter the output-side factor O for one backward column:
    /// expand: o_t at every real position; reduce: the sum o_bar_n; last: o at T_n.
    pub fn o_rows(&self, o: &Tensor, positions: Positions) -> Result<Tensor> {
        let dev = o.device();
        Ok(match positions {
            Positions::Expand => o.broadcast_mul(&self.row_weights(|_| 1.0, dev)?)?,
            Positions::Reduce => self.selector(|_| 1.0, dev)?.matmul(o)?,
            Positions::Last => o.index_select(&self.last_rows(dev)?, 0)?,
        })
    }

    /// Per-example gradient-shaped matrices sum_t o_t x_t^T: (B, n_o, n_x). Padding rows drop out.
    pub fn per_example_outer(&self, x: &Tensor, o: &Tensor) -> Result<Tensor> {
        let (b, t) = (self.b(), self.t);
        let xm = x.broadcast_mul(&self.row_weights(|_| 1.0, x.device())?)?;
        let x3 = xm.reshape((b, t, x.dim(1)?))?;
        let o3 = o.reshape((b, t, o.dim(1)?))?;
        Ok(o3.transpose(1, 2)?.contiguous()?.matmul(&x3.contiguous()?)?)
    }
}

/// One batch's forward pass with every adapted projection tapped, ready for C backward passes
/// ("columns": (B, K) weights w_c whose product with the logits is backpropagated).
///
/// Two ways to run the columns, same numbers: one forward and C backward passes over the B
/// examples (`reps` = 1), or one forward over the batch replicated `reps` times and C / reps
/// backward passes, replica r's rows carrying one column. Replicating does `reps` times the
/// forward arithmetic but launches each kernel once per `reps` columns: it pays where launches
/// dominate, a GPU at these sizes, and loses on a CPU (`column_reps`).
pub struct TappedBatch {
    /// The batch as run: replica-major, `reps` copies of the B examples.
    pub batch: crate::model::Batch,
    /// The B examples' labels.
    pub labels: Tensor,
    /// Answer logits (reps * B, K).
    f: Tensor,
    pub tap: Tap,
    /// Examples.
    pub b: usize,
    pub reps: usize,
}

/// At most this many tokens in a replicated batch: replicas multiply the activations kept for
/// the backward pass (the default model's 4 x 64 batch with K = 4 replicas is 1,024).
const STACK_TOKENS: usize = 4096;

/// How many copies of a batch of `tokens` (padded) tokens `TappedBatch` runs for `columns`
/// backward columns: on a GPU as many as the columns (launch-bound at these sizes; H200: KFAC
/// 0.106 -> 0.053 s an example, Jacobians 0.110 -> 0.036 s), within `STACK_TOKENS`; on the CPU
/// one (arithmetic-bound: replicas add forward passes), unless the thread runs as a GPU would
/// (`ops::with_gpu_path`). LAPLACE_LORA_STACK_COLUMNS=0 or 1 forces one or the most (to measure).
pub fn column_reps(model: &Llama, columns: usize, tokens: usize) -> usize {
    let stack = match std::env::var("LAPLACE_LORA_STACK_COLUMNS").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => !model.device().is_cpu() || crate::model::ops::gpu_path_forced(),
    };
    if stack {
        (STACK_TOKENS / tokens.max(1)).clamp(1, columns.max(1))
    } else {
        1
    }
}

impl TappedBatch {
    /// Examples `idx` of `data`, replicated as `column_reps` says for `columns` backward columns.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(model: &Llama, lora: &LoraSet, data: &[Encoded], idx: &[usize], answer_ids: &[u32], pad: u32, columns: usize) -> Result<Self> {
        let t = idx.iter().map(|&i| data[i].ids.len()).max().unwrap_or(0);
        let reps = column_reps(model, columns, idx.len() * t);
        Self::forward_with(model, lora, data, idx, answer_ids, pad, reps)
    }

    /// Examples `idx` of `data`, replicated `reps` times.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(model: &Llama, lora: &LoraSet, data: &[Encoded], idx: &[usize], answer_ids: &[u32], pad: u32, reps: usize) -> Result<Self> {
        let reps = reps.max(1);
        let rep_idx: Vec<usize> = (0..reps).flat_map(|_| idx.iter().copied()).collect();
        let (batch, labels) = make_batch(model, data, &rep_idx, answer_ids.len(), pad)?;
        let labels = labels.narrow(0, 0, idx.len())?;
        let mut tap = Tap::default();
        let mut opts = ForwardOpts { lora: Some(lora), dropout: None, tap: Some(&mut tap), embed_shift: None, no_grad: false };
        let f = model.answer_logits(&batch, answer_ids, &mut opts)?;
        Ok(Self { batch, labels, f, tap, b: idx.len(), reps })
    }

    /// The B examples' answer logits (B, K).
    pub fn logits(&self) -> Result<Tensor> {
        Ok(self.f.narrow(0, 0, self.b)?)
    }

    /// The backward passes of `cols` ((B, K) each), `reps` columns a pass: per pass its gradient
    /// store and how many columns it holds (the last may hold fewer; its other replicas carry
    /// zeros). Pass p's replica r rows hold column p * reps + r; read them with `replicas` and
    /// `layout(..).first(used * b)`.
    pub fn backward(&self, cols: &[Tensor]) -> Result<Vec<(candle_core::backprop::GradStore, usize)>> {
        cols.chunks(self.reps)
            .map(|chunk| {
                let mut w: Vec<Tensor> = chunk.to_vec();
                for _ in chunk.len()..self.reps {
                    w.push(chunk[0].zeros_like()?);
                }
                let w = if self.reps == 1 { w.remove(0) } else { Tensor::cat(&w, 0)? }; // (reps * B, K)
                Ok(((&self.f * &w)?.sum_all()?.backward()?, chunk.len()))
            })
            .collect()
    }

    /// How the rows of a tapped entry map to the examples of the batch as run.
    pub fn layout(&self, entry: &TapEntry) -> Result<RowLayout> {
        RowLayout::for_entry(entry, &self.batch.lengths)
    }

    /// The rows of the first `used` replicas of a tensor over the batch's rows.
    pub fn replicas(&self, t: &Tensor, used: usize) -> Result<Tensor> {
        Ok(t.narrow(0, 0, t.dim(0)? / self.reps * used)?)
    }

    /// The first replica's rows (the B examples once).
    pub fn first_replica(&self, t: &Tensor) -> Result<Tensor> {
        self.replicas(t, 1)
    }
}

/// Input side x (N, n_x) of a LoRA matrix, from what its projection saw.
pub fn input_side(lora: &LoraSet, entry: &TapEntry, mat: Mat) -> Result<Tensor> {
    let l = &lora.layers[entry.layer];
    Ok(match mat {
        Mat::A => entry.input.clone(),
        Mat::B => entry.input.matmul(&l.a.as_tensor().t()?)?,
    })
}

/// Output side o (N, n_o) of a LoRA matrix for the output gradient e (N, d_out).
pub fn output_side(lora: &LoraSet, entry: &TapEntry, mat: Mat, e: &Tensor) -> Result<Tensor> {
    let l = &lora.layers[entry.layer];
    let s = lora.scale();
    Ok(match mat {
        Mat::A => (e.matmul(l.b.as_tensor())? * s)?,
        Mat::B => (e * s)?,
    })
}

/// Side lengths (n_x, n_o) of a LoRA matrix.
pub fn sides(lora: &LoraSet, b: BlockId) -> (usize, usize) {
    let l = &lora.layers[b.layer];
    let (r, d_in) = (l.a.dims()[0], l.a.dims()[1]);
    let d_out = l.b.dims()[0];
    match b.mat {
        Mat::A => (d_in, r),
        Mat::B => (r, d_out),
    }
}

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
    Ok(Some(Curvature { blocks: blocks.to_vec(), per_block, full: full.map(|f| (full_p, f)), log_lik, n_examples: data.len() }))
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
