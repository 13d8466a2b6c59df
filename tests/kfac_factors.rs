//! The KFAC factors themselves, against the dense GGN and hand-computed rows (MATH.md sections 3
//! and 4), on the tiny llama of tests/common/bruteforce.rs. Each test names the mistake it
//! catches: the 1/N of X, the 1/sqrt(T_n) of "expand", the padding mask, the Fisher's sampling.

#[path = "common/bruteforce.rs"]
mod bruteforce;

use bruteforce::*;
use candle_core::{Device, Tensor};
use laplace_lora::laplace::curvature::RowLayout;
use laplace_lora::laplace::posterior::{BlockBasis, Posterior};
use laplace_lora::laplace::{rel_fro, subset_blocks, CurvatureKind, LaplaceConfig, Positions, Structure, Subset};
use laplace_lora::train::Encoded;

const VARIANTS: [Positions; 3] = [Positions::Expand, Positions::Reduce, Positions::Last];

/// The diagonal blocks of a P x P matrix, one per posterior block.
fn blocks_of(post: &Posterior, m: &[f64]) -> Vec<Vec<f64>> {
    let p = post.n_params();
    let mut off = 0;
    post.sides
        .iter()
        .map(|&(nx, no)| {
            let n = nx * no;
            let b = (0..n).flat_map(|a| (0..n).map(move |b| (a, b))).map(|(a, b)| m[(off + a) * p + off + b]).collect();
            off += n;
            b
        })
        .collect()
}

/// KFAC over N copies of one example at one position is N times that example's exact GGN block:
/// X = (1/N) sum_n x x^T = x x^T and O = sum_n o o^T = N o o^T. Without X's 1/N the product is
/// N^2 times the block; counting an example twice, or a batch boundary mishandled (5 copies in
/// batches of 2, 2, 1), shows too.
#[test]
fn n_identical_one_position_examples_give_n_times_the_one_example_ggn() {
    let s = setup();
    let one = Encoded { ids: vec![17], label: 1, num_choices: K };
    let blocks = subset_blocks(&s.lora, Subset::All);
    let vars = block_vars(&s, &blocks);
    let (_, dense_one) = dense_ggn(&s, std::slice::from_ref(&one), &vars);
    let n = 5;
    let data = vec![one; n];
    for positions in VARIANTS {
        let post = fit(&s, &data, &cfg(Structure::Kron, positions));
        let (_, kron) = dense_kron(&post);
        for (i, (got, want)) in blocks_of(&post, &kron).iter().zip(blocks_of(&post, &dense_one)).enumerate() {
            let want: Vec<f64> = want.iter().map(|x| x * n as f64).collect();
            let err = rel_fro(got, &want);
            // f32 forward/backward: 1e-4 relative (as the one-example test).
            assert!(err < 1e-4, "{positions:?} block {i} ({}): KFAC differs from N x the one-example GGN by {err}", post.names[i]);
        }
    }
}

