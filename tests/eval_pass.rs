//! The evaluation pass (`train::predict_logits`): batches grouped by a token budget and the
//! adapters entered detached (`ForwardOpts::no_grad`) must give the logits of the differentiable
//! forward, one example at a time, and record no graph.

#[path = "common/bruteforce.rs"]
mod bruteforce;

use bruteforce::{examples, setup, ANSWER, K};
use candle_core::Device;
use laplace_lora::model::{Batch, ForwardOpts};
use laplace_lora::train::{pass_batches, predict_logits, Encoded, PASS_MAX_ITEMS, PASS_TOKENS};
use std::sync::atomic::AtomicBool;

/// Logits of the pass (several grouping choices) against each example alone through the
/// differentiable forward (the training path), to 1e-5: the grouping and the detached adapters
/// change nothing but the summation order. The adapter's B is away from zero (`setup`), so an
/// adapter left out of the detached pass would show.
#[test]
fn evaluation_pass_matches_the_differentiable_forward() {
    let s = setup();
    let mut data = examples();
    data.extend((0..9).map(|i| Encoded {
        ids: (0..(3 + i % 5)).map(|j| 4 + ((i * 7 + j * 3) % 27) as u32).collect(),
        label: i % K,
        num_choices: if i % 4 == 0 { 2 } else { K },
    }));
    let reference: Vec<Vec<f32>> = data
        .iter()
        .map(|e| {
            let b = Batch::new(&[&e.ids], &[e.num_choices], K, 0, &Device::Cpu).unwrap();
            s.model.answer_logits(&b, &ANSWER, &mut ForwardOpts::new(Some(&s.lora))).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap()
        })
        .collect();
    for min_items in [1, 3, 64] {
        let got = predict_logits(&s.model, Some(&s.lora), &data, &ANSWER, 0, min_items, &AtomicBool::new(false), &mut |_, _| {}).unwrap().unwrap();
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            for c in 0..K {
                if c < data[i].num_choices {
                    assert!((g[c] - r[c] as f64).abs() < 1e-5, "min_items {min_items}, example {i}, class {c}: {} vs {}", g[c], r[c]);
                } else {
                    assert_eq!(g[c], f64::NEG_INFINITY);
                }
            }
        }
    }
}

/// With `no_grad` the adapters reach the logits (they differ from the base model's) but no
/// gradient reaches them: candle kept no graph of the pass.
#[test]
fn a_no_grad_forward_records_no_graph() {
    let s = setup();
    let e = &examples()[0];
    let b = Batch::new(&[&e.ids], &[K], K, 0, &Device::Cpu).unwrap();
    let mut opts = ForwardOpts::new(Some(&s.lora));
    opts.no_grad = true;
    let f = s.model.answer_logits(&b, &ANSWER, &mut opts).unwrap();
    let base = s.model.answer_logits(&b, &ANSWER, &mut ForwardOpts::new(None)).unwrap();
    let moved = (&f - &base).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(moved > 1e-3, "the detached adapters did not change the logits ({moved})");
    let g = f.sum_all().unwrap().backward().unwrap();
    for l in &s.lora.layers {
        assert!(g.get(l.a.as_tensor()).is_none() && g.get(l.b.as_tensor()).is_none(), "{}: a gradient reached a detached adapter", l.module_path());
    }
    // The same pass without no_grad does reach them (the check above can fail).
    let f = s.model.answer_logits(&b, &ANSWER, &mut ForwardOpts::new(Some(&s.lora))).unwrap();
    let g = f.sum_all().unwrap().backward().unwrap();
    assert!(s.lora.layers.iter().all(|l| g.get(l.b.as_tensor()).is_some()));
}

/// Every item once, in the given order; at least `min_items` a batch except the last; beyond
/// that, no batch past the token budget or the item cap.
#[test]
fn pass_batches_respect_the_budget() {
    let lens: Vec<usize> = (0..300).map(|i| 1 + (i * 37) % 400).collect();
    let data: Vec<Encoded> = lens.iter().map(|&n| Encoded { ids: vec![1; n], label: 0, num_choices: 2 }).collect();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    for min_items in [1, 4, 8, 100] {
        let b = pass_batches(&data, &order, min_items);
        assert_eq!(b.concat(), order, "min_items {min_items}: not every item once in order");
        for (j, batch) in b.iter().enumerate() {
            let longest = batch.iter().map(|&i| lens[i]).max().unwrap();
            if j + 1 < b.len() {
                assert!(batch.len() >= min_items, "batch {j} has {} < {min_items} items", batch.len());
            }
            if batch.len() > min_items {
                assert!(batch.len() * longest <= PASS_TOKENS && batch.len() <= PASS_MAX_ITEMS, "batch {j}: {} items x {longest} tokens", batch.len());
            }
        }
        // Short prompts are grouped beyond the minimum.
        if min_items < 8 {
            assert!(b[0].len() > min_items, "min_items {min_items}: the shortest prompts were not grouped ({})", b[0].len());
        }
    }
}
