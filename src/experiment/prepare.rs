//! The experiment's data, ready for the model: the splits loaded (and capped, seeded), the
//! answer tokens they share, and every item tokenized.

use super::config::{DataSection, ExperimentConfig};
use crate::data::{self, Format, Item, SplitSpec};
use crate::model::tokenizer;
use crate::train::Encoded;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// A further evaluation set (`[[data.eval]]`: distribution shift), tokenized.
pub struct EvalData {
    pub name: String,
    pub items: Vec<Item>,
    pub encoded: Vec<Encoded>,
}

/// The items of one experiment, tokenized, with the answer tokens they share.
pub struct PreparedData {
    pub splits: data::Splits,
    pub answer_labels: Vec<String>,
    pub answer_ids: Vec<u32>,
    pub train: Vec<Encoded>,
    pub validation: Vec<Encoded>,
    pub test: Vec<Encoded>,
    /// The evaluation sets beyond the test split, in the configuration's order.
    pub eval: Vec<EvalData>,
}

pub fn load_splits(cfg: &DataSection, seed: u64) -> Result<data::Splits> {
    let labels: Option<Vec<String>> = match (&cfg.labels, cfg.format) {
        (Some(l), _) => Some(l.clone()),
        _ => {
            let f = if cfg.format == Format::Auto { data::detect_format(&cfg.train)? } else { cfg.format };
            if f == Format::Classification {
                Some(data::classification_labels(&cfg.train)?)
            } else {
                None
            }
        }
    };
    let load = |p: &Path| data::load_items_with_labels(p, cfg.format, labels.as_deref());
    let train = load(&cfg.train)?;
    let validation = cfg.validation.as_deref().map(load).transpose()?;
    let test = load(&cfg.test)?;
    let spec =
        SplitSpec { validation_fraction: cfg.validation_fraction, max_train: cfg.max_train, max_validation: cfg.max_validation, max_test: cfg.max_test, seed };
    Ok(data::make_splits(train, validation, test, &spec)?)
}

/// The dataset's K answer labels: those of the item with the most choices; every other item's
/// labels must be a prefix of them (fewer choices are masked).
pub fn shared_answer_labels(items: &[&Item]) -> Result<Vec<String>> {
    let widest = items.iter().max_by_key(|i| i.answer_labels.len()).ok_or_else(|| anyhow!("no items"))?;
    let labels = widest.answer_labels.clone();
    for i in items {
        if labels[..i.answer_labels.len()] != i.answer_labels[..] {
            bail!("item {} answers with {:?}, which does not fit the dataset's answer labels {:?}", i.id, i.answer_labels, labels);
        }
    }
    Ok(labels)
}

pub fn encode_items(tok: &tokenizers::Tokenizer, items: &[Item], max_length: usize) -> Result<Vec<Encoded>> {
    items
        .iter()
        .map(|it| {
            let mut ids = tokenizer::encode(tok, &it.prompt).with_context(|| format!("item {}", it.id))?;
            if ids.is_empty() {
                bail!("item {}: the prompt tokenizes to nothing", it.id);
            }
            if ids.len() > max_length {
                // Keep the end: the question's tail, the choices and "Answer:" matter most.
                ids.drain(..ids.len() - max_length);
            }
            Ok(Encoded { ids, label: it.label, num_choices: it.num_choices() })
        })
        .collect()
}

pub fn prepare_data(cfg: &ExperimentConfig, tok: &tokenizers::Tokenizer) -> Result<PreparedData> {
    let splits = load_splits(&cfg.data, cfg.train.seed)?;
    let all: Vec<&Item> = splits.train.iter().chain(&splits.validation).chain(&splits.test).collect();
    let answer_labels = shared_answer_labels(&all)?;
    let answer_ids = data::answer_token_ids(tok, &answer_labels)?;
    let ml = cfg.train.max_length;
    Ok(PreparedData {
        train: encode_items(tok, &splits.train, ml)?,
        validation: encode_items(tok, &splits.validation, ml)?,
        test: encode_items(tok, &splits.test, ml)?,
        eval: Vec::new(),
        splits,
        answer_labels,
        answer_ids,
    })
}
