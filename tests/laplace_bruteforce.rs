//! The Laplace machinery against dense brute force on a tiny llama (tests/common/bruteforce.rs).

#[path = "common/bruteforce.rs"]
mod bruteforce;

use bruteforce::*;
use candle_core::{Device, Tensor};
use laplace_lora::laplace::jacobian::{Group, Rows};
use laplace_lora::laplace::posterior::{BlockBasis, Posterior};
use laplace_lora::laplace::spectral::SpectralGrid;
use laplace_lora::laplace::{rel_fro, subset_blocks, LaplaceConfig, Positions, Structure, Subset};
use laplace_lora::train::Encoded;
use std::sync::atomic::AtomicBool;

#[test]
fn kfac_equals_the_dense_ggn_for_one_example_at_one_position() {
    let s = setup();
    let one = vec![Encoded { ids: vec![17], label: 1, num_choices: K }]; // T = 1
    let blocks = subset_blocks(&s.lora, Subset::All);
    let vars = block_vars(&s, &blocks);
    let (p, dense) = dense_ggn(&s, &one, &vars);
    for positions in [Positions::Expand, Positions::Reduce, Positions::Last] {
        let post = fit(&s, &one, &cfg(Structure::Kron, positions));
        let (p2, kron) = dense_kron(&post);
        assert_eq!(p, p2);
        // Compare the block-diagonal part (KFAC is block-diagonal by construction).
        let mut off = 0;
        for &(nx, no) in &post.sides {
            let n = nx * no;
            let blk = |m: &[f64]| -> Vec<f64> { (0..n).flat_map(|a| (0..n).map(move |b| (a, b))).map(|(a, b)| m[(off + a) * p + off + b]).collect() };
            // f32 forward/backward: 1e-4 relative is a few hundred ulps of the accumulated sums.
            let err = rel_fro(&blk(&kron), &blk(&dense));
            assert!(err < 1e-4, "{positions:?}: block at {off} differs from the dense GGN by {err}");
            off += n;
        }
    }
}

#[test]
fn full_and_diag_structures_equal_the_dense_ggn() {
    let s = setup();
    let data = examples();
    let blocks = subset_blocks(&s.lora, Subset::All);
    let vars = block_vars(&s, &blocks);
    let (p, dense) = dense_ggn(&s, &data, &vars);
    let post = fit(&s, &data, &cfg(Structure::Full, Positions::Reduce));
    let full = post.full.as_ref().unwrap().reconstruct();
    assert!(rel_fro(&full, &dense) < 1e-4, "full GGN differs by {}", rel_fro(&full, &dense));
    let post = fit(&s, &data, &cfg(Structure::Diag, Positions::Reduce));
    let diag: Vec<f64> = post
        .basis
        .iter()
        .flat_map(|b| match b {
            BlockBasis::Diag { d } => d.clone(),
            _ => panic!(),
        })
        .collect();
    let dd: Vec<f64> = (0..p).map(|i| dense[i * p + i]).collect();
    assert!(rel_fro(&diag, &dd) < 1e-4);
}

