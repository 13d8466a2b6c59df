//! The state behind "Ask your own question" and "training items behind a prediction": a
//! [`SessionWorker`] holding the open run (model, adapter, methods loaded once, on its own
//! thread), the requests waiting for it and its answers. Polled every frame; never waits.

use laplace_lora::data::question::{self, Question};
use laplace_lora::data::Item;
use laplace_lora::experiment::session::{MethodPrediction, Saliency, Supports};
use laplace_lora::session_worker::{Reply, Request, SessionInfo, SessionWorker};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// How many training items the supports list shows.
pub const TOP_SUPPORTS: usize = 10;

/// A test item whose training supports or token saliency are wanted (the Item is built once the
/// run's answer labels are known).
#[derive(Clone, Debug)]
pub struct ItemOf {
    pub key: String,
    pub id: String,
    pub prompt: String,
    pub choices: Vec<String>,
    pub label: usize,
}

impl ItemOf {
    /// The item with the run's answer labels (`labels`: the run's K).
    fn item(&self, labels: &[String]) -> Result<Item, String> {
        let nc = self.choices.len();
        if nc > labels.len() {
            return Err(format!("the item has {nc} choices, the run {} answer tokens", labels.len()));
        }
        Ok(Item { id: self.id.clone(), prompt: self.prompt.clone(), choices: self.choices.clone(), answer_labels: labels[..nc].to_vec(), label: self.label })
    }
}

fn send(w: &SessionWorker, r: Request) -> Result<(), String> {
    if w.send(r) {
        Ok(())
    } else {
        Err("the run's thread stopped".into())
    }
}

/// What is wanted of a test item: its training supports or its token saliency.
#[derive(Clone, Copy, PartialEq)]
enum Job {
    Supports,
    Saliency,
}

impl Job {
    fn request(self, item: Item) -> Request {
        match self {
            Job::Supports => Request::Supports { item, top: TOP_SUPPORTS },
            Job::Saliency => Request::Saliency(item),
        }
    }
}

enum Pending {
    /// The question as typed.
    Ask(Question),
    Item(Job, ItemOf),
}

enum InFlight {
    Ask(Item),
    /// The job and the key of the item it is computed for.
    Item(Job, String),
}

#[derive(Default)]
pub struct AskState {
    worker: Option<SessionWorker>,
    pub info: Option<Result<SessionInfo, String>>,
    pub question: Question,
    queue: VecDeque<Pending>,
    in_flight: Option<InFlight>,
    /// The worker's last stage message and progress.
    pub status: String,
    pub progress: Option<(u64, u64)>,
    /// The last question's problem (a wrong number of choices, a failed evaluation).
    pub message: Option<String>,
    /// The last question answered: its rendered item and every method's predictive.
    pub answer: Option<(Item, Vec<MethodPrediction>)>,
    /// Supports by key (set and item id).
    pub supports: HashMap<String, Result<Supports, String>>,
    /// Token saliency by key (set and item id; "your question" for the asked one).
    pub saliency: HashMap<String, Result<Saliency, String>>,
    /// The answer whose saliency is shown, by key (the predicted one when absent).
    pub saliency_class: HashMap<String, usize>,
    /// Show the raw logit's saliency instead of the centred logit's.
    pub saliency_raw: bool,
}

impl AskState {
    /// Keeps the session on the open run: another run (or none) drops it and what it answered.
    pub fn sync(&mut self, dir: Option<&Path>) {
        if self.worker.as_ref().is_some_and(|w| Some(w.run_dir.as_path()) != dir) {
            self.reset();
        }
    }

    /// Forgets the session (e.g. after a Laplace refit changed the run's files).
    pub fn reset(&mut self) {
        let q = std::mem::take(&mut self.question);
        *self = AskState { question: q, ..Default::default() };
    }

