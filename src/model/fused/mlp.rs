//! The MLP's frozen half as one op of x: y = (silu(x W_g^T) ⊙ (x W_u^T)) W_d^T, for blocks whose
//! gate, up and down projections carry no adapter (the kernels and the maths: `f32pack/swiglu.rs`).
//! Composed, it is five graph nodes (three products, the gate, and the sum of the two input
//! gradients in the backward pass), each a parallel pass of its own, and a dh and a dg/du
//! buffer in between.

use super::{slice, tensor, with_data};
use crate::model::f32pack::SwigluPacked;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::sync::{Arc, OnceLock};

struct SwigluMlp {
    packed: Arc<SwigluPacked>,
    /// gu = x W_gu^T (n rows of 2f, `gu_stride` apart) from the forward pass, for the backward pass(es): the composed ops
    /// keep g and u as well.
    gu: OnceLock<Vec<f32>>,
}

impl SwigluMlp {
    /// Rows of an input (..., h) (the output's shape is the same), where the kernels run.
    fn rows(&self, shape: &Shape) -> Result<usize> {
        if !crate::model::f32pack::available() {
            candle_core::bail!("swiglu-mlp: the packed f32 kernels are off (the AVX2 switch, or no AVX-512F)");
        }
        let h = self.packed.gate_up.d_in;
        if shape.dims().last() != Some(&h) || self.packed.down.d_out != h {
            candle_core::bail!("swiglu-mlp: input {:?} does not end in {h}", shape.dims());
        }
        Ok(shape.elem_count() / h.max(1))
    }
}

impl CustomOp1 for SwigluMlp {
    fn name(&self) -> &'static str {
        "fused-swiglu-mlp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(self.name(), s, l)?;
        let n = self.rows(l.shape())?;
        let (gu, h) = self.packed.forward(x, n);
        let y = self.packed.down.forward(&h, n);
        // An op runs forward once (a second set would be ignored, and the first is the right one).
        let _ = self.gu.set(gu);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let n = self.rows(x.shape())?;
        let ld = self.packed.gu_stride();
        with_data(self.name(), [x, dy], |[xv, dyv]| {
            if dyv.len() != xv.len() {
                candle_core::bail!("swiglu-mlp: output gradient of {} values for an input of {}", dyv.len(), xv.len());
            }
            let recomputed;
            let gu = match self.gu.get().filter(|g| g.len() == n * ld) {
                Some(gu) => gu,
                None => {
                    recomputed = self.packed.forward(xv, n).0;
                    &recomputed
                }
            };
            Ok(Some(tensor(self.packed.backward(dyv, n, gu), x.shape())?))
        })
    }
}

/// (silu(x W_g^T) ⊙ (x W_u^T)) W_d^T for a contiguous f32 CPU tensor x (..., h); the frozen
/// matrices get no gradient, x does.
pub fn swiglu_mlp(x: &Tensor, packed: &Arc<SwigluPacked>) -> Result<Tensor> {
    x.contiguous()?.apply_op1_arc(Arc::new(Box::new(SwigluMlp { packed: packed.clone(), gu: OnceLock::new() })))
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::compare;
    use super::*;
    use crate::model::f32pack::PackedF32;
    use candle_core::Device;

    /// The composed form from candle's matmuls, silu and autograd, with the unpacked matrices.
    fn composed(x: &Tensor, wg: &Tensor, wu: &Tensor, wd: &Tensor) -> Result<Tensor> {
        let g = x.matmul(&wg.t()?)?;
        let u = x.matmul(&wu.t()?)?;
        (g.silu()? * u)?.matmul(&wd.t()?)
    }

    /// Values and the input gradient within 1e-5 of the composed ops (f32, other summation
    /// orders), on 70 rows (two full 32-row tiles and a tail; three 24-row forward tasks) with
    /// f = 96 (three panel pairs, down's backward tasks 48 columns wide and a 12-column tail) and
    /// h = 40; and on 1 and 33 rows. Gradients the gate's way (through g) are O(1) here: the gate
    /// inputs are scaled to reach both tails of the logistic.
    #[test]
    fn matches_composed_ops() -> Result<()> {
        if !crate::model::f32pack::available() {
            eprintln!("SKIPPED: this CPU has no AVX-512F (the fused MLP is not used here)");
            return Ok(());
        }
        let dev = Device::Cpu;
        for n in [70, 1, 33] {
            let (h, f) = (40, 96);
            let wg = (Tensor::randn(0f32, 1., (f, h), &dev)? * 0.5)?;
            let wu = Tensor::randn(0f32, 0.3, (f, h), &dev)?;
            let wd = Tensor::randn(0f32, 0.03, (h, f), &dev)?; // y of O(1): the forward is compared absolutely
            let pack = |w: &Tensor| -> Result<PackedF32> {
                let (o, i) = w.dims2()?;
                Ok(PackedF32::pack(&w.flatten_all()?.to_vec1()?, o, i))
            };
            let (gate_up, gate, up) = PackedF32::stack_pair(&pack(&wg)?, &pack(&wu)?).expect("f is a multiple of 32");
            assert_eq!(gate.to_f32(), wg.flatten_all()?.to_vec1::<f32>()?, "gate view");
            assert_eq!(up.to_f32(), wu.flatten_all()?.to_vec1::<f32>()?, "up view");
            let packed = Arc::new(SwigluPacked { gate_up, down: Arc::new(pack(&wd)?) });
            let x = Tensor::randn(0f32, 1., (n, h), &dev)?;
            compare(&[x], |t| swiglu_mlp(&t[0], &packed), |t| composed(&t[0], &wg, &wu, &wd), 1e-5)?;
        }
        Ok(())
    }
}