/// Examples with fewer choices than K, alone and mixed in a batch: the curvature pass drops the
/// backward columns no example of a batch needs (diag(p) - pp^T has rank max choices - 1) and the
/// Jacobian pass the classes no example has. The full-structure GGN must still be the dense one
/// (masked classes at p = 0), and Sigma_f on each example's own classes J (F + delta)^-1 J^T.
#[test]
fn examples_with_fewer_choices_than_k_keep_the_dense_ggn_and_sigma_f() {
    let s = setup();
    let mut data = examples();
    data.push(Encoded { ids: vec![4, 30, 3], label: 1, num_choices: 2 });
    data.push(Encoded { ids: vec![4, 24, 26, 3], label: 0, num_choices: 2 });
    data[0].num_choices = 2;
    data[0].label = 1;
    data[1].num_choices = 2;
    data[1].label = 0;
    let blocks = subset_blocks(&s.lora, Subset::All);
    let vars = block_vars(&s, &blocks);
    let (p, dense) = dense_ggn(&s, &data, &vars);
    // Batches of 2 over the length-sorted items: [3 tokens, 3], [4, 5], [7] hold choices
    // {2, 2}, {2, 2} and {3}: two batches with one column instead of two.
    let post = fit(&s, &data, &cfg(Structure::Full, Positions::Expand));
    let full = post.full.as_ref().unwrap().reconstruct();
    assert!(rel_fro(&full, &dense) < 1e-4, "full GGN differs by {}", rel_fro(&full, &dense));
    let delta = 0.5;
    let mut m = dense.clone();
    (0..p).for_each(|i| m[i * p + i] += delta);
    let l = cholesky(&m, p);
    check_sigma_f(&s, &post, &data, Group { blocks: vec![0], deltas: vec![delta] }, &l, &vars, "fewer choices");
    // Centred rows (one backward pass fewer): at batch 2 the batches are {2, 2}, {2, 2}, {3}
    // choices, at batch 3 {2, 2, 2} and {2, 3}, where the 2-choice item takes one of the batch's
    // two passes and the 3-choice item both (per-item seeds, the last row minus the others' sum).
    for batch in [2, 3] {
        let g = Group { blocks: vec![0], deltas: vec![delta] };
        check_sigma_f_rows(&s, &post, &data, g, &l, &vars, Rows::Centred, batch, &format!("fewer choices, batch {batch}"));
    }
}

/// The centred rows are what every shift-invariant predictive needs and nothing more: on the
/// tiny model's examples the quadrature predictive from them equals the one from the raw rows
/// (to the f32 Jacobians' 1e-5), while probit_torch, which reads each class's own variance,
/// would not (that is why a run with it keeps the raw rows).
#[test]
fn centred_rows_give_the_shift_invariant_predictives_of_the_raw_ones() {
    use laplace_lora::laplace::predictive::{predict, PredictiveKind};
    let s = setup();
    let data = examples();
    let post = fit(&s, &data, &cfg(Structure::Kron, Positions::Reduce));
    let all: Vec<usize> = (0..post.blocks.len()).collect();
    let sig = |rows: Rows| {
        let g = Group { blocks: all.clone(), deltas: vec![0.3; all.len()] };
        functional_of(&s, &post, &data, 2, rows, &[g], std::slice::from_ref(&all))
    };
    let (raw, cen) = (sig(Rows::Raw), sig(Rows::Centred));
    let mut torch_gap = 0.0f64;
    for (i, (r, c)) in raw.iter().zip(&cen).enumerate() {
        assert_eq!(r.mu, c.mu, "example {i}: the MAP logits are the same forward pass");
        for kind in [PredictiveKind::Quadrature, PredictiveKind::Probit] {
            let (pr, pc) = (predict(kind, &r.mu, &r.sigma[0], 1, 0), predict(kind, &c.mu, &c.sigma[0], 1, 0));
            let tv: f64 = pr.iter().zip(&pc).map(|(a, b)| (a - b).abs()).sum::<f64>() / 2.0;
            assert!(tv < 1e-5, "example {i} {kind:?}: TV {tv} between raw and centred rows ({pr:?} vs {pc:?})");
        }
        // The spectral cache (the prior slider) agrees too, at a delta other than the fit's.
        let (sr, sc) =
            (r.spectral[0].sigma_f(2.0, &SpectralGrid::for_deltas(1e-4, 1e4, 200)), c.spectral[0].sigma_f(2.0, &SpectralGrid::for_deltas(1e-4, 1e4, 200)));
        let (pr, pc) = (predict(PredictiveKind::Quadrature, &r.mu, &sr, 1, 0), predict(PredictiveKind::Quadrature, &c.mu, &sc, 1, 0));
        let tv: f64 = pr.iter().zip(&pc).map(|(a, b)| (a - b).abs()).sum::<f64>() / 2.0;
        assert!(tv < 1e-5, "example {i}: spectral cache TV {tv}");
        let (tr, tc) = (predict(PredictiveKind::ProbitTorch, &r.mu, &r.sigma[0], 1, 0), predict(PredictiveKind::ProbitTorch, &c.mu, &c.sigma[0], 1, 0));
        torch_gap = torch_gap.max(tr.iter().zip(&tc).map(|(a, b)| (a - b).abs()).sum::<f64>() / 2.0);
    }
    assert!(torch_gap > 1e-3, "probit_torch should see the difference (largest TV {torch_gap})");
}

