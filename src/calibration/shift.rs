//! Telling shifted items from in-distribution ones by a method's uncertainty: the AUROC of the
//! score 1 - max_k p_k (shifted items positive), which is the probability that a random shifted
//! item is scored above a random in-distribution one, ties counting half (the Mann-Whitney U
//! statistic over n_pos n_neg). 0.5: the uncertainty says nothing about the shift.

/// AUROC of `pos` scored above `neg`; NaN when either is empty. O((P + N) log(P + N)).
pub fn auroc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    // Mid-ranks of the pooled scores (ties share the mean of their ranks).
    let mut all: Vec<(f64, bool)> = pos.iter().map(|&s| (s, true)).chain(neg.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0; // ranks are 1-based
        rank_sum_pos += all[i..=j].iter().filter(|x| x.1).count() as f64 * mid;
        i = j + 1;
    }
    let (p, n) = (pos.len() as f64, neg.len() as f64);
    (rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n)
}

/// The shift score of one item: 1 - its top probability.
pub fn uncertainty(p: &[f64]) -> f64 {
    1.0 - super::top_label(p).1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the pair count by hand: P(pos > neg) + P(tie)/2 over all 3 x 2 pairs.
    #[test]
    fn auroc_is_the_pair_count() {
        let (pos, neg) = ([0.9, 0.5, 0.3], [0.5, 0.1]);
        // pairs: 0.9>0.5, 0.9>0.1, 0.5=0.5 (1/2), 0.5>0.1, 0.3<0.5, 0.3>0.1 -> 4.5 / 6
        assert!((auroc(&pos, &neg) - 4.5 / 6.0).abs() < 1e-15);
        assert_eq!(auroc(&[1.0, 2.0], &[0.0]), 1.0);
        assert_eq!(auroc(&[0.0], &[1.0, 2.0]), 0.0);
        assert!(auroc(&[], &[1.0]).is_nan());
    }
}
