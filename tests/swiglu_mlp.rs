//! The fused MLP (`fused::swiglu_mlp`: gate and up stacked, the SwiGLU gate inside the packed
//! products) against the same model with its matrices dense (candle's gemm and the composed
//! gate), on a right-padded batch of 4 x 10 tokens (40 rows: a 32-row tile and a tail): answer
//! logits and every adapter's gradient within 1e-5 relative, with adapters where the paper puts
//! them (q, v, head: every block's MLP fused, the last block's on its B read rows) and with
//! adapters on gate, up and down (those blocks take the separate projections, gate and up then
//! views of the stack).

use candle_core::Device;
use laplace_lora::lora::Target;
use laplace_lora::model::frozen::FrozenDtype;
use laplace_lora::model::{Config, Llama};

#[path = "common/adapted.rs"]
mod adapted;
use adapted::{adapters, logits_and_grads, rel};

/// A tiny llama with an MLP width of 96 (three panels of 32: the stack applies).
fn dense_model() -> Llama {
    let mut json: serde_json::Value = serde_json::from_str(&laplace_lora::testing::tiny_config_json(64, 32, 2, 4, 2, false)).unwrap();
    json["intermediate_size"] = 96.into();
    let cfg = Config::from_hf_str(&json.to_string()).unwrap();
    let w = laplace_lora::testing::random_weights(&cfg, 11).unwrap();
    Llama::from_tensors(cfg, w, &Device::Cpu).unwrap()
}

#[test]
fn fused_mlp_gives_the_dense_models_logits_and_gradients() {
    if !laplace_lora::model::f32pack::available() {
        eprintln!("SKIPPED: this CPU has no AVX-512F (f32 is not packed here, so the MLP is not fused)");
        return;
    }
    let dense = dense_model();
    let mut packed = dense_model();
    packed.cast_frozen(FrozenDtype::F32).unwrap();
    assert_eq!((dense.fused_mlp_blocks(), packed.fused_mlp_blocks()), (0, 2), "the packed model fuses both blocks' MLPs");
    for (what, targets) in [
        ("q, v, head (MLPs fused)", vec![Target::QProj, Target::VProj, Target::LmHead]),
        ("gate, up, down, q (MLPs separate, gate and up as views)", vec![Target::QProj, Target::GateProj, Target::UpProj, Target::DownProj]),
    ] {
        let lora = adapters(&dense, targets);
        let (f, g) = logits_and_grads(&packed, &lora);
        let (f0, g0) = logits_and_grads(&dense, &lora);
        let d = rel(&f, &f0);
        assert!(d < 1e-5, "{what}: logits differ by {d:.2e} of the largest");
        for (i, (a, b)) in g.iter().zip(&g0).enumerate() {
            let d = rel(a, b);
            assert!(d < 1e-5, "{what}: gradient {i} differs by {d:.2e} of its largest");
            assert!(!b.is_empty() && b.iter().any(|v| *v != 0.0), "{what}: gradient {i} is zero (the check would prove nothing)");
        }
    }
}
