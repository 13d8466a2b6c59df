//! The linearised posterior's cross-covariance between a test item x and training items x_n:
//! the "training items behind a prediction" of the workbench's item detail.
//!
//! Under the linearised (GLM) posterior f(x) = f_MAP(x) + J(x) (theta - theta*), theta ~
//! N(theta*, Sigma), so the answer logits of any two items are jointly Gaussian with
//!   k(x, x_n) = Cov(f(x), f(x_n)) = J(x) Sigma J(x_n)^T        (K x K),
//! the kernel of the GP the linearised Laplace posterior is (Immer et al., 2021). Its diagonal
//! block k(x, x) is the Sigma_f of MATH.md section 7. In a block's Kronecker eigenbasis, with
//! M~_c(x) = Q_O^T (df_c(x)/dW) Q_X as there,
//!   k[c, c'] = sum_blocks sum_{i,j} M~_c(x)[j,i] M~_c'(x_n)[j,i] / (a_i g_j + delta)
//!              + <R_c(x), R_c'(x_n)>_F / delta   (a low-rank block: the Jacobian outside its
//!                                                 kept eigenvectors, where the precision is delta).
//! Sigma J(x)^T is formed once (W_c = M~_c(x) / (a g + delta), per block); each training item
//! then costs its K backward passes (K - 1 for the centred logits, `Rows::Centred`, all the
//! ranking below reads) and a dot product per block and class pair.
//!
//! Which number ranks the training items: the shift-invariant covariance of the predicted
//! class's logit at x with the labelled class's logit at x_n,
//!   s_n = (C k(x, x_n) C^T)[c_hat, y_n],   C = I - 11^T / K (centring over each item's choices).
//! softmax ignores a common shift of the logits, so only the centred logits f - mean(f) matter
//! to any probability; an uncentred entry is dominated by the common-mode part (every LoRA
//! direction that moves all K logits of both items together), which says nothing about the
//! prediction. s_n > 0: under the posterior, the direction that raises x_n's labelled answer
//! (which the likelihood of x_n pulls towards) raises x's predicted answer too, so x_n supports
//! the prediction; s_n < 0: it argues against it. Items are ranked by |s_n| (the Frobenius norm
//! |C k C^T|_F is shown beside it: how strongly the two items' answers co-vary at all).

use super::jacobian::{bases, inverse_eigenvalues, project_batch, BatchJacobians, Group, Rows};
use super::posterior::Posterior;
use crate::lora::LoraSet;
use crate::model::Llama;
use crate::train::Encoded;
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// The MAP answer logits of x (K; -inf for choices it lacks) and k(x, x_n) for every x_n of
/// `data`: K x K row-major, entry [c * K + c'] = Cov(f_c(x), f_c'(x_n)) (0 for a class either item
/// does not have), of the raw logits or, with `Rows::Centred`, of the centred ones (C k C^T, each
/// item centred over its own choices: what [`rank`] reads, from one backward pass fewer per item).
/// None on a cancel; `progress(done, total)`.
#[allow(clippy::too_many_arguments)]
pub fn cross_kernel(
    model: &Llama,
    lora: &LoraSet,
    post: &Posterior,
    group: &Group,
    x: &Encoded,
    data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    rows: Rows,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<(Vec<f64>, Vec<Vec<f64>>)>> {
    let k = answer_ids.len();
    if x.num_choices > k {
        bail!("the item has {} choices, the run {k} answer tokens", x.num_choices);
    }
    let dev = model.device().clone();
    let bs = bases(post, &dev)?;
    let inv = inverse_eigenvalues(post, group);
    let full = post.full.is_some();
    // The block's inverse eigenvalues and prior precision (the full structure has one "block").
    let block = |bi: usize| -> Option<(&Vec<f64>, f64)> {
        let (i, d) = if full { (0, group.deltas[0]) } else { (bi, group.deltas[bi]) };
        inv[i].as_ref().map(|v| (v, d))
    };
    let mut times = [0.0f64; 3];
    let one = std::slice::from_ref(x);
    let BatchJacobians { logits, projected, resid_rows: rx } = project_batch(model, lora, post, &bs, one, &[0], answer_ids, pad, rows, true, &mut times)?;
    let px = &projected[0];
    let mu: Vec<f64> = (0..k).map(|c| if c < x.num_choices { logits[0][c] as f64 } else { f64::NEG_INFINITY }).collect();
    // W_c = Sigma J(x)^T in the eigenbasis, per block and class (classes x lacks stay 0).
    let w: Vec<Option<Vec<Vec<f64>>>> = px
        .iter()
        .enumerate()
        .map(|(bi, p)| {
            block(bi).map(|(inv, _)| {
                (0..k).map(|c| if c < x.num_choices { p.m[c].iter().zip(inv).map(|(m, v)| *m as f64 * v).collect() } else { vec![0.0; inv.len()] }).collect()
            })
        })
        .collect();
    let low_rank = rx.iter().any(|r| r.is_some());
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| data[i].ids.len());
    let mut out: Vec<Vec<f64>> = vec![Vec::new(); data.len()];
    let mut done = 0;
    for idx in order.chunks(batch_size.max(1)) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let nb = idx.len();
        let b = project_batch(model, lora, post, &bs, data, idx, answer_ids, pad, rows, low_rank, &mut times)?;
        // <R_c(x), R_c'(x_n)> per low-rank block: (K * B, K), row c' * B + n, column c.
        let mut cross_resid: Vec<Option<Vec<Vec<f64>>>> = vec![None; px.len()];
        for (bi, (r_x, r_n)) in rx.iter().zip(&b.resid_rows).enumerate() {
            if let (Some(r_x), Some(r_n)) = (r_x, r_n) {
                cross_resid[bi] = Some(r_n.matmul(&r_x.t()?)?.to_vec2::<f64>()?);
            }
        }
        for (n, &i) in idx.iter().enumerate() {
            let nc = data[i].num_choices.min(k);
            let mut kk = vec![0.0; k * k];
            for (bi, p) in b.projected[n].iter().enumerate() {
                let (Some(wb), Some((_, delta))) = (&w[bi], block(bi)) else { continue };
                for c in 0..x.num_choices {
                    for c2 in 0..nc {
                        let mut acc: f64 = wb[c].iter().zip(&p.m[c2]).map(|(a, m)| a * *m as f64).sum();
                        if let Some(r) = &cross_resid[bi] {
                            acc += r[c2 * nb + n][c] / delta;
                        }
                        kk[c * k + c2] += acc;
                    }
                }
            }
            out[i] = kk;
        }
        done += nb;
        progress(done, data.len());
    }
    Ok(Some((mu, out)))
}

