//! exp over slices in a form the compiler vectorises: the SwiGLU gate and the attention softmax
//! call exp ~30 million times per LoRA step, and libm's scalar `expf` was 3% of the step in `perf`.
//!
//! e^x = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split into a
//! short high part and a low correction so that n ln 2 is exact to f32 precision); e^r from its
//! degree-6 Taylor polynomial (truncation r^7/7! < 2.3e-8 relative at |r| = 0.347), 2^n built in the
//! exponent bits. Inputs below -87.3 give 0 and above 88.7 give +inf (as expf over/underflows);
//! NaN stays NaN.

use std::mem::MaybeUninit;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4; // 0x3f318000: 9 significant bits, n * LN2_HI exact for |n| < 2^15
const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 - LN2_HI
/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

#[inline(always)]
fn exp1(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.7);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Horner form of 1 + r + r^2/2! + ... + r^6/6!
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n as two factors 2^(n/2) 2^(n - n/2), both normal for n in [-126, 128] (2^128 alone is not).
    // n as an integer from the bits of `shifted` (its low mantissa bits hold n + 2^22), not by
    // `n as i32`: Rust's saturating float-to-int conversion is left scalar by the vectoriser.
    let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let (n1, n2) = (n / 2, n - n / 2);
    let y = p * f32::from_bits(((n1 + 127) as u32) << 23) * f32::from_bits(((n2 + 127) as u32) << 23);
    // Selects, not branches: NaN passes through, the clamped ends saturate like expf.
    let y = if x < -87.3 { 0.0 } else { y };
    let y = if x > 88.7 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// v[i] = e^(v[i]) for every element.
#[cfg(test)]
pub fn exp_in_place(v: &mut [f32]) {
    dispatch(v, exp_body, |v| unsafe { exp_avx2(v) }, |v| unsafe { exp_avx512(v) })
}

/// v = softmax(v): e^(v_i - max v) / sum_j e^(v_j - max v), for a non-empty finite row (the
/// attention's visible keys). Max and sum run over 16 independent lanes (a single running f32 sum
/// or max cannot be reordered, so the compiler leaves it scalar: in `perf` the attention's softmax
/// was a fifth of the attention at 256 tokens).
pub fn softmax_in_place(v: &mut [f32]) {
    dispatch(v, softmax_body, |v| unsafe { softmax_avx2(v) }, |v| unsafe { softmax_avx512(v) })
}

/// Runs the body compiled for the widest vector path `model::isa` allows: the baseline (SSE2, 4
/// lanes), AVX2 + FMA (8) or AVX-512F (16). Rust contracts no multiply and add into an FMA and
/// every body adds in the same order, so all three give the same bits.
#[inline(always)]
fn dispatch(v: &mut [f32], base: fn(&mut [f32]), avx2: impl Fn(&mut [f32]), avx512: impl Fn(&mut [f32])) {
    #[cfg(target_arch = "x86_64")]
    {
        match super::isa::f32_path() {
            "avx512" => return avx512(v),
            "avx2" => return avx2(v),
            _ => {}
        }
    }
    let _ = (&avx2, &avx512);
    base(v)
}

#[inline(always)]
#[cfg(test)]
fn exp_body(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = exp1(*x);
    }
}

const LANES: usize = 16;

