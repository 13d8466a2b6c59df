//! Token saliency (gradient x input, `model::saliency`) against central finite differences of
//! the answer logits along each token's own embedding, on the tiny llama with a trained-looking
//! adapter (tests/common/bruteforce.rs).

#[path = "common/bruteforce.rs"]
mod bruteforce;

use bruteforce::*;
use candle_core::{Device, Tensor};
use laplace_lora::model::saliency::{answer_logits_shifted, token_saliency};

/// e_t . df_c/de_t = d/de f_c(E + eps e_t 1_t) at eps = 0: central differences at eps = +-1e-2
/// (truncation O(eps^2) relative, f32 rounding ~1e-7 / eps absolute), for every class and
/// token of three prompts, with and without the adapter.
#[test]
fn gradient_times_input_equals_finite_differences_along_each_embedding() {
    let s = setup();
    let eps = 1e-2;
    for lora in [Some(&s.lora), None] {
        for x in examples() {
            let sal = token_saliency(&s.model, lora, &x.ids, &ANSWER, x.num_choices).unwrap();
            let base = answer_logits_shifted(&s.model, lora, &x.ids, &ANSWER, x.num_choices, None).unwrap();
            assert_eq!(sal.per_class.len(), x.num_choices);
            for (a, b) in sal.logits.iter().zip(&base) {
                assert!((a - b).abs() < 1e-5, "the probe changed the logits: {a} vs {b}");
            }
            let e = s.model.embeddings(&x.ids).unwrap(); // (T, hidden)
            let (t, h) = e.dims2().unwrap();
            let scale = sal.per_class.iter().flatten().fold(0f64, |m, v| m.max(v.abs())).max(1e-3);
            for tok in 0..t {
                // eps e_t on row t, zero elsewhere.
                let mask: Vec<f32> = (0..t * h).map(|i| if i / h == tok { 1.0 } else { 0.0 }).collect();
                let dir = (Tensor::from_vec(mask, (t, h), &Device::Cpu).unwrap() * &e).unwrap();
                let plus = answer_logits_shifted(&s.model, lora, &x.ids, &ANSWER, x.num_choices, Some(&(&dir * eps).unwrap())).unwrap();
                let minus = answer_logits_shifted(&s.model, lora, &x.ids, &ANSWER, x.num_choices, Some(&(&dir * -eps).unwrap())).unwrap();
                for c in 0..x.num_choices {
                    let fd = (plus[c] - minus[c]) / (2.0 * eps);
                    let got = sal.per_class[c][tok];
                    assert!(
                        (got - fd).abs() <= 2e-3 * scale,
                        "lora {} token {tok} class {c}: gradient x input {got} vs finite difference {fd} (scale {scale})",
                        lora.is_some()
                    );
                }
            }
            // The centred saliency is the saliency of f_c - mean_k f_k: its rows sum to zero over classes.
            for tok in 0..t {
                let sum: f64 = (0..x.num_choices).map(|c| sal.centred(c)[tok]).sum();
                assert!(sum.abs() < 1e-9 * scale.max(1.0));
            }
        }
    }
}
