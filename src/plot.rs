//! PNG plots (plotters): the training loss curve and the cumulative error
//! distribution (CED) of an evaluation. Text uses DejaVu Sans from the system
//! (Debian's fonts-dejavu-core, installed by scripts/setup.sh).

use crate::train::EpochRecord;
use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = std::fs::read(FONT_PATH)
            .with_context(|| format!("font {FONT_PATH}: missing (apt-get install fonts-dejavu-core)"))
            .and_then(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| anyhow::anyhow!("font {FONT_PATH}: not a usable TrueType font"))
            });
    });
    result
}

fn draw_err<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("plot {}: {e:?}", path.display())
}

/// Training loss (top) and validation NME per set (bottom) against epochs.
pub fn loss_curve(path: &Path, history: &[EpochRecord]) -> Result<()> {
    register_font()?;
    if history.is_empty() {
        return Ok(());
    }
    let tmp = crate::fsutil::temp_path(path);
    {
        let root = BitMapBackend::new(&tmp, (800, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(path))?;
        let (top, bottom) = root.split_vertically(350);
        let n = history.len() as f64 + 1.0;
        let max_loss = history.iter().map(|h| h.train_loss).fold(0.0, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(&top)
            .caption("training loss (L1, unit crop coordinates)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..max_loss)
            .map_err(draw_err(path))?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(draw_err(path))?;
        chart
            .draw_series(LineSeries::new(history.iter().map(|h| (h.epoch as f64, h.train_loss)), &COLORS[0]))
            .map_err(draw_err(path))?;
        let max_nme = history.iter().flat_map(|h| h.val_nme.iter().map(|v| v.1)).fold(0.0, f64::max).min(0.3) * 1.05;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("validation NME (typical Haar crop)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..max_nme.max(0.01))
            .map_err(draw_err(path))?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(draw_err(path))?;
        let sets: Vec<String> = history[0].val_nme.iter().map(|v| v.0.clone()).collect();
        for (k, name) in sets.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    history.iter().filter_map(|h| h.val_nme.get(k).map(|v| (h.epoch as f64, v.1))),
                    &color,
                ))
                .map_err(draw_err(path))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(draw_err(path))?;
        root.present().map_err(draw_err(path))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("plot {}: cannot write", path.display()))
}

/// Cumulative error distribution: fraction of faces with NME below x, x in [0, 0.1].
pub fn ced_curve(path: &Path, title: &str, curves: &[(String, Vec<f64>)]) -> Result<()> {
    register_font()?;
    let tmp = crate::fsutil::temp_path(path);
    {
        let root = BitMapBackend::new(&tmp, (700, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(path))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..0.1, 0.0..1.0)
            .map_err(draw_err(path))?;
        chart.configure_mesh().x_desc("NME").y_desc("fraction of faces").draw().map_err(draw_err(path))?;
        for (k, (label, errors)) in curves.iter().enumerate() {
            let mut sorted = errors.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len().max(1) as f64;
            let points: Vec<(f64, f64)> = (0..=200)
                .map(|i| {
                    let x = 0.1 * i as f64 / 200.0;
                    (x, sorted.partition_point(|&e| e <= x) as f64 / n)
                })
                .collect();
            let color = COLORS[k % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(draw_err(path))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(draw_err(path))?;
        root.present().map_err(draw_err(path))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("plot {}: cannot write", path.display()))
}
