//! The decoder on tiny random-weight checkpoints written by the test itself, checked against
//! candle-transformers' own llama implementation and against finite differences.

use candle_core::{DType, Device, Tensor, D};
use laplace_lora::lora::{LoraConfig, LoraSet, Target};
use laplace_lora::model::{Batch, ForwardOpts, LoadedModel};
use laplace_lora::testing;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn tiny_hf_model_matches_candle_transformers_llama() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let w = testing::write_tiny_hf_model(dir.path(), 7, false)?;
    let ours = LoadedModel::load_hf(dir.path(), &Device::Cpu)?;
    // Reference: candle-transformers' llama on the very same tensors.
    let cfg_json = std::fs::read_to_string(dir.path().join("config.json"))?;
    let lc: candle_transformers::models::llama::LlamaConfig = serde_json::from_str(&cfg_json)?;
    let rc = lc.into_config(false);
    let vb = candle_nn::VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
    let reference = candle_transformers::models::llama::Llama::load(vb, &rc)?;
    let prompt: Vec<u32> = vec![4, 20, 31, 22, 9, 17, 40, 3];
    let mut cache = candle_transformers::models::llama::Cache::new(false, DType::F32, &rc, &Device::Cpu)?;
    let ids = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let r = reference.forward(&ids, 0, &mut cache)?; // (1, vocab)
                                                     // With a LoRA set whose B are all zero the adapted model is the base model.
    let lora = LoraSet::new(LoraConfig { targets: Target::ALL.to_vec(), ..Default::default() }, &ours.model.lora_dims(), (9..13).collect(), 0, &Device::Cpu)?;
    let o = ours.model.next_token_logits(&ids, &[prompt.len()], Some(&lora))?;
    // Tolerance: both are f32 with the same operations in a different order (attention and norm
    // fused differently); logits are O(1), so 1e-4 absolute is ~100 ulp of accumulated round-off.
    let d = max_abs_diff(&o, &r);
    assert!(d < 1e-4, "logits differ from candle-transformers by {d}");
    // The answer-logit path reads the same numbers as the full head.
    let batch = Batch::new(&[&prompt], &[4], 4, 0, &Device::Cpu)?;
    let f = ours.model.answer_logits(&batch, &[9, 10, 11, 12], &mut ForwardOpts::new(Some(&lora)))?;
    let full = o.narrow(1, 9, 4)?;
    assert!(max_abs_diff(&f, &full) < 1e-5);
    Ok(())
}

#[test]
fn right_padding_does_not_change_logits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    testing::write_tiny_hf_model(dir.path(), 3, true)?; // qwen2-style, with qkv bias
    let m = LoadedModel::load_hf(dir.path(), &Device::Cpu)?.model;
    let a: Vec<u32> = vec![4, 20, 31, 3];
    let b: Vec<u32> = vec![4, 21, 22, 23, 24, 25, 3];
    let opts = &mut ForwardOpts::new(None);
    let both = m.answer_logits(&Batch::new(&[&a, &b], &[2, 2], 2, 2, &Device::Cpu)?, &[5, 6], opts)?;
    let alone = m.answer_logits(&Batch::new(&[&a], &[2], 2, 2, &Device::Cpu)?, &[5, 6], opts)?;
    assert!(max_abs_diff(&both.narrow(0, 0, 1)?, &alone) < 1e-5);
    Ok(())
}

#[test]
fn gguf_with_llama_cpp_rotary_layout_loads_to_the_same_model() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let w = testing::write_tiny_hf_model(&dir.path().join("hf"), 11, false)?;
    let hf = LoadedModel::load_hf(&dir.path().join("hf"), &Device::Cpu)?;
    let gguf_path = dir.path().join("gguf").join("tiny.gguf");
    std::fs::create_dir_all(gguf_path.parent().unwrap())?;
    testing::write_tiny_gguf(&gguf_path, &hf.model.cfg, &w)?;
    let g = LoadedModel::load_gguf(&gguf_path, &Device::Cpu)?;
    let prompt: Vec<u32> = vec![4, 20, 31, 22, 9, 17, 40, 3];
    let ids = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let a = hf.model.next_token_logits(&ids, &[8], None)?;
    let b = g.model.next_token_logits(&ids, &[8], None)?;
    // Same f32 weights after un-permuting: equal up to round-off.
    assert!(max_abs_diff(&a, &b) < 1e-5, "GGUF and HF logits differ");
    Ok(())
}

/// Every LoRA variable of every target receives a non-zero gradient (STACK-NOTES trap 1), and the
/// gradient of one B entry matches a central finite difference of the loss.
/// LoRA (r = 2) on every projection and the answer rows of the head, with random B: at B = 0,
/// as LoRA starts, dL/dA would vanish.
fn lora_everywhere(m: &laplace_lora::model::Llama, answer: &[u32]) -> anyhow::Result<LoraSet> {
    let lora = LoraSet::new(LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets: Target::ALL.to_vec() }, &m.lora_dims(), answer.to_vec(), 1, &Device::Cpu)?;
    for l in &lora.layers {
        l.b.set(&(Tensor::randn(0f32, 0.3, l.b.shape(), &Device::Cpu)?))?;
    }
    Ok(lora)
}

