//! The heatmap head's maths: each point is the expectation of its heatmap's
//! softmax (soft-argmax, in unit crop space), and the spread of that distribution
//! says how sure the network is.

use super::Inference;
use crate::geometry::Point;
use tch::{Device, Kind, Tensor};

/// `[4, R²]`: for each heatmap cell (row-major) its centre `x, y` in unit space
/// (`(j + 0.5) / R`) and their squares, so one matrix product with a softmax gives
/// the four moments [`heatmap_moments`] takes. Stored cells-last so the product
/// is `linear` (`p · Mᵀ`), about three times faster than `p · M` with `M` as
/// `[R², 4]`.
pub(super) fn cell_moments(r: i64, device: Device) -> Tensor {
    let centres = (Tensor::arange(r, (Kind::Float, device)) + 0.5) / r as f64;
    let gx = centres.repeat([r]);
    let gy = centres.repeat_interleave_self_int(r, None, None);
    Tensor::stack(&[&gx, &gy, &(&gx * &gx), &(&gy * &gy)], 0)
}

/// `[B, H, N, R, R]` heatmap logits -> `[B, H, N, 4]`: under the softmax of each
/// point's map, the expected cell centre `E[x], E[y]` (unit space) and
/// `E[x²], E[y²]`. `moments` is [`cell_moments`] for this `R`.
pub(super) fn heatmap_moments(logits: &Tensor, points: i64, moments: &Tensor) -> Result<Tensor, tch::TchError> {
    let size = logits.size();
    let (b, h, r) = (size[0], size[1], size[3]);
    let p = logits.f_reshape([b, h, points, r * r])?.f_softmax(-1, Kind::Float)?;
    p.f_linear::<Tensor>(moments, None)
}

/// Heatmap moments `[B, H, N, 4]` -> points `[B, H, 2N]`: each point's expected
/// cell centre, in unit space; and spread `[B, H]`: the mean over points of the
/// distribution's standard deviation (unit space), small where the network is sure
/// of a face. [`Moments`] is the same for one face, in plain numbers.
pub(super) fn soft_argmax(m: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
    let size = m.size();
    let xy = m.f_narrow(-1, 0, 2)?;
    let var = (m.f_narrow(-1, 2, 2)? - &xy * &xy).f_sum_dim_intlist(-1, false, Kind::Float)?;
    let spread = var.f_clamp_min(0.0)?.f_sqrt()?.f_mean_dim(-1, false, Kind::Float)?;
    Ok((xy.f_reshape([size[0], size[1], 2 * size[2]])?, spread))
}

/// One face's heatmap moments, `E[x], E[y], E[x²], E[y²]` per point: inference
/// reads its points and spread from these in Rust, which for the few hundred
/// numbers of a face is cheaper than running [`soft_argmax`]'s small tensor ops
/// (same formulas).
pub(super) struct Moments<'a>(pub &'a [f32]);

impl Moments<'_> {
    pub fn inference(&self) -> Inference {
        let per_point = self.0.chunks(4);
        let points = per_point.clone().map(|m| Point::new(m[0], m[1])).collect::<Vec<_>>();
        let spread = per_point.map(|m| (m[2] - m[0] * m[0] + m[3] - m[1] * m[1]).max(0.0).sqrt()).sum::<f32>()
            / points.len() as f32;
        Inference { points, spread }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heatmap whose mass sits on one cell gives that cell's centre and no
    /// spread; mass split between two cells gives their midpoint and half their
    /// distance as the spread. Training's tensor formulas ([`soft_argmax`]) and
    /// inference's plain ones ([`Moments`]) both.
    #[test]
    fn soft_argmax_finds_the_mass_of_each_heatmap() {
        let r = 12;
        let mut logits = vec![-1e4f32; 2 * r * r];
        logits[3 * r + 7] = 0.0; // point 0: row 3, column 7
        logits[r * r + 5 * r + 2] = 0.0; // point 1: row 5, columns 2 and 4
        logits[r * r + 5 * r + 4] = 0.0;
        let t = Tensor::from_slice(&logits).view([1, 1, 2, r as i64, r as i64]);
        let m = heatmap_moments(&t, 2, &cell_moments(r as i64, Device::Cpu)).unwrap();
        let (xy, spread) = soft_argmax(&m).unwrap();
        let xy = Vec::<f32>::try_from(xy.flatten(0, -1)).unwrap();
        let spread = f32::try_from(spread.flatten(0, -1)).unwrap();
        let plain = Moments(&Vec::<f32>::try_from(m.flatten(0, -1)).unwrap()).inference();
        let unit = |cell: f32| (cell + 0.5) / r as f32;
        let expected = [unit(7.0), unit(3.0), unit(3.0), unit(5.0)];
        let plain_xy: Vec<f32> = plain.points.iter().flat_map(|p| [p.x, p.y]).collect();
        for (got, want) in xy.iter().zip(expected).chain(plain_xy.iter().zip(expected)) {
            assert!((got - want).abs() < 1e-6, "{xy:?} / {plain_xy:?} vs {expected:?}");
        }
        // Point 0: 0; point 1: one cell (1/r) in x; the mean of the two.
        for s in [spread, plain.spread] {
            assert!((s - 0.5 / r as f32).abs() < 1e-5, "spread {s}");
        }
    }

    /// On diffuse heatmaps (every cell weighted), the plain formulas give what the
    /// tensor ones do.
    #[test]
    fn inference_reads_the_same_points_and_spread_as_training() {
        tch::manual_seed(7);
        let (points, r) = (68, 28);
        let logits = Tensor::randn([1, 1, points, r, r], (Kind::Float, Device::Cpu)) * 3.0;
        let m = heatmap_moments(&logits, points, &cell_moments(r, Device::Cpu)).unwrap();
        let (xy, spread) = soft_argmax(&m).unwrap();
        let xy = Vec::<f32>::try_from(xy.flatten(0, -1)).unwrap();
        let plain = Moments(&Vec::<f32>::try_from(m.flatten(0, -1)).unwrap()).inference();
        let plain_xy: Vec<f32> = plain.points.iter().flat_map(|p| [p.x, p.y]).collect();
        assert_eq!(xy, plain_xy);
        let spread = f32::try_from(spread.flatten(0, -1)).unwrap();
        assert!(spread > 0.05 && (spread - plain.spread).abs() < 1e-6, "{spread} vs {}", plain.spread);
    }
}
