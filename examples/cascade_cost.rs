//! What a Haar cascade search costs by image size and by the largest box searched,
//! on one frame of a video: the figures behind the tile sizes of `detect::tiles`.
//! Each search runs 7 times on a histogram-equalised gray image; the median is
//! printed, with the boxes found.
//!
//! `cargo run --release --example cascade_cost -- VIDEO [OPENCV_THREADS]`

use anyhow::Context;
use facekp::detect::{DEFAULT_CASCADE, HAAR_MIN_FACE_PX, HAAR_MIN_NEIGHBORS, HAAR_SCALE_FACTOR};
use opencv::core::{Mat, Rect, Size, Vector};
use opencv::imgproc;
use opencv::objdetect::CascadeClassifier;
use opencv::prelude::*;
use std::time::Instant;

/// Frame of the video the searches run on.
const FRAME: usize = 30;
const RUNS: usize = 7;

/// One search: a region of the frame at a scale, boxes up to `max_box` (0: any).
struct Search {
    name: &'static str,
    region: Rect,
    scale: f64,
    max_box: i32,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let video = args.get(1).context("usage: cascade_cost VIDEO [OPENCV_THREADS]")?;
    let threads: i32 = args.get(2).map(|t| t.parse()).transpose().context("OPENCV_THREADS")?.unwrap_or(1);
    opencv::core::set_num_threads(threads)?;
    let gray = gray_frame(video)?;
    let mut cascade = CascadeClassifier::new(DEFAULT_CASCADE)?;
    let full = Rect::new(0, 0, gray.cols(), gray.rows());
    let tile = Rect::new(gray.cols() / 3, gray.rows() / 4, 533, 533);
    let whole_scale = 320.0 / f64::from(gray.cols());
    let searches = [
        Search { name: "whole frame at 320 px, any box", region: full, scale: whole_scale, max_box: 0 },
        Search { name: "320 px tile at 0.6, any box", region: tile, scale: 0.6, max_box: 0 },
        Search { name: "320 px tile at 0.6, boxes <= 58", region: tile, scale: 0.6, max_box: 58 },
        Search { name: "320 px tile at 0.6, boxes <= 48", region: tile, scale: 0.6, max_box: 48 },
        Search { name: "whole frame at 0.6, boxes <= 58", region: full, scale: 0.6, max_box: 58 },
    ];
    for s in &searches {
        let (ms, found) = time_search(&mut cascade, &gray, s)?;
        println!("{:34} {:>8} px: median {ms:.1} ms, {found} boxes", s.name, pixels(s));
    }
    Ok(())
}

fn gray_frame(video: &str) -> anyhow::Result<Mat> {
    let mut cap = opencv::videoio::VideoCapture::from_file(video, opencv::videoio::CAP_ANY)?;
    let mut frame = Mat::default();
    for _ in 0..=FRAME {
        anyhow::ensure!(cap.read(&mut frame)?, "{video}: fewer than {} frames", FRAME + 1);
    }
    let mut gray = Mat::default();
    imgproc::cvt_color(&frame, &mut gray, imgproc::COLOR_BGR2GRAY, 0)?;
    Ok(gray)
}

fn pixels(s: &Search) -> i64 {
    let side = |len: i32| (f64::from(len) * s.scale).round() as i64;
    side(s.region.width) * side(s.region.height)
}

/// Median milliseconds of the search, and the boxes it found.
fn time_search(cascade: &mut CascadeClassifier, gray: &Mat, s: &Search) -> anyhow::Result<(f64, usize)> {
    let roi = Mat::roi(gray, s.region)?;
    let size = |len: i32| (f64::from(len) * s.scale).round() as i32;
    let mut small = Mat::default();
    let to = Size::new(size(s.region.width), size(s.region.height));
    imgproc::resize(&roi, &mut small, to, 0.0, 0.0, imgproc::INTER_AREA)?;
    let mut equalized = Mat::default();
    imgproc::equalize_hist(&small, &mut equalized)?;
    let (min, max) = (Size::new(HAAR_MIN_FACE_PX, HAAR_MIN_FACE_PX), Size::new(s.max_box, s.max_box));
    let mut found = Vector::<Rect>::new();
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        cascade.detect_multi_scale(&equalized, &mut found, HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS, 0, min, max)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[RUNS / 2], found.len()))
}
