//! AdamW with parameter groups (PyTorch's update rule, decoupled weight
//! decay), global-norm gradient clipping, and the per-epoch learning-rate
//! schedules of the recipes. The optimizer is ours rather than libtorch's so
//! that its state (step, first and second moments) is saved in every
//! checkpoint and a resumed run continues bit for bit.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

pub use pipeline_core::stages::model_params::Schedule;

/// A named set of parameters trained at `lr * lr_scale`.
pub struct ParamGroup {
    pub lr_scale: f64,
    pub params: Vec<(String, Tensor)>,
}

/// AdamW (betas 0.9/0.999, eps 1e-8), as `torch.optim.AdamW`.
pub struct AdamW {
    groups: Vec<ParamGroup>,
    exp_avg: Vec<Vec<Tensor>>,
    exp_avg_sq: Vec<Vec<Tensor>>,
    pub step: i64,
    weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, weight_decay: f64) -> Self {
        let zeros = |g: &ParamGroup| g.params.iter().map(|(_, p)| p.zeros_like()).collect();
        Self {
            exp_avg: groups.iter().map(zeros).collect(),
            exp_avg_sq: groups.iter().map(zeros).collect(),
            groups,
            step: 0,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    fn all_params(&self) -> impl Iterator<Item = &Tensor> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter().map(|(_, p)| p))
    }

    pub fn zero_grad(&mut self) {
        for p in self.all_params() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm`
    /// (`torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .all_params()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.to_kind(Kind::Float).norm().reshape([1]))
            .collect();
        let total = Tensor::cat(&norms, 0).norm();
        let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        tch::no_grad(|| {
            for g in &grads {
                let _ = g.shallow_clone().g_mul_(&coef);
            }
        });
        total.double_value(&[])
    }

    /// One update with base learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as f64;
        let bc1 = 1.0 - self.beta1.powf(t);
        let bc2 = 1.0 - self.beta2.powf(t);
        tch::no_grad(|| {
            for (gi, group) in self.groups.iter().enumerate() {
                let glr = lr * group.lr_scale;
                for (pi, (_, p)) in group.params.iter().enumerate() {
                    let g = p.grad();
                    if !g.defined() {
                        continue;
                    }
                    let mut p = p.shallow_clone();
                    let _ = p.g_mul_scalar_(1.0 - glr * self.weight_decay);
                    let m = &mut self.exp_avg[gi][pi];
                    let _ = m.g_mul_scalar_(self.beta1);
                    let _ = m.g_add_(&(&g * (1.0 - self.beta1)));
                    let v = &mut self.exp_avg_sq[gi][pi];
                    let _ = v.g_mul_scalar_(self.beta2);
                    let _ = v.g_add_(&(g.square() * (1.0 - self.beta2)));
                    let denom = v.sqrt() / bc2.sqrt() + self.eps;
                    let _ = p.g_sub_(&(&*m / denom * (glr / bc1)));
                }
            }
        });
    }

    /// The moments, keyed `exp_avg.<param>` / `exp_avg_sq.<param>`.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (gi, group) in self.groups.iter().enumerate() {
            for (pi, (name, _)) in group.params.iter().enumerate() {
                out.insert(
                    format!("exp_avg.{name}"),
                    self.exp_avg[gi][pi].shallow_clone(),
                );
                out.insert(
                    format!("exp_avg_sq.{name}"),
                    self.exp_avg_sq[gi][pi].shallow_clone(),
                );
            }
        }
        out
    }

    /// Restores the moments written by [`Self::state_tensors`].
    pub fn load_state_tensors(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        step: i64,
    ) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (gi, group) in self.groups.iter().enumerate() {
                for (pi, (name, _)) in group.params.iter().enumerate() {
                    for (prefix, slot) in [
                        ("exp_avg", &mut self.exp_avg[gi][pi]),
                        ("exp_avg_sq", &mut self.exp_avg_sq[gi][pi]),
                    ] {
                        let key = format!("{prefix}.{name}");
                        let src = state
                            .get(&key)
                            .with_context(|| format!("optimizer state lacks {key}"))?;
                        slot.f_copy_(src)?;
                    }
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(v: &[f32], grad: &[f32]) -> Tensor {
        let p = Tensor::from_slice(v).set_requires_grad(true);
        (&p * Tensor::from_slice(grad)).sum(Kind::Float).backward();
        p
    }

    #[test]
    fn first_adamw_step_matches_the_closed_form() {
        // Step 1: m_hat = g, v_hat = g^2, so p' = p (1 - lr wd) - lr g / (|g| + eps).
        let p = param(&[1.0, -2.0], &[0.5, -0.25]);
        let mut opt = AdamW::new(
            vec![ParamGroup {
                lr_scale: 2.0,
                params: vec![("w".into(), p.shallow_clone())],
            }],
            0.01,
        );
        opt.step(0.05); // group lr 0.1
        let got = Vec::<f32>::try_from(&p).unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.1, -2.0 * (1.0 - 0.001) + 0.1];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} != {want:?}");
        }
        assert_eq!(opt.step, 1);
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let a = param(&[0.0], &[3.0]);
        let b = param(&[0.0], &[4.0]);
        let opt = AdamW::new(
            vec![ParamGroup {
                lr_scale: 1.0,
                params: vec![
                    ("a".into(), a.shallow_clone()),
                    ("b".into(), b.shallow_clone()),
                ],
            }],
            0.0,
        );
        assert!((opt.clip_grad_norm(1.0) - 5.0).abs() < 1e-6);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-6);
        assert!((b.grad().double_value(&[0]) - 0.8).abs() < 1e-6);
    }

    #[test]
    fn schedules() {
        let wc = Schedule::WarmupCosine {
            warmup: 5,
            final_factor: 0.02,
        };
        let f: Vec<f64> = (0..80).map(|e| wc.factor(e, 80)).collect();
        assert_eq!(&f[..5], &[0.2, 0.4, 0.6, 0.8, 1.0]);
        assert!((f[5] - 1.0).abs() < 1e-12);
        assert!((f[79] - 0.02).abs() < 1e-12);
        assert!(f[5..].windows(2).all(|w| w[1] <= w[0]));
        let sd = Schedule::StepDecay {
            from_epoch: 2,
            gamma: 0.5,
        };
        let s: Vec<f64> = (0..5).map(|e| sd.factor(e, 50)).collect();
        assert_eq!(s, [1.0, 1.0, 0.5, 0.25, 0.125]);
    }
}
