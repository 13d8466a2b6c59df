use super::*;

/// A hub that accepts connections and then says nothing is abandoned after the stall timeout,
/// and an endpoint that refuses connections fails at the probe.
#[test]
fn silent_or_refusing_hub_fails_fast() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(4) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    let t = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        hub_endpoint: Some(format!("http://{addr}")),
        hub_stall_timeout: Duration::from_millis(800),
        hub_probe_timeout: Duration::from_secs(2),
        ..offline()
    };
    let start = Instant::now();
    let e = fetch_from_hub(&KNOWN_MODELS[0], t.path(), &opts, &mut sink()).unwrap_err();
    let took = start.elapsed();
    assert!(format!("{e:#}").contains("stalled"), "{e:#}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Refused: the probe answers at once.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let opts = FetchOptions { hub_endpoint: Some(format!("http://{free}")), ..opts };
    let start = Instant::now();
    let e = fetch_from_hub(&KNOWN_MODELS[0], t.path(), &opts, &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("unreachable"), "{e:#}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// A tiny stand-in for the hub: answers `GET /<repo>/resolve/main/<file>` with ranges.
pub(super) fn serve_fake_hub(files: Vec<(&'static str, Vec<u8>)>) -> std::net::SocketAddr {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut start = 0usize;
            let mut end: Option<usize> = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(r) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = r.trim().split_once('-').unwrap();
                    start = a.parse().unwrap();
                    end = b.parse().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let file = path.rsplit_once("/resolve/main/").map(|(_, f)| f.to_string()).unwrap_or_default();
            match files.iter().find(|(n, _)| *n == file) {
                Some((_, body)) => {
                    let end = end.unwrap_or(body.len() - 1).min(body.len() - 1);
                    let part = &body[start..=end];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\netag: \"{}\"\r\nx-repo-commit: 0123456789abcdef\r\n\
                         content-range: bytes {start}-{end}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        sha(body),
                        body.len(),
                        part.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(part);
                }
                None => {
                    let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                }
            }
        }
    });
    addr
}

#[test]
fn hub_route_with_a_fake_hub() {
    let weights = content(3 << 20);
    let addr = serve_fake_hub(vec![
        ("config.json", br#"{"model_type": "llama"}"#.to_vec()),
        ("tokenizer.json", b"{}".to_vec()),
        ("model.safetensors", weights.clone()),
        ("generation_config.json", b"{}".to_vec()),
    ]);
    let t = tempfile::tempdir().unwrap();
    let opts = FetchOptions { hub: true, hub_endpoint: Some(format!("http://{addr}")), ..offline() };
    let model = KNOWN_MODELS[0];
    let mut events = Vec::new();
    let got = fetch_known(&model, t.path(), &opts, &mut |p| events.push(p)).unwrap();
    let dir = model_dir(t.path(), &model);
    assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
    assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), weights);
    assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), r#"{"model_type": "llama"}"#);
    assert!(dir.join("generation_config.json").is_file());
    assert!(!dir.join("tokenizer_config.json").exists());
    assert!(events.contains(&FetchProgress::Bytes { done: weights.len() as u64, total: Some(weights.len() as u64) }));
    // Next time: from the cache, no hub needed.
    let again = fetch_known(&model, t.path(), &offline(), &mut sink()).unwrap();
    assert_eq!(again, got);

    // Sharded weights.
    let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    let addr = serve_fake_hub(vec![
        ("config.json", b"{}".to_vec()),
        ("tokenizer.json", b"{}".to_vec()),
        ("model.safetensors.index.json", index.as_bytes().to_vec()),
        ("model-00001-of-00002.safetensors", b"one".to_vec()),
        ("model-00002-of-00002.safetensors", b"two".to_vec()),
    ]);
    let t = tempfile::tempdir().unwrap();
    let opts = FetchOptions { hub: true, hub_endpoint: Some(format!("http://{addr}")), ..offline() };
    let got = fetch_known(&KNOWN_MODELS[2], t.path(), &opts, &mut sink()).unwrap();
    let dir = model_dir(t.path(), &KNOWN_MODELS[2]);
    assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
    assert_eq!(fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(), b"two");
}

/// Run by hand: how long a failing hub attempt takes here.
#[test]
#[ignore]
fn hub_failure_timing() {
    let t = tempfile::tempdir().unwrap();
    let opts = FetchOptions { pip: false, ..FetchOptions::default() };
    let start = Instant::now();
    let e = fetch_from_hub(&KNOWN_MODELS[0], t.path(), &opts, &mut |p| println!("{p:?}")).unwrap_err();
    println!("with probe: failed after {:.3}s: {e:#}", start.elapsed().as_secs_f64());
    // The client alone, without the probe.
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_cache_dir(t.path().join("hub")).with_progress(false).build().unwrap();
    let start = Instant::now();
    let e = api.model(KNOWN_MODELS[0].hf_repo.to_string()).download("config.json").unwrap_err();
    println!("client alone: failed after {:.3}s: {e}", start.elapsed().as_secs_f64());
}
