//! How far each predictive is from the exact GLM predictive E[softmax(f)], f ~ N(mu, Sigma_f),
//! measured as total variation against Monte Carlo with many draws (the measurement behind
//! `laplace::predictive::quadrature::points_for` and the README's "The predictive").
//!
//!   cargo run --release --example predictive_accuracy                  # random Gaussians
//!   cargo run --release --example predictive_accuracy -- RUN_DIR ...   # a run's test items
//!
//! Random Gaussians: K = 2..8, largest sd of a logit difference ("spread") 0.1..100, a strong
//! common mode, 6 draws each; reference: 4 million Monte Carlo draws (TV noise <= ~1e-3 at K = 8).
//! Run directories: every test item's logit mean and covariance from predictions.jsonl
//! (Laplace-LoRA's), reference 2 million draws.
//!
//! "centred_probit" is this program's default before the quadrature (the per-class probit on
//! C mu, C Sigma C), kept here only to measure it.
use laplace_lora::laplace::predictive::{self, laplace_bridge, monte_carlo, probit, probit_torch, quadrature};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

fn tv(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

fn centred_probit(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    let k = mu.len();
    let row: Vec<f64> = (0..k).map(|a| cov[a * k..(a + 1) * k].iter().sum()).collect();
    let total: f64 = row.iter().sum();
    let mean = mu.iter().sum::<f64>() / k as f64;
    let s: Vec<f64> = (0..k)
        .map(|a| {
            let var = cov[a * k + a] - 2.0 * row[a] / k as f64 + total / (k * k) as f64;
            (mu[a] - mean) / (1.0 + std::f64::consts::PI / 8.0 * var.max(0.0)).sqrt()
        })
        .collect();
    predictive::softmax(&s)
}

type Pred = (&'static str, fn(&[f64], &[f64]) -> Vec<f64>);
const PREDS: [Pred; 5] =
    [("quadrature", quadrature), ("probit", probit), ("probit_torch", probit_torch), ("centred_probit", centred_probit), ("bridge", laplace_bridge)];

fn random_gaussian(rng: &mut StdRng, k: usize, spread: f64) -> (Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = (0..k * k).map(|i| (rng.random::<f64>() * 2.0 - 1.0) * (0.2 + 1.8 * ((i % k) as f64 / k as f64))).collect();
    let mut cov = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            cov[i * k + j] = (0..k).map(|l| a[i * k + l] * a[j * k + l]).sum::<f64>();
        }
    }
    let d =
        (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).map(|(i, j)| cov[i * k + i] + cov[j * k + j] - 2.0 * cov[i * k + j]).fold(0.0, f64::max).sqrt();
    let scale = (spread / d).powi(2);
    let cov = cov.iter().map(|c| c * scale + 5.0 * spread * spread).collect();
    let mu = (0..k).map(|_| 15.0 + 3.0 * (rng.random::<f64>() * 2.0 - 1.0) * spread.sqrt().max(1.0)).collect();
    (mu, cov)
}

fn random_cases() {
    println!("{:>2} {:>7}  {}", "K", "spread", PREDS.iter().map(|(n, _)| format!("{n:>15}")).collect::<String>());
    let mut rng = StdRng::seed_from_u64(7);
    for k in 2..=8 {
        for spread in [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0] {
            let mut worst = [0.0f64; PREDS.len()];
            for rep in 0..6 {
                let (mu, cov) = random_gaussian(&mut rng, k, spread);
                let reference = monte_carlo(&mu, &cov, 4_000_000, 1000 + rep);
                for (w, (_, f)) in worst.iter_mut().zip(PREDS) {
                    *w = w.max(tv(&f(&mu, &cov), &reference));
                }
            }
            println!("{k:>2} {spread:>7}  {}", worst.iter().map(|w| format!("{w:>15.4}")).collect::<String>());
        }
    }
}

fn run_items(dirs: &[PathBuf]) -> anyhow::Result<()> {
    for dir in dirs {
        let text = std::fs::read_to_string(dir.join("predictions.jsonl"))?;
        // Per K: sum and max of the TV of each predictive.
        let mut by_k: std::collections::BTreeMap<usize, (usize, [f64; PREDS.len()], [f64; PREDS.len()])> = Default::default();
        for (line, l) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let (Some(mu), Some(cov)) = (v.get("logit_mean"), v.get("logit_cov")) else {
                anyhow::bail!("{}: line {} has no logit_mean / logit_cov (no Laplace fit?)", dir.display(), line + 1);
            };
            let mu: Vec<f64> = serde_json::from_value(mu.clone())?;
            let cov: Vec<Vec<f64>> = serde_json::from_value(cov.clone())?;
            let flat: Vec<f64> = cov.into_iter().flatten().collect();
            let reference = monte_carlo(&mu, &flat, 2_000_000, line as u64);
            let e = by_k.entry(mu.len()).or_insert((0, [0.0; PREDS.len()], [0.0; PREDS.len()]));
            e.0 += 1;
            for (i, (_, f)) in PREDS.iter().enumerate() {
                let t = tv(&f(&mu, &flat), &reference);
                e.1[i] += t;
                e.2[i] = e.2[i].max(t);
            }
        }
        for (k, (n, sum, max)) in by_k {
            println!("{} (K = {k}, {n} items): mean / max TV to the exact predictive", dir.display());
            for (i, (name, _)) in PREDS.iter().enumerate() {
                println!("  {name:>15}: {:.4} / {:.4}", sum[i] / n as f64, max[i]);
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        random_cases();
        Ok(())
    } else {
        run_items(&dirs)
    }
}
