//! The spectral cache on disk (`laplace/spectral_cache.safetensors`): per test example its MAP
//! logits and its `SpectralEntry`, so that a viewer can recompute every predictive at a new prior
//! precision without the model (MATH.md section 8).

use super::predictive::Predictor;
use super::spectral::{SpectralEntry, SpectralGrid};
use super::PredictiveKind;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub fn save_cache(path: &Path, entries: &[SpectralEntry], mus: &[Vec<f64>], grid: &SpectralGrid) -> Result<()> {
    let n = entries.len();
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    if n > 0 {
        let e0 = &entries[0];
        let stack32 = |f: &dyn Fn(&SpectralEntry) -> &Vec<f32>| -> Result<Tensor> {
            let v: Vec<f32> = entries.iter().flat_map(|e| f(e).iter().copied()).collect();
            Ok(Tensor::from_vec(v, (n, f(e0).len()), &dev)?)
        };
        let stack64 = |f: &dyn Fn(&SpectralEntry) -> &Vec<f64>| -> Result<Tensor> {
            let v: Vec<f64> = entries.iter().flat_map(|e| f(e).iter().copied()).collect();
            Ok(Tensor::from_vec(v, (n, f(e0).len()), &dev)?)
        };
        t.insert("w".into(), stack32(&|e| &e.w)?);
        t.insert("wd".into(), stack32(&|e| &e.wd)?);
        t.insert("zero".into(), stack64(&|e| &e.zero)?);
        t.insert("zero_l".into(), stack64(&|e| &e.zero_l)?);
        t.insert("over_inv".into(), stack64(&|e| &e.over_inv)?);
        t.insert("over_inv2".into(), stack64(&|e| &e.over_inv2)?);
        let k = e0.k;
        // Masked logits (-inf) are stored as NaN-free -1e30 and restored.
        let mu: Vec<f64> = mus.iter().flat_map(|m| m.iter().map(|x| if x.is_finite() { *x } else { -1e30 })).collect();
        t.insert("logit_mean".into(), Tensor::from_vec(mu, (n, k), &dev)?);
    }
    t.insert("grid".into(), Tensor::new(&[grid.log10_min, grid.log10_max, grid.bins as f64], &dev)?);
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&t, &tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

pub struct LoadedCache {
    pub entries: Vec<SpectralEntry>,
    pub mus: Vec<Vec<f64>>,
    pub grid: SpectralGrid,
}

pub fn load_cache(path: &Path) -> Result<LoadedCache> {
    let t = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("reading {}", path.display()))?;
    let get = |k: &str| t.get(k).ok_or_else(|| anyhow!("{}: tensor {k} is missing", path.display()));
    let g = get("grid")?.to_vec1::<f64>()?;
    if g.len() != 3 {
        bail!("{}: malformed grid", path.display());
    }
    let grid = SpectralGrid::new(g[0], g[1], g[2] as usize);
    let Ok(mu) = get("logit_mean") else { return Ok(LoadedCache { entries: Vec::new(), mus: Vec::new(), grid }) };
    let mus: Vec<Vec<f64>> =
        mu.to_vec2::<f64>()?.into_iter().map(|r| r.into_iter().map(|x| if x <= -1e29 { f64::NEG_INFINITY } else { x }).collect()).collect();
    let w = get("w")?.to_vec2::<f32>()?;
    let wd = get("wd")?.to_vec2::<f32>()?;
    let z = get("zero")?.to_vec2::<f64>()?;
    let zl = get("zero_l")?.to_vec2::<f64>()?;
    let oi = get("over_inv")?.to_vec2::<f64>()?;
    let oi2 = get("over_inv2")?.to_vec2::<f64>()?;
    let entries = (0..mus.len())
        .map(|i| SpectralEntry {
            k: mus[i].len(),
            bins: grid.bins,
            w: w[i].clone(),
            wd: wd[i].clone(),
            zero: z[i].clone(),
            zero_l: zl[i].clone(),
            over_inv: oi[i].clone(),
            over_inv2: oi2[i].clone(),
        })
        .collect();
    Ok(LoadedCache { entries, mus, grid })
}

/// The predictive a run's Laplace fit used (`laplace/laplace.json`'s "config"), so that every
/// view recomputes with the same one; the default where the file does not say (older runs).
pub fn run_predictor(dir: &Path) -> Predictor {
    let read = || -> Option<Predictor> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("laplace").join("laplace.json")).ok()?).ok()?;
        let c = v.get("config")?;
        Some(Predictor {
            kind: PredictiveKind::parse(c.get("predictive")?.as_str()?)?,
            samples: c.get("samples").and_then(|s| s.as_u64()).unwrap_or(1000) as usize,
            seed: c.get("seed").and_then(|s| s.as_u64()).unwrap_or(0),
        })
    };
    read().unwrap_or_default()
}
