//! The pipeline that turns a configuration into a run directory, and its two partial reruns:
//! refitting the Laplace methods on a finished run, and evaluating a finished run's methods on
//! another data set.
//!
//! Stages: load model -> load data -> zero-shot (if listed) -> fine-tune (MAP, keeping epoch
//! checkpoints when the checkpoint ensemble is listed) -> save the adapter -> every other method
//! of `[methods] list` in order (its own training or fitting, then its predictive on the test
//! split and every evaluation set) -> files after each method.

use super::config::{ExperimentConfig, LaplaceSection};
use super::events::{Event, Outcome, Stage, Stamped, Summary};
use super::prepare::{encode_items, prepare_data_with, PreparedData};
use super::run_dir::{read_predictions, MetricsFile};
use crate::calibration;
use crate::lora::LoraSet;
use crate::methods::runner::{run_methods, SetOutput};
use crate::methods::{Context as MethodContext, EvalSet, LaplaceShared};
use crate::model::{self, tokenizer, FetchProgress, LoadedModel};
use crate::runio::{write_atomic, write_json_atomic, JsonLines};
use crate::train::{self, Encoded, TrainOutcome};
use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

fn labels_of(data: &[Encoded]) -> Vec<usize> {
    data.iter().map(|e| e.label).collect()
}

/// Runs the whole pipeline into `run_dir` (which `prepare_run_dir` has made ready). Every event
/// goes to `events.jsonl` and to `emit`. On a cancel, the files written so far stay consistent
/// and `events.jsonl` ends with a `cancelled` event.
pub fn run(cfg: &ExperimentConfig, run_dir: &Path, cancel: &AtomicBool, emit: &mut dyn FnMut(&Event)) -> Result<Outcome> {
    cfg.validate()?;
    logged(run_dir, emit, "", |send| {
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        pipeline(cfg, run_dir, cancel, send)
    })
}

/// Runs `body` with every event it sends appended to `run_dir/events.jsonl` (stamped with the
/// seconds since the start) and passed to `emit`, after a `started` event and before the
/// `finished`, `cancelled` or `failed` one that says at which stage it stopped (`cancel_note` is
/// added to a cancel's message).
fn logged(
    run_dir: &Path,
    emit: &mut dyn FnMut(&Event),
    cancel_note: &str,
    body: impl FnOnce(&mut dyn FnMut(Event) -> Result<()>) -> Result<Outcome>,
) -> Result<Outcome> {
    let mut log = JsonLines::create(&run_dir.join("events.jsonl"))?;
    // The stage a closing event names: the last one the body announced (a stage message, a
    // progress report or a training step), so that it is right whichever method was running.
    let current = std::cell::Cell::new(Stage::LoadModel);
    let t0 = std::time::Instant::now();
    let mut send = |e: Event, log: &mut JsonLines| -> Result<()> {
        match &e {
            Event::Stage { stage, .. } | Event::Progress { stage, .. } => current.set(*stage),
            Event::TrainStep { .. } | Event::Validation { .. } => current.set(Stage::Train),
            _ => {}
        }
        log.append(&Stamped { t: t0.elapsed().as_secs_f64(), event: &e })?;
        emit(&e);
        Ok(())
    };
    let unix_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    send(Event::Started { run_dir: run_dir.to_path_buf(), unix_time }, &mut log)?;
    let result = body(&mut |e| send(e, &mut log));
    let stage = current.get();
    match &result {
        Ok(Outcome::Finished) => send(Event::Finished { seconds: t0.elapsed().as_secs_f64() }, &mut log)?,
        Ok(Outcome::Cancelled) => send(Event::Cancelled { stage, message: format!("cancelled during {stage:?}{cancel_note}") }, &mut log)?,
        Err(e) => send(Event::Failed { stage, error: format!("{e:#}") }, &mut log)?,
    }
    result
}

/// What every method's context is built from.
pub(super) struct Loaded {
    pub(super) m: LoadedModel,
    pub(super) d: PreparedData,
    pub(super) pad: u32,
    pub(super) eval_batch: usize,
}

