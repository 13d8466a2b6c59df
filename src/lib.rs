//! Laplace-LoRA Workbench: Bayesian LoRA fine-tuning of language models with calibration you can see.
//!
//! Flow (DESIGN.md section 3): `experiment::ExperimentConfig` -> `worker` thread (load model, load
//! data, fine-tune, evaluate) -> `experiment::Event`s -> run directory and the faces (CLI, GUI).

pub mod bench;
pub mod calibration;
pub mod data;
pub mod experiment;
pub mod laplace;
pub mod lora;
pub mod methods;
pub mod model;
pub mod optim;
pub mod peft;
pub mod run_check;
pub mod runio;
pub mod session_worker;
pub mod sweep;
pub mod testing;
pub mod train;
pub mod worker;
