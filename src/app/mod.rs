//! The egui workbench (DESIGN.md section 3, issue 4): a setup panel on the left, tabs in the
//! middle, progress at the bottom. The UI thread only draws what the worker's events have put in
//! the [`store::RunStore`]; model loading and training run on the worker thread, dataset previews
//! and run directories are read on short-lived threads.
#![allow(dead_code)]

pub mod ask;
pub mod figure;
pub mod lazy;
pub mod runs_index;
pub mod selective;
pub mod setup;
pub mod store;
pub mod uncertainty;
pub mod views;

use laplace_lora::experiment::{self, Stage};
use laplace_lora::worker::Worker;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};
use store::{RunEntry, RunStatus, RunStore};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tab {
    Training,
    Calibration,
    Examples,
    Prior,
    Runs,
    Log,
}

impl Tab {
    pub const ALL: [Tab; 6] = [Tab::Training, Tab::Calibration, Tab::Examples, Tab::Prior, Tab::Runs, Tab::Log];
    pub fn label(self) -> &'static str {
        match self {
            Tab::Training => "Training",
            Tab::Calibration => "Calibration",
            Tab::Examples => "Examples",
            Tab::Prior => "Prior precision",
            Tab::Runs => "Runs",
            Tab::Log => "Log",
        }
    }
}

pub struct WorkbenchApp {
    pub setup: setup::SetupState,
    pub store: RunStore,
    pub worker: Option<Worker>,
    pub tab: Tab,
    pub runs_root: PathBuf,
    pub runs: Vec<RunEntry>,
    /// The runs table's cache (rows per directory, sweep reports).
    pub runs_index: runs_index::RunIndex,
    runs_scanned: Option<Instant>,
    loading: Option<Receiver<RunStore>>,
    compare_loading: Option<Receiver<(RunStore, RunStore)>>,
    recompute_loading: Option<Receiver<(PathBuf, Option<Result<Box<dyn store::PriorRecompute>, String>>)>>,
    pub compare: Option<(RunStore, RunStore)>,
    pub runs_state: views::RunsState,
    pub calib: views::CalibState,
    pub examples: views::ExamplesState,
    /// The open run held on a thread of its own for questions and supports.
    pub ask: ask::AskState,
    /// The evaluation set the Calibration and Examples tabs draw ("test" or an eval/NAME set).
    pub eval_set: String,
    /// Background results of the store still to come (eval predictions, uncertainty splits).
    store_loading: bool,
    status_tx: Sender<String>,
    status_rx: Receiver<String>,
    pub status_line: String,
    pub show_debug: bool,
    frame_ms: VecDeque<f32>,
    frame_gap_ms: VecDeque<f32>,
    last_frame: Option<Instant>,
    frame_log: Option<(PathBuf, Instant)>,
    pub cpu_usage: Option<f32>,
    /// The running worker refits Laplace on the open run (rather than running a new experiment).
    refitting: bool,
    /// The ask session is computing or loading.
    ask_busy: bool,
}

impl WorkbenchApp {
    pub fn new(sample_root: Option<PathBuf>, runs_root: PathBuf) -> Self {
        let (status_tx, status_rx) = channel();
        Self {
            setup: setup::SetupState::new(sample_root),
            store: RunStore::default(),
            worker: None,
            tab: Tab::Training,
            runs_root,
            runs: Vec::new(),
            runs_index: Default::default(),
            runs_scanned: None,
            loading: None,
            compare_loading: None,
            recompute_loading: None,
            compare: None,
            runs_state: Default::default(),
            calib: Default::default(),
            examples: Default::default(),
            ask: Default::default(),
            eval_set: store::TEST_SET.to_string(),
            store_loading: false,
            status_tx,
            status_rx,
            status_line: String::new(),
            show_debug: std::env::var_os("LAPLACE_LORA_DEBUG_OVERLAY").is_some(),
            frame_ms: VecDeque::new(),
            frame_gap_ms: VecDeque::new(),
            last_frame: None,
            frame_log: std::env::var_os("LAPLACE_LORA_FRAME_LOG").map(|p| (PathBuf::from(p), Instant::now())),
            cpu_usage: None,
            refitting: false,
            ask_busy: false,
        }
    }

