//! The fitted posterior: eigendecompositions of the curvature blocks, the MAP parameters' norms,
//! the marginal likelihood as a function of the prior precision, and save / load.

use super::curvature::{BlockCurvature, Curvature};
use super::eigen::{sym_eig, SymEig};
use super::marglik::{self, LayerSpectrum};
use super::{block_name, BlockId, Mat, Structure};
use crate::lora::LoraSet;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The eigenbasis of one block's curvature.
pub enum BlockBasis {
    /// X = Q_X diag(a) Q_X^T (input side), O = Q_O diag(g) Q_O^T (output side); precision
    /// eigenvalues a_i g_j + delta (MATH.md section 5).
    Kron { x: SymEig, o: SymEig },
    /// The GGN's diagonal, in the block's own coordinates (row-major n_o x n_x).
    Diag { d: Vec<f64> },
}

pub struct Posterior {
    pub structure: Structure,
    pub blocks: Vec<BlockId>,
    pub names: Vec<String>,
    /// (n_x, n_o) of each block.
    pub sides: Vec<(usize, usize)>,
    /// Kron or Diag per block; empty for the full structure.
    pub basis: Vec<BlockBasis>,
    /// The full structure: eigenpairs of the P x P GGN over all blocks.
    pub full: Option<SymEig>,
    /// |theta*|^2 per block.
    pub theta_sq: Vec<f64>,
    /// |theta* - theta_0|^2 per block, theta_0 the LoRA initialisation (A_0 random, B_0 = 0):
    /// for the prior centred there ([`Posterior::set_init`]).
    pub theta_init_sq: Option<Vec<f64>>,
    pub log_lik: f64,
    pub n_examples: usize,
    /// Eigenvalues clamped from small negatives to 0 (round-off), reported.
    pub clamped: usize,
}

