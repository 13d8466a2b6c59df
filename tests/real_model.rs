//! Checks on the real default model (SmolLM2-135M-Instruct). CI fetches it first; elsewhere the
//! tests skip with a loud message when it is not in the cache.

use candle_core::Device;
use laplace_lora::model::{tokenizer, LoadedModel};

fn default_model() -> Option<LoadedModel> {
    let Some(files) = laplace_lora::testing::default_model_if_present() else {
        eprintln!("\n!!!!! SKIPPED: the default model is not in the cache; run `laplace-lora fetch-model` first !!!!!\n");
        return None;
    };
    Some(LoadedModel::load(&files, &Device::Cpu).expect("the cached default model loads"))
}

#[test]
fn greedy_next_token_after_capital_of_france_is_paris() -> anyhow::Result<()> {
    let Some(m) = default_model() else { return Ok(()) };
    let ids = tokenizer::encode(&m.tokenizer, "The capital of France is")?;
    // STACK-NOTES.md: the GGUF's byte-level BPE gives exactly these ids.
    assert_eq!(ids, vec![504, 3575, 282, 4649, 314]);
    let next = m.model.greedy_next(&ids)?;
    let text = m.tokenizer.decode(&[next], false).map_err(anyhow::Error::msg)?;
    assert_eq!(text, " Paris");
    Ok(())
}