fn load(cfg: &ExperimentConfig, cancel: &AtomicBool, send: &mut dyn FnMut(Event) -> Result<()>) -> Result<Option<Loaded>> {
    let Some(m) = load_model(cfg, cancel, send)? else { return Ok(None) };
    send(Event::Stage { stage: Stage::LoadData, message: format!("reading {}", cfg.data.train.display()) })?;
    let mut fetch_err = None;
    let d = prepare_data_with(cfg, &m.tokenizer, &mut |p| {
        let e = match p {
            FetchProgress::Stage(s) => Event::Stage { stage: Stage::LoadData, message: s },
            FetchProgress::Bytes { done, total } => Event::Progress { stage: Stage::LoadData, done, total: total.unwrap_or(0) },
        };
        if let Err(e) = send(e) {
            fetch_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = fetch_err {
        return Err(e);
    }
    let pad = tokenizer::pad_id(&m.tokenizer);
    Ok(Some(Loaded { m, d, pad, eval_batch: (cfg.train.batch_size * 2).max(1) }))
}

/// The test split and the evaluation sets, each with the folder its files go to.
fn outputs<'a>(run_dir: &Path, d: &'a PreparedData) -> Vec<SetOutput<'a>> {
    let mut v = vec![SetOutput::new(EvalSet { name: "test", items: &d.splits.test, data: &d.test }, run_dir.to_path_buf(), &d.answer_ids)];
    for e in &d.eval {
        v.push(SetOutput::new(EvalSet { name: &e.name, items: &e.items, data: &e.encoded }, run_dir.join("eval").join(&e.name), &d.answer_ids));
    }
    v
}

fn pipeline(cfg: &ExperimentConfig, run_dir: &Path, cancel: &AtomicBool, send: &mut dyn FnMut(Event) -> Result<()>) -> Result<Outcome> {
    let Some(Loaded { m, d, pad, eval_batch }) = load(cfg, cancel, send)? else { return Ok(Outcome::Cancelled) };
    write_json_atomic(&run_dir.join("splits.json"), &d.splits.ids())?;
    send(Event::Stage {
        stage: Stage::LoadData,
        message: format!(
            "{} train / {} validation / {} test items{}, K = {} answers {:?}",
            d.train.len(),
            d.validation.len(),
            d.test.len(),
            d.eval.iter().map(|e| format!(", {} {}", e.encoded.len(), e.name)).collect::<String>(),
            d.answer_ids.len(),
            d.answer_labels
        ),
    })?;
    if cancel.load(Ordering::Relaxed) {
        return Ok(Outcome::Cancelled);
    }
    let names = cfg.method_list();
    let shared = LaplaceShared::default();
    let mut outs = outputs(run_dir, &d);
    let lcfg = cfg.lora.to_config()?;
    let lora = LoraSet::new(lcfg, &m.model.lora_dims(), d.answer_ids.clone(), cfg.train.seed, m.model.device())?;
    let send_cell = RefCell::new(send);
    let mut train_metrics = serde_json::Map::new();
    let train_labels = labels_of(&d.train);

    // 1. Zero-shot first, before any training (the base model: the adapter is not used).
    if names.iter().any(|n| n == "zero_shot") {
        let mut send = send_cell.borrow_mut();
        send(Event::Stage { stage: Stage::ZeroShot, message: "evaluating the base model".into() })?;
        let cx = MethodContext {
            cfg,
            model: &m.model,
            data: &d,
            map: &lora,
            map_train_seconds: 0.0,
            checkpoints: &[],
            pad,
            eval_batch,
            run_dir,
            cancel,
            send: RefCell::new(&mut **send),
            map_logits: Default::default(),
        };
        if run_methods(&cx, &["zero_shot".to_string()], &mut outs, None, &shared)? == Outcome::Cancelled {
            return Ok(Outcome::Cancelled);
        }
        // The training split too: its NLL before and after fine-tuning shows how far MAP fits
        // (and overfits) the items it saw.
        let Some(zs) = cx.logits(Stage::ZeroShot, None, None, &d.train)? else { return Ok(Outcome::Cancelled) };
        train_metrics.insert("zero_shot".into(), serde_json::to_value(calibration::metrics(&probs_of(&zs), &train_labels))?);
    }

    // 2. Fine-tune (MAP), keeping the adapters at the end of each epoch when an ensemble of
    // them is asked for.
    let keep_checkpoints = names.iter().any(|n| n == "checkpoint_ensemble");
    let mut checkpoints: Vec<LoraSet> = Vec::new();
    let val_labels = labels_of(&d.validation);
    // The last epoch's validation logits are the final adapter's: temperature scaling and the
    // other methods read them instead of a pass of their own.
    let mut last_validation: Option<Vec<Vec<f64>>> = None;
    let t_train = std::time::Instant::now();
    let outcome = {
        let mut send = send_cell.borrow_mut();
        send(Event::Stage { stage: Stage::Train, message: format!("fine-tuning {} LoRA parameters", lora.num_params()) })?;
        let send_err: RefCell<Option<anyhow::Error>> = RefCell::new(None);
        let inner = RefCell::new(&mut **send);
        let forward = |e: Event| {
            if let Err(err) = (inner.borrow_mut())(e) {
                send_err.borrow_mut().get_or_insert(err);
            }
        };
        let r = train::train(&m.model, &lora, &d.train, &d.answer_ids, pad, &cfg.train, cancel, &mut |r| forward(Event::from(r)), &mut |epoch, step| {
            if keep_checkpoints {
                checkpoints.push(lora.deep_clone()?);
            }
            let logits = train::predict_logits(&m.model, Some(&lora), &d.validation, &d.answer_ids, pad, eval_batch, cancel, &mut |_, _| {})?;
            if let Some(l) = logits {
                let mm = calibration::metrics(&probs_of(&l), &val_labels);
                forward(Event::Validation { epoch, step, split: "validation".into(), summary: Summary::from(&mm) });
                last_validation = Some(l);
            }
            Ok(())
        });
        if let Some(e) = send_err.into_inner() {
            return Err(e);
        }
        r
    };
    let map_train_seconds = t_train.elapsed().as_secs_f64();
    // Keep the adapter even on a cancel or a failure: it is the last good state.
    let save_adapter = || crate::peft::save(&lora, m.model.cfg.vocab_size, &cfg.model.source, &run_dir.join("adapter"));
    match outcome {
        Ok(TrainOutcome::Finished) => {}
        Ok(TrainOutcome::Cancelled { .. }) => {
            save_adapter()?;
            return Ok(Outcome::Cancelled);
        }
        Err(e) => {
            let _ = save_adapter();
            return Err(e);
        }
    }
    save_adapter()?;
    let send = send_cell.into_inner();
    send(Event::Artifact { path: "adapter/adapter_model.safetensors".into() })?;

    // 3. Every other method, in the configured order.
    let rest: Vec<String> = names.iter().filter(|n| *n != "zero_shot").cloned().collect();
    let cx = MethodContext {
        cfg,
        model: &m.model,
        data: &d,
        map: &lora,
        map_train_seconds,
        checkpoints: &checkpoints,
        pad,
        eval_batch,
        run_dir,
        cancel,
        send: RefCell::new(&mut *send),
        map_logits: RefCell::new(last_validation.map(|l| ("validation".to_string(), l)).into_iter().collect()),
    };
    for o in outs.iter_mut() {
        o.metrics.train = train_metrics.clone();
        o.write()?;
    }
    if run_methods(&cx, &rest, &mut outs, None, &shared)? == Outcome::Cancelled {
        return Ok(Outcome::Cancelled);
    }
    // The training split's MAP metrics last: the Laplace curvature pass, where the run has one,
    // has run the MAP adapter over the split already (its logits are in the context's cache).
    let Some(tl) = cx.map_logits(Stage::Evaluate, crate::methods::TRAIN_SPLIT, &d.train)? else { return Ok(Outcome::Cancelled) };
    train_metrics.insert("map".into(), serde_json::to_value(calibration::metrics(&probs_of(&tl), &train_labels))?);
    for o in outs.iter_mut() {
        o.metrics.train = train_metrics.clone();
        o.write()?;
    }
    Ok(Outcome::Finished)
}

fn probs_of(logits: &[Vec<f64>]) -> Vec<Vec<f64>> {
    logits.iter().map(|f| calibration::softmax(f)).collect()
}

/// A finished run, loaded again: its configuration (with `laplace` in place of its `[laplace]`
/// section if given), model, data (checked against `splits.json`) and MAP adapter.
pub(super) struct Reopened {
    pub(super) l: Loaded,
    pub(super) lora: LoraSet,
}

pub(super) fn reopen(cfg: &ExperimentConfig, run_dir: &Path, cancel: &AtomicBool, send: &mut dyn FnMut(Event) -> Result<()>) -> Result<Option<Reopened>> {
    let Some(l) = load(cfg, cancel, send)? else { return Ok(None) };
    let splits_path = run_dir.join("splits.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&splits_path).with_context(|| format!("reading {}", splits_path.display()))?)
        .with_context(|| format!("parsing {}", splits_path.display()))?;
    if saved != serde_json::to_value(l.d.splits.ids())? {
        bail!(
            "the dataset files no longer give the run's splits ({}): they changed since the run, so its adapter and predictions do not match them",
            splits_path.display()
        );
    }
    let lora = crate::peft::load(&run_dir.join("adapter"), l.m.model.cfg.num_hidden_layers, Some(l.d.answer_ids.clone()), l.m.model.device())?;
    send(Event::Stage {
        stage: Stage::LoadData,
        message: format!(
            "{} train / {} validation / {} test items; adapter {}",
            l.d.train.len(),
            l.d.validation.len(),
            l.d.test.len(),
            run_dir.join("adapter").display()
        ),
    })?;
    Ok(Some(Reopened { l, lora }))
}

pub(super) fn finished_run_config(run_dir: &Path) -> Result<ExperimentConfig> {
    let cfg = ExperimentConfig::from_file(&run_dir.join("config.toml")).with_context(|| format!("{} is not a finished run directory", run_dir.display()))?;
    for f in ["adapter/adapter_model.safetensors", "metrics.json", "predictions.jsonl", "splits.json"] {
        if !run_dir.join(f).exists() {
            bail!("{} has no {f}: fine-tune first (the Fine-tune or Run all button, or `laplace-lora run`)", run_dir.display());
        }
    }
    Ok(cfg)
}

/// Fits (or refits) the Laplace methods on a finished run's adapter, with the run's configuration
/// or with `laplace` in place of its `[laplace]` section: the "Fit Laplace" button and the
/// `laplace` verb. The data must still give the run's splits (`splits.json`). Until the new fit is
/// complete the run directory keeps its previous files untouched, so a cancel or a failure loses
/// nothing; then the Laplace files, the `laplace` and `llla` entries of `metrics.json` and
/// `predictions.jsonl` (of the test split and of every evaluation set) and `config.toml` are
/// replaced. Events are appended to the run's `events.jsonl`.
pub fn refit_laplace(run_dir: &Path, laplace: Option<&LaplaceSection>, cancel: &AtomicBool, emit: &mut dyn FnMut(&Event)) -> Result<Outcome> {
    let mut cfg = finished_run_config(run_dir)?;
    if let Some(l) = laplace {
        cfg.laplace = l.clone();
    }
    cfg.laplace.enabled = true;
    // A run of the earlier layout (or one without them) gets both Laplace methods.
    for m in ["llla", "laplace"] {
        if !cfg.methods.has(m) {
            cfg.methods.list.push(m.to_string());
        }
    }
    cfg.validate()?;
    logged(run_dir, emit, "; the run keeps its previous Laplace results", |send| {
        let Some(Reopened { l, lora }) = reopen(&cfg, run_dir, cancel, send)? else { return Ok(Outcome::Cancelled) };
        let d = &l.d;
        // The new results go to a scratch copy first: the run's files stay as they were until
        // every set is done.
        let scratch = tempfile::Builder::new().prefix(".refit-").tempdir_in(run_dir)?;
        let mut outs = Vec::new();
        let mut sets = vec![(EvalSet { name: "test", items: &d.splits.test, data: &d.test }, run_dir.to_path_buf(), scratch.path().to_path_buf())];
        for e in &d.eval {
            sets.push((
                EvalSet { name: &e.name, items: &e.items, data: &e.encoded },
                run_dir.join("eval").join(&e.name),
                scratch.path().join("eval").join(&e.name),
            ));
        }
        for (set, dir, tmp) in sets {
            let preds = read_predictions(&dir.join("predictions.jsonl"))?;
            if preds.len() != set.items.len() || preds.iter().zip(set.items).any(|(p, it)| p.id != it.id) {
                bail!("{} does not list the {} set's items in order", dir.join("predictions.jsonl").display(), set.name);
            }
            let metrics = MetricsFile::read(&dir.join("metrics.json"))?;
            outs.push((SetOutput::existing(set, tmp, preds, metrics), dir));
        }
        let shared = LaplaceShared::default();
        let cx = finished_run_context(&cfg, &l, &lora, scratch.path(), cancel, send);
        let names: Vec<String> = cfg.method_list().into_iter().filter(|n| n == "laplace" || n == "llla").collect();
        let mut so: Vec<SetOutput> = Vec::new();
        let mut dirs = Vec::new();
        for (o, dir) in outs {
            so.push(o);
            dirs.push(dir);
        }
        let outcome = run_methods(&cx, &names, &mut so, None, &shared)?;
        drop(cx);
        if outcome != Outcome::Finished {
            return Ok(outcome);
        }
        // Move the new files into place, each by an atomic rename.
        let lap = scratch.path().join("laplace");
        std::fs::create_dir_all(run_dir.join("laplace"))?;
        for f in ["posterior.safetensors", "laplace.json", "spectral_cache.safetensors"] {
            std::fs::rename(lap.join(f), run_dir.join("laplace").join(f))?;
        }
        std::fs::rename(scratch.path().join("prior_curve.csv"), run_dir.join("prior_curve.csv"))?;
        for (o, dir) in so.iter().zip(&dirs) {
            for f in ["predictions.jsonl", "metrics.json"] {
                std::fs::rename(o.dir.join(f), dir.join(f))?;
            }
            let cache = o.dir.join(crate::methods::SET_CACHE);
            if o.set.name != "test" && cache.is_file() {
                std::fs::rename(cache, dir.join(crate::methods::SET_CACHE))?;
            }
        }
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        Ok(Outcome::Finished)
    })
}

/// Evaluates every method of a finished run on another data set, from the adapters, posterior and
/// settings the run saved (no training): `laplace-lora eval RUN --data SET --name NAME`. Writes
/// `eval/NAME/{metrics.json, predictions.jsonl}`. The set (a path or a known name) is read as a
/// `[[data.eval]]` entry: items the run trained or validated on are left out, and the answer
/// labels must fit the run's. Events are appended to the run's `events.jsonl`.
pub fn evaluate_run(run_dir: &Path, set: crate::data::EvalSet, cancel: &AtomicBool, emit: &mut dyn FnMut(&Event)) -> Result<Outcome> {
    let cfg = finished_run_config(run_dir)?;
    if !crate::data::section::is_safe_folder_name(&set.name) {
        bail!("{:?} cannot name an evaluation set (its folder eval/NAME/): use 1-64 letters, digits, '-', '_' or '.'", set.name);
    }
    if crate::data::section::is_reserved_set_name(&set.name) {
        bail!("{:?} is the name of one of the run's own splits (train, validation, test); give the evaluation set another name", set.name);
    }
    logged(run_dir, emit, "; nothing of the run changed", |send| {
        let Some(Reopened { l, lora }) = reopen(&cfg, run_dir, cancel, send)? else { return Ok(Outcome::Cancelled) };
        let Loaded { m, d, .. } = &l;
        let one = crate::data::DataSection { eval: crate::data::EvalSets(vec![set.clone()]), ..cfg.data.clone() };
        let found = crate::data::load_eval_sets(&one, cfg.train.seed, &d.splits, &d.answer_labels)?.remove(0);
        let name = found.name.clone();
        let items = found.items;
        let encoded = encode_items(&m.tokenizer, &items, cfg.train.max_length)?;
        let run_metrics = MetricsFile::read(&run_dir.join("metrics.json"))?;
        let names: Vec<String> = run_metrics.methods.iter().map(|(n, _)| n.clone()).collect();
        send(Event::Stage {
            stage: Stage::Evaluate,
            message: format!(
                "{} items of {} ({} left out: in the run's training or validation split); methods {}",
                items.len(),
                found.origin,
                found.left_out_seen,
                names.join(", ")
            ),
        })?;
        let dir = run_dir.join("eval").join(&name);
        let mut outs = vec![SetOutput::new(EvalSet { name: &name, items: &items, data: &encoded }, dir, &d.answer_ids)];
        let shared = LaplaceShared::default();
        let cx = finished_run_context(&cfg, &l, &lora, run_dir, cancel, send);
        run_methods(&cx, &names, &mut outs, Some(&run_metrics), &shared)
    })
}

/// The methods' context on a finished run reopened from its directory (no training, no
/// checkpoints kept): refit and the `eval` verb.
pub(super) fn finished_run_context<'a>(
    cfg: &'a ExperimentConfig,
    l: &'a Loaded,
    lora: &'a LoraSet,
    run_dir: &'a Path,
    cancel: &'a AtomicBool,
    send: &'a mut dyn FnMut(Event) -> Result<()>,
) -> MethodContext<'a> {
    MethodContext {
        cfg,
        model: &l.m.model,
        data: &l.d,
        map: lora,
        map_train_seconds: 0.0,
        checkpoints: &[],
        pad: l.pad,
        eval_batch: l.eval_batch,
        run_dir,
        cancel,
        send: RefCell::new(send),
        map_logits: Default::default(),
    }
}

