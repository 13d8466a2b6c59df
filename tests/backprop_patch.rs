//! The vendored candle-core's backward pass (vendor/candle-core/PATCHED.md: the first gradient
//! is stored, not added into zeros) against closed forms: fan-in, subtraction, broadcast, and a
//! custom op whose gradient has the wrong shape (an error, as the add into zeros gave).

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor, Var};

fn close(a: &Tensor, b: &[f32]) -> bool {
    a.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

/// L = sum(x * a + x * b) - sum(c - x) + sum(x * broadcast(s)): dL/dx = a + b + 1 + s,
/// dL/dc = -1 (the first and only gradient of c arrives through a subtraction),
/// dL/ds = sum over rows of x.
#[test]
fn fan_in_subtraction_and_broadcast() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (2, 3), &dev)?;
    let c = Var::from_vec(vec![0.5f32; 6], (2, 3), &dev)?;
    let s = Var::from_vec(vec![10f32, 20., 30.], 3, &dev)?;
    let a = Tensor::from_vec(vec![0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6], (2, 3), &dev)?;
    let b = Tensor::from_vec(vec![1f32, 1., 1., 2., 2., 2.], (2, 3), &dev)?;
    let (xt, ct, st) = (x.as_tensor(), c.as_tensor(), s.as_tensor());
    let l = ((((xt * &a)? + (xt * &b)?)?.sum_all()? - (ct - xt)?.sum_all()?)? + (xt * st.broadcast_as((2, 3))?)?.sum_all()?)?;
    let g = l.backward()?;
    let want_x: Vec<f32> = (0..6).map(|i| [0.1, 0.2, 0.3, 0.4, 0.5, 0.6][i] + [1., 1., 1., 2., 2., 2.][i] + 1.0 + [10., 20., 30.][i % 3]).collect();
    assert!(close(g.get(xt).expect("dx"), &want_x), "dx {:?}", g.get(xt).unwrap().to_vec2::<f32>()?);
    assert!(close(g.get(ct).expect("dc"), &[-1.0; 6]));
    assert!(close(g.get(st).expect("ds"), &[5.0, 7.0, 9.0]));
    Ok(())
}

/// An op that returns a gradient of the wrong shape.
struct WrongGrad;

impl CustomOp1 for WrongGrad {
    fn name(&self) -> &'static str {
        "wrong-grad"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((s.clone(), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, _grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(Tensor::zeros(arg.elem_count() + 1, arg.dtype(), arg.device())?))
    }
}

#[test]
fn a_first_gradient_of_the_wrong_shape_is_an_error() -> candle_core::Result<()> {
    let x = Var::from_vec(vec![1f32, 2., 3.], 3, &Device::Cpu)?;
    let y = x.as_tensor().apply_op1(WrongGrad)?;
    let Err(err) = y.sum_all()?.backward() else { panic!("a gradient of the wrong shape was accepted") };
    assert!(err.to_string().contains("shape mismatch"), "{err}");
    Ok(())
}
