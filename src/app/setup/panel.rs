//! Drawing the setup panel from its state (`SetupState`); returns what the user asked for.

use super::*;

fn tip(ui: &mut egui::Ui, label: &str, tip: &str) -> egui::Id {
    ui.label(label).on_hover_text(tip).id
}

pub enum SetupAction {
    /// Fine-tune only (the Laplace stage off).
    FineTune,
    /// Fit the Laplace stage on the open run's adapter with the panel's Laplace settings.
    FitLaplace,
    None,
    Start,
    Cancel,
}

/// Draws the panel; returns what the user asked for.
/// `refit_target` is the open run directory when it holds a fine-tuned adapter (what "Fit
/// Laplace" works on).
pub fn setup_panel(ui: &mut egui::Ui, s: &mut SetupState, running: bool, refit_target: Option<&std::path::Path>) -> SetupAction {
    let mut action = SetupAction::None;
    egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
        ui.heading("Setup");
        ui.add_enabled_ui(!running, |ui| {
            egui::CollapsingHeader::new("Model").default_open(true).show(ui, |ui| {
                egui::ComboBox::from_label("Model")
                    .selected_text(short(&s.model_source, 34))
                    .width(220.0)
                    .show_ui(ui, |ui| {
                        for m in KNOWN_MODELS {
                            let label = if m.name == DEFAULT_MODEL { format!("{} (default)", m.name) } else { m.name.to_string() };
                            ui.selectable_value(&mut s.model_source, m.name.to_string(), label).on_hover_text(m.hf_repo);
                        }
                    })
                    .response
                    .on_hover_text("The base language model; fetched and cached on first use");
                ui.horizontal(|ui| {
                    if ui.button("Open GGUF...").on_hover_text("Use a llama-family .gguf file").clicked() {
                        s.pick(Picked::Model, false, &[("GGUF model", &["gguf"])]);
                    }
                    if ui.button("Open model folder...").on_hover_text("Use a Hugging Face folder (config.json, *.safetensors, tokenizer.json)").clicked() {
                        s.pick(Picked::Model, true, &[]);
                    }
                });
                ui.horizontal(|ui| {
                    let l = tip(ui, "Device", "\"cpu\", or \"cuda\", \"cuda:1\", \"metal\" when built with that feature");
                    ui.add(egui::TextEdit::singleline(&mut s.device).desired_width(80.0)).labelled_by(l);
                });
                if let Some(plan) = s.config().ok().and_then(|c| laplace_lora::run_check::plan(&c, 128, 4).ok()) {
                    let (label, avail) = laplace_lora::model::memory::label_for(&s.model_source, &plan);
                    ui.weak(label).on_hover_text(format!("Weights, activations of a training step and the Laplace factors at this batch size, rank and targets (README, \"Memory\"); {avail}"));
                }
            });
            egui::CollapsingHeader::new("Dataset").default_open(true).show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    for i in 0..s.samples.len() {
                        let name = s.samples[i].name.clone();
                        if ui.selectable_label(s.selected_sample == Some(i), &name).on_hover_text(format!("Sample dataset in {}", s.samples[i].dir.display())).clicked() {
                            s.select_sample(i);
                        }
                    }
                    if s.samples.is_empty() {
                        ui.weak("no sample_data/ folder found");
                    }
                });
                known_picker(ui, s);
                ui.horizontal(|ui| {
                    if ui.button("Open file...").on_hover_text("Choose a training file (JSONL or CSV); validation/test files beside it are used too").clicked() {
                        s.pick(Picked::Train, false, &[("Datasets", &["jsonl", "json", "csv", "parquet", "arrow"])]);
                    }
                    egui::ComboBox::from_label("Format")
                        .selected_text(s.format.as_str())
                        .show_ui(ui, |ui| {
                            for f in Format::ALL {
                                ui.selectable_value(&mut s.format, f, f.as_str());
                            }
                        })
                        .response
                        .on_hover_text("How the files are laid out; auto detects it from the first record");
                });
                for (name, which) in [("Train", 0), ("Validation", 1), ("Test", 2)] {
                    ui.horizontal(|ui| {
                        let l = ui.add_sized([70.0, 18.0], egui::Label::new(name)).id;
                        let text = match which { 0 => &mut s.train, 1 => &mut s.validation, _ => &mut s.test };
                        let w = (ui.available_width() - 40.0).max(120.0);
                        ui.add(egui::TextEdit::singleline(text).desired_width(w).hint_text(if which == 1 { "optional: 20% of train" } else { "" }))
                            .labelled_by(l)
                            .on_hover_text(text.clone());
                        let f: fn(PathBuf) -> Picked = match which { 0 => Picked::Train, 1 => Picked::Validation, _ => Picked::Test };
                        if ui.small_button("...").on_hover_text(format!("Choose the {} file", name.to_lowercase())).clicked() {
                            s.pick(f, false, &[("Datasets", &["jsonl", "json", "csv", "parquet", "arrow"])]);
                        }
                    });
                }
                ui.horizontal(|ui| {
                    let l = tip(ui, "Max train", "Use at most this many training items (the first after a seeded shuffle)");
                    ui.add(egui::DragValue::new(&mut s.max_train).range(1..=100_000)).labelled_by(l);
                    let l = tip(ui, "Max test", "Evaluate on at most this many test items");
                    ui.add(egui::DragValue::new(&mut s.max_test).range(1..=100_000)).labelled_by(l);
                });
            });
        });
        preview_ui(ui, s);
        ui.add_enabled_ui(!running, |ui| {
            egui::CollapsingHeader::new("LoRA").default_open(false).show(ui, |ui| {
                egui::Grid::new("lora").num_columns(2).show(ui, |ui| {
                    let l = tip(ui, "Rank r", "Width of the low-rank update B A added to each adapted matrix; more rank, more parameters");
                    ui.add(egui::DragValue::new(&mut s.lora.rank).range(1..=256)).labelled_by(l);
                    ui.end_row();
                    let l = tip(ui, "Alpha", "The update is scaled by alpha / r, so alpha sets its strength independently of the rank");
                    ui.add(egui::DragValue::new(&mut s.lora.alpha).range(0.1..=1024.0).speed(0.5)).labelled_by(l);
                    ui.end_row();
                    let l = tip(ui, "Dropout", "Probability of dropping LoRA inputs during training, a regulariser (0 = off)");
                    ui.add(egui::DragValue::new(&mut s.lora.dropout).range(0.0..=0.9).speed(0.01)).labelled_by(l);
                    ui.end_row();
                });
                ui.label("Targets").on_hover_text("Which weight matrices get a LoRA adapter (the paper: q_proj, v_proj and the LM head)");
                ui.horizontal_wrapped(|ui| {
                    for t in ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"] {
                        let mut on = s.lora.targets.iter().any(|x| x == t);
                        if ui.checkbox(&mut on, t).changed() {
                            if on {
                                s.lora.targets.push(t.into());
                            } else {
                                s.lora.targets.retain(|x| x != t);
                            }
                        }
                    }
                });
            });
            egui::CollapsingHeader::new("Training").default_open(false).show(ui, |ui| {
                egui::Grid::new("train").num_columns(2).show(ui, |ui| {
                    let l = tip(ui, "Epochs", "How many passes over the training items; more epochs fit them harder and tend to make the model overconfident");
                    ui.add(egui::DragValue::new(&mut s.train_cfg.epochs).range(1..=1000)).labelled_by(l);
                    ui.end_row();
                    let l = tip(ui, "Batch size", "Items per gradient step");
                    ui.add(egui::DragValue::new(&mut s.train_cfg.batch_size).range(1..=256)).labelled_by(l);
                    ui.end_row();
                    let l = tip(ui, "Learning rate", "Step size of AdamW (peak, after warm-up; decays linearly to 0)");
                    ui.add(egui::DragValue::new(&mut s.train_cfg.learning_rate).range(1e-6..=1.0).speed(1e-5).max_decimals(6)).labelled_by(l);
                    ui.end_row();
                    let l = tip(ui, "Weight decay", "AdamW's pull of the LoRA weights towards zero each step");
                    ui.add(egui::DragValue::new(&mut s.train_cfg.weight_decay).range(0.0..=1.0).speed(0.001)).labelled_by(l);
                    ui.end_row();
                    let l = tip(ui, "Seed", "Fixes the shuffle, the LoRA initialisation and the data split, so a run can be repeated");
                    ui.add(egui::DragValue::new(&mut s.train_cfg.seed)).labelled_by(l);
                    ui.end_row();
                });
            });
            egui::CollapsingHeader::new("Methods").default_open(false).show(ui, |ui| {
                ui.weak("Evaluated in this order on the test split; each adds its own training or fitting time.");
                let tips = [
                    ("zero_shot", "The base model without the adapter"),
                    ("map", "The fine-tuned adapter (always trained: every other method builds on this run)"),
                    ("temperature", "MAP with one temperature fitted on validation NLL"),
                    ("llla", "Laplace over the last LoRA-carrying layer (the LM head's LoRA)"),
                    ("laplace", "Laplace-LoRA: the posterior over every LoRA parameter"),
                    ("mc_dropout", "LoRA dropout kept at test, several passes averaged (trains its own adapter unless LoRA dropout already equals its p)"),
                    ("checkpoint_ensemble", "The adapters of the MAP run's last epochs, averaged"),
                    ("deep_ensemble", "Adapters trained from several seeds, averaged (costs one training run per member)"),
                    ("blob", "BLoB: a Gaussian over the LoRA A matrices trained by the ELBO (one variational training run)"),
                ];
                for m in KNOWN_METHODS {
                    let mut on = s.methods.has(m);
                    let tip = tips.iter().find(|(n, _)| *n == m).map(|(_, t)| *t).unwrap_or("");
                    if ui.checkbox(&mut on, m).on_hover_text(tip).changed() {
                        if on {
                            // Keep the display order of KNOWN_METHODS.
                            s.methods.list.push(m.to_string());
                            s.methods.list.sort_by_key(|x| KNOWN_METHODS.iter().position(|k| k == x).unwrap_or(99));
                        } else {
                            s.methods.list.retain(|x| x != m);
                        }
                    }
                }
                egui::Grid::new("method_settings").num_columns(2).show(ui, |ui| {
                    tip(ui, "MC dropout p", "LoRA dropout rate kept at test time (the paper: 0.1)");
                    ui.add(egui::DragValue::new(&mut s.methods.mc_dropout.p).range(0.0..=0.9).speed(0.01));
                    ui.end_row();
                    tip(ui, "MC dropout passes", "Stochastic passes averaged (the paper: 10)");
                    ui.add(egui::DragValue::new(&mut s.methods.mc_dropout.samples).range(1..=100));
                    ui.end_row();
                    tip(ui, "Ensemble members", "Members of the checkpoint and deep ensembles (the paper: 3)");
                    if ui.add(egui::DragValue::new(&mut s.methods.deep_ensemble.members).range(1..=10)).changed() {
                        s.methods.checkpoint_ensemble.members = s.methods.deep_ensemble.members;
                    }
                    ui.end_row();
                    tip(ui, "BLoB samples", "Draws of A averaged at prediction (0: the posterior mean)");
                    ui.add(egui::DragValue::new(&mut s.methods.blob.samples).range(0..=100));
                    ui.end_row();
                });
            });
            egui::CollapsingHeader::new("Laplace").default_open(false).show(ui, |ui| {
                let combo = |ui: &mut egui::Ui, label: &str, tipt: &str, v: &mut String, opts: &[&str]| {
                    egui::ComboBox::from_label(label).selected_text(v.clone()).show_ui(ui, |ui| {
                        for o in opts {
                            ui.selectable_value(v, o.to_string(), *o);
                        }
                    })
                    .response
                    .on_hover_text(tipt);
                };
                combo(ui, "Subset", "Which parameters get a posterior: all LoRA weights (Laplace-LoRA) or only the last layer (LLLA)", &mut s.laplace.subset, &["all", "last_layer"]);
                combo(ui, "Structure", "How the posterior covariance is stored: Kronecker factors (KFAC), diagonal, or full (small subsets only)", &mut s.laplace.structure, &["kron", "diag", "full"]);
                combo(ui, "Curvature", "The exact generalised Gauss-Newton (K - 1 backward passes) or a one-sample Fisher (cheaper, noisier)", &mut s.laplace.curvature, &["ggn", "fisher"]);
                combo(ui, "Positions", "How the token positions a LoRA weight acts on enter the Kronecker factors", &mut s.laplace.positions, &["reduce", "expand", "last"]);
                combo(
                    ui,
                    "Predictive",
                    "How the Gaussian over logits becomes probabilities: quadrature (the exact GLM predictive E[softmax(f)], within 0.005), the pairwise probit, laplace-torch's probit, Monte Carlo, or the normalised Laplace bridge",
                    &mut s.laplace.predictive,
                    &["quadrature", "probit", "probit_torch", "mc", "bridge"],
                );
                let mut prior = match &s.laplace.prior {
                    PriorChoice::Method(m) => m.clone(),
                    PriorChoice::Fixed(d) => format!("{d}"),
                };
                ui.horizontal(|ui| {
                    let l = tip(ui, "Prior", "Prior precision delta: \"grid\" (validation NLL), \"marglik\" or a variant (marglik_scalar, marglik_ab, marglik_layer, each with _init for a prior centred at the LoRA initialisation), or a fixed number");
                    if ui.add(egui::TextEdit::singleline(&mut prior).desired_width(80.0)).labelled_by(l).changed() {
                        s.laplace.prior = PriorChoice::parse(&prior);
                    }
                });
                ui.horizontal(|ui| {
                    let l = tip(ui, "MC samples", "Samples of the logits for the Monte Carlo predictive");
                    ui.add(egui::DragValue::new(&mut s.laplace.samples).range(1..=100_000)).labelled_by(l);
                });
            });
            ui.horizontal(|ui| {
                let l = tip(ui, "Output folder", "The run directory to write; empty = runs/<dataset>-<time>");
                ui.add(egui::TextEdit::singleline(&mut s.out_dir).hint_text("runs/<dataset>-<time>").desired_width(170.0)).labelled_by(l);
            });
        });
        ui.separator();
        let cfg = s.config();
        if let Err(e) = &cfg {
            ui.colored_label(egui::Color32::from_rgb(220, 80, 60), e);
        }
        ui.horizontal_wrapped(|ui| {
            let can = !running && cfg.is_ok();
            if ui.add_enabled(can, egui::Button::new("Fine-tune")).on_hover_text("Load, evaluate zero-shot, fine-tune (MAP), evaluate, temperature-scale; no Laplace stage").clicked() {
                action = SetupAction::FineTune;
            }
            let lap_ok = s.laplace.validate();
            let refit = ui.add_enabled(!running && refit_target.is_some() && lap_ok.is_ok(), egui::Button::new("Fit Laplace"));
            let refit = match (refit_target, &lap_ok) {
                (Some(d), Ok(())) => refit.on_hover_text(format!(
                    "Fit Laplace-LoRA and LLLA on the fine-tuned adapter of the open run ({}) with the Laplace settings above; its training results stay, its Laplace results are replaced when the fit completes",
                    short(&d.display().to_string(), 40)
                )),
                (_, Err(e)) => refit.on_disabled_hover_text(format!("The Laplace settings are not valid: {e:#}")),
                (None, _) => refit.on_disabled_hover_text("Open a fine-tuned run first (press Fine-tune, or open one in the Runs tab); Fit Laplace then fits the posterior on its adapter"),
            };
            if refit.clicked() {
                action = SetupAction::FitLaplace;
            }
            if ui.add_enabled(can, egui::Button::new("Run all")).on_hover_text("The whole pipeline: fine-tune, evaluate, temperature-scale, then fit Laplace-LoRA (and LLLA) and the prior curve").clicked() {
                action = SetupAction::Start;
            }
            if ui.add_enabled(running, egui::Button::new("Cancel")).on_hover_text("Stop at the next batch; the run directory stays consistent").clicked() {
                action = SetupAction::Cancel;
            }
        });
    });
    action
}

