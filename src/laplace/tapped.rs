//! The tapped forward pass the curvature and the Jacobians share: a batch run once with a `Tap`
//! on every adapted projection (optionally replicated, one replica a backward column), its
//! backward passes from given weights on the answer logits, and how the tapped rows map back to
//! examples and positions; with it each LoRA matrix's input side x_t and output side o_t
//! (MATH.md section 2).

use super::{BlockId, Mat, Positions};
use crate::lora::LoraSet;
use crate::model::llama::{Tap, TapEntry};
use crate::model::{ForwardOpts, Llama};
use crate::train::{make_batch, Encoded};
use anyhow::Result;
use candle_core::Tensor;

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
