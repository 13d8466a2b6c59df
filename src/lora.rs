//! LoRA adapters: W x + (alpha / r) B A x on chosen projections (MATH.md section 2).
//!
//! The adapters live apart from the frozen base model (a `LoraSet` is passed to the forward), so
//! one base model serves several adapter sets and the Laplace posterior can address each LoRA
//! matrix by name. PEFT-format import and export are in `peft.rs`.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A projection that can carry a LoRA adapter; the names are PEFT's `target_modules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
    LmHead,
}

impl Target {
    pub const ALL: [Target; 8] =
        [Target::QProj, Target::KProj, Target::VProj, Target::OProj, Target::GateProj, Target::UpProj, Target::DownProj, Target::LmHead];

    pub fn name(self) -> &'static str {
        match self {
            Target::QProj => "q_proj",
            Target::KProj => "k_proj",
            Target::VProj => "v_proj",
            Target::OProj => "o_proj",
            Target::GateProj => "gate_proj",
            Target::UpProj => "up_proj",
            Target::DownProj => "down_proj",
            Target::LmHead => "lm_head",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Target::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
            anyhow::anyhow!("unknown LoRA target {s:?}; expected one of {}", names.join(", "))
        })
    }

    /// The Hugging Face module path of this projection in block `layer` (PEFT key stem).
    pub fn module_path(self, layer: usize) -> String {
        match self {
            Target::QProj | Target::KProj | Target::VProj | Target::OProj => {
                format!("model.layers.{layer}.self_attn.{}", self.name())
            }
            Target::GateProj | Target::UpProj | Target::DownProj => {
                format!("model.layers.{layer}.mlp.{}", self.name())
            }
            Target::LmHead => "lm_head".to_string(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { rank: 8, alpha: 16.0, dropout: 0.0, targets: vec![Target::QProj, Target::VProj, Target::LmHead] }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            bail!("lora.rank must be at least 1 (got 0)");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("lora.alpha must be a positive number (got {})", self.alpha);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("lora.dropout must be in [0, 1) (got {})", self.dropout);
        }
        if self.targets.is_empty() {
            bail!("lora.targets is empty: name at least one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head");
        }
        Ok(())
    }
}

/// One adapted linear map. For the LM head only the K answer rows exist: `b` is (K, r) and the
/// rows correspond to `LoraSet::answer_token_ids`.
pub struct LoraLayer {
    /// Block index, or None for the LM head.
    pub layer: Option<usize>,
    pub target: Target,
    /// A: (r, d_in), random at start.
    pub a: Var,
    /// B: (d_out, r), zero at start.
    pub b: Var,
}

impl LoraLayer {
    /// PEFT's module path, e.g. `model.layers.3.self_attn.q_proj` or `lm_head`.
    pub fn module_path(&self) -> String {
        self.target.module_path(self.layer.unwrap_or(0))
    }

    /// (A, B) as a forward pass uses them: the variables, or with `detach` copies of their
    /// handles outside any graph (same storage; a pass that is never differentiated).
    pub fn weights(&self, detach: bool) -> (Tensor, Tensor) {
        let (a, b) = (self.a.as_tensor(), self.b.as_tensor());
        if detach {
            (a.detach(), b.detach())
        } else {
            (a.clone(), b.clone())
        }
    }
}

/// The adapters of one model, in a fixed order (blocks ascending, targets in `Target::ALL`
/// order, the LM head last).
pub struct LoraSet {
    pub config: LoraConfig,
    pub layers: Vec<LoraLayer>,
    /// Vocabulary ids of the answer tokens: the rows of the LM head that are computed.
    pub answer_token_ids: Vec<u32>,
    /// (num_blocks x 8) -> index into `layers`.
    lookup: Vec<[Option<usize>; 8]>,
    head: Option<usize>,
}

/// Shapes of the base model that the adapters must fit.
pub struct Dims {
    pub num_layers: usize,
    pub hidden: usize,
    pub q_out: usize,
    pub kv_out: usize,
    pub intermediate: usize,
}

impl Dims {
    fn io(&self, t: Target, k: usize) -> (usize, usize) {
        match t {
            Target::QProj => (self.hidden, self.q_out),
            Target::KProj | Target::VProj => (self.hidden, self.kv_out),
            Target::OProj => (self.q_out, self.hidden),
            Target::GateProj | Target::UpProj => (self.hidden, self.intermediate),
            Target::DownProj => (self.intermediate, self.hidden),
            Target::LmHead => (self.hidden, k),
        }
    }
}

