//! What the GUI tests share: the workbench in a headless harness at the window's size, and
//! stepping it until the worker or a background load has done something.

use crate::app::WorkbenchApp;
use egui_kittest::Harness;
use std::time::{Duration, Instant};

pub fn harness(app: WorkbenchApp) -> Harness<'static, WorkbenchApp> {
    Harness::builder().with_size(egui::vec2(1400.0, 900.0)).build_ui_state(|ui, app: &mut WorkbenchApp| app.show(ui), app)
}

/// Steps the UI until `done` holds (panics after `secs`).
pub fn step_until(h: &mut Harness<'static, WorkbenchApp>, secs: u64, what: &str, done: impl Fn(&WorkbenchApp) -> bool) {
    let t = Instant::now();
    while !done(h.state()) {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(2);
}
