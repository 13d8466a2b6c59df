//! A finished run held open: its model, data, adapter and every method restored once (as
//! `evaluate_run` restores them), so that further items are evaluated without loading anything
//! again and without writing into the run directory: the workbench's "ask your own question" and
//! "training items behind a prediction". Not `Send` (the Laplace methods share state through an
//! `Rc`): it lives on the thread that opened it (`crate::session_worker`).

use super::events::{Event, Stage};
use super::pipeline::{finished_run_config, finished_run_context, reopen, Loaded, Reopened};
use super::prepare::encode_items;
use super::run_dir::MetricsFile;
use super::ExperimentConfig;
use crate::data::Item;
use crate::laplace::jacobian::Group;
use crate::laplace::kernel;
use crate::lora::LoraSet;
use crate::methods::{restore, EvalSet, LaplaceShared, Method};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// One method's predictive for one item (truncated to the item's choices).
#[derive(Clone, Debug, PartialEq)]
pub struct MethodPrediction {
    pub method: String,
    pub probs: Vec<f64>,
    /// Laplace methods: the Gaussian over the logits.
    pub logit_mean: Option<Vec<f64>>,
    pub logit_cov: Option<Vec<Vec<f64>>>,
}

/// A training item behind a prediction ([`kernel`]'s ranking).
#[derive(Clone, Debug, PartialEq)]
pub struct SupportRow {
    pub id: String,
    pub label: usize,
    /// The labelled choice's text.
    pub label_text: String,
    pub prompt: String,
    /// s_n (centred cross-covariance of x's predicted and x_n's labelled logit).
    pub score: f64,
    pub frobenius: f64,
    /// k(x, x_n), K x K row-major, of the centred logits (C k C^T over each item's choices).
    pub kernel: Vec<f64>,
}

/// The supports of one item: which answer they are about and the rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Supports {
    pub predicted: usize,
    pub rows: Vec<SupportRow>,
    /// Training items scored.
    pub n_train: usize,
}

/// Which prompt tokens drive the item's answer logits ([`crate::model::saliency`]), at the run's
/// MAP adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct Saliency {
    /// Each prompt token as text (decoded alone: a byte-level token may be part of a character).
    pub tokens: Vec<String>,
    pub scores: crate::model::saliency::TokenSaliency,
}

pub struct RunSession {
    cfg: ExperimentConfig,
    l: Loaded,
    lora: LoraSet,
    run_dir: PathBuf,
    methods: Vec<(String, Box<dyn Method>)>,
    shared: LaplaceShared,
    asked: usize,
}

impl RunSession {
    /// Loads the finished run at `run_dir` (model, data checked against `splits.json`, adapter,
    /// every method of its `metrics.json`). Nothing is written. None on a cancel.
    pub fn open(run_dir: &Path, cancel: &AtomicBool, emit: &mut dyn FnMut(Event) -> Result<()>) -> Result<Option<Self>> {
        let cfg = finished_run_config(run_dir)?;
        let Some(Reopened { l, lora }) = reopen(&cfg, run_dir, cancel, emit)? else { return Ok(None) };
        let run_metrics = MetricsFile::read(&run_dir.join("metrics.json"))?;
        let shared = LaplaceShared::default();
        let mut methods = Vec::new();
        {
            let cx = finished_run_context(&cfg, &l, &lora, run_dir, cancel, emit);
            for (name, entry) in &run_metrics.methods {
                cx.message(Stage::Evaluate, format!("restoring {name}"))?;
                let m = restore(name, &cx, entry, &shared).with_context(|| format!("restoring the method {name}"))?;
                methods.push((name.clone(), m));
            }
        }
        Ok(Some(RunSession { cfg, l, lora, run_dir: run_dir.to_path_buf(), methods, shared, asked: 0 }))
    }

    /// The run's K answer labels (`" A"`, `" True"`, ...).
    pub fn answer_labels(&self) -> &[String] {
        &self.l.d.answer_labels
    }

