//! PEFT adapter files: key names and config fields as peft writes them, and a save/load round trip
//! that reproduces the adapted model's answer logits exactly.

use candle_core::{Device, Tensor};
use laplace_lora::lora::{LoraConfig, LoraSet, Target};
use laplace_lora::model::{Batch, ForwardOpts, LoadedModel};

#[test]
fn saved_adapter_reloads_to_the_same_logits_with_peft_names() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    laplace_lora::testing::write_tiny_hf_model(&dir.path().join("m"), 2, false)?;
    let m = LoadedModel::load_hf(&dir.path().join("m"), &Device::Cpu)?.model;
    let answer: Vec<u32> = vec![9, 10, 11];
    let cfg = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: vec![Target::QProj, Target::VProj, Target::DownProj, Target::LmHead] };
    let lora = LoraSet::new(cfg.clone(), &m.lora_dims(), answer.clone(), 3, &Device::Cpu)?;
    for l in &lora.layers {
        l.b.set(&Tensor::randn(0f32, 0.5, l.b.shape(), &Device::Cpu)?)?;
    }
    let out = dir.path().join("adapter");
    laplace_lora::peft::save(&lora, m.cfg.vocab_size, "tiny", &out)?;

    // The files as peft expects them.
    let conf: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json"))?)?;
    assert_eq!(conf["peft_type"], "LORA");
    assert_eq!(conf["task_type"], "CAUSAL_LM");
    assert_eq!(conf["r"], 4);
    assert_eq!(conf["lora_alpha"], 8.0);
    assert_eq!(conf["target_modules"], serde_json::json!(["down_proj", "lm_head", "q_proj", "v_proj"]));
    let st = candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu)?;
    let qa = &st["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"];
    assert_eq!(qa.dims(), &[4, 32]);
    assert_eq!(st["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].dims(), &[32, 4]);
    // The LM head's B spans the whole vocabulary, zero outside the answer rows.
    let hb = &st["base_model.model.lm_head.lora_B.weight"];
    assert_eq!(hb.dims(), &[m.cfg.vocab_size, 4]);
    let row0 = hb.get(0)?.abs()?.sum_all()?.to_scalar::<f32>()?;
    let row10 = hb.get(10)?.abs()?.sum_all()?.to_scalar::<f32>()?;
    assert_eq!(row0, 0.0);
    assert!(row10 > 0.0);
    assert_eq!(st.len(), 2 * (2 * 3 + 1));

    let back = laplace_lora::peft::load(&out, m.cfg.num_hidden_layers, None, &Device::Cpu)?;
    assert_eq!(back.config, LoraConfig { targets: vec![Target::QProj, Target::VProj, Target::DownProj, Target::LmHead], ..cfg });
    assert_eq!(back.answer_token_ids, answer);
    let p: Vec<u32> = vec![4, 20, 31, 22, 3];
    let batch = Batch::new(&[&p], &[3], 3, 2, &Device::Cpu)?;
    let a = m.answer_logits(&batch, &answer, &mut ForwardOpts::new(Some(&lora)))?;
    let b = m.answer_logits(&batch, &answer, &mut ForwardOpts::new(Some(&back)))?;
    let base = m.answer_logits(&batch, &answer, &mut ForwardOpts::new(None))?;
    // Bit-identical: the same f32 values go through the same operations.
    assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
    assert_ne!(a.to_vec2::<f32>()?, base.to_vec2::<f32>()?, "the adapter must change the logits");
    Ok(())
}
