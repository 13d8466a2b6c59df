//! The experiment's data, ready for the model: the splits loaded (and capped, seeded), the
//! answer tokens they share, and every item tokenized.

use super::config::ExperimentConfig;
use crate::data::{self, Item};
use crate::model::tokenizer;
use crate::train::Encoded;
use anyhow::{anyhow, bail, Context, Result};

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
    prepare_data_with(cfg, tok, &mut |_| {})
}

/// [`prepare_data`], reporting the fetch of a known dataset (first use) to `progress`.
pub fn prepare_data_with(cfg: &ExperimentConfig, tok: &tokenizers::Tokenizer, progress: &mut dyn FnMut(crate::model::FetchProgress)) -> Result<PreparedData> {
    let splits = data::section::load_splits_with(&cfg.data, cfg.train.seed, progress)?;
    let all: Vec<&Item> = splits.train.iter().chain(&splits.validation).chain(&splits.test).collect();
    let answer_labels = shared_answer_labels(&all)?;
    let answer_ids = data::answer_token_ids(tok, &answer_labels)?;
    let ml = cfg.train.max_length;
    let eval = data::section::load_eval_sets_with(&cfg.data, cfg.train.seed, &splits, &answer_labels, progress)?
        .into_iter()
        .map(|e| Ok(EvalData { encoded: encode_items(tok, &e.items, ml)?, name: e.name, items: e.items }))
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparedData {
        train: encode_items(tok, &splits.train, ml)?,
        validation: encode_items(tok, &splits.validation, ml)?,
        test: encode_items(tok, &splits.test, ml)?,
        eval,
        splits,
        answer_labels,
        answer_ids,
    })
}
