//! A finished run held open on a thread of its own ([`RunSession`]): the workbench sends it
//! items (a user's question, a test item whose training supports are wanted) and polls the
//! replies, never waiting. The run is loaded once, on the first request's thread start, and kept
//! for every later request; dropping the handle ends the thread (after its current request,
//! which is cancelled).

use crate::data::Item;
use crate::experiment::session::{MethodPrediction, RunSession, Saliency, Supports};
use crate::experiment::Event;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

pub enum Request {
    /// Every method's predictive on these items.
    Predict(Vec<Item>),
    /// The `top` training items behind Laplace-LoRA's prediction for the item.
    Supports { item: Item, top: usize },
    /// Which prompt tokens drive the item's answer logits.
    Saliency(Item),
}

/// What the opened run offers.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub answer_labels: Vec<String>,
    pub methods: Vec<String>,
    pub has_laplace: bool,
    pub n_train: usize,
}

pub enum Reply {
    Opened(Result<SessionInfo, String>),
    /// What the thread is doing: a stage message, or progress (done, total).
    Status(String),
    Progress(u64, u64),
    Predicted(Result<Vec<Vec<MethodPrediction>>, String>),
    /// The item's id and its supports.
    Supports(String, Result<Supports, String>),
    /// The item's id and its token saliency.
    Saliency(String, Result<Saliency, String>),
}

pub struct SessionWorker {
    pub run_dir: PathBuf,
    tx: Sender<Request>,
    pub replies: Receiver<Reply>,
    cancel: Arc<AtomicBool>,
}

impl SessionWorker {
    /// Starts the thread; it opens the run and answers `Reply::Opened`.
    pub fn spawn(run_dir: &Path) -> Self {
        let (tx, rx) = channel::<Request>();
        let (rtx, replies) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let (c, dir) = (cancel.clone(), run_dir.to_path_buf());
        let spawned = std::thread::Builder::new().name("laplace-lora-session".into()).spawn(move || {
            crate::worker::on_compute_pool(move || serve(&dir, &rx, &rtx, &c));
        });
        if let Err(e) = spawned {
            // The thread did not start: say so as the opening's reply.
            let (etx, erx) = channel();
            let _ = etx.send(Reply::Opened(Err(format!("cannot start a thread: {e}"))));
            return SessionWorker { run_dir: run_dir.to_path_buf(), tx, replies: erx, cancel };
        }
        SessionWorker { run_dir: run_dir.to_path_buf(), tx, replies, cancel }
    }

    /// Queues a request (answered in order). False when the thread has ended.
    pub fn send(&self, r: Request) -> bool {
        self.cancel.store(false, Ordering::Relaxed);
        self.tx.send(r).is_ok()
    }

    /// Stops the current request at its next check.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Drop for SessionWorker {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let m = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "unknown panic".into());
    format!("internal error (panic): {m}")
}

/// A request's outcome as the reply carries it.
fn outcome<T>(r: std::thread::Result<anyhow::Result<Option<T>>>) -> Result<T, String> {
    match r {
        Ok(Ok(Some(p))) => Ok(p),
        Ok(Ok(None)) => Err("cancelled".into()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(p) => Err(panic_text(p)),
    }
}

fn serve(dir: &Path, rx: &Receiver<Request>, tx: &Sender<Reply>, cancel: &AtomicBool) {
    let mut emit = |e: Event| -> anyhow::Result<()> {
        let r = match e {
            Event::Stage { message, .. } => Reply::Status(message),
            Event::Progress { done, total, .. } => Reply::Progress(done, total),
            _ => return Ok(()),
        };
        tx.send(r).map_err(|_| anyhow::anyhow!("the workbench stopped listening"))
    };
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| RunSession::open(dir, cancel, &mut emit)));
    let mut session = match opened {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => {
            let _ = tx.send(Reply::Opened(Err("cancelled while opening the run".into())));
            return;
        }
        Ok(Err(e)) => {
            let _ = tx.send(Reply::Opened(Err(format!("{e:#}"))));
            return;
        }
        Err(p) => {
            let _ = tx.send(Reply::Opened(Err(panic_text(p))));
            return;
        }
    };
    let info = SessionInfo {
        answer_labels: session.answer_labels().to_vec(),
        methods: session.method_names(),
        has_laplace: session.has_laplace(),
        n_train: session.train_items().len(),
    };
    if tx.send(Reply::Opened(Ok(info))).is_err() {
        return;
    }
    while let Ok(req) = rx.recv() {
        let reply = match req {
            Request::Predict(items) => {
                Reply::Predicted(outcome(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.predict(&items, cancel, &mut emit)))))
            }
            Request::Supports { item, top } => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.supports(&item, top, cancel, &mut emit)));
                Reply::Supports(item.id.clone(), outcome(r))
            }
            Request::Saliency(item) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.saliency(&item).map(Some)));
                Reply::Saliency(item.id.clone(), outcome(r))
            }
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}