    /// Something is being computed (or waits for the run to open).
    pub fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.queue.is_empty()
    }

    pub fn asking(&self) -> bool {
        matches!(self.in_flight, Some(InFlight::Ask(_))) || self.queue.iter().any(|p| matches!(p, Pending::Ask(_)))
    }

    fn pending(&self, job: Job, key: &str) -> bool {
        matches!(&self.in_flight, Some(InFlight::Item(j, k)) if *j == job && k == key)
            || self.queue.iter().any(|p| matches!(p, Pending::Item(j, s) if *j == job && s.key == key))
    }

    pub fn supports_pending(&self, key: &str) -> bool {
        self.pending(Job::Supports, key)
    }

    pub fn saliency_pending(&self, key: &str) -> bool {
        self.pending(Job::Saliency, key)
    }

    /// Records why a job has no answer, under the item's key.
    fn fail(&mut self, job: Job, key: String, e: String) {
        match job {
            Job::Supports => {
                self.supports.insert(key, Err(e));
            }
            Job::Saliency => {
                self.saliency.insert(key, Err(e));
            }
        }
    }

    /// Queues a job for the item of the run at `dir` (opened on first use), once per key.
    fn request(&mut self, job: Job, dir: &Path, of: ItemOf) {
        if self.pending(job, &of.key) {
            return;
        }
        self.ensure_worker(dir);
        match job {
            Job::Supports => {
                self.supports.remove(&of.key);
            }
            Job::Saliency => {
                self.saliency.remove(&of.key);
            }
        }
        self.queue.push_back(Pending::Item(job, of));
    }

    fn ensure_worker(&mut self, dir: &Path) {
        // A run that did not open is tried again (its files may have been fixed meanwhile).
        let failed = matches!(self.info, Some(Err(_)));
        if failed || self.worker.as_ref().is_none_or(|w| w.run_dir != dir) {
            self.reset();
            self.worker = Some(SessionWorker::spawn(dir));
            self.status = "loading the run's model, adapter and methods...".into();
        }
    }

    /// Asks the typed question of the run at `dir` (opened on first use).
    pub fn ask(&mut self, dir: &Path) {
        if self.asking() {
            return;
        }
        self.ensure_worker(dir);
        self.message = None;
        self.queue.push_back(Pending::Ask(self.question.clone()));
    }

    /// Asks for the training items behind the item's prediction.
    pub fn request_supports(&mut self, dir: &Path, of: ItemOf) {
        self.request(Job::Supports, dir, of);
    }

    /// Asks which prompt tokens drive the item's answer logits.
    pub fn request_saliency(&mut self, dir: &Path, of: ItemOf) {
        self.request(Job::Saliency, dir, of);
    }

    /// Stops the current computation.
    pub fn cancel(&mut self) {
        if let Some(w) = &self.worker {
            w.cancel();
        }
        self.queue.clear();
    }

    /// Takes the worker's replies and sends the next request. True while anything is going on
    /// (the UI then repaints to keep polling).
    pub fn poll(&mut self) -> bool {
        let Some(w) = &self.worker else { return false };
        let mut dead = false;
        for _ in 0..1000 {
            let r = match w.replies.try_recv() {
                Ok(r) => r,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    dead = true;
                    break;
                }
            };
            match r {
                Reply::Opened(i) => {
                    self.status = match &i {
                        Ok(_) => "run loaded".into(),
                        Err(e) => format!("cannot open the run: {e}"),
                    };
                    self.info = Some(i);
                }
                Reply::Status(s) => self.status = s,
                Reply::Progress(d, t) => self.progress = Some((d, t)),
                Reply::Predicted(r) => {
                    if let Some(InFlight::Ask(item)) = self.in_flight.take() {
                        match r {
                            Ok(mut p) if !p.is_empty() => self.answer = Some((item, p.remove(0))),
                            Ok(_) => self.message = Some("no prediction came back".into()),
                            Err(e) => self.message = Some(e),
                        }
                    }
                    self.progress = None;
                }
                Reply::Supports(_, r) => {
                    if let Some(InFlight::Item(Job::Supports, key)) = self.in_flight.take() {
                        self.supports.insert(key, r);
                    }
                    self.progress = None;
                }
                Reply::Saliency(_, r) => {
                    if let Some(InFlight::Item(Job::Saliency, key)) = self.in_flight.take() {
                        self.saliency.insert(key, r);
                    }
                }
            }
        }
        match &self.info {
            Some(Err(e)) => {
                // The run does not open: every waiting request fails with its reason.
                let e = e.clone();
                for p in std::mem::take(&mut self.queue) {
                    match p {
                        Pending::Ask(_) => self.message = Some(format!("cannot open the run: {e}")),
                        Pending::Item(job, s) => self.fail(job, s.key, format!("cannot open the run: {e}")),
                    }
                }
            }
            Some(Ok(info)) if self.in_flight.is_none() => {
                let labels = info.answer_labels.clone();
                while self.in_flight.is_none() {
                    let Some(p) = self.queue.pop_front() else { break };
                    self.dispatch(p, &labels);
                }
            }
            _ => {}
        }
        if dead && self.in_flight.is_some() {
            self.in_flight = None;
            self.message = Some("the run's thread stopped".into());
        }
        self.busy() || self.info.is_none()
    }

    fn dispatch(&mut self, p: Pending, labels: &[String]) {
        let Some(w) = &self.worker else { return };
        match p {
            Pending::Ask(q) => match question::render(&q, labels, "your question") {
                Ok(item) => {
                    if w.send(Request::Predict(vec![item.clone()])) {
                        self.in_flight = Some(InFlight::Ask(item));
                    } else {
                        self.message = Some("the run's thread stopped".into());
                    }
                }
                Err(m) => self.message = Some(m),
            },
            Pending::Item(job, s) => match s.item(labels).and_then(|item| send(w, job.request(item))) {
                Ok(()) => self.in_flight = Some(InFlight::Item(job, s.key)),
                Err(e) => self.fail(job, s.key, e),
            },
        }
    }

    pub fn run_dir(&self) -> Option<&PathBuf> {
        self.worker.as_ref().map(|w| &w.run_dir)
    }
}
