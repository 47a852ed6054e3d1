//! AdamW with its moment estimates exposed, so a checkpoint can store and restore
//! the optimizer exactly (tch's `nn::Optimizer` keeps its state hidden).

use std::collections::HashMap;
use tch::{nn::VarStore, Tensor};

pub struct AdamW {
    vars: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(vs: &VarStore, weight_decay: f64) -> AdamW {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        AdamW { vars, m, v, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }
    }

    pub fn zero_grad(&mut self) {
        for (_, t) in &mut self.vars {
            t.zero_grad();
        }
    }

    /// One update at learning rate `lr`. Weight decay skips biases and norm scales.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (i, (name, p)) in self.vars.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = self.m[i].g_mul_scalar_(self.beta1).g_add_(&(&g * (1.0 - self.beta1)));
                let _ = self.v[i].g_mul_scalar_(self.beta2).g_add_(&(&g * &g * (1.0 - self.beta2)));
                let update = (&self.m[i] / bc1) / ((&self.v[i] / bc2).sqrt() + self.eps);
                let decays = self.weight_decay > 0.0 && p.dim() > 1 && !name.starts_with("bn");
                if decays {
                    let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let _ = p.g_sub_(&(update * lr));
            }
        });
    }

    /// The moments as named tensors (`adam_m.NAME`, `adam_v.NAME`) for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.push((format!("adam_m.{name}"), self.m[i].shallow_clone()));
            out.push((format!("adam_v.{name}"), self.v[i].shallow_clone()));
        }
        out
    }

    /// Restores moments saved by [`Self::state`]; missing ones stay zero.
    pub fn restore(&mut self, saved: &HashMap<String, Tensor>, step: i64) {
        self.step = step;
        tch::no_grad(|| {
            for (i, (name, _)) in self.vars.iter().enumerate() {
                if let Some(m) = saved.get(&format!("adam_m.{name}")) {
                    self.m[i].copy_(m);
                }
                if let Some(v) = saved.get(&format!("adam_v.{name}")) {
                    self.v[i].copy_(v);
                }
            }
        });
    }
}

/// Cosine schedule with a linear warm-up, ending at 1% of the peak.
pub fn learning_rate(peak: f64, step: i64, warmup: i64, total: i64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}
