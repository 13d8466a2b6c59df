//! The Laplace posterior over LoRA parameters (DESIGN.md section 2, MATH.md sections 3-8).
//!
//! Its parts are separate and swappable, as in laplace-torch: which weights (`Subset`), which
//! curvature (`CurvatureKind`) and how positions enter it (`Positions`), which structure
//! (`Structure`), how the prior precision is chosen (`PriorMethod`), which predictive
//! (`PredictiveKind`).
//!
//! - `curvature`: one pass over the training set collecting KFAC / diagonal / full GGN factors;
//! - `posterior`: eigendecompositions, marginal likelihood, prior precision, save and load;
//! - `jacobian`: per-example Jacobians of the K answer logits projected into the eigenbasis, the
//!   functional covariance, and the spectral cache that makes a new prior instant;
//! - `eigen`, `marglik`, `predictive`, `spectral`: the numerical core on plain f64.

pub mod cache;
pub mod curvature;
pub mod eigen;
pub mod fit;
pub mod jacobian;
pub mod kernel;
pub mod marglik;
pub mod posterior;
pub mod predictive;
pub mod prior;
pub mod spectral;
pub mod study;
pub mod study_prior;
pub mod tapped;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which LoRA parameters carry the posterior.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subset {
    /// Every LoRA matrix (Laplace-LoRA).
    All,
    /// The last LoRA-carrying layer only (LLLA): the LM head's LoRA when it is a target, else the
    /// last block's adapted projections (MATH.md section 9).
    LastLayer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Structure {
    Kron,
    Diag,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurvatureKind {
    /// Exact GGN: K backward passes with the columns of a square root of diag(p) - p p^T.
    Ggn,
    /// Sampled-label Fisher: one backward pass with p - onehot(y~), y~ ~ p.
    Fisher,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    Expand,
    Reduce,
    Last,
}

/// Where the Gaussian prior over the LoRA parameters is centred (MATH.md section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorMean {
    /// theta ~ N(0, I / delta): the textbook Laplace prior.
    Zero,
    /// A ~ N(A_0, I / delta) at A's random initialisation, B ~ N(0, I / delta) (B_0 = 0): the
    /// prior a LoRA run actually starts from.
    Init,
}

/// Which blocks share one prior precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaGroups {
    /// One delta for every block.
    Scalar,
    /// One delta for the A matrices and one for the B matrices.
    Ab,
    /// One delta per LoRA matrix.
    Layer,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorMethod {
    /// The deltas maximising the Laplace log marginal likelihood, with the prior centred at
    /// `mean`, one delta per group of `groups`.
    Marglik {
        mean: PriorMean,
        groups: DeltaGroups,
    },
    /// The delta of the grid with the lowest validation NLL.
    Grid,
    Fixed(f64),
}

impl PriorMethod {
    /// What `prior = "marglik"` means: the variant measured best on the three sample datasets
    /// (`laplace-lora study-prior`, README "Choosing the prior precision"): the prior centred at
    /// the LoRA initialisation with one delta for the A and one for the B matrices had the lowest
    /// mean test NLL (0.818, tied with per-matrix deltas) and the lowest mean ECE (0.155) of the
    /// six variants.
    pub const MARGLIK_DEFAULT: PriorMethod = PriorMethod::Marglik { mean: PriorMean::Init, groups: DeltaGroups::Ab };

    /// The configuration's names: "grid", "marglik" (the default variant), and every variant
    /// spelled out as "marglik_{scalar,ab,layer}" with "_init" for the initialisation-centred
    /// prior. (A number is `Fixed`; the caller parses it.)
    pub fn parse(name: &str) -> Option<Self> {
        use DeltaGroups::*;
        use PriorMean::*;
        Some(match name {
            "grid" => PriorMethod::Grid,
            "marglik" => Self::MARGLIK_DEFAULT,
            _ => {
                let rest = name.strip_prefix("marglik_")?;
                let (rest, mean) = match rest.strip_suffix("_init") {
                    Some(r) => (r, Init),
                    None => (rest, Zero),
                };
                let groups = match rest {
                    "scalar" => Scalar,
                    "ab" => Ab,
                    "layer" => Layer,
                    _ => return None,
                };
                PriorMethod::Marglik { mean, groups }
            }
        })
    }

    /// Every name `parse` takes (for error messages and help).
    pub fn names() -> Vec<String> {
        let mut v = vec!["grid".to_string(), "marglik".to_string()];
        for g in ["scalar", "ab", "layer"] {
            for m in ["", "_init"] {
                v.push(format!("marglik_{g}{m}"));
            }
        }
        v
    }

