//! The setup panel: model, dataset (with a preview of the rendered prompts), LoRA, training and
//! Laplace settings, and the buttons that start and stop the worker. This file holds the panel's
//! state (what experiment it describes, its background preview and fetch); `panel.rs` draws it.

mod panel;
pub use panel::*;

use laplace_lora::data::{self, known, Format, Item};
use laplace_lora::experiment::{DataSection, ExperimentConfig, LaplaceSection, LoraSection, ModelSection, PriorChoice};
use laplace_lora::methods::settings::{MethodsSection, KNOWN as KNOWN_METHODS};
use laplace_lora::model::source::{DEFAULT_MODEL, KNOWN_MODELS};
use laplace_lora::train::TrainConfig;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};

/// A sample dataset folder (train.jsonl, validation.jsonl, test.jsonl).
#[derive(Clone, Debug, PartialEq)]
pub struct SampleSet {
    pub name: String,
    pub dir: PathBuf,
}

/// Finds `sample_data/` from the current folder, else from the executable's folder upwards.
pub fn find_sample_root() -> Option<PathBuf> {
    let mut starts = vec![];
    if let Ok(c) = std::env::current_dir() {
        starts.push(c);
    }
    if let Ok(e) = std::env::current_exe() {
        if let Some(p) = e.parent() {
            starts.push(p.to_path_buf());
        }
    }
    for s in starts {
        for a in s.ancestors().take(5) {
            let d = a.join("sample_data");
            if d.is_dir() {
                // Shown relative to the current folder where possible: the file names stay visible
                // in the narrow path fields (the config still gets absolute paths).
                if let Some(rel) = std::env::current_dir().ok().and_then(|c| d.strip_prefix(&c).ok().map(Path::to_path_buf)) {
                    return Some(rel);
                }
                return Some(d);
            }
        }
    }
    None
}

pub fn list_samples(root: &Path) -> Vec<SampleSet> {
    let mut v: Vec<SampleSet> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("train.jsonl").is_file() && p.join("test.jsonl").is_file())
                .map(|p| SampleSet { name: p.file_name().unwrap().to_string_lossy().into_owned(), dir: p })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// What the background preview loader returns.
pub struct Preview {
    pub path: PathBuf,
    pub format: Format,
    pub result: Result<(Vec<Item>, usize), String>,
}

/// Messages of the background fetch of a known dataset.
enum FetchMsg {
    Line(String),
    Done(Result<(), String>),
}

/// The known datasets the picker offers beside the samples: the paper's five tasks, and the MMLU
/// subjects and groups in a menu.
pub const PICKER_TASKS: [&str; 5] = ["arc-easy", "arc-challenge", "obqa", "boolq", "winogrande"];

/// Answers from the file-dialog thread.
pub enum Picked {
    Model(PathBuf),
    Train(PathBuf),
    Validation(PathBuf),
    Test(PathBuf),
}

pub struct SetupState {
    pub model_source: String,
    pub device: String,
    pub samples: Vec<SampleSet>,
    pub selected_sample: Option<usize>,
    pub train: String,
    pub validation: String,
    pub test: String,
    pub format: Format,
    pub max_train: usize,
    pub max_test: usize,
    pub lora: LoraSection,
    pub train_cfg: TrainConfig,
    pub laplace: LaplaceSection,
    pub methods: MethodsSection,
    pub out_dir: String,
    pub preview: Option<Preview>,
    pending_preview: Option<Receiver<Preview>>,
    preview_key: Option<(PathBuf, Format)>,
    picked: Option<Receiver<Option<Picked>>>,
    pub dialog_open: bool,
    /// The known dataset being fetched (on its own thread) and its last progress line.
    fetching: Option<(String, Receiver<FetchMsg>)>,
    pub fetch_status: String,
}

impl SetupState {
    pub fn new(sample_root: Option<PathBuf>) -> Self {
        let samples = sample_root.as_deref().map(list_samples).unwrap_or_default();
        let mut s = Self {
            model_source: DEFAULT_MODEL.into(),
            device: "cpu".into(),
            samples,
            selected_sample: None,
            train: String::new(),
            validation: String::new(),
            test: String::new(),
            format: Format::Auto,
            max_train: 64,
            max_test: 100,
            lora: LoraSection::default(),
            train_cfg: TrainConfig::default(),
            laplace: LaplaceSection::default(),
            methods: MethodsSection::default(),
            out_dir: String::new(),
            preview: None,
            pending_preview: None,
            preview_key: None,
            picked: None,
            dialog_open: false,
            fetching: None,
            fetch_status: String::new(),
        };
        if !s.samples.is_empty() {
            s.select_sample(0);
        }
        s
    }

