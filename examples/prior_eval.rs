//! Analysis helper: test metrics of a run's Laplace-LoRA predictive at given prior precisions,
//! from its spectral cache (no model). Usage: prior_eval RUN_DIR [delta ...]; with no delta, the
//! prior curve's marglik argmax and val-NLL argmin.
use laplace_lora::calibration;
use laplace_lora::laplace::{cache, fit};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let run = PathBuf::from(&args[1]);
    let c = cache::load_cache(&run.join("laplace/spectral_cache.safetensors"))?;
    let labels: Vec<usize> = std::fs::read_to_string(run.join("predictions.jsonl"))?
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].as_u64().unwrap() as usize)
        .collect();
    let mut deltas: Vec<(String, f64)> = args[2..].iter().map(|a| (a.clone(), a.parse().unwrap())).collect();
    if deltas.is_empty() {
        let csv = std::fs::read_to_string(run.join("prior_curve.csv"))?;
        let rows: Vec<Vec<f64>> = csv.lines().skip(1).map(|l| l.split(',').map(|x| x.parse().unwrap_or(f64::NAN)).collect()).collect();
        let ml = rows.iter().max_by(|a, b| a[1].total_cmp(&b[1])).unwrap();
        let vn = rows.iter().min_by(|a, b| a[2].total_cmp(&b[2])).unwrap();
        deltas.push(("marglik(curve)".into(), ml[0]));
        deltas.push(("val-nll(curve)".into(), vn[0]));
    }
    let map: Vec<Vec<f64>> = c.mus.iter().map(|m| calibration::softmax(m)).collect();
    let m = calibration::metrics(&map, &labels);
    println!("{:<16} {:>10} {:>6} {:>6} {:>6} {:>6}", "which", "delta", "acc", "ece", "nll", "brier");
    println!("{:<16} {:>10} {:>6.3} {:>6.3} {:>6.3} {:>6.3}", "map", "-", m.accuracy, m.ece, m.nll, m.brier);
    for (name, d) in deltas {
        let p = fit::recompute(&c.entries, &c.mus, d, &c.grid, &cache::run_predictor(&run));
        let m = calibration::metrics(&p, &labels);
        println!("{:<16} {:>10.4} {:>6.3} {:>6.3} {:>6.3} {:>6.3}", name, d, m.accuracy, m.ece, m.nll, m.brier);
    }
    Ok(())
}
