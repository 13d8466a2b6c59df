//! The prior precision by the Laplace marginal likelihood, in its variants (MATH.md section 6),
//! and the quantities that explain its choice.
//!
//! With the prior theta ~ N(theta_0, I / delta) the log marginal likelihood of one block is the
//! `LayerSpectrum` term with |theta* - theta_0|^2 in place of |theta*|^2, and its derivative in
//! log delta vanishes where
//!
//!   delta |theta* - theta_0|^2 = gamma(delta) = sum_{i,j} lambda_ij / (lambda_ij + delta),
//!
//! gamma being the effective number of parameters (MacKay 1992): the directions the data
//! determine (lambda >> delta) count 1, those left to the prior count 0. So delta* = gamma /
//! |theta* - theta_0|^2: a large |theta|^2 (the randomly initialised A matrices of LoRA carry most
//! of it) drives delta down whatever the data say. Centring A's prior at its initialisation A_0
//! (B_0 = 0) and giving A and B their own delta are the two remedies measured here.
//!
//! Blocks sharing one delta maximise the sum of their terms; groups separate (KFAC's blocks are
//! independent), so each group is one 1-D concave problem in log delta.

use super::marglik::{self, LayerSpectrum};
use super::posterior::Posterior;
use super::{DeltaGroups, Mat, PriorMean};
use serde::Serialize;

/// The blocks' spectra with |theta* - theta_0|^2 for the prior mean `mean`. The full structure is
/// one spectrum over every block in `which`.
pub fn spectra(post: &Posterior, which: &[usize], mean: PriorMean) -> Vec<LayerSpectrum> {
    let mut s = post.spectra(which);
    if mean == PriorMean::Init {
        let moved = post.theta_init_sq.as_ref().expect("the prior centred at the initialisation needs Posterior::set_init");
        if post.full.is_some() {
            s[0].theta_sq = which.iter().map(|&i| moved[i]).sum();
        } else {
            for (sp, &i) in s.iter_mut().zip(which) {
                sp.theta_sq = moved[i];
            }
        }
    }
    s
}

/// The group of each spectrum of `spectra(post, which, ..)` under `groups`: indices 0.. .
fn group_of(post: &Posterior, which: &[usize], groups: DeltaGroups) -> Vec<usize> {
    if post.full.is_some() {
        return vec![0];
    }
    which
        .iter()
        .enumerate()
        .map(|(j, &i)| match groups {
            DeltaGroups::Scalar => 0,
            DeltaGroups::Ab => usize::from(post.blocks[i].mat == Mat::B),
            DeltaGroups::Layer => j,
        })
        .collect()
}

/// The per-block deltas (indexed like `post.blocks`; NaN outside `which`) maximising the log
/// marginal likelihood with the prior centred at `mean`, one delta per group, within [lo, hi].
pub fn marglik_deltas(post: &Posterior, which: &[usize], mean: PriorMean, groups: DeltaGroups, lo: f64, hi: f64) -> Vec<f64> {
    let s = spectra(post, which, mean);
    let g = group_of(post, which, groups);
    let n_groups = g.iter().max().map_or(0, |m| m + 1);
    let per_group: Vec<f64> = (0..n_groups)
        .map(|gi| {
            let members: Vec<LayerSpectrum> = s.iter().zip(&g).filter(|(_, &x)| x == gi).map(|(sp, _)| sp.clone()).collect();
            marglik::optimize_scalar_delta(post.log_lik, &members, lo, hi)
        })
        .collect();
    let per_spectrum: Vec<f64> = g.iter().map(|&gi| per_group[gi]).collect();
    post.block_deltas(which, &per_spectrum)
}

/// log Z at per-block deltas (indexed like `post.blocks`) with the prior centred at `mean`.
pub fn log_marglik(post: &Posterior, which: &[usize], mean: PriorMean, deltas: &[f64]) -> f64 {
    let s = spectra(post, which, mean);
    let per: Vec<f64> = if post.full.is_some() { vec![deltas[which[0]]] } else { which.iter().map(|&i| deltas[i]).collect() };
    marglik::log_marglik(post.log_lik, &s, &per)
}

/// What explains one block's prior precision (laplace.json's "blocks").
#[derive(Clone, Debug, Serialize)]
pub struct BlockReport {
    pub name: String,
    pub n_params: usize,
    pub prior_precision: f64,
    /// gamma = sum lambda / (lambda + delta) at the block's delta.
    pub effective_params: f64,
    /// |theta*|^2.
    pub theta_sq: f64,
    /// |A* - A_0|^2 for an A block (its distance from the initialisation); |B*|^2 for B.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub theta_moved_sq: Option<f64>,
}

/// The fit's totals: gamma, |theta|^2 split into A and B, A's distance from its initialisation,
/// and delta* = gamma / |theta - theta_0|^2 at the scalar optimum (a check on the optimiser).
#[derive(Clone, Debug, Serialize)]
pub struct PriorReport {
    pub blocks: Vec<BlockReport>,
    pub effective_params: f64,
    pub n_params: usize,
    pub theta_sq_a: f64,
    pub theta_sq_b: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_moved_sq: Option<f64>,
}

/// Reports the blocks in `which` at per-block `deltas`. For the full structure gamma is reported
/// in total only (its eigenvalues do not split by block).
pub fn report(post: &Posterior, which: &[usize], deltas: &[f64]) -> PriorReport {
    let mut blocks = Vec::new();
    let (mut a, mut b, mut moved_a) = (0.0, 0.0, 0.0);
    let mut total_gamma = 0.0;
    let spectra = post.spectra(which);
    for (j, &i) in which.iter().enumerate() {
        let (nx, no) = post.sides[i];
        let gamma = if post.full.is_some() { f64::NAN } else { spectra[j].effective_params(deltas[i]) };
        if post.full.is_none() {
            total_gamma += gamma;
        }
        let moved = post.theta_init_sq.as_ref().map(|m| m[i]);
        match post.blocks[i].mat {
            Mat::A => {
                a += post.theta_sq[i];
                moved_a += moved.unwrap_or(f64::NAN);
            }
            Mat::B => b += post.theta_sq[i],
        }
        blocks.push(BlockReport {
            name: post.names[i].clone(),
            n_params: nx * no,
            prior_precision: deltas[i],
            effective_params: gamma,
            theta_sq: post.theta_sq[i],
            theta_moved_sq: moved,
        });
    }
    if post.full.is_some() {
        total_gamma = spectra[0].effective_params(deltas[which[0]]);
    }
    PriorReport {
        blocks,
        effective_params: total_gamma,
        n_params: which.iter().map(|&i| post.sides[i].0 * post.sides[i].1).sum(),
        theta_sq_a: a,
        theta_sq_b: b,
        a_moved_sq: post.theta_init_sq.as_ref().map(|_| moved_a),
    }
}
