//! The shared-prefix forward of evaluation passes (`model::prefix`): the tokens every prompt of a
//! batch starts with run once, every row's suffix attends to their one copy of keys and values.
//! It must give the answer logits of the plain forward (the same sums in another order: 1e-5 of
//! the largest logit), on the tiny model with and without an adapter, on the path a GPU takes,
//! and on the default model's real prompts.

#[path = "common/bruteforce.rs"]
mod bruteforce;
use bruteforce::{setup, ANSWER};
use laplace_lora::model::prefix::without_shared_prefix;
use laplace_lora::model::{Batch, ForwardOpts, LoadedModel};
use laplace_lora::train::{predict_logits, Encoded};
use std::sync::atomic::AtomicBool;

/// Largest |a - b| over finite entries, relative to the largest |b|; -inf must match -inf.
fn rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let scale = b.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let mut worst = 0.0f64;
    for (ra, rb) in a.iter().zip(b) {
        for (x, y) in ra.iter().zip(rb) {
            if x.is_finite() || y.is_finite() {
                worst = worst.max((x - y).abs() / scale);
            }
        }
    }
    worst
}

/// Prompts sharing `shared` leading tokens, of different lengths (right padding in the batch).
fn prompts(shared: &[u32]) -> Vec<Encoded> {
    let tails: [&[u32]; 5] = [&[20, 31, 22, 3], &[23, 3], &[25, 26, 27, 28, 29, 3], &[30, 3], &[24, 26, 3]];
    tails.iter().enumerate().map(|(i, t)| Encoded { ids: shared.iter().chain(t.iter()).copied().collect(), label: i % 2, num_choices: 2 + i % 2 }).collect()
}

#[test]
fn shared_prefix_gives_the_plain_forward_logits_on_the_tiny_model() {
    let s = setup();
    let cancel = AtomicBool::new(false);
    for shared in [&[4u32, 12, 13, 14, 15, 16, 17][..], &[4, 12, 13, 14][..], &[4, 12][..]] {
        let data = prompts(shared);
        for lora in [None, Some(&s.lora)] {
            // Batches of 5 (all rows) and 2 (a short last batch of one row: no prefix there).
            for batch in [5, 2] {
                let got = predict_logits(&s.model, lora, &data, &ANSWER, 0, batch, &cancel, &mut |_, _| {}).unwrap().unwrap();
                let want = without_shared_prefix(|| predict_logits(&s.model, lora, &data, &ANSWER, 0, batch, &cancel, &mut |_, _| {}).unwrap().unwrap());
                let d = rel_diff(&got, &want);
                assert!(d <= 1e-5, "prefix {} tokens, adapter {}, batch {batch}: logits differ by {d:.2e}", shared.len(), lora.is_some());
            }
        }
    }
}

/// Rows stay independent under the split: changing one row's suffix token moves that row's
/// logits and no other's (a layout mix-up between the rows' suffixes would move others).
#[test]
fn the_prefixed_and_plain_forwards_differ_when_the_prompts_do() {
    let s = setup();
    let data = prompts(&[4, 12, 13, 14, 15, 16]);
    let mut other = data.clone();
    // Same prefix, one suffix token changed in row 2: only row 2's logits may move.
    other[2].ids[7] = 27;
    let cancel = AtomicBool::new(false);
    let a = predict_logits(&s.model, Some(&s.lora), &data, &ANSWER, 0, 5, &cancel, &mut |_, _| {}).unwrap().unwrap();
    let b = predict_logits(&s.model, Some(&s.lora), &other, &ANSWER, 0, 5, &cancel, &mut |_, _| {}).unwrap().unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = rel_diff(std::slice::from_ref(x), std::slice::from_ref(y));
        if i == 2 {
            assert!(d > 1e-4, "row 2 changed but its logits did not");
        } else {
            assert!(d <= 1e-6, "row {i} moved by {d:.2e} when only row 2 changed: the rows are not independent");
        }
    }
}