    /// Starts the pipeline for the setup panel's configuration on the worker thread.
    pub fn start_run(&mut self) {
        self.start_run_with(true);
    }

    /// Starts a run; `laplace` false stops after temperature scaling (the Fine-tune button).
    pub fn start_run_with(&mut self, laplace: bool) {
        if self.worker.is_some() {
            return;
        }
        let cfg = match self.setup.config() {
            Ok(c) => c,
            Err(e) => {
                self.status_line = format!("cannot start: {e}");
                return;
            }
        };
        let mut cfg = cfg;
        cfg.laplace.enabled = laplace;
        let dir = self.setup.run_dir(&cfg);
        if let Err(e) = experiment::prepare_run_dir(&dir, false) {
            self.store = RunStore { status: RunStatus::Failed(format!("{e:#}")), ..Default::default() };
            return;
        }
        self.store = RunStore::for_new_run(cfg.clone(), dir.clone());
        self.worker = Some(Worker::spawn(cfg, dir));
        self.examples.selected = None;
        self.tab = Tab::Training;
        self.status_line = String::new();
    }

    /// The open run directory, when it holds a fine-tuned adapter that Laplace can be fitted on.
    pub fn refit_target(&self) -> Option<PathBuf> {
        let d = self.store.dir.as_ref()?;
        (!self.store.is_running() && d.join("adapter").join("adapter_model.safetensors").is_file()).then(|| d.clone())
    }

    /// Fits the Laplace stage on the open run's adapter with the setup panel's Laplace settings;
    /// the run's training curves and MAP results stay on screen meanwhile.
    pub fn start_refit(&mut self) {
        if self.worker.is_some() {
            return;
        }
        let Some(dir) = self.refit_target() else {
            self.status_line = "open a fine-tuned run first".into();
            return;
        };
        let mut laplace = self.setup.laplace.clone();
        laplace.enabled = true;
        self.store.status = RunStatus::Running;
        self.store.started = Some(std::time::Instant::now());
        self.store.progress = None;
        self.store.revision += 1;
        self.worker = Some(Worker::spawn_refit(dir, Some(laplace)));
        self.refitting = true;
        self.status_line = "fitting Laplace on the open run's adapter...".into();
    }

    pub fn cancel_run(&mut self) {
        if let Some(w) = &self.worker {
            w.cancel();
            self.status_line = "cancelling: the worker stops at the next batch...".into();
        }
    }

    /// Opens a run directory on a background thread; the store is replaced when it is read.
    pub fn open_run(&mut self, dir: PathBuf) {
        let (tx, rx) = channel();
        self.loading = Some(rx);
        self.status_line = format!("opening {}...", dir.display());
        std::thread::spawn(move || {
            let _ = tx.send(store::load_run_dir(&dir));
        });
    }

    /// Installs the core's prior recompute for the open run (the Laplace stage provides one).
    pub fn set_prior_recompute(&mut self, r: Box<dyn store::PriorRecompute>) {
        self.store.recompute = Some(r);
        if let Some(d) = self.store.prior_delta.or(self.store.chosen_delta) {
            self.store.set_prior_delta(d);
        }
    }

