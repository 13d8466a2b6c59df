use super::*;

pub(super) enum HubMsg {
    Progress(FetchProgress),
    Done(std::result::Result<Vec<(String, PathBuf)>, String>),
}

pub(super) struct ChannelProgress {
    tx: mpsc::Sender<HubMsg>,
    total: u64,
    done: u64,
    last_sent: u64,
}

impl hf_hub::api::Progress for ChannelProgress {
    fn init(&mut self, size: usize, filename: &str) {
        self.total = size as u64;
        self.done = 0;
        self.last_sent = 0;
        let _ = self.tx.send(HubMsg::Progress(FetchProgress::Stage(format!("downloading {filename}"))));
        let _ = self.tx.send(HubMsg::Progress(FetchProgress::Bytes { done: 0, total: Some(self.total) }));
    }
    fn update(&mut self, size: usize) {
        self.done += size as u64;
        if self.done - self.last_sent >= (1 << 20) || self.done >= self.total {
            self.last_sent = self.done;
            let _ = self.tx.send(HubMsg::Progress(FetchProgress::Bytes { done: self.done, total: Some(self.total) }));
        }
    }
    fn finish(&mut self) {
        let _ = self.tx.send(HubMsg::Progress(FetchProgress::Bytes { done: self.done, total: Some(self.total) }));
    }
}

/// Host and port of an `http(s)://host[:port]/...` address (or `host:port`).
pub(super) fn host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else if let Some(r) = url.split_once("://").map(|(_, r)| r) {
        (r, 1080)
    } else {
        (url, 80)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if authority.is_empty() {
        return None;
    }
    if let Some(inner) = authority.strip_prefix('[') {
        // [ipv6]:port
        let (h, after) = inner.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(default_port);
        return Some((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        _ => Some((authority.to_string(), default_port)),
    }
}

/// A quick TCP probe of the hub (or of the proxy the HTTP client would use), so that an
/// unreachable hub fails in seconds: the HTTP client itself waits 30 s per connection attempt.
pub(super) fn probe_reachable(url: &str, timeout: Duration) -> Result<()> {
    let proxy = ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
    let (target, what) = match &proxy {
        Some(p) => (p.as_str(), "proxy"),
        None => (url, "hub"),
    };
    let (host, port) = host_port(target).ok_or_else(|| anyhow!("cannot read a host from `{target}`"))?;
    let (tx, rx) = mpsc::channel();
    let h = host.clone();
    std::thread::spawn(move || {
        use std::net::{TcpStream, ToSocketAddrs};
        let result = (|| -> std::result::Result<(), String> {
            let addrs: Vec<_> = (h.as_str(), port).to_socket_addrs().map_err(|e| format!("name lookup failed: {e}"))?.collect();
            if addrs.is_empty() {
                return Err("name lookup returned no address".into());
            }
            let mut last = String::new();
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {a}: {e}"),
                }
            }
            Err(last)
        })();
        let _ = tx.send(result);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(2)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("{what} {host}:{port} is unreachable: {e}"),
        Err(_) => bail!("{what} {host}:{port} did not answer within {}s", timeout.as_secs()),
    }
}

pub(super) fn fetch_from_hub(model: &KnownModel, cache: &Path, opts: &FetchOptions, progress: &mut dyn FnMut(FetchProgress)) -> Result<ModelFiles> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_cache_dir(cache.join("hub")).with_progress(false);
    if let Some(endpoint) = &opts.hub_endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| anyhow!("cannot set up the hub client: {e}"))?;
    let repo = api.model(model.hf_repo.to_string());

    // Files already in the hub cache need no network; otherwise probe first.
    let hub_cache = hf_hub::Cache::new(cache.join("hub"));
    let cached_repo = hub_cache.model(model.hf_repo.to_string());
    let all_cached = ["config.json", "tokenizer.json", "model.safetensors"].iter().all(|f| cached_repo.get(f).is_some());
    if !all_cached {
        progress(FetchProgress::Stage("checking that the hub is reachable".into()));
        probe_reachable(&repo.url("config.json"), opts.hub_probe_timeout)?;
    }

    // The download runs on its own thread: the HTTP client has no read timeout, so a stalled
    // connection is abandoned here (the thread is left to die with the process).
    let (tx, rx) = mpsc::channel::<HubMsg>();
    let hf_repo = model.hf_repo.to_string();
    std::thread::spawn(move || {
        let result = hub_download_all(&api, &hub_cache, &hf_repo, &tx);
        let _ = tx.send(HubMsg::Done(result));
    });
    let files = loop {
        match rx.recv_timeout(opts.hub_stall_timeout) {
            Ok(HubMsg::Progress(p)) => progress(p),
            Ok(HubMsg::Done(Ok(files))) => break files,
            Ok(HubMsg::Done(Err(e))) => bail!("{e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the hub stalled: nothing received for {}s", opts.hub_stall_timeout.as_secs())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the hub download thread died"),
        }
    };

    // Link (or copy) the files into <cache>/models/<name>/, config.json last.
    let dir = model_dir(cache, model);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    progress(FetchProgress::Stage(format!("placing the files in {}", dir.display())));
    let mut ordered = files;
    ordered.sort_by_key(|(name, _)| name == "config.json");
    // The checksums go in first (config.json, placed last, marks the folder complete).
    progress(FetchProgress::Stage("recording the sha256 of the files".into()));
    write_hf_manifest(&dir, &ordered)?;
    for (name, src) in &ordered {
        place_file(src, &dir.join(name))?;
    }
    let missing = hf_folder_missing(&dir);
    if !missing.is_empty() {
        bail!("the hub fetch left {} incomplete: missing {}", dir.display(), missing.join(", "));
    }
    Ok(ModelFiles::HfFolder { path: dir })
}

/// Runs on the hub thread: fetch the files of a model folder into the hub cache.
pub(super) fn hub_download_all(
    api: &hf_hub::api::sync::Api,
    hub_cache: &hf_hub::Cache,
    hf_repo: &str,
    tx: &mpsc::Sender<HubMsg>,
) -> std::result::Result<Vec<(String, PathBuf)>, String> {
    let repo = api.model(hf_repo.to_string());
    let cached = hub_cache.model(hf_repo.to_string());
    let get = |name: &str| -> std::result::Result<PathBuf, String> {
        let _ = tx.send(HubMsg::Progress(FetchProgress::Stage(format!("hub: {name}"))));
        let progress = ChannelProgress { tx: tx.clone(), total: 0, done: 0, last_sent: 0 };
        // A file already in the hub cache needs no network.
        match cached.get(name) {
            Some(p) => Ok(p),
            None => repo.download_with_progress(name, progress).map_err(|e| format!("{name}: {e}")),
        }
    };
    let mut files = Vec::new();
    files.push(("config.json".to_string(), get("config.json")?));
    files.push(("tokenizer.json".to_string(), get("tokenizer.json")?));
    match get("model.safetensors") {
        Ok(p) => files.push(("model.safetensors".to_string(), p)),
        Err(single_err) => {
            let index = get("model.safetensors.index.json").map_err(|e| format!("{single_err}; and {e}"))?;
            let shards = safetensors_shards(&index).map_err(|e| format!("{e:#}"))?;
            files.push(("model.safetensors.index.json".to_string(), index));
            for s in shards {
                let p = get(&s)?;
                files.push((s, p));
            }
        }
    }
    // Helpful, not required.
    for optional in ["tokenizer_config.json", "generation_config.json", "special_tokens_map.json"] {
        if let Ok(p) = get(optional) {
            files.push((optional.to_string(), p));
        }
    }
    Ok(files)
}