    pub fn method_names(&self) -> Vec<String> {
        self.methods.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Whether the run has a Laplace posterior (needed for [`RunSession::supports`]).
    pub fn has_laplace(&self) -> bool {
        self.run_dir.join("laplace").join("posterior.safetensors").is_file()
    }

    pub fn train_items(&self) -> &[Item] {
        &self.l.d.splits.train
    }

    fn check_fit(&self, items: &[Item]) -> Result<()> {
        let run = self.answer_labels();
        for it in items {
            let k = it.answer_labels.len();
            if k == 0 || k > run.len() || run[..k] != it.answer_labels[..] {
                bail!(
                    "item {} answers with {:?}, which do not fit this run's {} answer token(s) {:?}: a run scores only the answer tokens it was trained with",
                    it.id,
                    it.answer_labels,
                    run.len(),
                    run
                );
            }
        }
        Ok(())
    }

    /// Every method's predictive on `items`, per item then per method (the run's order), as
    /// `evaluate_run` would write them. None on a cancel.
    pub fn predict(&mut self, items: &[Item], cancel: &AtomicBool, emit: &mut dyn FnMut(Event) -> Result<()>) -> Result<Option<Vec<Vec<MethodPrediction>>>> {
        self.check_fit(items)?;
        let encoded = encode_items(&self.l.m.tokenizer, items, self.cfg.train.max_length)?;
        // A name of its own per call: the Laplace methods cache Jacobians per set name.
        self.asked += 1;
        let name = format!("question-{}", self.asked);
        let set = EvalSet { name: &name, items, data: &encoded };
        let mut out: Vec<Vec<MethodPrediction>> = vec![Vec::new(); items.len()];
        let cx = finished_run_context(&self.cfg, &self.l, &self.lora, &self.run_dir, cancel, emit);
        let mut cancelled = false;
        for (mname, m) in self.methods.iter_mut() {
            cx.message(Stage::Evaluate, format!("{mname}: predicting"))?;
            let Some(p) = m.predict(&cx, &set)? else {
                cancelled = true;
                break;
            };
            for (i, it) in items.iter().enumerate() {
                let nc = it.num_choices();
                let (mean, cov) = match (&p.logit_mean, &p.logit_cov) {
                    (Some(mu), Some(c)) => {
                        let k = mu[i].len();
                        (Some(mu[i][..nc].to_vec()), Some((0..nc).map(|a| c[i][a * k..a * k + nc].to_vec()).collect()))
                    }
                    _ => (None, None),
                };
                out[i].push(MethodPrediction { method: mname.clone(), probs: p.probs[i][..nc].to_vec(), logit_mean: mean, logit_cov: cov });
            }
        }
        drop(cx);
        self.shared.borrow_mut().forget(&name);
        Ok((!cancelled).then_some(out))
    }

    /// Gradient x input of each answer logit over the item's prompt tokens (one forward and K
    /// backward passes).
    pub fn saliency(&self, item: &Item) -> Result<Saliency> {
        self.check_fit(std::slice::from_ref(item))?;
        let tok = &self.l.m.tokenizer;
        let x = encode_items(tok, std::slice::from_ref(item), self.cfg.train.max_length)?.remove(0);
        let scores = crate::model::saliency::token_saliency(&self.l.m.model, Some(&self.lora), &x.ids, &self.l.d.answer_ids, x.num_choices)?;
        let tokens = x.ids.iter().map(|&id| tok.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>"))).collect();
        Ok(Saliency { tokens, scores })
    }

    /// The training items behind Laplace-LoRA's prediction for `item` ([`kernel`]): every
    /// training item's k(x, x_n), the `top` largest |s_n|. Progress as Laplace-stage events.
    pub fn supports(&self, item: &Item, top: usize, cancel: &AtomicBool, emit: &mut dyn FnMut(Event) -> Result<()>) -> Result<Option<Supports>> {
        self.check_fit(std::slice::from_ref(item))?;
        let s = self.shared.borrow();
        let Some(f) = s.fitted.as_ref() else { bail!("this run has no Laplace posterior: fit Laplace first (the Fit Laplace button)") };
        let x = encode_items(&self.l.m.tokenizer, std::slice::from_ref(item), self.cfg.train.max_length)?.remove(0);
        let group = Group { blocks: (0..f.posterior.blocks.len()).collect(), deltas: f.deltas.clone() };
        let d = &self.l.d;
        let mut err = None;
        let r = kernel::cross_kernel(
            &self.l.m.model,
            &self.lora,
            &f.posterior,
            &group,
            &x,
            &d.train,
            &d.answer_ids,
            self.l.pad,
            self.l.eval_batch,
            // The ranking reads the centred kernel only: K - 1 backward passes per item.
            crate::laplace::jacobian::Rows::Centred,
            cancel,
            &mut |done, total| {
                if let Err(e) = emit(Event::Progress { stage: Stage::Laplace, done: done as u64, total: total as u64 }) {
                    err.get_or_insert(e);
                }
            },
        )?;
        if let Some(e) = err {
            return Err(e);
        }
        let Some((mu, kernels)) = r else { return Ok(None) };
        let k = d.answer_ids.len();
        let predicted = crate::calibration::top_label(&crate::calibration::softmax(&mu)).0;
        let ranked = kernel::rank(&kernels, k, predicted, x.num_choices, &d.train, top);
        let rows = ranked
            .into_iter()
            .map(|r| {
                let it = &d.splits.train[r.index];
                SupportRow {
                    id: it.id.clone(),
                    label: it.label,
                    label_text: it.choices.get(it.label).cloned().unwrap_or_default(),
                    prompt: it.prompt.clone(),
                    score: r.score,
                    frobenius: r.frobenius,
                    kernel: kernels[r.index].clone(),
                }
            })
            .collect();
        Ok(Some(Supports { predicted, rows, n_train: d.train.len() }))
    }
}
