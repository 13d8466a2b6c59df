//! Bad input in the workbench (issue 6, point 1): a malformed dataset line shows as a located
//! message in the preview and, after Run all, as the run's error; a bad setting refuses to start
//! with a message naming it (the device is a free text field). Nothing panics; the GUI stays usable.

#[path = "../src/app/mod.rs"]
mod app;
#[path = "common/gui.rs"]
mod gui;

use app::store::RunStatus;
use app::WorkbenchApp;
use egui_kittest::kittest::Queryable;
use gui::{harness, step_until};
use std::path::PathBuf;

#[test]
fn malformed_dataset_and_bad_setting_show_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 3, false).unwrap();
    let broken = tmp.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"question\": \"which is red\", \"choices\": [\"cat\", \"dog\"], \"answer\": 0}\n{\"question\": \"q\", \"choices\": [\"a\",\n")
        .unwrap();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample_data");
    let mut a = WorkbenchApp::new(Some(samples.clone()), tmp.path().join("runs"));
    a.setup.model_source = model.display().to_string();
    a.setup.train = broken.display().to_string();
    a.setup.validation = String::new();
    a.setup.test = samples.join("compare4").join("test.jsonl").display().to_string();
    a.setup.out_dir = tmp.path().join("runs").join("bad").display().to_string();
    let mut h = harness(a);
    h.run_steps(2);

    // The preview reads the file and shows where it is broken.
    step_until(&mut h, 20, "the preview", |a| a.setup.preview.as_ref().is_some_and(|p| p.path.ends_with("broken.jsonl")));
    let e = h.state().setup.preview.as_ref().unwrap().result.as_ref().unwrap_err().clone();
    assert!(e.contains("broken.jsonl:2:") && e.contains("malformed JSON"), "{e}");
    assert!(h.query_all_by_label_contains("broken.jsonl:2: malformed JSON").next().is_some(), "the preview shows the error");

    // Run all: the worker fails at the data stage and the message names the file and line.
    h.get_by_label("Run all").click();
    h.run_steps(2);
    step_until(&mut h, 60, "the run to fail", |a| a.worker.is_none());
    match &h.state().store.status {
        RunStatus::Failed(m) => assert!(m.contains("broken.jsonl:2:"), "{m}"),
        other => panic!("status {other:?}"),
    }
    // Shown in full ("Error: ..."), beside the preview's copy of it.
    assert!(h.query_all_by_label_contains("Error: ").next().is_some(), "no error label");
    assert!(h.query_all_by_label_contains("broken.jsonl:2: malformed JSON").count() >= 2, "the run's error does not name the file and line");

    // A bad setting: Run all is disabled and the setup panel names the setting.
    h.state_mut().setup.train = samples.join("compare4").join("train.jsonl").display().to_string();
    h.state_mut().setup.device = "tpu".into();
    h.state_mut().setup.out_dir = tmp.path().join("runs").join("bad2").display().to_string();
    h.run_steps(2);
    h.get_by_label("Run all").click();
    h.run_steps(3);
    assert!(h.state().worker.is_none(), "a run started on device \"tpu\"");
    assert!(h.query_all_by_label_contains("model.device").next().is_some(), "the setup panel names the bad setting");
}
