//! Numerical faults (issue 6, point 2):
//! - a non-finite training loss stops training with a clear message, before the bad step is
//!   applied, and the adapter keeps (and the run directory holds) the last good values;
//! - a curvature factor that is not positive (semi-)definite is handled: its negative
//!   eigenvalues are clamped to 0 and counted (`clamped_eigenvalues` in laplace.json), and no
//!   predictive is ever NaN, whatever covariance reaches it.

use candle_core::Device;
use laplace_lora::experiment::{self, Event, ExperimentConfig, Stage};
use laplace_lora::laplace::curvature::{BlockCurvature, Curvature};
use laplace_lora::laplace::eigen::{sym_eig, Factor};
use laplace_lora::laplace::posterior::{BlockBasis, Posterior};
use laplace_lora::laplace::spectral::{sigma_f_exact, SpectralEntry, SpectralGrid};
use laplace_lora::laplace::{BlockId, Mat, PredictiveKind};
use laplace_lora::lora::{LoraConfig, LoraSet, Target};
use laplace_lora::model::LoadedModel;
use laplace_lora::train::{self, Encoded, TrainConfig, TrainOutcome};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn tiny(dir: &Path) -> LoadedModel {
    laplace_lora::testing::write_tiny_hf_model(dir, 13, false).unwrap();
    LoadedModel::load_hf(dir, &Device::Cpu).unwrap()
}

fn values(lora: &LoraSet) -> Vec<Vec<f32>> {
    lora.vars().iter().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

/// A learning rate of 1e30: the first step is finite, the next loss is not. Training stops
/// before applying it, and the adapter holds exactly the values after the last good step.
#[test]
fn non_finite_loss_stops_training_and_keeps_the_last_good_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny(tmp.path());
    let answer = vec![9u32, 10];
    let lora = LoraSet::new(
        LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets: vec![Target::QProj, Target::VProj, Target::LmHead] },
        &m.model.lora_dims(),
        answer.clone(),
        1,
        &Device::Cpu,
    )
    .unwrap();
    let data: Vec<Encoded> = (0..8).map(|i| Encoded { ids: vec![4, 20 + i as u32, 31, 3], label: (i % 2) as usize, num_choices: 2 }).collect();
    let cfg = TrainConfig { epochs: 5, batch_size: 4, learning_rate: 1e30, warmup_ratio: 0.0, max_grad_norm: 0.0, ..TrainConfig::default() };
    let mut last_good = values(&lora);
    let mut steps = 0;
    let r = train::train(
        &m.model,
        &lora,
        &data,
        &answer,
        0,
        &cfg,
        &AtomicBool::new(false),
        &mut |s| {
            assert!(s.loss.is_finite(), "a non-finite loss was reported as a step: {}", s.loss);
            steps += 1;
            last_good = values(&lora);
        },
        &mut |_, _| Ok(()),
    );
    let e = match r {
        Err(e) => format!("{e:#}"),
        Ok(TrainOutcome::Finished) => panic!("training with lr = 1e30 finished"),
        Ok(TrainOutcome::Cancelled { .. }) => panic!("cancelled?"),
    };
    assert!(steps >= 1, "{e}");
    assert!(e.contains("became") && e.contains("learning_rate") && e.contains(&format!("step {steps}")), "{e}");
    let now = values(&lora);
    assert_eq!(now, last_good, "the adapter changed after the last good step");
    assert!(now.iter().flatten().all(|x| x.is_finite()), "the kept adapter has non-finite values");
}

/// Through the pipeline: the run fails at the training stage with that message, events.jsonl
/// says so, and the adapter in the run directory is readable and finite.
#[test]
fn diverging_run_fails_cleanly_and_keeps_its_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    laplace_lora::testing::write_tiny_hf_model(&model, 13, false).unwrap();
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample_data").join("yesno");
    let cfg = ExperimentConfig::from_toml_str(&format!(
        "[model]\nsource = {:?}\n[data]\ntrain = {:?}\nvalidation = {:?}\ntest = {:?}\nmax_train = 16\nmax_validation = 8\nmax_test = 8\n[lora]\nrank = 2\nalpha = 4\n[train]\nepochs = 3\nlearning_rate = 1e30\nwarmup_ratio = 0.0\nmax_grad_norm = 0.0\n",
        model.display().to_string(),
        d.join("train.jsonl").display().to_string(),
        d.join("validation.jsonl").display().to_string(),
        d.join("test.jsonl").display().to_string(),
    ))
    .unwrap();
    let dir = tmp.path().join("run");
    experiment::prepare_run_dir(&dir, false).unwrap();
    let e = experiment::run(&cfg, &dir, &AtomicBool::new(false), &mut |_| {}).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("became") && msg.contains("Try a smaller learning_rate"), "{msg}");
    let events: Vec<Event> = std::fs::read_to_string(dir.join("events.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    match events.last() {
        Some(Event::Failed { stage: Stage::Train, error }) => assert!(error.contains("became"), "{error}"),
        other => panic!("events.jsonl ends with {other:?}"),
    }
    let bytes = std::fs::read(dir.join("adapter").join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, t) in st.tensors() {
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let finite = t.data().chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
        assert!(finite, "{name} holds non-finite values");
    }
}

/// M = v v^T - 0.5 I: one eigenvalue |v|^2 - 0.5, the other n - 1 equal to -0.5.
fn indefinite(n: usize, seed: usize) -> Vec<f64> {
    let v: Vec<f64> = (0..n).map(|i| ((i * 7 + seed * 3) % 11) as f64 / 5.0 - 0.9).collect();
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = v[i] * v[j] - if i == j { 0.5 } else { 0.0 };
        }
    }
    m
}

