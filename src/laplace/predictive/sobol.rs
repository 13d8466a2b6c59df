//! Quasi-random Gaussian points for the K > 2 quadrature: a digitally shifted Sobol sequence
//! (Joe & Kuo's direction numbers, "new-joe-kuo-6.21201", dimensions 1-7) mapped through the
//! inverse normal CDF, and the special functions it needs.
//!
//! Why Sobol: the first 2^m points form a (t, m, d)-net, so every 1-D projection is perfectly
//! stratified and the integration error of a smooth integrand falls like N^-1 (log N)^d instead
//! of Monte Carlo's N^-1/2. A random digital shift (x XOR shift, fixed per dimension) keeps the net
//! property and moves the first point off u = 0, where the inverse CDF is -inf.

use std::sync::OnceLock;

/// The largest point set kept (per dimension): the K = 8 quadrature's 16,384 points.
pub const MAX_POINTS: usize = 1 << 14;
/// The most dimensions: K - 1 for K = 8 classes.
pub const MAX_DIM: usize = 7;

/// (degree s, coefficient bits a, initial direction numbers m_1..m_s) of the primitive
/// polynomials for dimensions 2..=7 (dimension 1 is the van der Corput sequence: all m_k = 1).
const JOE_KUO: [(u32, u32, &[u32]); MAX_DIM - 1] =
    [(1, 0, &[1]), (2, 1, &[1, 3]), (3, 1, &[1, 3, 1]), (3, 2, &[1, 1, 1]), (4, 1, &[1, 1, 3, 3]), (4, 4, &[1, 3, 5, 13])];

/// The 32 direction numbers v_k (as 32-bit fractions) of dimension `dim` (0-based).
fn directions(dim: usize) -> [u32; 32] {
    let mut v = [0u32; 32];
    if dim == 0 {
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = 1u32 << (31 - k);
        }
        return v;
    }
    let (s, a, m) = JOE_KUO[dim - 1];
    let s = s as usize;
    for k in 0..32 {
        v[k] = if k < s {
            m[k] << (31 - k)
        } else {
            // v_k = v_{k-s} ^ (v_{k-s} >> s) ^ XOR_{i=1}^{s-1} a_i v_{k-i}  (Bratley & Fox).
            let mut x = v[k - s] ^ (v[k - s] >> s);
            for i in 1..s {
                if (a >> (s - 1 - i)) & 1 == 1 {
                    x ^= v[k - i];
                }
            }
            x
        };
    }
    v
}

/// The first `n` points of the unshifted Sobol sequence in `dim` dimensions, as 32-bit
/// fractions, point-major (`out[p * dim + j]`), in Gray-code order (the same set as the natural
/// order for every prefix of length 2^m).
pub fn sobol_u32(n: usize, dim: usize) -> Vec<u32> {
    assert!((1..=MAX_DIM).contains(&dim), "Sobol points for 1..={MAX_DIM} dimensions");
    let dirs: Vec<[u32; 32]> = (0..dim).map(directions).collect();
    let mut out = vec![0u32; n * dim];
    let mut x = vec![0u32; dim];
    for p in 1..n {
        // x_p = x_{p-1} ^ v_c, c = index of the lowest zero bit of p - 1.
        let c = (!(p - 1)).trailing_zeros() as usize;
        for j in 0..dim {
            x[j] ^= dirs[j][c];
            out[p * dim + j] = x[j];
        }
    }
    out
}

/// Standard normal CDF, accurate in both tails (from libm's erfc).
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Inverse standard normal CDF for p in (0, 1): Abramowitz & Stegun 26.2.23 as a start
/// (|error| < 4.5e-4), then Halley steps on Phi(x) - p (cubic convergence: three reach f64
/// precision). The lower tail is solved directly and the upper one by symmetry, so that p close
/// to 1 loses nothing to 1 - p.
pub fn norm_inv(p: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0, "norm_inv needs 0 < p < 1, got {p}");
    if p > 0.5 {
        return -norm_inv(1.0 - p);
    }
    let t = (-2.0 * p.ln()).sqrt();
    let mut x = -(t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t));
    for _ in 0..4 {
        let e = norm_cdf(x) - p;
        let u = e / norm_pdf(x);
        x -= u / (1.0 + 0.5 * x * u);
    }
    x
}

/// Gaussian points z = Phi^-1(u) of the shifted Sobol sequence, dimension-major
/// (`z[j][p]`), MAX_POINTS of them: computed once per dimension count and shared.
pub struct GaussPoints {
    pub z: Vec<Vec<f32>>,
}

/// The fixed digital shift of dimension j (a SplitMix64 draw: any fixed value will do).
fn shift(j: usize) -> u32 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(j as u64 + 1);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((x ^ (x >> 31)) >> 32) as u32
}

pub fn gauss_points(dim: usize) -> &'static GaussPoints {
    static CACHE: [OnceLock<GaussPoints>; MAX_DIM] = [const { OnceLock::new() }; MAX_DIM];
    CACHE[dim - 1].get_or_init(|| {
        let u = sobol_u32(MAX_POINTS, dim);
        let z = (0..dim)
            .map(|j| {
                let s = shift(j);
                (0..MAX_POINTS).map(|p| norm_inv(((u[p * dim + j] ^ s) as f64 + 0.5) / 4_294_967_296.0) as f32).collect()
            })
            .collect();
        GaussPoints { z }
    })
}

