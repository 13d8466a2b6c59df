//! How far each way of letting positions into KFAC ("expand", "reduce", "last") is from the exact
//! GGN, measured block by block on a real model (DESIGN.md section 2; the table in the README).
//!
//! For each chosen LoRA matrix, the exact GGN block (the full structure over that block alone)
//! and the three KFAC approximations are collected over the same examples; the table gives the
//! relative Frobenius error of the curvature and of the functional covariance Sigma_f of held-out
//! examples at a common prior precision.

use super::curvature::collect;
use super::jacobian::{functional, Group, Rows};
use super::posterior::Posterior;
use super::spectral::SpectralGrid;
use super::{block_name, rel_fro, BlockId, LaplaceConfig, Positions, Structure};
use crate::lora::LoraSet;
use crate::model::Llama;
use crate::train::Encoded;
use anyhow::Result;
use serde::Serialize;
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug, Serialize)]
pub struct StudyRow {
    pub block: String,
    pub n_params: usize,
    pub positions: String,
    pub curvature_rel_error: f64,
    pub sigma_f_rel_error: f64,
}

#[allow(clippy::too_many_arguments)]
pub fn positions_study(
    model: &Llama,
    lora: &LoraSet,
    blocks: &[BlockId],
    fit_data: &[Encoded],
    eval_data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    delta: f64,
    on_row: &mut dyn FnMut(&StudyRow),
) -> Result<Vec<StudyRow>> {
    let cancel = AtomicBool::new(false);
    let mut rows = Vec::new();
    for &b in blocks {
        let one = [b];
        let base = LaplaceConfig { max_full_params: 20_000, low_rank_threshold: 100_000, ..Default::default() };
        let fit = |structure: Structure, positions: Positions| -> Result<Posterior> {
            let c = LaplaceConfig { structure, positions, ..base.clone() };
            let curv = collect(model, lora, &one, fit_data, answer_ids, pad, 4, &c, &cancel, &mut |_, _| {})?.expect("not cancelled");
            Posterior::from_curvature(curv, lora)
        };
        let sigma = |post: &Posterior| -> Result<Vec<f64>> {
            let g = Group { blocks: vec![0], deltas: vec![delta] };
            let f = functional(
                model,
                lora,
                post,
                eval_data,
                answer_ids,
                pad,
                4,
                Rows::Raw,
                &[g],
                &[],
                &SpectralGrid::for_deltas(1e-4, 1e4, 200),
                &cancel,
                &mut |_, _| {},
            )?
            .expect("not cancelled");
            Ok(f.iter().flat_map(|x| x.sigma[0].clone()).collect())
        };
        let exact = fit(Structure::Full, Positions::Reduce)?;
        let exact_m = exact.full.as_ref().expect("full").reconstruct();
        let exact_s = sigma(&exact)?;
        for positions in [Positions::Expand, Positions::Reduce, Positions::Last] {
            let post = fit(Structure::Kron, positions)?;
            let row = StudyRow {
                block: block_name(lora, b),
                n_params: post.n_params(),
                positions: format!("{positions:?}").to_lowercase(),
                curvature_rel_error: rel_fro(&post.dense_kron(), &exact_m),
                sigma_f_rel_error: rel_fro(&sigma(&post)?, &exact_s),
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}
