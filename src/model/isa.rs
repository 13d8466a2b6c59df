//! Which vector instructions the CPU kernels use, and a switch that forces the AVX2 + FMA path
//! (the common laptop's) on a machine with AVX-512, so that the laptop case can be measured here.
//!
//! `LAPLACE_LORA_CPU=avx2` (or `bench --cpu avx2`, or `force_avx2()` before the first product)
//! makes every f32 product of the model's own kernels (the frozen projections, the attention core)
//! run gemm's AVX2 microkernels instead of its AVX-512 ones, and turns the bf16 kernels and the
//! packed f32 kernels (`f32pack/`) off: f32 frozen matrices then stay unpacked, for gemm.
//! What it does not reach: candle's own matmuls (the rank-8 LoRA products, the Laplace code's
//! factor and Jacobian products), which dispatch inside gemm once per process; they are ~1% of a
//! LoRA step's arithmetic (`bench::floor`), more of the KFAC pass's.

use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not decided yet, 1: native, 2: AVX2 forced.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Forces the AVX2 path from now on (call it before timing anything).
pub fn force_avx2() {
    MODE.store(2, Ordering::Relaxed);
}

/// Whether the AVX2 path is forced (by `force_avx2` or `LAPLACE_LORA_CPU=avx2`).
pub fn avx2_forced() -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => {
            let forced = std::env::var("LAPLACE_LORA_CPU").map(|v| v.trim().eq_ignore_ascii_case("avx2")).unwrap_or(false);
            MODE.store(if forced { 2 } else { 1 }, Ordering::Relaxed);
            forced
        }
        m => m == 2,
    }
}

/// The widest f32 product path in use: "avx512", "avx2", or "baseline".
pub fn f32_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if !avx2_forced() && is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "baseline"
}

/// A line naming the CPU and the paths in use, for bench reports.
pub fn describe() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let fam = |key: &str| {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default()
    };
    format!(
        "{model} (family {}, model {}); f32 products {}, bf16 kernels {}",
        fam("cpu family"),
        fam("model\t"),
        f32_path(),
        if super::bf16::available() { "yes (AVX512_BF16)" } else { "no" }
    )
}

/// dst (m x n) = [dst +] c lhs rhs through gemm, with gemm's arguments (strides in elements):
/// its AVX2 microkernels when `avx2` (callers pass `avx2_forced()`), gemm's own choice otherwise.
///
/// # Safety
/// As `gemm::gemm`: every address implied by the sizes and strides must be valid.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f32(
    avx2: bool,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    c: f32,
    par: gemm::Parallelism,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        if let Some(simd) = <gemm_common::simd::V3 as gemm_common::simd::MixedSimd<f32, f32, f32, f32>>::try_new() {
            use gemm_f32::microkernel::fma::f32 as ukr;
            gemm_common::gemm::gemm_basic_generic::<_, f32, 8, { ukr::MR_DIV_N * 8 }, { ukr::NR }, { ukr::MR_DIV_N }, { ukr::H_M }, { ukr::H_N }>(
                simd,
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                1.0,
                c,
                false,
                false,
                false,
                |a, b, acc| a * b + acc,
                &ukr::UKR,
                &ukr::H_UKR,
                false,
                par,
            );
            return;
        }
    }
    gemm::gemm(m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, 1.0, c, false, false, false, par);
}

#[cfg(test)]
mod tests {
    /// The forced AVX2 product equals gemm's own on a product with tails (same arithmetic, other
    /// kernels: f32 summation order only, 1e-5 relative).
    #[test]
    fn forced_avx2_product_matches_gemm() {
        let (m, n, k) = (37, 29, 53);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let run = |forced: bool| {
            let mut c = vec![0f32; m * n];
            unsafe {
                super::gemm_f32(
                    forced,
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    gemm::Parallelism::None,
                );
            }
            c
        };
        let (x, y) = (run(true), run(false));
        let mut want = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|l| a[i * k + l] as f64 * b[l * n + j] as f64).sum();
            }
        }
        for idx in 0..m * n {
            assert!((x[idx] as f64 - want[idx]).abs() < 1e-4, "forced {idx}: {} vs {}", x[idx], want[idx]);
            assert!((y[idx] as f64 - want[idx]).abs() < 1e-4, "native {idx}: {} vs {}", y[idx], want[idx]);
        }
    }
}