/// Gauss-Legendre nodes and weights on [-1, 1] (Newton on P_n from the asymptotic guesses
/// cos(pi (i - 1/4) / (n + 1/2)); exact for polynomials of degree 2n - 1).
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            // P_n(z) and P_n'(z) by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * z * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 0 { 1.0 } else { p1 };
            let pm = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (z * pn - pm) / (z * z - 1.0);
            let dz = pn / dp;
            z -= dz;
            if dz.abs() < 1e-16 {
                break;
            }
        }
        x[i] = -z;
        x[n - 1 - i] = z;
        w[i] = 2.0 / ((1.0 - z * z) * dp * dp);
        w[n - 1 - i] = w[i];
    }
    (x, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sobol_matches_an_independent_implementation() {
        // scipy.stats.qmc.Sobol(7, scramble=False).random(16) (Joe & Kuo's numbers too).
        let want: [[f64; 7]; 16] = [
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
            [0.75, 0.25, 0.25, 0.25, 0.75, 0.75, 0.25],
            [0.25, 0.75, 0.75, 0.75, 0.25, 0.25, 0.75],
            [0.375, 0.375, 0.625, 0.875, 0.375, 0.125, 0.375],
            [0.875, 0.875, 0.125, 0.375, 0.875, 0.625, 0.875],
            [0.625, 0.125, 0.875, 0.625, 0.625, 0.875, 0.125],
            [0.125, 0.625, 0.375, 0.125, 0.125, 0.375, 0.625],
            [0.1875, 0.3125, 0.9375, 0.4375, 0.5625, 0.3125, 0.4375],
            [0.6875, 0.8125, 0.4375, 0.9375, 0.0625, 0.8125, 0.9375],
            [0.9375, 0.0625, 0.6875, 0.1875, 0.3125, 0.5625, 0.1875],
            [0.4375, 0.5625, 0.1875, 0.6875, 0.8125, 0.0625, 0.6875],
            [0.3125, 0.1875, 0.3125, 0.5625, 0.9375, 0.4375, 0.0625],
            [0.8125, 0.6875, 0.8125, 0.0625, 0.4375, 0.9375, 0.5625],
            [0.5625, 0.4375, 0.0625, 0.8125, 0.1875, 0.6875, 0.3125],
            [0.0625, 0.9375, 0.5625, 0.3125, 0.6875, 0.1875, 0.8125],
        ];
        // Gray-code order visits the same points; compare as sets of rows.
        let got = sobol_u32(16, 7);
        let mut rows: Vec<Vec<f64>> = (0..16).map(|p| (0..7).map(|j| got[p * 7 + j] as f64 / 4_294_967_296.0).collect()).collect();
        let mut want: Vec<Vec<f64>> = want.iter().map(|r| r.to_vec()).collect();
        rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
        want.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(rows, want);
    }

    #[test]
    fn sobol_prefixes_are_stratified_in_every_pair_of_dimensions() {
        // Each coordinate of the first 2^m points is a (0, m, 1)-net: exactly one point in every
        // cell of width 2^-m.
        let m = 10;
        let n = 1usize << m;
        let u = sobol_u32(n, MAX_DIM);
        for j in 0..MAX_DIM {
            let mut seen = vec![false; n];
            for p in 0..n {
                let cell = (u[p * MAX_DIM + j] >> (32 - m)) as usize;
                assert!(!seen[cell], "dimension {j}: two points in cell {cell}");
                seen[cell] = true;
            }
        }
        // Shifted points keep it (XOR with a constant permutes the cells).
        let g = gauss_points(3);
        let mut cells = vec![0usize; 64];
        for p in 0..4096 {
            let c = (norm_cdf(g.z[1][p] as f64) * 64.0) as usize;
            cells[c.min(63)] += 1;
        }
        assert!(cells.iter().all(|&c| c == 64), "{cells:?}");
    }

    #[test]
    fn normal_functions() {
        assert!((norm_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((norm_cdf(1.959963984540054) - 0.975).abs() < 1e-15);
        assert!((norm_cdf(-8.0) - 6.220960574271785e-16).abs() < 1e-28);
        for &p in &[1e-12, 2.3e-10, 1e-5, 0.01, 0.2, 0.5, 0.7, 0.975, 1.0 - 1e-9] {
            let x = norm_inv(p);
            let back = if p < 0.5 { norm_cdf(x) } else { 1.0 - norm_cdf(x) };
            let want = if p < 0.5 { p } else { 1.0 - p };
            assert!((back - want).abs() <= 1e-13 * want, "p {p}: x {x}, back {back}");
        }
        assert!((norm_inv(0.975) - 1.959963984540054).abs() < 1e-14);
    }

    #[test]
    fn gauss_legendre_is_exact_to_degree_2n_minus_1() {
        for n in [1usize, 2, 5, 16, 48] {
            let (x, w) = gauss_legendre(n);
            for deg in 0..2 * n {
                let got: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(deg as i32)).sum();
                let want = if deg % 2 == 1 { 0.0 } else { 2.0 / (deg as f64 + 1.0) };
                assert!((got - want).abs() < 1e-13, "n {n} degree {deg}: {got} vs {want}");
            }
        }
    }
}
