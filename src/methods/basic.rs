//! The deterministic methods: the base model (zero-shot), the fine-tuned adapter (MAP), and MAP
//! with one temperature fitted on validation NLL (MATH.md section 9).

use super::{Context, EvalSet, Method, SetPrediction};
use crate::calibration;
use crate::experiment::Stage;
use anyhow::{Context as _, Result};

pub struct ZeroShot;

impl Method for ZeroShot {
    fn name(&self) -> &'static str {
        "zero_shot"
    }
    fn prepare(&mut self, _cx: &Context) -> Result<bool> {
        Ok(true)
    }
    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        Ok(cx.logits(Stage::ZeroShot, None, None, set.data)?.map(SetPrediction::from_logits))
    }
}

#[derive(Default)]
pub struct Map {
    train_seconds: f64,
}

impl Method for Map {
    fn name(&self) -> &'static str {
        "map"
    }
    fn prepare(&mut self, cx: &Context) -> Result<bool> {
        self.train_seconds = cx.map_train_seconds;
        Ok(true)
    }
    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        Ok(cx.map_logits(Stage::Evaluate, set.name, set.data)?.map(SetPrediction::from_logits))
    }
    fn train_seconds(&self) -> f64 {
        self.train_seconds
    }
}

#[derive(Default)]
pub struct Temperature {
    fit: Option<calibration::TemperatureFit>,
}

impl Temperature {
    /// From its metrics.json entry's `temperature`.
    pub fn restore(entry: &serde_json::Value) -> Result<Self> {
        let t = entry.get("temperature").and_then(|t| t.as_f64()).context("metrics.json's temperature entry has no \"temperature\"")?;
        Ok(Temperature { fit: Some(calibration::TemperatureFit { temperature: t, nll_before: f64::NAN, nll_after: f64::NAN }) })
    }
}

impl Method for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }
    fn prepare(&mut self, cx: &Context) -> Result<bool> {
        let Some(val) = cx.map_logits(Stage::Calibrate, "validation", &cx.data.validation)? else { return Ok(false) };
        let labels: Vec<usize> = cx.data.validation.iter().map(|e| e.label).collect();
        let fit = calibration::fit_temperature(&val, &labels);
        cx.message(Stage::Calibrate, format!("temperature {:.3} (validation NLL {:.4} -> {:.4})", fit.temperature, fit.nll_before, fit.nll_after))?;
        self.fit = Some(fit);
        Ok(true)
    }
    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        let t = self.fit.as_ref().context("temperature scaling predicts before it was fitted")?.temperature;
        let Some(logits) = cx.map_logits(Stage::Evaluate, set.name, set.data)? else { return Ok(None) };
        let probs = calibration::apply_temperature(&logits, t);
        Ok(Some(SetPrediction { probs, ..Default::default() }))
    }
    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(f) = &self.fit {
            m.insert("temperature".into(), f.temperature.into());
        }
        m
    }
}
