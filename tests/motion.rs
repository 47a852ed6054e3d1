//! Keypoints stay on a moving face: the einstein photo (tests/data) held still,
//! then panned across a 640x480 frame, through the face stage with the shipped
//! 68-point model and default smoothing, followed by its keypoints as `run`
//! follows a face on a video.

use crate::util::*;
use facekp::dataset::read_pts;
use facekp::detect::{AngleSearch, Detection, DetectorConfig, HaarDetector, DEFAULT_CASCADE};
use facekp::eval::nme;
use facekp::geometry::{Affine, FaceBox, Point, Rect};
use facekp::imageops;
use facekp::landmarks::Scheme;
use facekp::model::{Keypointer, Precision};
use facekp::pipeline::face_stage::Found;
use facekp::pipeline::FaceStage;
use facekp::pose::CameraSpec;
use facekp::smooth::SmoothParams;
use facekp::track::CropMode;

const IOD_PX: f32 = 70.0;
const HOLD_FRAMES: usize = 30;
const SETTLE_FRAMES: usize = 10;
const MOVE_FRAMES: usize = 40;

/// The einstein photo and its true points, and the scale that gives the face an
/// inter-ocular distance of [`IOD_PX`].
struct Photo {
    gray: opencv::core::Mat,
    truth: Vec<Point>,
    scale: f32,
}

impl Photo {
    fn load() -> Photo {
        let gray = imageops::read_gray(&data("einstein.jpg")).unwrap().unwrap();
        let truth = read_pts(&data("einstein.pts")).unwrap();
        let scale = IOD_PX / truth[36].distance(truth[45]);
        Photo { gray, truth, scale }
    }

    /// The 640x480 frame with the face's centre at `centre`, and its true points there.
    fn frame(&self, centre: Point) -> (opencv::core::Mat, Vec<Point>) {
        let c = Rect::bounding(&self.truth).center();
        let s = self.scale;
        let m = Affine { a: s, b: 0.0, c: 0.0, d: s, tx: centre.x - s * c.x, ty: centre.y - s * c.y };
        let frame = imageops::warp_gray(&self.gray, &m, 640, 480).unwrap();
        (frame, self.truth.iter().map(|p| m.apply(*p)).collect())
    }
}

/// NME still (the hold after it settles) and moving (every moving frame) of the
/// face held, then panned right at `px_per_frame`. The first frame's face box is
/// the detector box for the true points (the cascade misses his tilted face);
/// after it the face is followed by its keypoints alone.
fn pan(stage: &mut FaceStage, photo: &Photo, px_per_frame: f32) -> (f64, f64) {
    stage.restart(CropMode::Keypoints);
    let origin = stage.model().label_origin();
    let origin = Point::new(origin.x * photo.scale, origin.y * photo.scale);
    let start = 320.0 - px_per_frame * MOVE_FRAMES as f32 / 2.0;
    let (mut still, mut moving) = (Vec::new(), Vec::new());
    for n in 0..HOLD_FRAMES + MOVE_FRAMES {
        let moved = (n + 1).saturating_sub(HOLD_FRAMES) as f32;
        let (frame, truth) = photo.frame(Point::new(start + px_per_frame * moved, 240.0));
        let prior = stage.model().config().crop;
        let first = [Detection::firm(FaceBox::level(prior.detection_for_points(&truth)))];
        let found = Found { frame: (n == 0).then_some(&first[..]), tile: &[] };
        let faces = stage.process(&frame, found, n as f64 * 1000.0 / 30.0).unwrap().faces;
        let best = faces
            .iter()
            .map(|f| nme(&f.points.iter().map(|&p| p + origin).collect::<Vec<_>>(), &truth, Scheme::P68))
            .min_by(f64::total_cmp);
        let e = best.unwrap_or_else(|| panic!("{px_per_frame} px a frame: no face on frame {n}"));
        assert!(e < 0.10, "{px_per_frame} px a frame: lost on frame {n} (NME {e:.3})");
        match n {
            n if n < SETTLE_FRAMES => {}
            n if n < HOLD_FRAMES => still.push(e),
            _ => moving.push(e),
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&still), mean(&moving))
}

/// Panned at 5 and 10 px a frame (150 and 300 px/s at 30 fps), the smoothed
/// points stay within the motion targets of their NME on the still face: 1.10x
/// and 1.20x.
#[test]
fn a_panned_face_keeps_its_accuracy() {
    let weights = weights("face68.safetensors");
    let model = Keypointer::load(&weights, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None).unwrap();
    let config = DetectorConfig { max_width: 320, angles: AngleSearch::Upright };
    let detector = HaarDetector::new(Path::new(DEFAULT_CASCADE), config).unwrap();
    let smoothing = Some(SmoothParams::default());
    let mut stage = FaceStage::new(detector, model, CropMode::Keypoints, smoothing, CameraSpec::default());
    let photo = Photo::load();
    for (px_per_frame, bound) in [(5.0, 1.10), (10.0, 1.20)] {
        let (still, moving) = pan(&mut stage, &photo, px_per_frame);
        eprintln!("{px_per_frame} px a frame: NME still {still:.4}, moving {moving:.4}");
        assert!(moving <= bound * still, "{px_per_frame} px a frame: NME moving {moving:.4}, still {still:.4}");
    }
}