#[test]
fn indefinite_curvature_is_clamped_reported_and_never_gives_nan() {
    // The eigendecomposition alone.
    let e = sym_eig(&indefinite(6, 1), 6);
    assert_eq!(e.clamped, 5, "{:?}", e.values);
    assert!(e.values.iter().all(|&x| x >= 0.0 && x.is_finite()));
    // NaN and inf entries do not poison it either.
    let mut bad = indefinite(4, 2);
    bad[1] = f64::NAN;
    bad[6] = f64::INFINITY;
    let e = sym_eig(&bad, 4);
    assert!(e.values.iter().chain(&e.vectors).all(|x| x.is_finite()), "{:?}", e.values);

    // A posterior whose Kronecker factors and diagonal are indefinite.
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny(tmp.path());
    let lora = LoraSet::new(
        LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets: vec![Target::QProj, Target::LmHead] },
        &m.model.lora_dims(),
        vec![9, 10, 11],
        2,
        &Device::Cpu,
    )
    .unwrap();
    let blocks: Vec<BlockId> = (0..lora.layers.len()).flat_map(|layer| [BlockId { layer, mat: Mat::A }, BlockId { layer, mat: Mat::B }]).collect();
    let mut per_block = Vec::new();
    let mut expected_negative = 0;
    for (i, &b) in blocks.iter().enumerate() {
        let (nx, no) = laplace_lora::laplace::curvature::sides(&lora, b);
        let mut x = Factor::new(nx, 1024, 128);
        x.add_dense(&indefinite(nx, i)).unwrap();
        let mut o = Factor::new(no, 1024, 128);
        o.add_dense(&indefinite(no, i + 5)).unwrap();
        expected_negative += x.eig().clamped + o.eig().clamped;
        per_block.push(BlockCurvature::Kron { x, o });
    }
    assert!(expected_negative > 0);
    let post =
        Posterior::from_curvature(Curvature { blocks: blocks.clone(), per_block, full: None, log_lik: -5.0, n_examples: 4, map_logits: Vec::new() }, &lora)
            .unwrap();
    assert_eq!(post.clamped, expected_negative, "every clamped eigenvalue is counted");
    let all: Vec<usize> = (0..blocks.len()).collect();
    for delta in [1e-4, 1e-2, 1.0, 1e2, 1e4] {
        let lml = post.log_marglik(&all, delta);
        assert!(lml.is_finite(), "log marginal likelihood at {delta}: {lml}");
    }
    // The functional covariance from the clamped spectra and a random Jacobian, exact and from
    // the spectral cache, then every predictive: finite probabilities that sum to 1.
    let k = 3;
    let grid = SpectralGrid::for_deltas(1e-4, 1e4, 200);
    let mut entry = SpectralEntry::new(k, &grid);
    let mut exact_blocks = Vec::new();
    for (bi, basis) in post.basis.iter().enumerate() {
        let BlockBasis::Kron { x, o } = basis else { panic!("kron expected") };
        assert!(x.values.iter().chain(&o.values).all(|&v| v >= 0.0), "clamped eigenvalues are >= 0");
        let n = x.values.len() * o.values.len();
        let mm: Vec<Vec<f32>> = (0..k).map(|c| (0..n).map(|t| (((t * 13 + c * 7 + bi) % 17) as f32 - 8.0) / 8.0).collect()).collect();
        entry.add_block(&x.values, &o.values, &mm, &[], &grid);
        exact_blocks.push((x.values.clone(), o.values.clone(), mm));
    }
    let mu = vec![1.5, -0.5, 0.2];
    for delta in [1e-4, 1e-2, 1.0, 1e3] {
        for cov in [sigma_f_exact(&exact_blocks, k, delta), entry.sigma_f(delta, &grid)] {
            assert!(cov.iter().all(|v| v.is_finite()), "Sigma_f at {delta}: {cov:?}");
            for c in 0..k {
                assert!(cov[c * k + c] >= 0.0, "negative variance at {delta}: {cov:?}");
            }
            check_predictives(&mu, &cov);
        }
    }
}

fn check_predictives(mu: &[f64], cov: &[f64]) {
    for kind in [PredictiveKind::Probit, PredictiveKind::Mc, PredictiveKind::Bridge] {
        let p = laplace_lora::laplace::fit::predict(kind, mu, cov, 200, 7);
        assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0), "{kind:?} on {cov:?}: {p:?}");
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{kind:?} on {cov:?}: {p:?}");
    }
}

/// Whatever covariance reaches the predictive (not PSD, negative variances, NaN, inf, huge),
/// the probabilities are finite and sum to 1; masked classes stay at 0.
#[test]
fn predictives_survive_bad_covariances() {
    let mu = [2.0, 0.5, -1.0];
    let i3 = |s: f64| vec![s, 0.0, 0.0, 0.0, s, 0.0, 0.0, 0.0, s];
    let covs = vec![
        i3(-1.0),
        vec![1.0, 3.0, 0.0, 3.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        vec![1.0, 0.0, 0.0, 0.0, -1e-12, 0.0, 0.0, 0.0, 2.0],
        i3(f64::NAN),
        i3(f64::INFINITY),
        i3(1e300),
        i3(0.0),
        i3(1e-300),
    ];
    for cov in &covs {
        check_predictives(&mu, cov);
    }
    // A masked class (-inf logit) keeps probability 0 and the rest still sum to 1.
    let mu = [1.0, f64::NEG_INFINITY, 0.0];
    for cov in &covs {
        check_predictives(&mu, cov);
        for kind in [PredictiveKind::Probit, PredictiveKind::Mc, PredictiveKind::Bridge] {
            assert_eq!(laplace_lora::laplace::fit::predict(kind, &mu, cov, 50, 1)[1], 0.0);
        }
    }
}