    /// The explicit name of a marginal-likelihood variant (e.g. "marglik_ab_init").
    pub fn name(&self) -> String {
        match self {
            PriorMethod::Grid => "grid".into(),
            PriorMethod::Fixed(d) => format!("{d}"),
            PriorMethod::Marglik { mean, groups } => {
                let g = match groups {
                    DeltaGroups::Scalar => "scalar",
                    DeltaGroups::Ab => "ab",
                    DeltaGroups::Layer => "layer",
                };
                format!("marglik_{g}{}", if *mean == PriorMean::Init { "_init" } else { "" })
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictiveKind {
    /// The GLM predictive E[softmax(f)] by quadrature (within TV 0.005): the default.
    Quadrature,
    /// The shift-invariant pairwise probit (MacKay's at K = 2).
    Probit,
    /// laplace-torch's per-class probit on the raw logits.
    ProbitTorch,
    /// Monte Carlo with `samples` correlated draws.
    Mc,
    /// The normalised Laplace bridge.
    Bridge,
}

impl PredictiveKind {
    pub const ALL: [PredictiveKind; 5] = [Self::Quadrature, Self::Probit, Self::ProbitTorch, Self::Mc, Self::Bridge];

    /// The configuration's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Quadrature => "quadrature",
            Self::Probit => "probit",
            Self::ProbitTorch => "probit_torch",
            Self::Mc => "mc",
            Self::Bridge => "bridge",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the predictive depends on Sigma_f only through the covariance of logit
    /// differences f_c - f_c' (a common shift of all logits, random or not, changes nothing).
    /// Such a predictive is served by the centred Jacobians (`jacobian::Rows::Centred`), which
    /// cost one backward pass fewer per example; probit_torch and the bridge read each class's
    /// own variance and need the raw ones.
    pub fn shift_invariant(self) -> bool {
        matches!(self, Self::Quadrature | Self::Probit | Self::Mc)
    }
}

/// Everything that decides a Laplace fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaplaceConfig {
    pub subset: Subset,
    pub structure: Structure,
    pub curvature: CurvatureKind,
    pub positions: Positions,
    pub prior: PriorMethod,
    pub predictive: PredictiveKind,
    pub samples: usize,
    /// A Kronecker factor with a side above this is kept low-rank.
    pub low_rank_threshold: usize,
    /// Eigenpairs kept by a low-rank factor.
    pub low_rank_k: usize,
    /// The full structure is refused above this many parameters (its matrix is P x P).
    pub max_full_params: usize,
    /// Range and size of the prior-precision grid (the curve and the grid search).
    pub delta_min: f64,
    pub delta_max: f64,
    pub grid_points: usize,
    pub seed: u64,
}

impl Default for LaplaceConfig {
    fn default() -> Self {
        Self {
            subset: Subset::All,
            structure: Structure::Kron,
            curvature: CurvatureKind::Ggn,
            positions: Positions::Reduce,
            prior: PriorMethod::MARGLIK_DEFAULT,
            predictive: PredictiveKind::Quadrature,
            samples: 1000,
            low_rank_threshold: 1024,
            low_rank_k: 128,
            max_full_params: 6000,
            delta_min: 1e-4,
            delta_max: 1e4,
            grid_points: 41,
            seed: 0,
        }
    }
}

impl LaplaceConfig {
    /// The predictive and its Monte Carlo settings.
    pub fn predictor(&self) -> predictive::Predictor {
        predictive::Predictor { kind: self.predictive, samples: self.samples, seed: self.seed }
    }

    pub fn validate(&self) -> Result<()> {
        if self.samples == 0 {
            bail!("laplace.samples must be at least 1");
        }
        if self.low_rank_k == 0 || self.low_rank_threshold == 0 {
            bail!("laplace.low_rank_k and laplace.low_rank_threshold must be positive");
        }
        if !(self.delta_min > 0.0 && self.delta_max > self.delta_min && self.delta_max.is_finite()) {
            bail!("laplace.delta_min/delta_max must satisfy 0 < min < max (got {} and {})", self.delta_min, self.delta_max);
        }
        if self.grid_points < 40 {
            bail!("laplace.grid_points must be at least 40 (got {})", self.grid_points);
        }
        if let PriorMethod::Fixed(d) = self.prior {
            if !(d.is_finite() && d > 0.0) {
                bail!("laplace.prior = {d} must be a positive number");
            }
        }
        Ok(())
    }
}

/// One LoRA matrix as a "linear map with an input side and an output side" (MATH.md section 2):
/// B has input side u = A a (r) and output side s e (d_out); A has input side a (d_in) and output
/// side s B^T e (r).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mat {
    A,
    B,
}

/// Identifies a block of the posterior: matrix `mat` of `LoraSet::layers[layer]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockId {
    pub layer: usize,
    pub mat: Mat,
}

/// The blocks of a subset, in the LoRA set's order (A before B).
pub fn subset_blocks(lora: &crate::lora::LoraSet, subset: Subset) -> Vec<BlockId> {
    let layers: Vec<usize> = match subset {
        Subset::All => (0..lora.layers.len()).collect(),
        Subset::LastLayer => match lora.head_index() {
            Some(h) => vec![h],
            None => {
                let last = lora.layers.iter().filter_map(|l| l.layer).max();
                (0..lora.layers.len()).filter(|&i| lora.layers[i].layer == last && last.is_some()).collect()
            }
        },
    };
    layers.into_iter().flat_map(|layer| [BlockId { layer, mat: Mat::A }, BlockId { layer, mat: Mat::B }]).collect()
}

/// A human-readable name of a block, e.g. `model.layers.3.self_attn.q_proj.lora_A`.
pub fn block_name(lora: &crate::lora::LoraSet, b: BlockId) -> String {
    format!("{}.lora_{}", lora.layers[b.layer].module_path(), if b.mat == Mat::A { "A" } else { "B" })
}

/// Relative Frobenius distance |a - b| / |b| of two equally long arrays.
pub fn rel_fro(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}