    /// Drains the worker's events and background results. Never blocks.
    pub fn poll(&mut self) {
        self.setup.poll();
        let mut finished_dir = None;
        if let Some(w) = &self.worker {
            // Bounded per frame so a burst of events cannot stall a frame.
            for _ in 0..2000 {
                match w.events.try_recv() {
                    Ok(e) => self.store.apply(&e),
                    Err(_) => break,
                }
            }
            if w.is_finished() {
                while let Ok(e) = w.events.try_recv() {
                    self.store.apply(&e);
                }
                if self.store.status == RunStatus::Running {
                    self.store.status = RunStatus::Failed("the worker stopped without saying why".into());
                }
                finished_dir = Some(self.store.dir.clone());
            }
        }
        if let Some(dir) = finished_dir {
            let w = self.worker.take().unwrap();
            if let Err(e) = w.join() {
                if !matches!(self.store.status, RunStatus::Failed(_)) {
                    self.store.status = RunStatus::Failed(format!("{e:#}"));
                }
            }
            if let Some(d) = dir {
                // The result files (metrics.json, predictions.jsonl, Laplace files) are small;
                // the spectral cache for the prior slider is read on a short-lived thread.
                self.store.load_result_files(&d);
                let (tx, rx) = channel();
                self.recompute_loading = Some(rx);
                std::thread::spawn(move || {
                    let r = store::load_recompute(&d);
                    let _ = tx.send((d, r));
                });
            }
            self.runs_scanned = None;
            // The run's files changed (a new run or a refit): a session on it is stale.
            self.ask.reset();
            let refit = std::mem::take(&mut self.refitting);
            self.status_line = match (&self.store.status, refit) {
                (RunStatus::Finished, false) => "run finished".into(),
                (RunStatus::Finished, true) => "Laplace fitted on the open run".into(),
                (RunStatus::Cancelled(_), false) => "run cancelled; the run directory is consistent".into(),
                (RunStatus::Cancelled(_), true) => "Laplace fit cancelled; the run keeps its previous results".into(),
                _ => String::new(),
            };
        }
        if let Some(rx) = &self.loading {
            if let Ok(s) = rx.try_recv() {
                self.loading = None;
                self.status_line = format!("opened {}", s.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default());
                if let Some(c) = &s.config {
                    self.setup.follow(c);
                }
                self.store = s;
                self.examples.selected = None;
                if self.tab == Tab::Runs {
                    self.tab = Tab::Calibration;
                }
            }
        }
        if let Some(rx) = &self.recompute_loading {
            if let Ok((d, r)) = rx.try_recv() {
                self.recompute_loading = None;
                if self.store.dir.as_deref() == Some(d.as_path()) {
                    match r {
                        Some(Ok(r)) => self.set_prior_recompute(r),
                        Some(Err(e)) => self.store.warnings.push(format!("prior slider unavailable: {e}")),
                        None => {}
                    }
                }
            }
        }
        if let Some(rx) = &self.compare_loading {
            if let Ok(c) = rx.try_recv() {
                self.compare_loading = None;
                self.compare = Some(c);
            }
        }
        self.store_loading = self.store.poll_lazy();
        self.ask.sync(self.store.dir.as_deref());
        self.ask_busy = self.ask.poll();
        if !self.eval_set.is_empty() && self.eval_set != store::TEST_SET && !self.store.eval_metrics.contains_key(&self.eval_set) {
            // The open run has no such set (another run was opened).
            self.eval_set = store::TEST_SET.to_string();
        }
        while let Ok(m) = self.status_rx.try_recv() {
            self.status_line = m;
        }
        if self.runs_scanned.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            self.runs = self.runs_index.scan(&self.runs_root);
            self.runs_scanned = Some(Instant::now());
        }
    }

    /// One frame of the whole window.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let t0 = Instant::now();
        self.poll();
        let ctx = ui.ctx().clone();
        if ctx.input(|i| i.key_pressed(egui::Key::F12)) {
            self.show_debug = !self.show_debug;
        }
        egui::Panel::top("top").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.menu_button("View", |ui| {
                    ui.checkbox(&mut self.show_debug, "Debug overlay (F12)");
                });
                ui.separator();
                ui.strong("Laplace-LoRA Workbench");
                ui.separator();
                for t in Tab::ALL {
                    ui.selectable_value(&mut self.tab, t, t.label());
                }
                if let Some(d) = &self.store.dir {
                    ui.separator();
                    ui.weak(format!("run: {}", setup::short(&d.display().to_string(), 48)));
                }
            });
        });
        egui::Panel::bottom("progress").show(ui, |ui| self.progress_ui(ui));
        egui::Panel::left("setup").default_size(360.0).min_size(300.0).resizable(true).show(ui, |ui| {
            let running = self.worker.is_some();
            let target = self.refit_target();
            match setup::setup_panel(ui, &mut self.setup, running, target.as_deref()) {
                setup::SetupAction::Start => self.start_run(),
                setup::SetupAction::FitLaplace => self.start_refit(),
                setup::SetupAction::FineTune => self.start_run_with(false),
                setup::SetupAction::Cancel => self.cancel_run(),
                setup::SetupAction::None => {}
            }
        });
        egui::CentralPanel::default().show(ui, |ui| {
            if let RunStatus::Failed(e) = &self.store.status {
                egui::Frame::new().fill(egui::Color32::from_rgb(90, 30, 30)).inner_margin(6.0).corner_radius(4.0).show(ui, |ui| {
                    ui.colored_label(egui::Color32::from_rgb(255, 200, 190), format!("Error: {e}"));
                });
            }
            for w in self.store.warnings.iter().take(3) {
                ui.colored_label(egui::Color32::from_rgb(220, 160, 40), format!("note: {w}"));
            }
            let dir = self.store.dir.clone();
            let vc = views::ViewCtx { run_dir: dir.as_deref(), status: &self.status_tx };
            match self.tab {
                Tab::Training => views::training_tab(ui, &self.store, &vc),
                Tab::Calibration => views::calibration_tab(ui, &mut self.store, &mut self.calib, &mut self.eval_set, &vc),
                Tab::Examples => views::examples_tab(ui, &mut self.store, &mut self.examples, &mut self.ask, &mut self.eval_set, &vc),
                Tab::Prior => views::prior_tab(ui, &mut self.store, &mut self.eval_set, &vc),
                Tab::Runs => {
                    let act = views::runs_tab(ui, &self.runs, &self.runs_index.sweeps, &self.runs_root, &mut self.runs_state, self.compare.as_ref(), &vc);
                    match act {
                        views::RunsAction::Refresh => self.runs_scanned = None,
                        views::RunsAction::Open(p) => self.open_run(p),
                        views::RunsAction::Compare(a, b) => {
                            let (tx, rx) = channel();
                            self.compare_loading = Some(rx);
                            std::thread::spawn(move || {
                                let _ = tx.send((store::load_run_dir(&a), store::load_run_dir(&b)));
                            });
                        }
                        views::RunsAction::Trash(p) => {
                            self.status_line = match runs_index::move_to_trash(&self.runs_root, &p) {
                                Ok(dest) => format!("moved {} to {}", p.display(), dest.display()),
                                Err(e) => format!("not moved: {e}"),
                            };
                            for slot in [&mut self.runs_state.a, &mut self.runs_state.b] {
                                if slot.as_ref() == Some(&p) {
                                    *slot = None;
                                }
                            }
                            self.runs_scanned = None;
                        }
                        views::RunsAction::None => {}
                    }
                }
                Tab::Log => {
                    views::explain(ui, "The run's messages in order: stages, validation after each epoch, metrics, files written, and how it ended.");
                    egui::ScrollArea::vertical().stick_to_bottom(true).auto_shrink([false, false]).show(ui, |ui| {
                        for l in &self.store.log {
                            ui.monospace(l);
                        }
                    });
                }
            }
        });
        if self.worker.is_some()
            || self.loading.is_some()
            || self.compare_loading.is_some()
            || self.recompute_loading.is_some()
            || self.store_loading
            || self.ask_busy
            || self.setup.dialog_open
        {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        self.record_frame(t0, &ctx);
    }

    fn progress_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let s = &self.store;
            match &s.status {
                RunStatus::Idle => {
                    ui.label("Ready.");
                }
                RunStatus::Running => {
                    let stage = s.stage.map(store::stage_name).unwrap_or("starting");
                    let (frac, text) = match s.progress {
                        Some((Stage::LoadModel, done, total)) if total > 0 => {
                            (done as f32 / total as f32, format!("{stage}: {:.1} / {:.1} MB", done as f64 / 1e6, total as f64 / 1e6))
                        }
                        Some((_, done, total)) if total > 0 => (done as f32 / total as f32, format!("{stage}: {done} / {total}")),
                        _ => (0.0, stage.to_string()),
                    };
                    let left = s.time_left().map(|t| format!(", about {} left", fmt_secs(t))).unwrap_or_default();
                    ui.add(egui::ProgressBar::new(frac).desired_width(380.0).text(format!("{text}{left}")).animate(s.progress.is_none()));
                    ui.label(setup::short(&s.stage_message, 70));
                    if let Some(t) = s.started {
                        ui.weak(format!("elapsed {}", fmt_secs(t.elapsed().as_secs_f64())));
                    }
                }
                RunStatus::Finished => {
                    ui.colored_label(egui::Color32::from_rgb(50, 175, 95), "Finished.");
                }
                RunStatus::Cancelled(m) => {
                    ui.colored_label(egui::Color32::from_rgb(220, 160, 40), format!("Cancelled ({m})."));
                }
                RunStatus::Failed(e) => {
                    ui.colored_label(egui::Color32::from_rgb(230, 85, 60), format!("Failed: {}", setup::short(e, 120)));
                }
            }
            if self.worker.is_some() && ui.button("Cancel").on_hover_text("Stop at the next batch").clicked() {
                self.cancel_run();
            }
            if self.setup.fetch_running() {
                // A known dataset is being fetched on its own thread (setup panel's picker).
                ui.separator();
                ui.spinner();
                ui.weak(setup::short(&self.setup.fetch_status, 70));
            }
            if !self.status_line.is_empty() {
                ui.separator();
                ui.weak(&self.status_line);
            }
        });
    }

    fn record_frame(&mut self, t0: Instant, ctx: &egui::Context) {
        let ms = t0.elapsed().as_secs_f32() * 1000.0;
        let now = Instant::now();
        if let Some(l) = self.last_frame {
            push(&mut self.frame_gap_ms, now.duration_since(l).as_secs_f32() * 1000.0);
        }
        self.last_frame = Some(now);
        push(&mut self.frame_ms, ms);
        let stats = |v: &VecDeque<f32>| -> (f32, f32) {
            if v.is_empty() {
                return (0.0, 0.0);
            }
            (v.iter().sum::<f32>() / v.len() as f32, v.iter().cloned().fold(0.0, f32::max))
        };
        let (mean, max) = stats(&self.frame_ms);
        if let Some((path, last)) = &mut self.frame_log {
            if last.elapsed() > Duration::from_secs(2) {
                *last = Instant::now();
                let cpu = self.cpu_usage.map(|c| c * 1000.0).unwrap_or(f32::NAN);
                let line = format!(
                    "ui_ms_mean={mean:.2} ui_ms_max={max:.2} frame_cpu_ms={cpu:.2} running={} steps={}\n",
                    self.worker.is_some(),
                    self.store.steps.len()
                );
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&*path) {
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
        if self.show_debug {
            let (gm, _) = stats(&self.frame_gap_ms);
            egui::Area::new(egui::Id::unique("debug_overlay")).anchor(egui::Align2::RIGHT_TOP, egui::vec2(-8.0, 36.0)).show(ctx, |ui| {
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    ui.monospace(format!("UI build   {mean:5.2} ms (max {max:5.2})"));
                    if let Some(c) = self.cpu_usage {
                        ui.monospace(format!("frame CPU  {:5.2} ms", c * 1000.0));
                    }
                    ui.monospace(format!("frame gap  {gm:5.1} ms"));
                    ui.monospace(format!("events     {}", self.store.revision));
                    ui.monospace(format!("worker     {}", if self.worker.is_some() { "running" } else { "idle" }));
                });
            });
        }
    }
}

fn push(v: &mut VecDeque<f32>, x: f32) {
    v.push_back(x);
    while v.len() > 120 {
        v.pop_front();
    }
}

pub fn fmt_secs(t: f64) -> String {
    let t = t.max(0.0) as u64;
    if t >= 3600 {
        format!("{}h {:02}m", t / 3600, t % 3600 / 60)
    } else if t >= 60 {
        format!("{}m {:02}s", t / 60, t % 60)
    } else {
        format!("{t}s")
    }
}

impl eframe::App for WorkbenchApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.cpu_usage = frame.info().cpu_usage;
        self.show(ui);
    }
}

/// Opens the workbench window (blocks until it is closed).
pub fn run_native() -> anyhow::Result<()> {
    let sample_root = setup::find_sample_root();
    let runs_root = PathBuf::from("runs");
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_inner_size([1400.0, 900.0]).with_min_inner_size([900.0, 600.0]).with_title("Laplace-LoRA Workbench"),
        ..Default::default()
    };
    eframe::run_native("Laplace-LoRA Workbench", options, Box::new(move |_cc| Ok(Box::new(WorkbenchApp::new(sample_root, runs_root)))))
        .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