#[test]
fn marglik_and_functional_variance_equal_their_dense_formulas() {
    let s = setup();
    let data = examples();
    for positions in [Positions::Expand, Positions::Reduce, Positions::Last] {
        let post = fit(&s, &data, &cfg(Structure::Kron, positions));
        let (p, kron) = dense_kron(&post);
        let blocks = post.blocks.clone();
        let vars = block_vars(&s, &blocks);
        let theta: Vec<f64> = vars.iter().flat_map(|v| v.flatten_all().unwrap().to_vec1::<f32>().unwrap()).map(|x| x as f64).collect();
        let all: Vec<usize> = (0..blocks.len()).collect();
        for delta in [0.05, 1.0, 30.0] {
            // log Z = log lik - delta/2 |theta|^2 + P/2 log delta - 1/2 log det(F + delta I)
            let mut m = kron.clone();
            (0..p).for_each(|i| m[i * p + i] += delta);
            let l = cholesky(&m, p);
            let logdet: f64 = (0..p).map(|i| 2.0 * l[i * p + i].ln()).sum();
            let dense_lml = post.log_lik - 0.5 * delta * theta.iter().map(|t| t * t).sum::<f64>() + 0.5 * p as f64 * delta.ln() - 0.5 * logdet;
            let ours = post.log_marglik(&all, delta);
            // Both in f64 from the same factors: 1e-9 relative.
            assert!((ours - dense_lml).abs() <= 1e-9 * dense_lml.abs().max(1.0), "{positions:?} delta {delta}: {ours} vs {dense_lml}");
            // Sigma_f = J (F + delta I)^-1 J^T, J from candle's own gradients.
            check_sigma_f(
                &s,
                &post,
                &data,
                Group { blocks: all.clone(), deltas: vec![delta; blocks.len()] },
                &l,
                &vars,
                &format!("{positions:?} delta {delta}"),
            );
            let g = Group { blocks: all.clone(), deltas: vec![delta; blocks.len()] };
            check_sigma_f_rows(&s, &post, &data, g, &l, &vars, Rows::Centred, 2, &format!("{positions:?} delta {delta}"));
        }
    }
}

#[test]
fn low_rank_factors_converge_to_the_dense_posterior_as_k_grows() {
    let s = setup();
    let data = examples();
    let delta = 0.5;
    let dense = fit(&s, &data, &cfg(Structure::Kron, Positions::Reduce));
    let all: Vec<usize> = (0..dense.blocks.len()).collect();
    let sig = |post: &Posterior| -> Vec<f64> {
        let g = Group { blocks: all.clone(), deltas: vec![delta; post.blocks.len()] };
        functional_of(&s, post, &data, 3, Rows::Raw, &[g], &[]).iter().flat_map(|f| f.sigma[0].clone()).collect()
    };
    let want = sig(&dense);
    let want_lml = dense.log_marglik(&all, delta);
    let mut last = f64::INFINITY;
    // Sides above 16 (the 32-wide inputs of A, the 32-wide outputs of q's B) become low-rank.
    for k in [1, 4, 8, 16, 32] {
        let c = LaplaceConfig { low_rank_threshold: 16, low_rank_k: k, ..cfg(Structure::Kron, Positions::Reduce) };
        let post = fit(&s, &data, &c);
        let err = rel_fro(&sig(&post), &want);
        let lml_err = (post.log_marglik(&all, delta) - want_lml).abs();
        eprintln!("k = {k}: Sigma_f relative error {err:.3e}, log marglik error {lml_err:.3e}");
        assert!(err <= last * 1.0001 + 1e-12, "error grew from {last} to {err} at k = {k}");
        last = err;
        if k == 32 {
            // k = side keeps every eigenpair: equal up to f32 round-off.
            assert!(err < 1e-4 && lml_err < 1e-6 * want_lml.abs().max(1.0));
        }
    }
}