/// (C_x k C_n^T) for a K x K row-major kernel block, centring over the first `nc_x` classes on
/// the left and `nc_n` on the right (the items' own choices; the other entries are 0).
pub fn centred(kk: &[f64], k: usize, nc_x: usize, nc_n: usize) -> Vec<f64> {
    let (nx, nn) = (nc_x.max(1) as f64, nc_n.max(1) as f64);
    let row_mean: Vec<f64> = (0..nc_x).map(|c| (0..nc_n).map(|d| kk[c * k + d]).sum::<f64>() / nn).collect();
    let col_mean: Vec<f64> = (0..nc_n).map(|d| (0..nc_x).map(|c| kk[c * k + d]).sum::<f64>() / nx).collect();
    let all = row_mean.iter().sum::<f64>() / nx;
    let mut out = vec![0.0; k * k];
    for c in 0..nc_x {
        for d in 0..nc_n {
            out[c * k + d] = kk[c * k + d] - row_mean[c] - col_mean[d] + all;
        }
    }
    out
}

/// One training item behind a prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Support {
    /// Index into the training set.
    pub index: usize,
    /// s_n = (C k C^T)[c_hat, y_n] (module docs): > 0 supports the predicted answer.
    pub score: f64,
    /// |C k C^T|_F.
    pub frobenius: f64,
}

/// The training items ranked by |s_n|, largest first (module docs), at most `top`.
pub fn rank(kernels: &[Vec<f64>], k: usize, predicted: usize, nc_x: usize, train: &[Encoded], top: usize) -> Vec<Support> {
    let mut v: Vec<Support> = kernels
        .iter()
        .zip(train)
        .enumerate()
        .map(|(index, (kk, e))| {
            let c = centred(kk, k, nc_x, e.num_choices.min(k));
            let score = c.get(predicted * k + e.label).copied().unwrap_or(0.0);
            Support { index, score, frobenius: c.iter().map(|v| v * v).sum::<f64>().sqrt() }
        })
        .collect();
    v.sort_by(|a, b| b.score.abs().total_cmp(&a.score.abs()));
    v.truncate(top);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centring_removes_a_common_shift() {
        // k + a 1^T + 1 b^T has the same centred block as k.
        let k = 3;
        let base = vec![1.0, 0.2, -0.3, 0.4, 2.0, 0.1, -0.5, 0.3, 1.5];
        let shifted: Vec<f64> = (0..9).map(|i| base[i] + [0.7, -1.1, 2.0][i / 3] + [0.3, 0.9, -0.4][i % 3]).collect();
        let (a, b) = (centred(&base, k, 3, 3), centred(&shifted, k, 3, 3));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12);
        }
        // Rows and columns of a centred block sum to zero.
        for c in 0..3 {
            assert!((0..3).map(|d| a[c * 3 + d]).sum::<f64>().abs() < 1e-12);
        }
    }
}
