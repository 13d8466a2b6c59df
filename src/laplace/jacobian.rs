//! The linearised predictive's functional covariance Sigma_f = J Sigma J^T (MATH.md section 7),
//! computed per example from the Jacobian of the K answer logits projected into each block's
//! eigenbasis, and the spectral cache of MATH.md section 8 that makes a new prior instant.
//!
//! For class c and block W, M_c = df_c/dW = sum_t o_t^(c) x_t^T (one backward pass per class, read
//! off the taps). In the Kronecker eigenbasis M~_c = Q_O^T M_c Q_X and
//!   Sigma_f[c, c'] = sum_blocks sum_{i,j} M~_c[j,i] M~_c'[j,i] / (a_i g_j + delta),
//! plus, for a low-rank factor, the Jacobian mass outside the kept eigenvectors divided by delta
//! (those precision eigenvalues are exactly delta).

use super::curvature::{input_side, output_side, TappedBatch};
use super::posterior::{BlockBasis, Posterior};
use super::spectral::{pairs_from_nested, BlockBins, SpectralEntry, SpectralGrid};
use crate::lora::LoraSet;
use crate::model::Llama;
use crate::train::Encoded;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// A set of blocks with their prior precisions, whose Sigma_f is wanted exactly.
#[derive(Clone, Debug)]
pub struct Group {
    /// Indices into `Posterior::blocks`.
    pub blocks: Vec<usize>,
    /// Prior precision per posterior block (only those in `blocks` are read).
    pub deltas: Vec<f64>,
}

/// What the predictive needs of one example.
#[derive(Clone, Debug)]
pub struct Functional {
    /// The MAP answer logits; -inf for choices the item does not have.
    pub mu: Vec<f64>,
    /// Exact Sigma_f (K x K, row-major) per exact group, of the raw logits or of the centred
    /// ones, C Sigma_f C over the item's choices, as the pass was asked ([`Rows`]).
    pub sigma: Vec<Vec<f64>>,
    /// The spectral cache per spectral group.
    pub spectral: Vec<SpectralEntry>,
}

/// Per block: the projected Jacobians of one example (K matrices, row-major k_o x k_x) and the
/// eigenvalues (a, g) they pair with; `resid[c][c']` is the mass outside a low-rank basis.
pub(crate) struct Projected {
    pub m: Vec<Vec<f32>>,
    pub resid: Vec<Vec<f64>>,
}

pub(crate) struct Bases {
    /// Kron: (Q_X (n_x, k_x), Q_O^T (k_o, n_o), low-rank?) as f32 tensors.
    kron: Vec<Option<(Tensor, Tensor, bool)>>,
    /// Low-rank Kron blocks: (Q_X, Q_O) in f64, for the residual mass outside their span.
    kron64: Vec<Option<(Tensor, Tensor)>>,
    /// Full: Q (P, k).
    full: Option<Tensor>,
}