    pub fn select_sample(&mut self, i: usize) {
        let d = self.samples[i].dir.clone();
        self.selected_sample = Some(i);
        self.train = d.join("train.jsonl").display().to_string();
        let v = d.join("validation.jsonl");
        self.validation = if v.is_file() { v.display().to_string() } else { String::new() };
        self.test = d.join("test.jsonl").display().to_string();
        self.format = Format::Auto;
    }

    /// Picks a known dataset for train and test (one split shared: the run cuts them apart with
    /// its seed) and fetches it on a background thread if the cache lacks it.
    pub fn select_known(&mut self, name: &str) {
        self.selected_sample = None;
        self.train = name.to_string();
        self.validation = String::new();
        self.test = name.to_string();
        self.format = Format::Auto;
        self.preview = None;
        self.preview_key = None;
        if self.fetching.as_ref().is_some_and(|(n, _)| n == name) {
            return;
        }
        let (tx, rx) = channel();
        let n = name.to_string();
        self.fetch_status = format!("{name}: looking in the cache...");
        self.fetching = Some((n.clone(), rx));
        std::thread::spawn(move || {
            let line = tx.clone();
            let r = known::resolve(&n, &mut |p| {
                if let laplace_lora::model::FetchProgress::Stage(m) = p {
                    let _ = line.send(FetchMsg::Line(m));
                }
            });
            let _ = tx.send(FetchMsg::Done(r.map(|_| ()).map_err(|e| format!("{e:#}"))));
        });
    }

    /// Whether a known dataset is being fetched (the UI keeps repainting to show it).
    pub fn fetch_running(&self) -> bool {
        self.fetching.is_some()
    }

    /// The experiment this panel describes.
    pub fn config(&self) -> Result<ExperimentConfig, String> {
        if self.train.trim().is_empty() || self.test.trim().is_empty() {
            return Err("choose a dataset (training and test files)".into());
        }
        // A known dataset name stays a name (the run finds it in the cache); paths become absolute.
        let abs = |s: &str| {
            let t = s.trim();
            if !Path::new(t).exists() && known::parse(t).is_some() {
                return PathBuf::from(t);
            }
            std::path::absolute(t).unwrap_or_else(|_| PathBuf::from(t))
        };
        let cfg = ExperimentConfig {
            model: ModelSection { source: self.model_source.trim().to_string(), device: self.device.trim().to_string(), ..ModelSection::default() },
            data: DataSection {
                train: abs(&self.train),
                validation: if self.validation.trim().is_empty() { None } else { Some(abs(&self.validation)) },
                test: abs(&self.test),
                format: self.format,
                max_train: Some(self.max_train.max(1)),
                max_validation: None,
                max_test: Some(self.max_test.max(1)),
                ..DataSection::default()
            },
            lora: self.lora.clone(),
            train: self.train_cfg.clone(),
            laplace: self.laplace.clone(),
            methods: self.methods.clone(),
        };
        cfg.validate().map_err(|e| format!("{e:#}"))?;
        Ok(cfg)
    }

    /// Takes an opened run's experiment as the panel's own (model, data, caps, LoRA, training,
    /// Laplace and methods), so that the panel says what the open run did and "Run all" repeats
    /// it; a sample dataset is selected again when the run's data is one.
    pub fn follow(&mut self, cfg: &ExperimentConfig) {
        let d = &cfg.data;
        self.model_source = cfg.model.source.clone();
        self.device = cfg.model.device.clone();
        self.train = d.train.display().to_string();
        self.validation = d.validation.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        self.test = d.test.display().to_string();
        self.format = d.format;
        self.max_train = d.max_train.unwrap_or(self.max_train);
        self.max_test = d.max_test.unwrap_or(self.max_test);
        self.lora = cfg.lora.clone();
        self.train_cfg = cfg.train.clone();
        self.laplace = cfg.laplace.clone();
        self.methods = cfg.methods.clone();
        self.selected_sample = self.samples.iter().position(|s| d.train.parent() == Some(s.dir.as_path()));
        self.preview = None;
        self.preview_key = None;
    }