/// The paper's tasks beside the samples, MMLU's subjects and groups in a menu, and the fetch's
/// progress (the fetch runs on its own thread; this only draws).
fn known_picker(ui: &mut egui::Ui, s: &mut SetupState) {
    ui.horizontal_wrapped(|ui| {
        ui.weak("Paper tasks:");
        for name in PICKER_TASKS {
            let title = known::task(name).map(|t| format!("{} ({}); fetched into the cache on first use", t.title, t.licence)).unwrap_or_default();
            if ui.selectable_label(s.train == name, name).on_hover_text(title).clicked() {
                s.select_known(name);
            }
        }
        let current = if s.train.starts_with("mmlu") { s.train.clone() } else { "mmlu...".to_string() };
        egui::ComboBox::from_id_salt("mmlu-picker")
            .selected_text(current)
            .show_ui(ui, |ui| {
                let mut pick = None;
                for g in std::iter::once("mmlu".to_string())
                    .chain(known::MMLU_GROUPS.iter().map(|g| format!("mmlu:{g}")))
                    .chain(known::MMLU_SUBJECTS.iter().map(|(sub, _)| format!("mmlu:{sub}")))
                {
                    if ui.selectable_label(s.train == g, &g).clicked() {
                        pick = Some(g);
                    }
                }
                if let Some(g) = pick {
                    s.select_known(&g);
                }
            })
            .response
            .on_hover_text("MMLU (MIT licence): all 57 subjects, a group, or one subject; its test split");
    });
    if s.fetching.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.weak(short(&s.fetch_status, 90));
        });
        ui.ctx().request_repaint_after(std::time::Duration::from_millis(150));
    } else if !s.fetch_status.is_empty() {
        ui.weak(short(&s.fetch_status, 90)).on_hover_text(s.fetch_status.clone());
    }
}

