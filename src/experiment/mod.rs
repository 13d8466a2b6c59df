//! An experiment: its configuration (DESIGN.md section 4), the events it emits, the run
//! directory it writes, and the pipeline that turns the one into the other.
//!
//! - `config`: the TOML configuration and its validation;
//! - `events`: what a run reports while it goes on (and `events.jsonl`);
//! - `prepare`: the data, loaded, split and tokenized;
//! - `run_dir`: the run directory's files (`predictions.jsonl`, `metrics.json`);
//! - `pipeline`: `run`, and the partial reruns `refit_laplace` and `evaluate_run`.
//!
//! The methods a run evaluates live in `crate::methods`.

mod config;
mod events;
mod pipeline;
mod prepare;
mod run_dir;
pub mod session;

pub use config::*;
pub use events::*;
pub use pipeline::{evaluate_run, refit_laplace, run};
pub use prepare::*;
pub use run_dir::*;
