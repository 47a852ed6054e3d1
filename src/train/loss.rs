//! The training loss on the coordinates of the labelled points, in crop units (the
//! crop's side is 1).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How a coordinate's error counts in the loss (`facekp train --loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// The absolute error.
    #[default]
    L1,
    /// Wing loss (Feng et al., CVPR 2018): logarithmic below [`WING_WIDTH`], so
    /// small and medium errors pull harder than under L1 and the few large ones
    /// (occluded or ambiguous points) pull less; linear beyond.
    Wing,
}

/// Where the wing loss turns linear, in crop units: about 0.4 inter-ocular
/// distances (the outer eye corners lie about a third of a crop apart), the
/// paper's 10 px on its 64 px faces.
pub const WING_WIDTH: f64 = 0.12;
/// The wing loss's curvature: its slope at zero is `WING_WIDTH / WING_CURVATURE`
/// (5), halved at this error (0.08 inter-ocular distances; the paper's 2 px).
pub const WING_CURVATURE: f64 = 0.024;

impl std::fmt::Display for Loss {
    /// The name `--loss` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::L1 => "l1",
            Loss::Wing => "wing",
        })
    }
}

impl Loss {
    /// The mean loss over the labelled coordinates: `pred` and `target` are
    /// `[B, 2N]` crop-unit coordinates, `mask` 1 where a coordinate is labelled.
    pub fn mean(self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
        let error = (pred - target).abs();
        let per_coordinate = match self {
            Loss::L1 => error,
            Loss::Wing => wing(&error),
        };
        (per_coordinate * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
    }
}

/// `w ln(1 + x/ε)` below `w`, `x - C` above, with `C` joining the two at `w`.
fn wing(error: &Tensor) -> Tensor {
    let (w, eps) = (WING_WIDTH, WING_CURVATURE);
    let c = w - w * (1.0 + w / eps).ln();
    let log_part = (error / eps).log1p() * w;
    let linear_part = error - c;
    log_part.where_self(&error.lt(w), &linear_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_of(loss: Loss, errors: &[f32]) -> Vec<f64> {
        errors
            .iter()
            .map(|&e| {
                let pred = Tensor::from_slice(&[e]).view([1, 1]);
                let zero = Tensor::zeros([1, 1], (Kind::Float, tch::Device::Cpu));
                let one = Tensor::ones([1, 1], (Kind::Float, tch::Device::Cpu));
                f64::try_from(loss.mean(&pred, &zero, &one)).unwrap()
            })
            .collect()
    }

    #[test]
    fn wing_is_steep_near_zero_continuous_at_its_width_and_linear_beyond() {
        let [tiny, below, above, far] = loss_of(Loss::Wing, &[1e-4, 0.1199999, 0.1200001, 0.5])[..] else {
            unreachable!()
        };
        // Slope at zero: w/ε = 5 times L1's.
        assert!((tiny / 1e-4 - 5.0).abs() < 0.03, "slope at zero {}", tiny / 1e-4);
        assert!((below - above).abs() < 1e-5, "{below} vs {above}");
        // Beyond the width the slope is L1's.
        assert!((far - above - (0.5 - 0.1200001)).abs() < 1e-5);
        // Signs do not matter.
        assert_eq!(loss_of(Loss::Wing, &[-0.05]), loss_of(Loss::Wing, &[0.05]));
        assert_eq!(loss_of(Loss::L1, &[-0.05, 0.5]), vec![0.05f32 as f64, 0.5]);
    }

    #[test]
    fn unlabelled_coordinates_do_not_count() {
        let pred = Tensor::from_slice(&[0.1f32, 0.9]).view([1, 2]);
        let target = Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        for loss in [Loss::L1, Loss::Wing] {
            let masked = f64::try_from(loss.mean(&pred, &target, &mask)).unwrap();
            assert_eq!(masked, loss_of(loss, &[0.1])[0]);
        }
    }
}
