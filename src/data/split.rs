//! Train / validation / test splits with seeded caps.
//!
//! A cap keeps the first N items after a seeded shuffle; the chosen items keep their file order
//! (so `predictions.jsonl` follows the test file). When there is no validation file,
//! `validation_fraction` of the (shuffled) training items become the validation split, before the
//! caps apply. An empty split after all this is an error.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::error::DataError;
use super::Item;

#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Vec<Item>,
    pub validation: Vec<Item>,
    pub test: Vec<Item>,
    /// Per role ("train", "validation", "test"), where its items came from: a path, or a known
    /// dataset's split (and how it was cut); empty when not recorded.
    pub origin: std::collections::BTreeMap<String, String>,
}

impl Splits {
    /// The ids of each split, for `splits.json`.
    pub fn ids(&self) -> serde_json::Value {
        let ids = |v: &[Item]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        let mut j = serde_json::json!({
            "train": ids(&self.train),
            "validation": ids(&self.validation),
            "test": ids(&self.test),
        });
        if !self.origin.is_empty() {
            j["origin"] = serde_json::json!(self.origin);
        }
        j
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitSpec {
    /// Share of the training items held out for validation; used only when there is no validation file.
    pub validation_fraction: f64,
    pub max_train: Option<usize>,
    pub max_validation: Option<usize>,
    pub max_test: Option<usize>,
    pub seed: u64,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec { validation_fraction: 0.2, max_train: None, max_validation: None, max_test: None, seed: 0 }
    }
}

// Distinct streams per split, so that capping one split does not correlate with another.
const SALT_HOLDOUT: u64 = 0x5eed_0001;
const SALT_TRAIN: u64 = 0x5eed_0002;
const SALT_VALIDATION: u64 = 0x5eed_0003;
const SALT_TEST: u64 = 0x5eed_0004;

/// Seeded permutation of 0..n.
pub(crate) fn permutation(n: usize, seed: u64, salt: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    idx.shuffle(&mut rng);
    idx
}

/// Keeps the first `cap` items of a seeded shuffle, in their original order.
fn cap(items: Vec<Item>, cap: Option<usize>, seed: u64, salt: u64) -> Vec<Item> {
    match cap {
        Some(n) if n < items.len() => {
            let mut keep: Vec<usize> = permutation(items.len(), seed, salt).into_iter().take(n).collect();
            keep.sort_unstable();
            let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
            keep.into_iter().filter_map(|i| slots[i].take()).collect()
        }
        _ => items,
    }
}

/// A seeded cap for an evaluation set (the `k`-th of the configuration): its own stream.
pub(crate) fn cap_items(items: Vec<Item>, n: Option<usize>, seed: u64, k: u64) -> Vec<Item> {
    cap(items, n, seed, 0x5eed_0100 + k)
}

pub fn make_splits(train: Vec<Item>, validation: Option<Vec<Item>>, test: Vec<Item>, spec: &SplitSpec) -> Result<Splits, DataError> {
    let (train, validation) = match validation {
        Some(v) => (train, v),
        None => {
            let f = spec.validation_fraction;
            if !(f > 0.0 && f < 1.0) {
                return Err(DataError::InvalidSpec(format!("validation_fraction must be strictly between 0 and 1 when there is no validation file, got {f}")));
            }
            let n = train.len();
            if n < 2 {
                return Err(DataError::EmptySplit {
                    split: "validation".into(),
                    detail: format!(" (no validation file, and the training set has {n} item(s): at least 2 are needed to hold some out)"),
                });
            }
            let n_val = ((n as f64 * f).round() as usize).clamp(1, n - 1);
            let perm = permutation(n, spec.seed, SALT_HOLDOUT);
            let mut is_val = vec![false; n];
            for &i in perm.iter().take(n_val) {
                is_val[i] = true;
            }
            let (mut tr, mut va) = (Vec::with_capacity(n - n_val), Vec::with_capacity(n_val));
            for (i, item) in train.into_iter().enumerate() {
                if is_val[i] {
                    va.push(item)
                } else {
                    tr.push(item)
                }
            }
            (tr, va)
        }
    };
    let splits = Splits {
        train: cap(train, spec.max_train, spec.seed, SALT_TRAIN),
        validation: cap(validation, spec.max_validation, spec.seed, SALT_VALIDATION),
        test: cap(test, spec.max_test, spec.seed, SALT_TEST),
        origin: Default::default(),
    };
    for (name, items, max) in
        [("train", &splits.train, spec.max_train), ("validation", &splits.validation, spec.max_validation), ("test", &splits.test, spec.max_test)]
    {
        if items.is_empty() {
            let detail = match max {
                Some(0) => format!(" (max_{name} = 0)"),
                _ => " (its file has no items)".to_string(),
            };
            return Err(DataError::EmptySplit { split: name.into(), detail });
        }
    }
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(prefix: &str, n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                id: format!("{prefix}{i}"),
                prompt: format!("q{i}\nAnswer:"),
                choices: vec!["x".into(), "y".into()],
                answer_labels: vec![" A".into(), " B".into()],
                label: i % 2,
            })
            .collect()
    }

    fn ids(v: &[Item]) -> Vec<String> {
        v.iter().map(|i| i.id.clone()).collect()
    }

    #[test]
    fn caps_are_seeded_subsets_in_file_order() {
        let spec = SplitSpec { max_train: Some(5), max_test: Some(3), seed: 7, ..Default::default() };
        let a = make_splits(items("t", 20), Some(items("v", 4)), items("s", 10), &spec).unwrap();
        let b = make_splits(items("t", 20), Some(items("v", 4)), items("s", 10), &spec).unwrap();
        assert_eq!(a.train.len(), 5);
        assert_eq!(a.validation.len(), 4); // no cap: whole file, in order
        assert_eq!(ids(&a.validation), vec!["v0", "v1", "v2", "v3"]);
        assert_eq!(a.test.len(), 3);
        assert_eq!(ids(&a.train), ids(&b.train), "same seed, same subset");
        // kept in file order
        let nums: Vec<usize> = a.train.iter().map(|i| i.id[1..].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
        // a different seed picks a different subset (overwhelmingly likely for 5 of 20)
        let c = make_splits(items("t", 20), Some(items("v", 4)), items("s", 10), &SplitSpec { seed: 8, ..spec.clone() }).unwrap();
        assert_ne!(ids(&a.train), ids(&c.train));
        // cap larger than the set keeps everything
        let d = make_splits(items("t", 4), Some(items("v", 2)), items("s", 2), &SplitSpec { max_train: Some(64), ..Default::default() }).unwrap();
        assert_eq!(ids(&d.train), vec!["t0", "t1", "t2", "t3"]);
    }

    #[test]
    fn validation_split_off_train_when_absent() {
        let spec = SplitSpec { validation_fraction: 0.25, max_train: Some(10), ..Default::default() };
        let s = make_splits(items("t", 40), None, items("s", 5), &spec).unwrap();
        assert_eq!(s.validation.len(), 10);
        assert_eq!(s.train.len(), 10); // 30 left, capped to 10
        let val: std::collections::HashSet<_> = ids(&s.validation).into_iter().collect();
        assert!(s.train.iter().all(|i| !val.contains(&i.id)), "train and validation are disjoint");
        // tiny sets still leave one on each side
        let s = make_splits(items("t", 2), None, items("s", 1), &SplitSpec::default()).unwrap();
        assert_eq!((s.train.len(), s.validation.len()), (1, 1));
    }

    #[test]
    fn empty_splits_are_errors() {
        let e = make_splits(items("t", 5), Some(items("v", 2)), items("s", 3), &SplitSpec { max_test: Some(0), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("test split is empty") && e.contains("max_test = 0"), "{e}");
        let e = make_splits(items("t", 1), None, items("s", 3), &SplitSpec::default()).unwrap_err().to_string();
        assert!(e.contains("validation split is empty"), "{e}");
        let e = make_splits(items("t", 5), Some(vec![]), items("s", 3), &SplitSpec::default()).unwrap_err().to_string();
        assert!(e.contains("validation split is empty"), "{e}");
        let e = make_splits(items("t", 5), None, items("s", 3), &SplitSpec { validation_fraction: 1.5, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("validation_fraction"), "{e}");
    }

    #[test]
    fn split_ids_json() {
        let s = make_splits(items("t", 3), Some(items("v", 1)), items("s", 2), &SplitSpec::default()).unwrap();
        assert_eq!(s.ids(), serde_json::json!({"train": ["t0","t1","t2"], "validation": ["v0"], "test": ["s0","s1"]}));
    }
}
