//! Dequantization of every GGUF block type the loader accepts, against gguf-py's independent
//! decoder: `tests/fixtures/dequant/blocks.gguf` (written once by `scripts/dequant_fixtures.py`)
//! holds for each type a 2 x 1024 tensor of random blocks and, beside it, gguf-py's f32 decoding.
//! Read through the same call the loader makes (`Content::tensor` then `dequantize`).
//!
//! Tolerance: both decoders compute d * q (- m) in f32, K-quants with one more product (the block
//! scale times the sub-block scale) whose order may differ: a few ulp of the value, so
//! |ours - theirs| <= 4 eps max(|theirs|, 1e-3) per element.

use candle_core::quantized::GgmlDType;
use candle_core::Device;

const TYPES: &[(&str, GgmlDType)] = &[
    ("q4_0", GgmlDType::Q4_0),
    ("q4_1", GgmlDType::Q4_1),
    ("q5_0", GgmlDType::Q5_0),
    ("q5_1", GgmlDType::Q5_1),
    ("q8_0", GgmlDType::Q8_0),
    ("q2_k", GgmlDType::Q2K),
    ("q3_k", GgmlDType::Q3K),
    ("q4_k", GgmlDType::Q4K),
    ("q5_k", GgmlDType::Q5K),
    ("q6_k", GgmlDType::Q6K),
    ("f16", GgmlDType::F16),
    ("bf16", GgmlDType::BF16),
];

#[test]
fn every_block_type_dequantizes_as_gguf_py() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dequant/blocks.gguf");
    let (content, mut file) = laplace_lora::model::gguf::read_content(&path)?;
    for &(name, dtype) in TYPES {
        let info = &content.tensor_infos[name];
        assert_eq!(info.ggml_dtype, dtype, "{name} is stored as {:?}", info.ggml_dtype);
        let ours = content.tensor(&mut file, name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
        let want = content.tensor(&mut file, &format!("{name}.expected"), &Device::Cpu)?.dequantize(&Device::Cpu)?;
        assert_eq!(ours.dims(), &[2, 1024], "{name}");
        let (a, b) = (ours.flatten_all()?.to_vec1::<f32>()?, want.flatten_all()?.to_vec1::<f32>()?);
        let mut worst = 0f32;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = 4.0 * f32::EPSILON * y.abs().max(1e-3);
            assert!((x - y).abs() <= tol, "{name}: element {i} is {x}, gguf-py gives {y}");
            worst = worst.max((x - y).abs());
        }
        eprintln!("{name}: {} values, largest difference {worst:e}", a.len());
    }
    Ok(())
}