/// Row-major (n_o x n_x) values of a block's MAP matrix, flattened.
pub fn block_values(lora: &LoraSet, b: BlockId) -> Result<Vec<f64>> {
    let l = &lora.layers[b.layer];
    let t = match b.mat {
        Mat::A => l.a.as_tensor(),
        Mat::B => l.b.as_tensor(),
    };
    Ok(t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Eigendecompositions of every Kron block's factors, at [2 i] (X) and [2 i + 1] (O) for block i
/// (None for other structures). The factors are independent, so they are decomposed in parallel
/// (faer's dense eigensolver runs on one thread); a factor equal to an earlier one is decomposed
/// once: q_proj's and v_proj's A blocks see the same input, so their X factors agree bit for bit
/// (same rows, same accumulation order), a third of the large factors of a q,v adapter.
fn decompose_factors(per_block: &[BlockCurvature]) -> Vec<Option<SymEig>> {
    use rayon::prelude::*;
    let factors: Vec<Option<&super::eigen::Factor>> = per_block
        .iter()
        .flat_map(|bc| match bc {
            BlockCurvature::Kron { x, o } => [Some(x), Some(o)],
            _ => [None, None],
        })
        .collect();
    // source[i]: the first factor equal to factor i (itself if none earlier).
    let mut source: Vec<usize> = (0..factors.len()).collect();
    for i in 0..factors.len() {
        if let Some(fi) = factors[i] {
            if let Some(j) = (0..i).find(|&j| source[j] == j && factors[j].is_some_and(|fj| fj.same_as(fi))) {
                source[i] = j;
            }
        }
    }
    let unique: Vec<Option<SymEig>> = (0..factors.len()).into_par_iter().map(|i| if source[i] == i { factors[i].map(|f| f.eig()) } else { None }).collect();
    (0..factors.len()).map(|i| unique[source[i]].clone()).collect()
}

impl Posterior {
    pub fn from_curvature(c: Curvature, lora: &LoraSet) -> Result<Self> {
        let mut clamped = 0;
        let sides: Vec<(usize, usize)> = c.blocks.iter().map(|&b| super::curvature::sides(lora, b)).collect();
        let eigs = decompose_factors(&c.per_block);
        let mut basis = Vec::new();
        for (i, bc) in c.per_block.into_iter().enumerate() {
            match bc {
                BlockCurvature::Kron { .. } => {
                    let (x, o) = (eigs[2 * i].clone().expect("a Kron block's X"), eigs[2 * i + 1].clone().expect("a Kron block's O"));
                    clamped += x.clamped + o.clamped;
                    basis.push(BlockBasis::Kron { x, o });
                }
                BlockCurvature::Diag { mut d } => {
                    for v in d.iter_mut() {
                        if *v < 0.0 {
                            *v = 0.0;
                            clamped += 1;
                        }
                    }
                    basis.push(BlockBasis::Diag { d });
                }
                BlockCurvature::InFull => {}
            }
        }
        let full = match c.full {
            Some((p, m)) => {
                let e = sym_eig(&m, p);
                clamped += e.clamped;
                Some(e)
            }
            None => None,
        };
        let structure = if full.is_some() {
            Structure::Full
        } else if matches!(basis.first(), Some(BlockBasis::Diag { .. })) {
            Structure::Diag
        } else {
            Structure::Kron
        };
        let theta_sq = c.blocks.iter().map(|&b| Ok(block_values(lora, b)?.iter().map(|v| v * v).sum())).collect::<Result<Vec<f64>>>()?;
        Ok(Self {
            structure,
            names: c.blocks.iter().map(|&b| block_name(lora, b)).collect(),
            blocks: c.blocks,
            sides,
            basis,
            full,
            theta_sq,
            theta_init_sq: None,
            log_lik: c.log_lik,
            n_examples: c.n_examples,
            clamped,
        })
    }

    pub fn n_params(&self) -> usize {
        self.sides.iter().map(|(a, b)| a * b).sum()
    }

    /// Records |theta* - theta_0|^2 per block from `lora` (the MAP adapter) and `init` (the same
    /// adapter as initialised before training: `LoraSet::new` with the training seed).
    pub fn set_init(&mut self, lora: &LoraSet, init: &LoraSet) -> Result<()> {
        let moved = self
            .blocks
            .iter()
            .map(|&b| {
                let (th, t0) = (block_values(lora, b)?, block_values(init, b)?);
                if th.len() != t0.len() {
                    bail!("the initial adapter's {} has {} values, the trained one {}", block_name(lora, b), t0.len(), th.len());
                }
                Ok(th.iter().zip(&t0).map(|(x, y)| (x - y) * (x - y)).sum())
            })
            .collect::<Result<Vec<f64>>>()?;
        self.theta_init_sq = Some(moved);
        Ok(())
    }

    /// The spectra of the blocks in `which` (indices into `blocks`), for the marginal likelihood.
    /// The full structure is one spectrum over every block (per-block priors do not apply).
    pub fn spectra(&self, which: &[usize]) -> Vec<LayerSpectrum> {
        if let Some(full) = &self.full {
            return vec![LayerSpectrum {
                name: "full".into(),
                a: full.values.clone(),
                n_a: full.n,
                g: vec![1.0],
                n_g: 1,
                theta_sq: which.iter().map(|&i| self.theta_sq[i]).sum(),
            }];
        }
        which
            .iter()
            .map(|&i| match &self.basis[i] {
                BlockBasis::Kron { x, o } => {
                    LayerSpectrum { name: self.names[i].clone(), a: x.values.clone(), n_a: x.n, g: o.values.clone(), n_g: o.n, theta_sq: self.theta_sq[i] }
                }
                BlockBasis::Diag { d } => {
                    LayerSpectrum { name: self.names[i].clone(), a: d.clone(), n_a: d.len(), g: vec![1.0], n_g: 1, theta_sq: self.theta_sq[i] }
                }
            })
            .collect()
    }

    /// Expands per-spectrum deltas (as `spectra` groups them) to per-block deltas.
    pub fn block_deltas(&self, which: &[usize], per_spectrum: &[f64]) -> Vec<f64> {
        let mut d = vec![f64::NAN; self.blocks.len()];
        for (j, &i) in which.iter().enumerate() {
            d[i] = if self.full.is_some() { per_spectrum[0] } else { per_spectrum[j] };
        }
        d
    }

    pub fn log_marglik(&self, which: &[usize], delta: f64) -> f64 {
        let s = self.spectra(which);
        marglik::log_marglik(self.log_lik, &s, &vec![delta; s.len()])
    }

    /// Saves the eigenbases and eigenvalues (and the prior precisions) as safetensors.
    pub fn save(&self, path: &Path, deltas: &[f64]) -> Result<()> {
        let dev = Device::Cpu;
        let mut t: HashMap<String, Tensor> = HashMap::new();
        let vec = |v: &[f64]| Tensor::from_vec(v.to_vec(), v.len(), &dev);
        let mat = |e: &SymEig| Tensor::from_vec(e.vectors.clone(), (e.n, e.k), &dev);
        for (i, name) in self.names.iter().enumerate() {
            match self.basis.get(i) {
                Some(BlockBasis::Kron { x, o }) => {
                    t.insert(format!("{name}.x_eigenvalues"), vec(&x.values)?);
                    t.insert(format!("{name}.x_eigenvectors"), mat(x)?);
                    t.insert(format!("{name}.o_eigenvalues"), vec(&o.values)?);
                    t.insert(format!("{name}.o_eigenvectors"), mat(o)?);
                }
                Some(BlockBasis::Diag { d }) => {
                    t.insert(format!("{name}.diag"), vec(d)?);
                }
                None => {}
            }
        }
        if let Some(f) = &self.full {
            t.insert("full.eigenvalues".into(), vec(&f.values)?);
            t.insert("full.eigenvectors".into(), mat(f)?);
        }
        t.insert("prior_precision".into(), vec(deltas)?);
        t.insert("theta_sq".into(), vec(&self.theta_sq)?);
        if let Some(m) = &self.theta_init_sq {
            t.insert("theta_init_sq".into(), vec(m)?);
        }
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&t, &tmp)?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        Ok(())
    }

    /// Reloads what `save` wrote; `meta` is the matching `laplace.json` block list.
    pub fn load(path: &Path, meta: &PosteriorMeta) -> Result<(Self, Vec<f64>)> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("reading {}", path.display()))?;
        let get = |k: &str| -> Result<Vec<f64>> {
            Ok(t.get(k).ok_or_else(|| anyhow!("{}: tensor {k} is missing", path.display()))?.flatten_all()?.to_vec1::<f64>()?)
        };
        let eig = |pre: &str| -> Result<SymEig> {
            let values = get(&format!("{pre}_eigenvalues"))?;
            let v = t.get(&format!("{pre}_eigenvectors")).ok_or_else(|| anyhow!("{}: {pre}_eigenvectors missing", path.display()))?;
            let (n, k) = v.dims2()?;
            Ok(SymEig { n, k, values, vectors: v.flatten_all()?.to_vec1::<f64>()?, clamped: 0 })
        };
        let mut basis = Vec::new();
        let full = if meta.structure == Structure::Full {
            let values = get("full.eigenvalues")?;
            let v = t.get("full.eigenvectors").ok_or_else(|| anyhow!("full.eigenvectors missing"))?;
            let (n, k) = v.dims2()?;
            Some(SymEig { n, k, values, vectors: v.flatten_all()?.to_vec1::<f64>()?, clamped: 0 })
        } else {
            for name in &meta.names {
                basis.push(match meta.structure {
                    Structure::Kron => BlockBasis::Kron { x: eig(&format!("{name}.x"))?, o: eig(&format!("{name}.o"))? },
                    Structure::Diag => BlockBasis::Diag { d: get(&format!("{name}.diag"))? },
                    Structure::Full => unreachable!(),
                });
            }
            None
        };
        if meta.blocks.len() != meta.names.len() || meta.sides.len() != meta.names.len() {
            bail!("laplace.json: blocks, names and sides differ in length");
        }
        let deltas = get("prior_precision")?;
        Ok((
            Self {
                structure: meta.structure,
                blocks: meta.blocks.clone(),
                names: meta.names.clone(),
                sides: meta.sides.clone(),
                basis,
                full,
                theta_sq: get("theta_sq")?,
                theta_init_sq: get("theta_init_sq").ok(),
                log_lik: meta.log_lik,
                n_examples: meta.n_examples,
                clamped: 0,
            },
            deltas,
        ))
    }

    /// The dense block-diagonal KFAC curvature, each block O (x) X in the row-major (n_o x n_x)
    /// flattening, P x P row-major: for brute-force checks and studies on small blocks only.
    pub fn dense_kron(&self) -> Vec<f64> {
        let p = self.n_params();
        let mut m = vec![0.0; p * p];
        let mut off = 0;
        for b in &self.basis {
            let BlockBasis::Kron { x, o } = b else { continue };
            let (xd, od) = (x.reconstruct(), o.reconstruct());
            let (nx, no) = (x.n, o.n);
            for j in 0..no {
                for i in 0..nx {
                    for j2 in 0..no {
                        for i2 in 0..nx {
                            m[(off + j * nx + i) * p + off + j2 * nx + i2] = od[j * no + j2] * xd[i * nx + i2];
                        }
                    }
                }
            }
            off += nx * no;
        }
        m
    }

    pub fn meta(&self) -> PosteriorMeta {
        PosteriorMeta {
            structure: self.structure,
            blocks: self.blocks.clone(),
            names: self.names.clone(),
            sides: self.sides.clone(),
            log_lik: self.log_lik,
            n_examples: self.n_examples,
        }
    }
}

/// The part of `laplace.json` needed to reload a posterior.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PosteriorMeta {
    pub structure: Structure,
    pub blocks: Vec<BlockId>,
    pub names: Vec<String>,
    pub sides: Vec<(usize, usize)>,
    pub log_lik: f64,
    pub n_examples: usize,
}