/// Resolves (fetching the default model on first use) and loads the configured model; None on a cancel.
fn load_model(cfg: &ExperimentConfig, cancel: &AtomicBool, send: &mut dyn FnMut(Event) -> Result<()>) -> Result<Option<LoadedModel>> {
    send(Event::Stage { stage: Stage::LoadModel, message: format!("resolving model {}", cfg.model.source) })?;
    let device = model::parse_device(&cfg.model.device)?;
    let mut fetch_err = None;
    let files = model::resolve_model(&cfg.model.source, &mut |p| {
        let e = match p {
            FetchProgress::Stage(s) => Event::Stage { stage: Stage::LoadModel, message: s },
            FetchProgress::Bytes { done, total } => Event::Progress { stage: Stage::LoadModel, done, total: total.unwrap_or(0) },
        };
        if let Err(e) = send(e) {
            fetch_err = Some(e);
        }
    })?;
    if let Some(e) = fetch_err {
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let dtype = model::parse_frozen_dtype(&cfg.model.dtype).context("model.dtype")?;
    let (m, used) = LoadedModel::load_as(&files, &device, dtype)?;
    send(Event::Stage {
        stage: Stage::LoadModel,
        message: format!(
            "loaded {} ({} layers, hidden {}, frozen weights {})",
            m.path.display(),
            m.model.cfg.num_hidden_layers,
            m.model.cfg.hidden_size,
            used.name()
        ),
    })?;
    Ok(Some(m))
}