#[test]
fn a_saved_posterior_reloads_and_gives_the_same_predictive() {
    let s = setup();
    let data = examples();
    for structure in [Structure::Kron, Structure::Diag, Structure::Full] {
        let post = fit(&s, &data, &cfg(structure, Positions::Expand));
        let deltas = vec![0.7; post.blocks.len()];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("posterior.safetensors");
        post.save(&path, &deltas).unwrap();
        let meta: laplace_lora::laplace::posterior::PosteriorMeta = serde_json::from_value(serde_json::to_value(post.meta()).unwrap()).unwrap();
        let (back, d2) = Posterior::load(&path, &meta).unwrap();
        assert_eq!(d2, deltas);
        let all: Vec<usize> = (0..post.blocks.len()).collect();
        assert_eq!(back.log_marglik(&all, 0.7), post.log_marglik(&all, 0.7));
        let sig = |p: &Posterior| -> Vec<f64> {
            let g = Group { blocks: all.clone(), deltas: deltas.clone() };
            functional_of(&s, p, &data, 2, Rows::Raw, &[g], &[]).iter().flat_map(|f| f.sigma[0].clone()).collect()
        };
        // f64 eigenpairs round-trip exactly through safetensors: identical predictive.
        assert_eq!(sig(&back), sig(&post), "{structure:?}");
    }
}

/// The path a GPU takes (`ops::with_gpu_path`: candle's kernels with hand-written backward
/// passes, the frozen matmul through the back end's matmul, and the backward columns stacked into
/// one pass over a replicated, padded batch) gives the CPU path's curvature and Sigma_f, for every
/// structure and position variant: the same f32 arithmetic in another order, 1e-5 relative on
/// the log marginal likelihood and 1e-4 on Sigma_f (as the dense comparisons above).
#[test]
fn gpu_path_gives_the_same_curvature_and_functional_variance() {
    use laplace_lora::model::ops::with_gpu_path;
    let s = setup();
    let data = examples();
    let cases = [
        (Structure::Kron, Positions::Expand),
        (Structure::Kron, Positions::Reduce),
        (Structure::Kron, Positions::Last),
        (Structure::Diag, Positions::Expand),
        (Structure::Full, Positions::Reduce),
    ];
    for (structure, positions) in cases {
        let c = cfg(structure, positions);
        let cpu = fit(&s, &data, &c);
        let gpu = with_gpu_path(|| fit(&s, &data, &c));
        let all: Vec<usize> = (0..cpu.blocks.len()).collect();
        let (a, b) = (cpu.log_marglik(&all, 0.7), gpu.log_marglik(&all, 0.7));
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{structure:?} {positions:?}: log marglik {a} vs {b}");
        // Both kinds of rows: the centred ones take K - 1 stacked columns with per-item seeds.
        let sig = |p: &Posterior, rows: Rows| -> Vec<Vec<f64>> {
            let g = Group { blocks: all.clone(), deltas: vec![0.7; all.len()] };
            functional_of(&s, p, &data, 2, rows, &[g], &[]).iter().map(|f| f.sigma[0].clone()).collect()
        };
        for rows in [Rows::Raw, Rows::Centred] {
            let (sc, sg) = (sig(&cpu, rows), with_gpu_path(|| sig(&gpu, rows)));
            for (x, y) in sc.iter().zip(&sg) {
                for a in 0..K {
                    for b in 0..K {
                        let scale = (x[a * K + a] * x[b * K + b]).sqrt();
                        assert!(
                            (x[a * K + b] - y[a * K + b]).abs() <= 1e-4 * scale,
                            "{structure:?} {positions:?} {rows:?}: Sigma_f[{a},{b}] {} vs {}",
                            x[a * K + b],
                            y[a * K + b]
                        );
                    }
                }
            }
        }
    }
}