#[inline(always)]
fn softmax_body(v: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
        }
    }
    let max = chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sums = [0f32; LANES];
    let mut chunks = v.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            let e = exp1(c[k] - max);
            c[k] = e;
            sums[k] += e;
        }
    }
    // The tail (the causal rows of a short prompt are mostly tail) as one more full chunk padded
    // with -inf, whose exponentials are 0: vector code instead of up to 15 scalar exponentials.
    let tail = chunks.into_remainder();
    let mut pad = [f32::NEG_INFINITY; LANES];
    pad[..tail.len()].copy_from_slice(tail);
    for k in 0..LANES {
        let e = exp1(pad[k] - max);
        pad[k] = e;
        sums[k] += e;
    }
    let n = tail.len();
    tail.copy_from_slice(&pad[..n]);
    let inv = 1.0 / sums.iter().fold(0.0, |a, b| a + b);
    for x in v.iter_mut() {
        *x *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[cfg(test)]
unsafe fn exp_avx2(v: &mut [f32]) {
    exp_body(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[cfg(test)]
unsafe fn exp_avx512(v: &mut [f32]) {
    exp_body(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(v: &mut [f32]) {
    softmax_body(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_avx512(v: &mut [f32]) {
    softmax_body(v)
}

/// The SwiGLU gate y = silu(g) u = s g u with s = 1 / (1 + e^(-g)), in one pass (the
/// logistic, the product) instead of four over (N, 4h) tensors that do not fit in cache. Every
/// element of y is written (y need not be initialised: no zero fill first).
pub fn silu_mul_into(g: &[f32], u: &[f32], y: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    match super::isa::f32_path() {
        // SAFETY: the path says the CPU has these features.
        "avx512" => return unsafe { silu_mul_avx512(g, u, y) },
        "avx2" => return unsafe { silu_mul_avx2(g, u, y) },
        _ => {}
    }
    silu_mul_body(g, u, y)
}

/// Its backward in one pass: du = dy silu(g), dg = dy u s (1 + g (1 - s)); every element of dg
/// and du written.
pub fn silu_mul_grad(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [MaybeUninit<f32>], du: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    match super::isa::f32_path() {
        // SAFETY: as `silu_mul_into`.
        "avx512" => return unsafe { silu_mul_grad_avx512(g, u, dy, dg, du) },
        "avx2" => return unsafe { silu_mul_grad_avx2(g, u, dy, dg, du) },
        _ => {}
    }
    silu_mul_grad_body(g, u, dy, dg, du)
}

#[inline(always)]
fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + exp1(-x))
}

/// The loop of `silu_mul_into`, to be inlined into a caller compiled for a wide path (the packed
/// products' epilogues, `f32pack/swiglu.rs`).
#[inline(always)]
pub(crate) fn silu_mul_body(g: &[f32], u: &[f32], y: &mut [MaybeUninit<f32>]) {
    for ((yi, gi), ui) in y.iter_mut().zip(g).zip(u) {
        yi.write(logistic(*gi) * (gi * ui));
    }
}

/// The loop of `silu_mul_grad`, to be inlined as `silu_mul_body` is.
#[inline(always)]
pub(crate) fn silu_mul_grad_body(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [MaybeUninit<f32>], du: &mut [MaybeUninit<f32>]) {
    let n = g.len().min(u.len()).min(dy.len()).min(dg.len()).min(du.len());
    let (g, u, dy, dg, du) = (&g[..n], &u[..n], &dy[..n], &mut dg[..n], &mut du[..n]);
    for i in 0..n {
        let (x, s) = (g[i], logistic(g[i]));
        du[i].write(dy[i] * x * s);
        dg[i].write(dy[i] * u[i] * s * (1.0 + x * (1.0 - s)));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(g: &[f32], u: &[f32], y: &mut [MaybeUninit<f32>]) {
    silu_mul_body(g, u, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn silu_mul_avx512(g: &[f32], u: &[f32], y: &mut [MaybeUninit<f32>]) {
    silu_mul_body(g, u, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_grad_avx2(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [MaybeUninit<f32>], du: &mut [MaybeUninit<f32>]) {
    silu_mul_grad_body(g, u, dy, dg, du)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn silu_mul_grad_avx512(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [MaybeUninit<f32>], du: &mut [MaybeUninit<f32>]) {
    silu_mul_grad_body(g, u, dy, dg, du)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::values;

    fn exp(x: f32) -> f32 {
        let mut v = [x];
        exp_in_place(&mut v);
        v[0]
    }

    /// Against f64 exp over the whole finite range on a fine grid: within 4e-7 relative (a few f32
    /// ulps; libm's expf is within one), and the saturating ends.
    #[test]
    fn matches_exp_to_a_few_ulps() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        let mut v = vec![-1.0f32, 0.5, f32::NAN, 2.0];
        exp_in_place(&mut v);
        assert!((v[0] - (-1f32).exp()).abs() < 1e-7 && (v[3] - 2f32.exp()).abs() < 1e-6 && v[2].is_nan());
    }

    /// The softmax against f64 on rows of 1 to 300 (remainders of every length; scores up to 30 in
    /// size): within 2e-6 relative per entry (exp's 4e-7, the rounding of v - max, the f32 sum) or
    /// 1e-9 absolute, summing to 1 within 1e-6.
    #[test]
    fn softmax_matches_f64() {
        for n in (1..40).chain([255, 256, 300]) {
            let x = values(n, n as u64);
            let mut got = x.clone();
            softmax_in_place(&mut got);
            let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for (i, (g, w)) in got.iter().zip(&e).enumerate() {
                let w = w / total;
                assert!((*g as f64 - w).abs() <= 2e-6 * w + 1e-9, "n {n} entry {i}: {g} against {w}");
            }
            assert!((got.iter().map(|&g| g as f64).sum::<f64>() - 1.0).abs() < 1e-6, "n {n}");
        }
    }

    /// The vector builds this CPU has give the baseline's bits (same operations, same order).
    #[test]
    fn vector_builds_give_the_baseline_bits() {
        let x = values(1000, 7);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (mut e0, mut s0) = (x.clone(), x.clone());
        exp_body(&mut e0);
        softmax_body(&mut s0);
        #[cfg(target_arch = "x86_64")]
        {
            type Build = (&'static str, fn(&mut [f32]), fn(&mut [f32]));
            let mut builds: Vec<Build> = Vec::new();
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                builds.push(("avx2", |v| unsafe { exp_avx2(v) }, |v| unsafe { softmax_avx2(v) }));
            }
            if is_x86_feature_detected!("avx512f") {
                builds.push(("avx512", |v| unsafe { exp_avx512(v) }, |v| unsafe { softmax_avx512(v) }));
            }
            for (name, exp_f, softmax_f) in builds {
                let (mut e, mut s) = (x.clone(), x.clone());
                exp_f(&mut e);
                softmax_f(&mut s);
                assert_eq!(bits(&e), bits(&e0), "{name} exp");
                assert_eq!(bits(&s), bits(&s0), "{name} softmax");
            }
        }
    }
}
