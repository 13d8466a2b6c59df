//! Ensembles of adapters, probabilities averaged (never logits):
//! - checkpoint ensemble: the adapters at the end of the MAP run's last M epochs (no training of
//!   its own; with fewer epochs than M, every epoch);
//! - deep ensemble (Lakshminarayanan et al. 2017): M adapters trained from M seeds on the same
//!   data, member 0 being the MAP run; its training cost is all M runs.

use super::{Context, EvalSet, Method, SetPrediction};
use crate::experiment::Stage;
use crate::lora::LoraSet;
use anyhow::{bail, Context as _, Result};

/// Predicts with every member and averages their probabilities.
fn predict_members(cx: &Context, members: &[&LoraSet], set: &EvalSet) -> Result<Option<SetPrediction>> {
    let mut logits = Vec::with_capacity(members.len());
    for m in members {
        let Some(l) = cx.logits(Stage::Evaluate, Some(m), None, set.data)? else { return Ok(None) };
        logits.push(l);
    }
    Ok(Some(SetPrediction::from_member_logits(&logits)))
}

/// Saves members as `methods/NAME/member_{first}`, `member_{first + 1}`, ...
fn save_members(cx: &Context, name: &str, members: &[LoraSet], first: usize) -> Result<()> {
    let dir = cx.method_dir(name)?;
    for (i, m) in members.iter().enumerate() {
        cx.save_adapter(m, &dir.join(format!("member_{}", first + i)))?;
    }
    Ok(())
}

/// Loads `methods/NAME/member_{first}`, ... as far as they go.
fn load_members(cx: &Context, name: &str, first: usize) -> Result<Vec<LoraSet>> {
    let dir = cx.run_dir.join("methods").join(name);
    let mut out = Vec::new();
    loop {
        let d = dir.join(format!("member_{}", first + out.len()));
        if !d.is_dir() {
            break;
        }
        out.push(cx.load_adapter(&d).with_context(|| format!("loading {}", d.display()))?);
    }
    Ok(out)
}

pub struct CheckpointEnsemble {
    members: usize,
    chosen: Vec<LoraSet>,
}

impl CheckpointEnsemble {
    pub fn new(members: usize) -> Self {
        CheckpointEnsemble { members, chosen: Vec::new() }
    }

    pub fn restore(cx: &Context) -> Result<Self> {
        let chosen = load_members(cx, "checkpoint_ensemble", 0)?;
        if chosen.is_empty() {
            bail!("{} holds no member adapters", cx.run_dir.join("methods/checkpoint_ensemble").display());
        }
        Ok(CheckpointEnsemble { members: chosen.len(), chosen })
    }
}

impl Method for CheckpointEnsemble {
    fn name(&self) -> &'static str {
        "checkpoint_ensemble"
    }

    fn prepare(&mut self, cx: &Context) -> Result<bool> {
        let n = cx.checkpoints.len();
        if n == 0 {
            bail!("the checkpoint ensemble needs the MAP run's epoch checkpoints, and this run kept none");
        }
        let m = self.members.min(n);
        if m < self.members {
            cx.message(Stage::Evaluate, format!("checkpoint_ensemble: {} members asked for, the MAP run has {n} epochs: using {m}", self.members))?;
        }
        self.chosen = cx.checkpoints[n - m..].iter().map(|l| l.deep_clone()).collect::<Result<_>>()?;
        Ok(true)
    }

    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        let members: Vec<&LoraSet> = self.chosen.iter().collect();
        predict_members(cx, &members, set)
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("members".into(), self.chosen.len().into());
        m
    }

    fn save(&self, cx: &Context) -> Result<()> {
        save_members(cx, "checkpoint_ensemble", &self.chosen, 0)
    }
}

pub struct DeepEnsemble {
    members: usize,
    /// Members 1.. (member 0 is the MAP adapter).
    extra: Vec<LoraSet>,
    train_seconds: f64,
}

impl DeepEnsemble {
    pub fn new(members: usize) -> Self {
        DeepEnsemble { members, extra: Vec::new(), train_seconds: 0.0 }
    }

    pub fn restore(cx: &Context) -> Result<Self> {
        // Member 0 is the run's own adapter; the others were saved from 1 on.
        let extra = load_members(cx, "deep_ensemble", 1)?;
        Ok(DeepEnsemble { members: extra.len() + 1, extra, train_seconds: 0.0 })
    }

    /// The seed of member i (member 0: the run's own).
    pub fn member_seed(base: u64, i: usize) -> u64 {
        base.wrapping_add(1_000 * i as u64)
    }
}

impl Method for DeepEnsemble {
    fn name(&self) -> &'static str {
        "deep_ensemble"
    }

    fn prepare(&mut self, cx: &Context) -> Result<bool> {
        self.train_seconds = cx.map_train_seconds;
        for i in 1..self.members {
            let seed = Self::member_seed(cx.cfg.train.seed, i);
            let Some((lora, secs)) = cx.train_adapter(&format!("deep_ensemble member {}/{}", i + 1, self.members), seed, cx.cfg.lora.dropout)? else {
                return Ok(false);
            };
            self.extra.push(lora);
            self.train_seconds += secs;
        }
        Ok(true)
    }

    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        let members: Vec<&LoraSet> = std::iter::once(cx.map).chain(self.extra.iter()).collect();
        predict_members(cx, &members, set)
    }

    fn train_seconds(&self) -> f64 {
        self.train_seconds
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("members".into(), (self.extra.len() + 1).into());
        m
    }

    fn save(&self, cx: &Context) -> Result<()> {
        save_members(cx, "deep_ensemble", &self.extra, 1)
    }
}