/// Batching changes which examples share a padded batch, never the factors: batch 1 (no padding)
/// and batches of 3 (prompts of 3, 5 and 7 tokens padded to 7) give the same X (x) O per block.
/// Letting padding rows into X, or weighting by the padded length instead of T_n, breaks this.
#[test]
fn batching_and_padding_leave_the_factors_unchanged() {
    let s = setup();
    let mut data = examples();
    data.push(Encoded { ids: vec![4, 30, 3, 8], label: 0, num_choices: K });
    for positions in VARIANTS {
        let c = cfg(Structure::Kron, positions);
        let one = fit_batched(&s, &data, &c, 1);
        let three = fit_batched(&s, &data, &c, 3);
        let (a, b) = (dense_kron(&one).1, dense_kron(&three).1);
        for (i, (x, y)) in blocks_of(&one, &a).iter().zip(blocks_of(&three, &b)).enumerate() {
            let err = rel_fro(&y, x);
            // The same f32 sums over other batch shapes: 1e-5 relative.
            assert!(err < 1e-5, "{positions:?} block {i} ({}): batch 3 differs from batch 1 by {err}", one.names[i]);
        }
        assert!((one.log_lik - three.log_lik).abs() < 1e-5 * one.log_lik.abs());
    }
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

fn close(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
}

/// The rows that enter X and O, by hand, for a batch of two examples padded to T = 2: example 0
/// has positions x00, x01 (T_0 = 2), example 1 has x10 and a padding row. MATH.md section 4:
/// expand: x_t / sqrt(T_n) and o_t at every real position (X = (1/N) sum_n (1/T_n) sum_t x x^T);
/// reduce: the mean x_bar_n and the sum o_bar_n; last: the rows at T_n.
#[test]
fn the_rows_entering_x_and_o_by_hand() {
    let dev = Device::Cpu;
    let (x00, x01, x10, pad) = ([1.0f32, 2.0], [3.0f32, -1.0], [0.5f32, 4.0], [9.0f32, 9.0]);
    let (o00, o01, o10, opad) = ([2.0f32], [-1.0f32], [3.0f32], [7.0f32]);
    let x = Tensor::new(&[x00, x01, x10, pad], &dev).unwrap();
    let o = Tensor::new(&[o00, o01, o10, opad], &dev).unwrap();
    let layout = RowLayout { t: 2, lengths: vec![2, 1] };
    let r2 = 1.0 / 2f32.sqrt();
    let v = |a: [f32; 2], s: f32| vec![a[0] * s, a[1] * s];
    // expand
    close(&rows(&layout.x_rows(&x, Positions::Expand).unwrap()), &[v(x00, r2), v(x01, r2), v(x10, 1.0), vec![0.0, 0.0]]);
    close(&rows(&layout.o_rows(&o, Positions::Expand).unwrap()), &[vec![2.0], vec![-1.0], vec![3.0], vec![0.0]]);
    // reduce
    close(&rows(&layout.x_rows(&x, Positions::Reduce).unwrap()), &[vec![2.0, 0.5], v(x10, 1.0)]);
    close(&rows(&layout.o_rows(&o, Positions::Reduce).unwrap()), &[vec![1.0], vec![3.0]]);
    // last
    close(&rows(&layout.x_rows(&x, Positions::Last).unwrap()), &[v(x01, 1.0), v(x10, 1.0)]);
    close(&rows(&layout.o_rows(&o, Positions::Last).unwrap()), &[vec![-1.0], vec![3.0]]);
    // The expand factor from those rows (before 1/N) is sum_n (1/T_n) sum_t x x^T, by hand:
    // (x00 x00^T + x01 x01^T)/2 + x10 x10^T = [[5, -0.5], [-0.5, 2.5]] + [[0.25, 2], [2, 16]].
    let xr = layout.x_rows(&x, Positions::Expand).unwrap();
    let f = rows(&xr.t().unwrap().matmul(&xr).unwrap());
    close(&f, &[vec![5.25, 1.5], vec![1.5, 18.5]]);
    // The LM head's layout: one row per example whatever the prompt length.
    let entry = laplace_lora::model::llama::TapEntry {
        layer: 0,
        input: Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap(),
        probe: candle_core::Var::zeros((2, 1), candle_core::DType::F32, &dev).unwrap(),
    };
    let head = RowLayout::for_entry(&entry, &[5, 2]).unwrap();
    assert_eq!((head.t, head.lengths.clone()), (1, vec![1, 1]));
}

/// The sampled Fisher replaces the K - 1 GGN columns by one column p - onehot(y~), y~ ~ p; its
/// expectation is diag(p) - p p^T, so the mean of many sampled curvatures is the exact GGN. On
/// the diagonal structure, 1,600 seeds: the error to the exact diagonal falls like 1/sqrt(S)
/// (measured 0.34, 0.085, 0.077, 0.024 after 25, 100, 400, 1,600 draws: S = 25 -> 1,600 should
/// divide it by 8) and ends below 0.05. A Fisher built from the most likely label instead of a
/// sample (or from the true label: the empirical Fisher) stays biased and fails both bounds.
#[test]
fn the_sampled_fisher_averages_to_the_exact_ggn() {
    let s = setup();
    let data = examples();
    let diag = |post: &Posterior| -> Vec<f64> {
        post.basis
            .iter()
            .flat_map(|b| match b {
                BlockBasis::Diag { d } => d.clone(),
                _ => unreachable!(),
            })
            .collect()
    };
    let exact = diag(&fit(&s, &data, &cfg(Structure::Diag, Positions::Expand)));
    let mut sum = vec![0.0; exact.len()];
    let mut err_at = Vec::new();
    for seed in 0..1600u64 {
        let c = LaplaceConfig { curvature: CurvatureKind::Fisher, seed, ..cfg(Structure::Diag, Positions::Expand) };
        let d = diag(&fit(&s, &data, &c));
        sum.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        if [25, 100, 400, 1600].contains(&(seed + 1)) {
            let mean: Vec<f64> = sum.iter().map(|x| x / (seed + 1) as f64).collect();
            err_at.push(rel_fro(&mean, &exact));
        }
    }
    eprintln!("sampled Fisher: relative error to the exact GGN after 25, 100, 400, 1600 draws: {err_at:?}");
    assert!(err_at[3] < 0.05, "the mean of 1,600 sampled Fishers is {} from the exact GGN", err_at[3]);
    assert!(err_at[3] < 0.25 * err_at[0], "no 1/sqrt(S) convergence: {err_at:?}");
}
