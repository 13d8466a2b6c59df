//! MC dropout (Gal & Ghahramani 2016), as the Laplace-LoRA paper runs it: the LoRA dropout of
//! training kept on at test time, S stochastic passes, probabilities averaged. The adapter is
//! the MAP run's when the run trained with the same dropout p (`lora.dropout`); otherwise one is
//! trained with p (same data, seed and schedule), and its training time is the method's.

use super::settings::McDropoutSettings;
use super::{Context, EvalSet, Method, SetPrediction};
use crate::experiment::Stage;
use crate::lora::{LoraDropout, LoraSet};
use anyhow::{Context as _, Result};

pub struct McDropout {
    s: McDropoutSettings,
    /// The adapter trained with dropout p; None: the MAP adapter is that adapter.
    own: Option<LoraSet>,
    train_seconds: f64,
}

impl McDropout {
    pub fn new(s: McDropoutSettings) -> Self {
        McDropout { s, own: None, train_seconds: 0.0 }
    }

    pub fn restore(s: McDropoutSettings, cx: &Context) -> Result<Self> {
        let dir = cx.run_dir.join("methods").join("mc_dropout").join("adapter");
        let own = if dir.is_dir() { Some(cx.load_adapter(&dir).with_context(|| format!("loading MC dropout's adapter {}", dir.display()))?) } else { None };
        Ok(McDropout { s, own, train_seconds: 0.0 })
    }

    fn reuses_map(&self, cx: &Context) -> bool {
        (cx.cfg.lora.dropout - self.s.p).abs() < 1e-12
    }
}

impl Method for McDropout {
    fn name(&self) -> &'static str {
        "mc_dropout"
    }

    fn prepare(&mut self, cx: &Context) -> Result<bool> {
        if self.reuses_map(cx) {
            cx.message(
                Stage::Evaluate,
                format!("mc_dropout: the MAP adapter (trained with LoRA dropout {}), {} passes with dropout on", self.s.p, self.s.samples),
            )?;
            return Ok(true);
        }
        let Some((lora, secs)) = cx.train_adapter("mc_dropout", cx.cfg.train.seed, self.s.p)? else { return Ok(false) };
        self.own = Some(lora);
        self.train_seconds = secs;
        Ok(true)
    }

    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        let lora = self.own.as_ref().unwrap_or(cx.map);
        let mut members = Vec::with_capacity(self.s.samples);
        for s in 0..self.s.samples {
            // Pass s draws its masks from its own seeded stream: reproducible, and different
            // from every other pass and from training's.
            let mut d = LoraDropout::new(self.s.p, cx.cfg.train.seed ^ (0x6d63_0000 + s as u64));
            let Some(l) = cx.logits(Stage::Evaluate, Some(lora), Some(&mut d), set.data)? else { return Ok(None) };
            members.push(l);
        }
        Ok(Some(SetPrediction::from_member_logits(&members)))
    }

    fn train_seconds(&self) -> f64 {
        self.train_seconds
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("p".into(), self.s.p.into());
        m.insert("samples".into(), self.s.samples.into());
        m.insert("adapter".into(), if self.own.is_some() { "methods/mc_dropout/adapter" } else { "adapter (MAP)" }.into());
        m
    }

    fn save(&self, cx: &Context) -> Result<()> {
        if let Some(l) = &self.own {
            cx.save_adapter(l, &cx.method_dir("mc_dropout")?.join("adapter"))?;
        }
        Ok(())
    }
}