/// A replicated batch run in passes of `reps` columns (the last pass part-filled and padded with
/// zeros) gives each column the probe gradients that one backward pass per column gives.
#[test]
fn replicated_passes_give_each_column_its_own_gradients() {
    use laplace_lora::laplace::curvature::TappedBatch;
    let s = setup();
    let data = examples();
    let idx = [0usize, 2];
    let cols: Vec<Tensor> =
        (0..3).map(|c| Tensor::new(&[[1.0f32 + c as f32, -0.5, 0.25 * c as f32], [0.3, 2.0 - c as f32, -1.0]], &Device::Cpu).unwrap()).collect();
    // Per entry: the column-ordered rows of every pass, concatenated.
    let rows = |reps: usize| -> Vec<Tensor> {
        let tb = TappedBatch::forward_with(&s.model, &s.lora, &data, &idx, &ANSWER, 0, reps).unwrap();
        let passes = tb.backward(&cols).unwrap();
        assert_eq!(passes.len(), 3usize.div_ceil(reps));
        tb.tap
            .entries
            .iter()
            .map(|e| {
                let parts: Vec<Tensor> = passes.iter().map(|(g, used)| tb.replicas(g.get(e.probe.as_tensor()).unwrap(), *used).unwrap()).collect();
                Tensor::cat(&parts, 0).unwrap()
            })
            .collect()
    };
    let (one, two) = (rows(1), rows(2));
    assert_eq!(one.len(), two.len());
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(a.dims(), b.dims());
        let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        // The same f32 arithmetic on more rows: 1e-5 relative.
        assert!(d <= 1e-5 * scale, "probe gradients differ by {d} (scale {scale})");
        assert!(scale > 1e-6, "the gradients are not all zero");
    }
}

