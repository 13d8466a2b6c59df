//! A value computed once on a short-lived thread: `Loading` until the thread sends it, then
//! `Ready`. The UI polls it each frame and never waits for it.

use std::sync::mpsc::{channel, Receiver, TryRecvError};

pub enum Lazy<T> {
    Loading(Receiver<Result<T, String>>),
    Ready(Result<T, String>),
}

impl<T: Send + 'static> Lazy<T> {
    pub fn spawn(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        Lazy::Loading(rx)
    }

    /// Takes the result if it has arrived; true when it did (a thread that died is an error).
    pub fn poll(&mut self) -> bool {
        let Lazy::Loading(rx) = self else { return false };
        let r = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => Err("the background computation stopped without a result".into()),
        };
        *self = Lazy::Ready(r);
        true
    }

    /// None while loading.
    pub fn get(&self) -> Option<Result<&T, &str>> {
        match self {
            Lazy::Loading(_) => None,
            Lazy::Ready(r) => Some(r.as_ref().map_err(|e| e.as_str())),
        }
    }

    pub fn is_loading(&self) -> bool {
        matches!(self, Lazy::Loading(_))
    }
}