/// The same on the path a GPU takes (`with_gpu_path`: candle's composed attention for the prefix
/// sequence, the frozen matmul through the back end).
#[test]
fn shared_prefix_matches_on_the_gpu_path() {
    use laplace_lora::model::ops::with_gpu_path;
    let s = setup();
    let data = prompts(&[4, 12, 13, 14, 15, 16]);
    let cancel = AtomicBool::new(false);
    with_gpu_path(|| {
        let got = predict_logits(&s.model, Some(&s.lora), &data, &ANSWER, 0, 5, &cancel, &mut |_, _| {}).unwrap().unwrap();
        let want = without_shared_prefix(|| predict_logits(&s.model, Some(&s.lora), &data, &ANSWER, 0, 5, &cancel, &mut |_, _| {}).unwrap().unwrap());
        let d = rel_diff(&got, &want);
        assert!(d <= 1e-5, "gpu path: logits differ by {d:.2e}");
    });
}

/// Only passes nobody differentiates take it: a forward with a graph gives the same logits with
/// the shared-prefix switch on or off (it is not used), and so do its gradients.
#[test]
fn a_differentiated_forward_is_not_split() {
    let s = setup();
    let data = prompts(&[4, 12, 13, 14, 15, 16]);
    let p: Vec<&[u32]> = data.iter().map(|e| e.ids.as_slice()).collect();
    let nc: Vec<usize> = data.iter().map(|e| e.num_choices).collect();
    let batch = Batch::new(&p, &nc, ANSWER.len(), 0, s.model.device()).unwrap();
    let run = || {
        let mut opts = ForwardOpts::new(Some(&s.lora));
        let f = s.model.answer_logits(&batch, &ANSWER, &mut opts).unwrap();
        let g = f.sum_all().unwrap().backward().unwrap();
        let ga = g.get(s.lora.layers[0].a.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (f.flatten_all().unwrap().to_vec1::<f32>().unwrap(), ga)
    };
    let (f1, g1) = run();
    let (f2, g2) = without_shared_prefix(run);
    assert_eq!(f1, f2);
    assert_eq!(g1, g2);
}

#[test]
fn shared_prefix_gives_the_plain_forward_logits_on_the_default_model() {
    let Some(files) = laplace_lora::testing::default_model_if_present() else {
        eprintln!("\n!!!!! SKIPPED: the default model is not in the cache; run `laplace-lora fetch-model` first !!!!!\n");
        return;
    };
    let m = LoadedModel::load(&files, &candle_core::Device::Cpu).expect("the cached default model loads");
    let texts = [
        laplace_lora::data::boolq_prompt("Will is holding a picture of a piano.", "Is the picture of a musical instrument?"),
        laplace_lora::data::boolq_prompt("On the word test, Tara wrote \"slow\" next to \"fast\".", "Is \"fast\" the opposite of \"slow\"?"),
        laplace_lora::data::boolq_prompt("The kettle on the stove has been boiling for ten minutes.", "Is the water hot?"),
    ];
    let data: Vec<Encoded> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Encoded { ids: laplace_lora::model::tokenizer::encode(&m.tokenizer, t).unwrap(), label: i % 2, num_choices: 2 })
        .collect();
    let shared = laplace_lora::model::prefix::common_prefix(
        &data.iter().map(|e| e.ids.clone()).collect::<Vec<_>>(),
        &data.iter().map(|e| e.ids.len()).collect::<Vec<_>>(),
    );
    assert!(shared >= 8, "the BoolQ instruction should give a shared prefix of about 10 tokens, got {shared}");
    let answer: Vec<u32> = [" True", " False"].iter().map(|a| laplace_lora::model::tokenizer::encode(&m.tokenizer, a).unwrap()[0]).collect();
    let cancel = AtomicBool::new(false);
    let got = predict_logits(&m.model, None, &data, &answer, 0, 3, &cancel, &mut |_, _| {}).unwrap().unwrap();
    let want = without_shared_prefix(|| predict_logits(&m.model, None, &data, &answer, 0, 3, &cancel, &mut |_, _| {}).unwrap().unwrap());
    let d = rel_diff(&got, &want);
    eprintln!("default model, {shared} shared tokens: logits differ by {d:.2e} of the largest");
    assert!(d <= 1e-5, "default model: logits differ by {d:.2e}");
}