/// Low-rank factors at a tiny prior precision: Sigma_f = J (F_k + delta I)^-1 J^T with F_k the
/// dense KFAC of the kept eigenpairs, solved densely, at delta = 1e-4. There the Jacobian mass
/// outside the kept eigenvectors weighs 1/delta = 1e4, so it must be formed as |M - Q Q^T M|^2 in
/// f64: on the training examples the kept basis (k = 16 >= the 15 training positions) holds
/// nearly all of each M, and |M|^2 - |M~|^2 from f32 values is round-off. Measured worst
/// relative errors: 5e-7 to 8e-7 with the f64 residual, 1.3e-5 (delta 1e-4) and 1.7e-5 (1e-6)
/// with total minus kept: the bound 3e-6 tells them apart.
#[test]
fn low_rank_residual_at_a_tiny_prior_precision_matches_a_dense_solve() {
    let s = setup();
    let data = examples();
    for delta in [1e-4, 1e-6] {
        let c = LaplaceConfig { low_rank_threshold: 16, low_rank_k: 16, ..cfg(Structure::Kron, Positions::Expand) };
        let post = fit(&s, &data, &c);
        assert!(post.basis.iter().any(|b| matches!(b, BlockBasis::Kron { x, .. } if x.k < x.n)), "no low-rank factor");
        let (p, kron) = dense_kron(&post);
        let mut m = kron.clone();
        (0..p).for_each(|i| m[i * p + i] += delta);
        let l = cholesky(&m, p);
        let all: Vec<usize> = (0..post.blocks.len()).collect();
        let vars = block_vars(&s, &post.blocks);
        // Raw rows, and the centred ones (K - 1 passes; the residual rows are slotted after the
        // f64 residual is formed) against C (J Sigma J^T) C.
        for rows in [Rows::Raw, Rows::Centred] {
            let g = Group { blocks: all.clone(), deltas: vec![delta; all.len()] };
            let fs = functional_of(&s, &post, &data, 2, rows, &[g], std::slice::from_ref(&all));
            // Raw: 3e-6 (the total-minus-kept residual this guards against was at 1.3e-5). Centred:
            // the centred entries are differences of the raw ones, so f32 Jacobians carry the
            // common mode's rounding into them: centring the raw rows' Sigma_f in f64 was 1.9e-5
            // from the dense C Sigma_f C at delta 1e-6, the centred rows 1.0e-5; 3e-5 for both.
            let tol = match rows {
                Rows::Raw => 3e-6,
                Rows::Centred => 3e-5,
            };
            let mut worst: f64 = 0.0;
            for (e, f) in data.iter().zip(&fs) {
                let (j, _) = dense_jacobian(&s, e, &vars);
                let sol: Vec<Vec<f64>> = (0..K).map(|c| solve(&l, p, &j[c])).collect();
                let raw: Vec<f64> = (0..K * K).map(|i| j[i / K].iter().zip(&sol[i % K]).map(|(x, y)| x * y).sum()).collect();
                let dense = as_rows(&raw, K, rows);
                let cached = f.spectral[0].sigma_f(delta, &SpectralGrid::for_deltas(1e-4, 1e4, 200));
                for a in 0..K {
                    for b in 0..K {
                        let want = dense[a * K + b];
                        let scale = (want.abs()).max((f.sigma[0][a * K + a] * f.sigma[0][b * K + b]).sqrt() * 1e-3);
                        let got = f.sigma[0][a * K + b];
                        worst = worst.max((got - want).abs() / scale);
                        assert!((got - want).abs() <= tol * scale, "delta {delta} {rows:?}: Sigma_f[{a},{b}] {got} vs dense {want}");
                        // The spectral cache carries the same residual (its zero bin is exact at lambda = 0).
                        assert!((cached[a * K + b] - want).abs() <= 1e-2 * scale, "{rows:?}: cached Sigma_f[{a},{b}] {} vs dense {want}", cached[a * K + b]);
                    }
                }
            }
            eprintln!("low-rank Sigma_f at delta {delta} ({rows:?}): worst relative error {worst:.2e}");
        }
    }
}