fn preview_ui(ui: &mut egui::Ui, s: &SetupState) {
    egui::CollapsingHeader::new("Preview").default_open(true).show(ui, |ui| match &s.preview {
        None => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("reading the dataset...");
            });
        }
        Some(p) => match &p.result {
            Err(e) => {
                ui.colored_label(egui::Color32::from_rgb(220, 80, 60), e);
            }
            Ok((items, n)) => {
                ui.weak(format!(
                    "{} items in {} (format {}); the first {} as the model sees them:",
                    n,
                    p.path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
                    p.format,
                    items.len()
                ));
                egui::ScrollArea::vertical().id_salt("preview").max_height(220.0).show(ui, |ui| {
                    for it in items {
                        egui::Frame::group(ui.style()).show(ui, |ui| {
                            ui.set_width(ui.available_width());
                            ui.label(egui::RichText::new(&it.prompt).monospace().size(11.0));
                            let ans = it.answer_labels.get(it.label).map(|s| s.trim().to_string()).unwrap_or_default();
                            let choice = it.choices.get(it.label).cloned().unwrap_or_default();
                            ui.colored_label(egui::Color32::from_rgb(60, 170, 90), format!("correct answer: {ans} ({choice})"));
                        });
                    }
                });
            }
        },
    });
}

pub fn short(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        s.to_string()
    } else {
        format!("...{}", c[c.len() - n + 3..].iter().collect::<String>())
    }
}
