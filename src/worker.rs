//! The background worker: runs an experiment (or a Laplace refit of a finished run) on its own thread, streams its events over a
//! channel and stops at the next safe point when cancelled. A panic inside the pipeline is caught
//! and reported as an error, so the face that started the work (CLI or GUI) stays alive.

use crate::experiment::{self, Event, ExperimentConfig, LaplaceSection, Outcome};
use anyhow::{anyhow, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Worker {
    pub events: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Outcome>>>,
}

impl Worker {
    /// Starts `experiment::run` for `cfg` into `run_dir` (already prepared).
    pub fn spawn(cfg: ExperimentConfig, run_dir: PathBuf) -> Self {
        Self::spawn_job(move |cancel, emit| experiment::run(&cfg, &run_dir, cancel, emit))
    }

    /// Starts `experiment::refit_laplace` on a finished run, with `laplace` in place of the run's
    /// `[laplace]` section when given.
    pub fn spawn_refit(run_dir: PathBuf, laplace: Option<LaplaceSection>) -> Self {
        Self::spawn_job(move |cancel, emit| experiment::refit_laplace(&run_dir, laplace.as_ref(), cancel, emit))
    }

    /// Starts `experiment::evaluate_run`: every method of a finished run on `items`, into
    /// `eval/NAME/`.
    pub fn spawn_eval(run_dir: PathBuf, set: crate::data::EvalSet) -> Self {
        Self::spawn_job(move |cancel, emit| experiment::evaluate_run(&run_dir, set, cancel, emit))
    }

    fn spawn_job(job: impl FnOnce(&AtomicBool, &mut dyn FnMut(&Event)) -> Result<Outcome> + Send + 'static) -> Self {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let c = cancel.clone();
        let handle = std::thread::Builder::new()
            .name("laplace-lora-worker".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    on_compute_pool(|| {
                        job(&c, &mut |e| {
                            let _ = tx.send(e.clone());
                        })
                    })
                }));
                match r {
                    Ok(r) => r,
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        let _ = tx.send(Event::Failed { stage: experiment::Stage::Write, error: format!("internal error (panic): {msg}") });
                        Err(anyhow!("internal error (panic) in the worker: {msg}"))
                    }
                }
            })
            .expect("spawning the worker thread");
        Self { events: rx, cancel, handle: Some(handle) }
    }

    /// Asks the worker to stop at its next check (between batches).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the worker and returns how the run ended.
    pub fn join(mut self) -> Result<Outcome> {
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| anyhow!("the worker thread panicked"))?,
            None => Err(anyhow!("the worker was already joined")),
        }
    }
}

/// Runs `f` on a thread of a rayon pool of its own (candle's thread count), as the CLI's verbs and
/// the GUI's worker do. The parallel kernels `f` calls (gemm, the fused ops) then split their work
/// with a sibling pool thread instead of parking the calling thread and waking pool threads on
/// every call: in `perf` of the LoRA step the kernel's scheduling went from ~10% to ~6.6% of the
/// samples, the step from 0.54 to 0.50 s (medians of six interleaved runs each; noisy). A pool of
/// its own, not rayon's global one, so that two pipelines in one process (the tests) never run
/// inside each other's waits.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new().num_threads(candle_core::utils::get_num_threads()).thread_name(|i| format!("laplace-lora-compute-{i}")).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