/// The cross-covariance of the training items behind a prediction, k(x, x_n) = J(x) Sigma J(x_n)^T
/// (laplace::kernel), equals the dense product with Sigma = (KFAC + delta I)^-1 solved directly:
/// full-rank factors at three priors, and low-rank factors at a tiny prior, where the Jacobian
/// outside the kept eigenvectors (weighed by 1/delta) must enter the cross term too.
#[test]
fn cross_kernel_equals_the_dense_j_sigma_j() {
    use laplace_lora::laplace::kernel::cross_kernel;
    let s = setup();
    let data = examples();
    let x = Encoded { ids: vec![4, 21, 30, 24, 3], label: 0, num_choices: K };
    let full_rank = cfg(Structure::Kron, Positions::Expand);
    let low_rank = LaplaceConfig { low_rank_threshold: 16, low_rank_k: 16, ..full_rank.clone() };
    for (c, deltas) in [(full_rank, vec![0.05, 1.0, 30.0]), (low_rank, vec![1e-4])] {
        let post = fit(&s, &data, &c);
        let low = post.basis.iter().any(|b| matches!(b, BlockBasis::Kron { x, .. } if x.k < x.n));
        assert_eq!(low, c.low_rank_k == 16, "the low-rank case has a low-rank factor, the other none");
        let (p, kron) = dense_kron(&post);
        let all: Vec<usize> = (0..post.blocks.len()).collect();
        let vars = block_vars(&s, &post.blocks);
        let (jx, _) = dense_jacobian(&s, &x, &vars);
        for delta in deltas {
            let mut m = kron.clone();
            (0..p).for_each(|i| m[i * p + i] += delta);
            let l = cholesky(&m, p);
            let g = Group { blocks: all.clone(), deltas: vec![delta; all.len()] };
            // Raw rows against J(x) Sigma J(x_n)^T; centred rows (K - 1 passes) against
            // C J(x) Sigma J(x_n)^T C, both items centred over their K choices.
            for rows in [Rows::Raw, Rows::Centred] {
                let (mu, ks) =
                    cross_kernel(&s.model, &s.lora, &post, &g, &x, &data, &ANSWER, 0, 2, rows, &AtomicBool::new(false), &mut |_, _| {}).unwrap().unwrap();
                assert_eq!((mu.len(), ks.len()), (K, data.len()));
                let centre = |m: Vec<f64>| as_rows(&m, K, rows);
                let sol_x: Vec<Vec<f64>> = (0..K).map(|c| solve(&l, p, &jx[c])).collect();
                let var_x = centre((0..K * K).map(|i| jx[i / K].iter().zip(&sol_x[i % K]).map(|(u, v)| u * v).sum()).collect());
                for (e, kk) in data.iter().zip(&ks) {
                    let (jn, _) = dense_jacobian(&s, e, &vars);
                    let sol_n: Vec<Vec<f64>> = (0..K).map(|c| solve(&l, p, &jn[c])).collect();
                    let want = centre((0..K * K).map(|i| jx[i / K].iter().zip(&sol_n[i % K]).map(|(u, v)| u * v).sum()).collect());
                    let var_n = centre((0..K * K).map(|i| jn[i / K].iter().zip(&sol_n[i % K]).map(|(u, v)| u * v).sum()).collect());
                    for a in 0..K {
                        for b in 0..K {
                            // f32 Jacobians: 1e-4 relative to the scale sqrt(Var f_a(x) Var f_b(x_n)).
                            let scale = (var_x[a * K + a] * var_n[b * K + b]).sqrt();
                            let (got, want) = (kk[a * K + b], want[a * K + b]);
                            assert!(
                                (got - want).abs() <= 1e-4 * scale,
                                "delta {delta} low-rank {} {rows:?}: k[{a},{b}] {got} vs dense {want} (scale {scale})",
                                c.low_rank_k
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The curvature pass's forward is the MAP adapter's on the training split: the split's MAP
/// metrics read its logits instead of running an evaluation pass of their own. They equal the
/// evaluation pass's (no graph, batches grouped by tokens) to f32 summation order, 1e-5 of the
/// largest logit, with -inf where an item lacks a class; items with 2 and 3 choices, in batches
/// that mix them.
#[test]
fn curvature_pass_logits_are_the_evaluation_pass_logits() {
    use laplace_lora::laplace::curvature::collect;
    let s = setup();
    let mut data = examples();
    data.push(Encoded { ids: vec![4, 30, 3], label: 1, num_choices: 2 });
    data[0].num_choices = 2;
    data[0].label = 1;
    let c = cfg(Structure::Kron, Positions::Reduce);
    let blocks = subset_blocks(&s.lora, Subset::All);
    let curv = collect(&s.model, &s.lora, &blocks, &data, &ANSWER, 0, 3, &c, &AtomicBool::new(false), &mut |_, _| {}).unwrap().unwrap();
    let eval = laplace_lora::train::predict_logits(&s.model, Some(&s.lora), &data, &ANSWER, 0, 8, &AtomicBool::new(false), &mut |_, _| {}).unwrap().unwrap();
    assert_eq!(curv.map_logits.len(), data.len());
    let scale = eval.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in curv.map_logits.iter().zip(&eval).enumerate() {
        assert_eq!(a.len(), K, "item {i}");
        for c in 0..K {
            if c >= data[i].num_choices {
                assert!(a[c] == f64::NEG_INFINITY && b[c] == f64::NEG_INFINITY, "item {i} class {c}: {} / {}", a[c], b[c]);
            } else {
                assert!((a[c] - b[c]).abs() <= 1e-5 * scale, "item {i} class {c}: curvature pass {} vs evaluation pass {}", a[c], b[c]);
            }
        }
    }
}