fn target_slot(t: Target) -> usize {
    Target::ALL.iter().position(|x| *x == t).expect("every target is in ALL")
}

impl LoraSet {
    /// Fresh adapters: A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) (PEFT's kaiming-uniform with a = sqrt 5),
    /// B = 0, so the adapted model starts equal to the base model. Deterministic for a seed.
    pub fn new(config: LoraConfig, dims: &Dims, answer_token_ids: Vec<u32>, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x4c6f_5241);
        let k = answer_token_ids.len();
        let mut layers = Vec::new();
        let mut add = |layer: Option<usize>, t: Target, rng: &mut rand::rngs::StdRng| -> Result<()> {
            let (d_in, d_out) = dims.io(t, k);
            let bound = 1.0 / (d_in as f64).sqrt();
            let a: Vec<f32> = (0..config.rank * d_in).map(|_| rng.random_range(-bound..bound) as f32).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (config.rank, d_in), device)?)?;
            let b = Var::from_tensor(&Tensor::zeros((d_out, config.rank), DType::F32, device)?)?;
            layers.push(LoraLayer { layer, target: t, a, b });
            Ok(())
        };
        for l in 0..dims.num_layers {
            for t in Target::ALL {
                if t != Target::LmHead && config.targets.contains(&t) {
                    add(Some(l), t, &mut rng)?;
                }
            }
        }
        if config.targets.contains(&Target::LmHead) {
            add(None, Target::LmHead, &mut rng)?;
        }
        Ok(Self::from_layers(config, layers, answer_token_ids, dims.num_layers))
    }

    pub fn from_layers(config: LoraConfig, layers: Vec<LoraLayer>, answer_token_ids: Vec<u32>, num_layers: usize) -> Self {
        let mut lookup = vec![[None; 8]; num_layers];
        let mut head = None;
        for (i, l) in layers.iter().enumerate() {
            match l.layer {
                Some(b) if b < num_layers => lookup[b][target_slot(l.target)] = Some(i),
                Some(_) => {}
                None => head = Some(i),
            }
        }
        Self { config, layers, answer_token_ids, lookup, head }
    }

    /// A copy with variables of its own (training one leaves the other as it was): epoch
    /// checkpoints, ensemble members.
    pub fn deep_clone(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LoraLayer {
                    layer: l.layer,
                    target: l.target,
                    a: Var::from_tensor(&l.a.as_tensor().copy()?)?,
                    b: Var::from_tensor(&l.b.as_tensor().copy()?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_layers(self.config.clone(), layers, self.answer_token_ids.clone(), self.lookup.len()))
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraLayer> {
        self.index_of(layer, target).map(|i| &self.layers[i])
    }

    /// Position in `layers` of the adapter on `target` in block `layer`.
    pub fn index_of(&self, layer: usize, target: Target) -> Option<usize> {
        self.lookup.get(layer)?[target_slot(target)]
    }

    pub fn head(&self) -> Option<&LoraLayer> {
        self.head.map(|i| &self.layers[i])
    }

    pub fn head_index(&self) -> Option<usize> {
        self.head
    }

    pub fn scale(&self) -> f64 {
        self.config.scale()
    }

    /// Every trainable variable (A and B of each layer), in a fixed order.
    pub fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(|l| [l.a.clone(), l.b.clone()]).collect()
    }

    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|l| l.a.elem_count() + l.b.elem_count()).sum()
    }
}

/// Dropout on the LoRA input with a seeded generator (candle's own dropout draws from an
/// unseeded thread RNG, which would break determinism for a seed).
pub struct LoraDropout {
    pub p: f64,
    rng: rand::rngs::StdRng,
}

impl LoraDropout {
    pub fn new(p: f64, seed: u64) -> Self {
        Self { p, rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0xd20_9047) }
    }

    /// The multipliers for `n` inputs: each 1 / (1 - p) with probability 1 - p, else 0; none
    /// (and no draw from the generator) when p <= 0.
    pub fn mask(&mut self, n: usize) -> Option<Vec<f32>> {
        if self.p <= 0.0 {
            return None;
        }
        let keep = 1.0 - self.p;
        Some((0..n).map(|_| if self.rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect())
    }
}