#[test]
fn every_lora_variable_gets_the_right_gradient() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    testing::write_tiny_hf_model(dir.path(), 5, false)?;
    let m = LoadedModel::load_hf(dir.path(), &Device::Cpu)?.model;
    let answer: Vec<u32> = vec![9, 10, 11, 12];
    let lora = lora_everywhere(&m, &answer)?;
    let p1: Vec<u32> = vec![4, 20, 31, 22, 9, 3];
    let p2: Vec<u32> = vec![4, 21, 33, 3];
    let batch = Batch::new(&[&p1, &p2], &[4, 3], 4, 2, &Device::Cpu)?;
    let labels = Tensor::new(&[2u32, 0], &Device::Cpu)?;
    let loss_of = |lora: &LoraSet| -> anyhow::Result<Tensor> {
        let f = m.answer_logits(&batch, &answer, &mut ForwardOpts::new(Some(lora)))?;
        Ok(candle_nn::loss::cross_entropy(&f, &labels)?)
    };
    let loss = loss_of(&lora)?;
    let grads = loss.backward()?;
    for l in &lora.layers {
        for (which, v) in [("A", &l.a), ("B", &l.b)] {
            let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{} {which} has no gradient", l.module_path()));
            let n = g.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(n > 0.0, "{} {which} has a zero gradient", l.module_path());
        }
    }
    // Finite differences in f64 arithmetic on f32 forwards: step 1e-2 keeps truncation error
    // O(h^2) ~ 1e-4 relative and round-off (~1e-7 / 1e-2) ~ 1e-5; 2% tolerance covers both.
    let l = lora.get(1, Target::VProj).unwrap();
    let g = grads.get(l.b.as_tensor()).unwrap().get(3)?.get(1)?.to_scalar::<f32>()? as f64;
    let orig = l.b.as_tensor().copy()?;
    let h = 1e-2f64;
    let at = |delta: f64| -> anyhow::Result<f64> {
        let mut b = orig.to_vec2::<f32>()?;
        b[3][1] += delta as f32;
        l.b.set(&Tensor::new(b, &Device::Cpu)?)?;
        Ok(loss_of(&lora)?.to_scalar::<f32>()? as f64)
    };
    let fd = (at(h)? - at(-h)?) / (2.0 * h);
    assert!((fd - g).abs() <= 0.02 * g.abs().max(1e-3), "finite difference {fd} vs backprop {g}");
    let _ = D::Minus1;
    Ok(())
}

/// The path a GPU runs (`ops::with_gpu_path`: candle's kernels with hand-written backward passes,
/// the frozen matmul through the back end's matmul) and the fused CPU kernels give the same answer logits and LoRA gradients on a padded batch of the tiny model, with
/// grouped KV heads and LoRA on every projection, with and without a sliding window. Tolerance: the
/// same f32 arithmetic in another order.
#[test]
fn gpu_path_matches_the_fused_kernels() -> anyhow::Result<()> {
    for window in [None, Some(3usize)] {
        let dir = tempfile::tempdir()?;
        testing::write_tiny_hf_model(dir.path(), 17, false)?;
        if let Some(w) = window {
            let p = dir.path().join("config.json");
            let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
            cfg["model_type"] = "mistral".into();
            cfg["sliding_window"] = w.into();
            std::fs::write(&p, cfg.to_string())?;
        }
        let m = LoadedModel::load_hf(dir.path(), &Device::Cpu)?.model;
        assert_eq!(m.cfg.sliding_window, window);
        let answer: Vec<u32> = vec![9, 10, 11, 12];
        let lora = lora_everywhere(&m, &answer)?;
        let (p1, p2, p3): (Vec<u32>, Vec<u32>, Vec<u32>) = (vec![4, 20, 31, 22, 9, 3], vec![4, 21, 33, 3], vec![4, 25, 26, 27, 28, 29, 30, 3]);
        let batch = Batch::new(&[&p1, &p2, &p3], &[4, 3, 4], 4, 2, &Device::Cpu)?;
        // Masked choices sit at -1e9 in both; compare the real ones through a random read-out.
        let keep = Tensor::new(&[[1f32, 1., 1., 1.], [1., 1., 1., 0.], [1., 1., 1., 1.]], &Device::Cpu)?;
        let r = (Tensor::randn(0f32, 1.0, (3, 4), &Device::Cpu)? * &keep)?;
        let run = || -> anyhow::Result<(Tensor, candle_core::backprop::GradStore)> {
            let f = (m.answer_logits(&batch, &answer, &mut ForwardOpts::new(Some(&lora)))? * &keep)?;
            let g = (&f * &r)?.sum_all()?.backward()?;
            Ok((f, g))
        };
        let (fused, gf) = run()?;
        let (gpu, gc) = laplace_lora::model::ops::with_gpu_path(run)?;
        let d = max_abs_diff(&fused, &gpu);
        assert!(d < 1e-5, "window {window:?}: logits differ by {d}");
        for l in &lora.layers {
            for (which, v) in [("A", &l.a), ("B", &l.b)] {
                let (a, b) = (gf.get(v.as_tensor()).expect("fused gradient"), gc.get(v.as_tensor()).expect("GPU-path gradient"));
                let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
                let d = max_abs_diff(a, b) / scale;
                assert!(d < 1e-4, "window {window:?}: {} {which} gradient differs by {d} (relative)", l.module_path());
            }
        }
    }
    Ok(())
}