    /// The run directory a new run would use.
    pub fn run_dir(&self, cfg: &ExperimentConfig) -> PathBuf {
        if self.out_dir.trim().is_empty() {
            laplace_lora::experiment::default_run_dir(cfg)
        } else {
            PathBuf::from(self.out_dir.trim())
        }
    }

    /// Polls the background work (preview, file dialogs); starts a preview load when the file or
    /// format changed. Cheap: called every frame.
    pub fn poll(&mut self) {
        let mut finished = None;
        if let Some((name, rx)) = &self.fetching {
            while let Ok(m) = rx.try_recv() {
                match m {
                    FetchMsg::Line(l) => self.fetch_status = format!("{name}: {l}"),
                    FetchMsg::Done(r) => finished = Some((name.clone(), r)),
                }
            }
        }
        if let Some((name, r)) = finished {
            self.fetching = None;
            self.fetch_status = match r {
                Ok(()) => format!("{name} is in the cache"),
                Err(e) => format!("{name}: {e}"),
            };
            // Read the preview again now that the items are there.
            self.preview_key = None;
            self.preview = None;
        }
        if let Some(rx) = &self.pending_preview {
            if let Ok(p) = rx.try_recv() {
                self.preview = Some(p);
                self.pending_preview = None;
            }
        }
        if let Some(rx) = &self.picked {
            if let Ok(p) = rx.try_recv() {
                self.picked = None;
                self.dialog_open = false;
                match p {
                    Some(Picked::Model(p)) => self.model_source = p.display().to_string(),
                    Some(Picked::Train(p)) => {
                        self.selected_sample = None;
                        // Sibling validation/test files of the same folder are taken along.
                        if let Some(dir) = p.parent() {
                            let ext = p.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "jsonl".into());
                            let v = dir.join(format!("validation.{ext}"));
                            let t = dir.join(format!("test.{ext}"));
                            self.validation = if v.is_file() { v.display().to_string() } else { String::new() };
                            if t.is_file() {
                                self.test = t.display().to_string();
                            }
                        }
                        self.train = p.display().to_string();
                    }
                    Some(Picked::Validation(p)) => self.validation = p.display().to_string(),
                    Some(Picked::Test(p)) => self.test = p.display().to_string(),
                    None => {}
                }
            }
        }
        let key = (PathBuf::from(self.train.trim()), self.format);
        if !self.train.trim().is_empty() && self.fetching.is_none() && self.preview_key.as_ref() != Some(&key) && self.pending_preview.is_none() {
            self.preview_key = Some(key.clone());
            let (tx, rx) = channel();
            self.pending_preview = Some(rx);
            std::thread::spawn(move || {
                let result = preview_items(&key.0, key.1).map(|items| {
                    let n = items.len();
                    (items.into_iter().take(5).collect(), n)
                });
                let _ = tx.send(Preview { path: key.0, format: key.1, result });
            });
        }
    }

    /// Opens a file dialog on its own thread (the UI keeps drawing).
    fn pick(&mut self, what: fn(PathBuf) -> Picked, folder: bool, filters: &'static [(&'static str, &'static [&'static str])]) {
        if self.dialog_open {
            return;
        }
        let (tx, rx) = channel();
        self.picked = Some(rx);
        self.dialog_open = true;
        std::thread::spawn(move || {
            let mut d = rfd::FileDialog::new();
            for (n, e) in filters {
                d = d.add_filter(*n, e);
            }
            let r = if folder { d.pick_folder() } else { d.pick_file() };
            let _ = tx.send(r.map(what));
        });
    }
}

/// The items the preview shows: a file's, or a cached known dataset's training split.
pub(crate) fn preview_items(path: &Path, format: Format) -> Result<Vec<Item>, String> {
    let name = path.to_string_lossy();
    if !path.exists() && known::parse(&name).is_some() {
        let r = known::cached(&name).ok_or_else(|| format!("{name} is not in the cache yet: pick it to fetch it"))?;
        let split = r.split_for("train");
        return r.items(&split).map_err(|e| format!("{e:#}"));
    }
    data::load_items(path, format).map_err(|e| e.to_string())
}