pub(crate) fn bases(post: &Posterior, dev: &Device) -> Result<Bases> {
    let mat = |v: &[f64], n: usize, k: usize| -> Result<Tensor> { Ok(Tensor::from_vec(v.to_vec(), (n, k), dev)?.to_dtype(DType::F32)?) };
    let kron = post
        .basis
        .iter()
        .map(|b| match b {
            BlockBasis::Kron { x, o } => {
                let qx = mat(&x.vectors, x.n, x.k)?;
                let qo_t = mat(&o.vectors, o.n, o.k)?.t()?.contiguous()?;
                Ok(Some((qx, qo_t, x.k < x.n || o.k < o.n)))
            }
            BlockBasis::Diag { .. } => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let kron64 = post
        .basis
        .iter()
        .map(|b| match b {
            BlockBasis::Kron { x, o } if x.k < x.n || o.k < o.n => {
                Ok(Some((Tensor::from_vec(x.vectors.clone(), (x.n, x.k), dev)?, Tensor::from_vec(o.vectors.clone(), (o.n, o.k), dev)?)))
            }
            _ => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let full = match &post.full {
        Some(f) => Some(mat(&f.vectors, f.n, f.k)?),
        None => None,
    };
    Ok(Bases { kron, kron64, full })
}

/// The Jacobian outside a low-rank block's kept eigenvectors, per row of `m` (K * B, n_o, n_x):
/// R_c = M_c - Q_O Q_O^T M_c Q_X Q_X^T, formed in f64 and flattened to (K * B, n_o * n_x).
/// (Total minus kept mass, |M|^2 - |M~|^2, loses everything to cancellation when the kept basis
/// holds nearly all of the mass, and divided by delta that error dominates Sigma_f at small delta.)
pub(crate) fn residual_rows(m: &Tensor, qx: &Tensor, qo: &Tensor) -> Result<Tensor> {
    let m64 = m.to_dtype(DType::F64)?;
    let kept = qo.broadcast_matmul(&qo.t()?.broadcast_matmul(&m64.broadcast_matmul(qx)?)?)?.broadcast_matmul(&qx.t()?)?;
    Ok((m64 - kept)?.flatten_from(1)?)
}

/// Q_O^T M_i Q_X for every row i of `m` (R, n_o, n_x), with Q_X (n_x, k_x) and Q_O^T (k_o, n_o):
/// (R, k_o, k_x). Two plain products over all rows at once (the R n_o x n_x rows times Q_X, then,
/// transposed, the R k_x x n_o rows times Q_O), not R small batched ones: a LoRA matrix has a side
/// of r = 8, and products with 8 rows ran at a fifth of the GEMM rate (ARC-Easy, K = 4: 0.16 s an
/// example in the projections against 0.30 s in the four backward passes).
pub(crate) fn project_rows(m: &Tensor, qx: &Tensor, qo_t: &Tensor) -> Result<Tensor> {
    let (r, n_o, n_x) = m.dims3()?;
    let (k_x, k_o) = (qx.dim(1)?, qo_t.dim(0)?);
    let right = m.contiguous()?.reshape((r * n_o, n_x))?.matmul(qx)?; // (R n_o, k_x): M_i Q_X
    let right_t = right.reshape((r, n_o, k_x))?.transpose(1, 2)?.contiguous()?.reshape((r * k_x, n_o))?;
    let both = right_t.matmul(&qo_t.t()?)?; // (R k_x, k_o): (Q_O^T M_i Q_X)^T
    Ok(both.reshape((r, k_x, k_o))?.transpose(1, 2)?.contiguous()?)
}

/// The Jacobian mass outside a low-rank block's kept eigenvectors, per example and class pair:
/// <R_c, R_c'>_F ([`residual_rows`]), indexed [example][c][c']; the rows are class-major.
fn residual_mass(rows: &Tensor, k: usize, nb: usize) -> Result<Vec<Vec<Vec<f64>>>> {
    let r = rows.to_vec2::<f64>()?;
    Ok((0..nb).map(|n| (0..k).map(|c| (0..k).map(|d| r[c * nb + n].iter().zip(&r[d * nb + n]).map(|(x, y)| x * y).sum()).collect()).collect()).collect())
}

/// 1 / (a_i g_j + delta) per block of a group (row-major k_o x k_x for a Kronecker block; one
/// entry for the full structure's single "block"); None for blocks outside the group.
pub(crate) fn inverse_eigenvalues(post: &Posterior, g: &Group) -> Vec<Option<Vec<f64>>> {
    (0..post.blocks.len())
        .map(|i| {
            if !g.blocks.contains(&i) {
                return None;
            }
            let d = g.deltas[i];
            Some(match (&post.basis.get(i), &post.full) {
                (Some(BlockBasis::Kron { x, o }), _) => o.values.iter().flat_map(|gj| x.values.iter().map(move |ai| 1.0 / (ai * gj + d))).collect(),
                (Some(BlockBasis::Diag { d: dd }), _) => dd.iter().map(|v| 1.0 / (v + d)).collect(),
                (None, Some(f)) => f.values.iter().map(|v| 1.0 / (v + d)).collect(),
                (None, None) => Vec::new(),
            })
        })
        .collect()
}

/// Which logits' Jacobians a pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// df_c/dtheta of each raw answer logit: one backward pass per class (a batch's max choices).
    Raw,
    /// df~_c/dtheta of the centred logits f~ = C f, C = I - 11^T / n over the item's own n
    /// choices: Sigma_f~ = C Sigma_f C. softmax(f~) = softmax(f) for every draw of f, so every
    /// shift-invariant predictive (`PredictiveKind::shift_invariant`) gives the same probabilities
    /// from it (MATH.md section 7). The n rows sum to zero, so n - 1 backward passes (seeds
    /// e_c - 1/n, c < n - 1) give them all: row n - 1 is minus the sum of the others. K = 2 takes
    /// one backward pass instead of two, K = 4 three instead of four.
    Centred,
}

impl Rows {
    /// The rows a predictive needs.
    pub fn for_predictive(kind: super::PredictiveKind) -> Rows {
        if kind.shift_invariant() {
            Rows::Centred
        } else {
            Rows::Raw
        }
    }
}

/// The K class slots of every example from the rows of its backward passes: `m` holds `p`
/// passes class-major (row c * B + n, any trailing shape), the result K * B rows class-major.
/// Every step after the backward passes (the eigenbasis projections, the residual outside a
/// low-rank basis, the full structure's product) is linear in the Jacobian, so the slots are
/// formed after it, on the passes' rows: K - 1 projections instead of K for the centred rows.
/// - Raw: pass c is class c; the classes no example of the batch has (c >= p) are zero.
/// - Centred ([`Rows::Centred`]): slot c of example n is pass c plus, where c = n_n - 1
///   (`last[n]`), minus the sum of the example's passes (its passes c >= n_n - 1 are zero: their
///   seed rows were zero), since the centred rows of an example sum to zero.
fn class_slots(m: &Tensor, p: usize, centred: Option<&[usize]>, nb: usize, k: usize) -> Result<Tensor> {
    let tail: Vec<usize> = m.dims()[1..].to_vec();
    let d: usize = tail.iter().product();
    let mut slots = Vec::with_capacity(k);
    match centred {
        None => {
            slots.push(m.reshape((p * nb, d))?);
            if p < k {
                slots.push(Tensor::zeros(((k - p) * nb, d), m.dtype(), m.device())?);
            }
        }
        Some(last) => {
            let m3 = m.reshape((p, nb, d))?;
            let minus_sum = m3.sum(0)?.neg()?; // (B, d)
            for c in 0..k {
                let mask: Vec<f32> = last.iter().map(|&l| if l == c { 1.0 } else { 0.0 }).collect();
                let add = minus_sum.broadcast_mul(&Tensor::from_vec(mask, (nb, 1), m.device())?.to_dtype(m.dtype())?)?;
                slots.push(if c < p { (m3.get(c)? + add)? } else { add });
            }
        }
    }
    let mut shape = vec![k * nb];
    shape.extend(tail);
    Ok(Tensor::cat(&slots, 0)?.reshape(shape)?)
}

/// One batch of examples (`idx` into `data`): the MAP answer logits (B x K) and, per example and
/// block, the K projected Jacobians M~_c of the raw or the centred logits ([`Rows`]). With `keep_resid`, also
/// per block the residual rows of a low-rank block ([`residual_rows`], class-major: row c * B + n).
pub(crate) struct BatchJacobians {
    pub logits: Vec<Vec<f32>>,
    pub projected: Vec<Vec<Projected>>,
    pub resid_rows: Vec<Option<Tensor>>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn project_batch(
    model: &Llama,
    lora: &LoraSet,
    post: &Posterior,
    bs: &Bases,
    data: &[Encoded],
    idx: &[usize],
    answer_ids: &[u32],
    pad: u32,
    rows: Rows,
    keep_resid: bool,
    times: &mut [f64; 3],
) -> Result<BatchJacobians> {
    let k = answer_ids.len();
    let dev = model.device().clone();
    let t = std::time::Instant::now();
    // Classes no example of the batch has get no backward pass: their Jacobian rows are never
    // read (every predictive masks them), so they are left zero (ARC's K = 5 for a few
    // five-choice items: a fifth of the passes of every four-choice batch).
    let kb = super::curvature::batch_choices(data, idx, k);
    let centred = rows == Rows::Centred && kb >= 2;
    // Each example's own choice count, and the backward passes the batch needs.
    let choices: Vec<usize> = idx.iter().map(|&i| data[i].num_choices.min(k)).collect();
    let n_pass = if centred { kb - 1 } else { kb };
    let tb = TappedBatch::forward(model, lora, data, idx, answer_ids, pad, n_pass)?;
    let f = tb.logits()?;
    let fv = f.to_vec2::<f32>()?;
    let nb = idx.len();
    times[0] += t.elapsed().as_secs_f64();
    // Per block, M_c for every class and example: (K * B, n_o, n_x), class-major.
    let mut xs = Vec::new();
    for &b in &post.blocks {
        let e = tb.tap.entries.iter().find(|e| e.layer == b.layer).context("a LoRA layer was not tapped")?;
        xs.push((tb.layout(e)?, input_side(lora, e, b.mat)?));
    }
    let t = std::time::Instant::now();
    // Pass c's seed: d f_c (raw), or d (f_c - mean of the example's n choices) for c < n - 1
    // (centred; zero for an example with fewer choices).
    let seed = |c: usize| -> Result<Tensor> {
        let w: Vec<f32> = (0..nb * k)
            .map(|i| {
                let (n, j) = (i / k, i % k);
                let hot = if j == c { 1.0 } else { 0.0 };
                match centred {
                    false => hot,
                    true if c + 1 < choices[n] => hot - if j < choices[n] { 1.0 / choices[n] as f32 } else { 0.0 },
                    true => 0.0,
                }
            })
            .collect();
        Ok(Tensor::from_vec(w, (nb, k), &dev)?)
    };
    let passes = tb.backward(&(0..n_pass).map(seed).collect::<Result<Vec<_>>>()?)?;
    times[1] += t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let mut ms: Vec<Vec<Tensor>> = vec![Vec::with_capacity(passes.len()); post.blocks.len()];
    for (grads, used) in &passes {
        for (bi, &b) in post.blocks.iter().enumerate() {
            let entry = tb.tap.entries.iter().find(|e| e.layer == b.layer).context("tap")?;
            let e = grads.get(entry.probe.as_tensor()).context("no gradient reached a tapped projection")?;
            let o = output_side(lora, entry, b.mat, &tb.replicas(e, *used)?)?;
            ms[bi].push(xs[bi].0.first(used * nb).per_example_outer(&tb.replicas(&xs[bi].1, *used)?, &o)?);
        }
    }
    // The passes' rows per block: (passes * B, n_o, n_x), class-major; their class slots are
    // formed after each linear step below.
    let ms: Vec<Tensor> = ms.iter().map(|m| Tensor::cat(m, 0)).collect::<candle_core::Result<_>>()?;
    let last: Vec<usize> = choices.iter().map(|&n| n.saturating_sub(1)).collect();
    let slots = |t: &Tensor| class_slots(t, n_pass, centred.then_some(last.as_slice()), nb, k);
    // Project into the eigenbases: one batched product per block for every pass and
    // example, read back once. Row c * B + n of v is M~_c of example n.
    let mut resid_rows: Vec<Option<Tensor>> = vec![None; post.blocks.len()];
    let mut per_example: Vec<Vec<Projected>> = (0..nb).map(|_| Vec::new()).collect();
    if let (Some(q), Some(_)) = (&bs.full, &post.full) {
        let cat = Tensor::cat(&ms.iter().map(|m| m.flatten_from(1)).collect::<candle_core::Result<Vec<_>>>()?, 1)?; // (passes * B, P)
        let v = slots(&cat.matmul(q)?)?.to_vec2::<f32>()?;
        for (n, pe) in per_example.iter_mut().enumerate() {
            pe.push(Projected { m: (0..k).map(|c| v[c * nb + n].clone()).collect(), resid: vec![vec![0.0; k]; k] });
        }
    } else {
        for (bi, basis) in post.basis.iter().enumerate() {
            let m = &ms[bi];
            let (v, resid) = match (basis, &bs.kron[bi]) {
                (BlockBasis::Kron { .. }, Some((qx, qo_t, low))) => {
                    let mt = slots(&project_rows(m, qx, qo_t)?)?; // (K*B, k_o, k_x)
                    let resid = match (&bs.kron64[bi], low) {
                        (Some((qx64, qo64)), true) => {
                            let rows = slots(&residual_rows(m, qx64, qo64)?)?;
                            let mass = residual_mass(&rows, k, nb)?;
                            if keep_resid {
                                resid_rows[bi] = Some(rows);
                            }
                            Some(mass)
                        }
                        _ => None,
                    };
                    (mt.flatten_from(1)?.to_vec2::<f32>()?, resid)
                }
                (BlockBasis::Diag { .. }, _) => (slots(m)?.flatten_from(1)?.to_vec2::<f32>()?, None),
                _ => unreachable!("bases match the posterior"),
            };
            for (n, pe) in per_example.iter_mut().enumerate() {
                let m: Vec<Vec<f32>> = (0..k).map(|c| v[c * nb + n].clone()).collect();
                // The Jacobian mass outside a low-rank basis (MATH.md section 7).
                let resid = match &resid {
                    Some(r) => r[n].clone(),
                    None => vec![vec![0.0; k]; k],
                };
                pe.push(Projected { m, resid });
            }
        }
    }
    times[2] += t.elapsed().as_secs_f64();
    Ok(BatchJacobians { logits: fv, projected: per_example, resid_rows })
}

/// Sigma_f contributions and spectral entries of every example of `data`, of the raw or the
/// centred logits (`rows`).
#[allow(clippy::too_many_arguments)]
pub fn functional(
    model: &Llama,
    lora: &LoraSet,
    post: &Posterior,
    data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    rows: Rows,
    exact: &[Group],
    spectral_groups: &[Vec<usize>],
    grid: &SpectralGrid,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Vec<Functional>>> {
    let k = answer_ids.len();
    let dev = model.device().clone();
    let bs = bases(post, &dev)?;
    // 1 / (a_i g_j + delta) per exact group and block, row-major (k_o x k_x).
    let inv: Vec<Vec<Option<Vec<f64>>>> = exact.iter().map(|g| inverse_eigenvalues(post, g)).collect();
    // Each block's eigenvalues binned once for every example (MATH.md section 8).
    let block_bins: Vec<BlockBins> = if spectral_groups.is_empty() {
        Vec::new()
    } else if let Some(f) = &post.full {
        vec![grid.bin_block(&f.values, &[1.0])]
    } else {
        post.basis
            .iter()
            .map(|b| match b {
                BlockBasis::Kron { x, o } => grid.bin_block(&x.values, &o.values),
                BlockBasis::Diag { d } => grid.bin_block(d, &[1.0]),
            })
            .collect()
    };
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| data[i].ids.len());
    let mut out: Vec<Option<Functional>> = vec![None; data.len()];
    let mut done = 0;
    // LAPLACE_LORA_PROFILE=1: seconds in the forward, the backward passes and the projections.
    let profile = std::env::var_os("LAPLACE_LORA_PROFILE").is_some();
    let mut times = [0.0f64; 3];
    for idx in order.chunks(batch_size.max(1)) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let BatchJacobians { logits: fv, projected: per_example, .. } =
            project_batch(model, lora, post, &bs, data, idx, answer_ids, pad, rows, false, &mut times)?;
        let nb = idx.len();
        for (n, &i) in idx.iter().enumerate() {
            let nc = data[i].num_choices;
            let mu: Vec<f64> = (0..k).map(|c| if c < nc { fv[n][c] as f64 } else { f64::NEG_INFINITY }).collect();
            let blocks = &per_example[n];
            let sigma = exact
                .iter()
                .enumerate()
                .map(|(gi, g)| {
                    let mut s = vec![0.0; k * k];
                    for (bi, p) in blocks.iter().enumerate() {
                        // With the full structure there is one projected "block" for all.
                        let Some(inv) = (if post.full.is_some() { inv[gi][0].as_ref() } else { inv[gi][bi].as_ref() }) else { continue };
                        let d = if post.full.is_some() { g.deltas[0] } else { g.deltas[bi] };
                        for c in 0..nc {
                            for e in c..nc {
                                let mut acc = p.resid[c][e] / d;
                                for ((x, y), w) in p.m[c].iter().zip(&p.m[e]).zip(inv) {
                                    acc += *x as f64 * *y as f64 * w;
                                }
                                s[c * k + e] += acc;
                                if e != c {
                                    s[e * k + c] += acc;
                                }
                            }
                        }
                    }
                    s
                })
                .collect();
            let spectral = spectral_groups
                .iter()
                .map(|members| {
                    let mut entry = SpectralEntry::new(k, grid);
                    for (bi, p) in blocks.iter().enumerate() {
                        let inside = if post.full.is_some() { true } else { members.contains(&bi) };
                        if inside {
                            entry.add_block_binned(&block_bins[bi], &p.m, &pairs_from_nested(&p.resid));
                        }
                    }
                    entry
                })
                .collect();
            out[i] = Some(Functional { mu, sigma, spectral });
        }
        done += nb;
        progress(done, data.len());
    }
    if profile {
        eprintln!("jacobians: forward {:.2} s, backward {:.2} s, projections {:.2} s over {} examples", times[0], times[1], times[2], data.len());
    }
    Ok(Some(out.into_iter().map(|f| f.expect("every example was processed")).collect()))
}
