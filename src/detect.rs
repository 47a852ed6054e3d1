//! Face detection with OpenCV's Haar cascade (frontal face, default).
//!
//! Boxes are in frame pixels. The detector runs on a histogram-equalised gray copy
//! downscaled to at most `max_width` pixels wide, and maps its boxes back. The
//! cascade finds faces within about 15 degrees of upright, so the detector also
//! searches copies of the image turned by [`TURNED_SEARCH_DEG`]: a face it finds
//! there comes back as a [`FaceBox`] turned by that angle, whose crop is level.
//! [`AngleSearch::Cycle`] spreads those angles over successive runs, so that no
//! run costs more than one search. With a prior for its boxes, OpenCV's profile
//! cascade joins the turned searches ([`ProfileSearch`]). HD frames are also
//! searched tile by tile at finer resolutions, for small faces ([`tiles`]). Each
//! box is firm or faint by its raw hits ([`Evidence`]).

use crate::geometry::{Affine, CropPrior, FaceBox, Point, Rect};
use opencv::core::{Mat, Size, Vector};
use opencv::imgproc;
use opencv::objdetect::CascadeClassifier;
use opencv::prelude::*;
use std::path::{Path, PathBuf};

/// The cascade shipped in the repo (OpenCV's file, from Debian's opencv-data).
pub const DEFAULT_CASCADE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/haarcascades/haarcascade_frontalface_default.xml");
/// OpenCV's profile cascade (Debian's opencv-data): faces turned to one side, so
/// it also searches the mirror image for the other ([`ProfileCascade`]).
pub const PROFILE_CASCADE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/haarcascades/haarcascade_profileface.xml");
/// Image pyramid step of `detectMultiScale`, for whole frames and HD tiles alike.
/// A step of 1.15 in the tiles makes a tile search a fifth cheaper, but the scale
/// sweep then finds fewer faces 48 px between the eyes on every noise draw (0.925-0.940
/// against 0.955-0.970; docs/BENCHMARKS.md).
pub const HAAR_SCALE_FACTOR: f64 = 1.1;
/// Raw hits (neighbouring detections) above which a box is firm: the cascade's
/// usual bar, which its false boxes rarely pass.
pub const HAAR_MIN_NEIGHBORS: i32 = 5;
/// Raw hits above which a box is kept at all. Boxes with 3 to 5 hits are faint
/// ([`Evidence::Faint`]): many are clutter, but they also hold the faces the cascade
/// barely sees (small, turned or dim), and the CNN tells the two apart.
pub const FAINT_MIN_NEIGHBORS: i32 = 2;
/// Smallest face searched, in pixels of the downscaled detection image.
pub const HAAR_MIN_FACE_PX: i32 = 24;
/// Width a tracked face is scaled to when [`HaarDetector::detect_near`] looks for it
/// (about three times the cascade's 24 px window).
pub const LOCAL_FACE_PX: f32 = 72.0;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cascade {path}: file not found")]
    CascadeMissing { path: PathBuf },
    #[error("cascade {path}: not a valid OpenCV cascade XML")]
    CascadeInvalid { path: PathBuf },
    #[error("face detection failed")]
    OpenCv(#[from] opencv::Error),
}

/// Default for [`DetectorConfig::max_width`].
pub const DEFAULT_DETECT_WIDTH: u32 = 640;

/// The turns of the image searched besides upright, degrees: faces rolled by about
/// these angles are upright in the turned copy (the cascade covers about ±15
/// degrees around each).
pub const TURNED_SEARCH_DEG: [f32; 4] = [30.0, -30.0, 60.0, -60.0];

/// Frames at least this wide are also searched tile by tile for small faces
/// ([`tiles`]): the whole-frame search, downscaled to `max_width`, misses faces
/// narrower than about 24 px times the downscale (150 px in a 1080p frame at 320 px).
pub const TILED_MIN_WIDTH: i32 = 1280;
/// The finest tile resolution, against the frame's: a face 40 px wide is 24 px,
/// the cascade's window, there.
pub const TILE_SCALE: f32 = 0.6;
/// Each coarser level of tiles is this much smaller than the one before, so that
/// every face size is well inside the boxes some level searches: the cascade finds
/// a face far more often when its box is twice its 24 px window than at the window.
pub const TILE_LEVEL_STEP: f32 = 1.6;
/// Largest box searched in a tile, tile pixels. OpenCV's cascade moves its window
/// in 2 px steps up to twice the window and in 1 px steps beyond, so each larger
/// box size costs more than the one before; the next coarser level finds larger
/// faces on fewer pixels. On a 320 px tile this costs 0.72 of a search of every
/// size (`examples/cascade_cost.rs`); stopping at 48 px would cost 0.53, but the
/// scale sweep then found fewer faces (those at the top of the range get no hits
/// from larger boxes).
pub const TILE_MAX_FACE_PX: i32 = 58;
/// Raw hits above which a box found in a tile is kept: a small face gets few hits
/// at the 2 px steps of the smallest boxes. On the first 33 faces of the scale
/// sweep (`facekp bench --scale-sweep`), 1 instead of [`FAINT_MIN_NEIGHBORS`]
/// found 0.97 of the faces 48 px between the eyes instead of 0.88, and 0.88 at
/// 32 px instead of 0.82; 5 found far fewer. pedestrians_1080p runs at the same
/// frame rate (alternating runs) and gains no false face: the CNN's wide
/// threshold rejects the extra clutter.
pub const TILE_MIN_NEIGHBORS: i32 = 1;
/// Neighbouring tiles overlap by this, tile pixels, so that a face up to
/// [`TILE_MAX_FACE_PX`] is whole in one of them.
pub const TILE_OVERLAP_PX: f32 = 60.0;
/// Largest side of a tile, tile pixels: a tile search then costs about what a
/// whole-frame search at 320 px does.
pub const TILE_MAX_PX: f32 = 360.0;

/// A tile search: a region of the frame (frame pixels) searched at `scale` for the
/// faces between the cascade's window and [`TILE_MAX_FACE_PX`] there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tile {
    pub region: Rect,
    pub scale: f32,
}

/// The tiles that cover a `w` x `h` frame for the faces a whole-frame search at
/// `whole_scale` cannot see well: levels from [`TILE_SCALE`] down by
/// [`TILE_LEVEL_STEP`], while a level is finer than the whole-frame search by more
/// than 10%, each level cut into overlapping tiles of at most [`TILE_MAX_PX`].
/// None for frames narrower than [`TILED_MIN_WIDTH`].
pub fn tiles(w: i32, h: i32, whole_scale: f32) -> Vec<Tile> {
    if w < TILED_MIN_WIDTH {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut scale = TILE_SCALE;
    while scale * 0.9 > whole_scale {
        found.extend(level_tiles(w as f32, h as f32, scale));
        scale /= TILE_LEVEL_STEP;
    }
    found
}

/// The tiles of one level: the frame at `scale` cut into equal tiles of at most
/// [`TILE_MAX_PX`] that overlap by [`TILE_OVERLAP_PX`], rows first.
fn level_tiles(w: f32, h: f32, scale: f32) -> Vec<Tile> {
    let cuts = |len_px: f32| -> Vec<(f32, f32)> {
        let (len, overlap) = (len_px * scale, TILE_OVERLAP_PX);
        let n = ((len - overlap) / (TILE_MAX_PX - overlap)).ceil().max(1.0);
        let side = ((len - overlap) / n + overlap).min(len);
        let step = (len - side) / (n - 1.0).max(1.0);
        (0..n as usize).map(|i| (i as f32 * step / scale, side / scale)).collect()
    };
    let (xs, ys) = (cuts(w), cuts(h));
    let rect = |&(x, tw): &(f32, f32), &(y, th): &(f32, f32)| Rect::new(x, y, tw, th);
    ys.iter().flat_map(|y| xs.iter().map(move |x| Tile { region: rect(x, y), scale })).collect()
}

/// How strongly the cascade backs a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// More than [`HAAR_MIN_NEIGHBORS`] raw hits, in a whole-frame search.
    Firm,
    /// Fewer raw hits, or found in an HD tile (whose finer search fires on
    /// clutter more often whatever its hits).
    Faint,
}

/// How a new face was found. The wide searches, in turned copies of the image, in
/// HD tiles and of faint boxes, fire on clutter more often than the firm upright
/// whole-frame search, so their faces must be surer
/// ([`crate::face::confident`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    Upright,
    Wide,
}

/// A box the cascade found, in frame pixels, and how strongly it backs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The box, turned by the roll of the image copy it was found in.
    pub face_box: FaceBox,
    pub evidence: Evidence,
}

impl Detection {
    /// A firm box of the upright search: what the cascade finds in a plain frame.
    pub fn firm(face_box: FaceBox) -> Detection {
        Detection { face_box, evidence: Evidence::Firm }
    }

    /// The search whose threshold a new face from this box must meet: upright for
    /// a firm level box, wide for the rest.
    pub fn search(&self) -> Search {
        if self.evidence == Evidence::Firm && self.face_box.roll_rad == 0.0 {
            Search::Upright
        } else {
            Search::Wide
        }
    }

    /// Whether a detector run that finds this box has seen a face there again, for
    /// the face a track follows: firm boxes only, since a faint one may be clutter
    /// beside it.
    pub fn confirms(&self) -> bool {
        self.evidence == Evidence::Firm
    }
}

/// A box in the image the cascade searched, with its raw hits.
struct CascadeBox {
    rect: Rect,
    hits: i32,
}

/// Which turns of the image a detector run searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AngleSearch {
    /// The image as it is.
    Upright,
    /// One search per run: upright every other run, and the turned angles (then
    /// the profiles, if searched) in turn in between (video: a rolled face is
    /// found within eight runs, twelve with profiles).
    Cycle,
    /// Upright, every turned angle and the profiles on each run (photos).
    All,
}

#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// Frames wider than this are downscaled before detection.
    pub max_width: u32,
    pub angles: AngleSearch,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self { max_width: DEFAULT_DETECT_WIDTH, angles: AngleSearch::Upright }
    }
}

pub struct HaarDetector {
    cascade: CascadeClassifier,
    config: DetectorConfig,
    /// Runs so far, for [`AngleSearch::Cycle`].
    runs: usize,
    /// The profile search, when the model has a prior for its boxes.
    profile: Option<ProfileSearch>,
}

/// The cascade in `path`, checked.
fn load_cascade(path: &Path) -> Result<CascadeClassifier, DetectError> {
    if !path.is_file() {
        return Err(DetectError::CascadeMissing { path: path.to_owned() });
    }
    // OpenCV logs its own parse errors to stderr; an empty classifier means failure.
    let cascade = CascadeClassifier::new(path).map_err(|_| DetectError::CascadeInvalid { path: path.to_owned() })?;
    if cascade.empty()? {
        return Err(DetectError::CascadeInvalid { path: path.to_owned() });
    }
    Ok(cascade)
}

/// The image the profile cascade searches: as it is, or its mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    AsIs,
    Mirrored,
}

/// OpenCV's profile cascade, which finds faces turned to one side.
pub struct ProfileCascade {
    cascade: CascadeClassifier,
}

impl ProfileCascade {
    pub fn load(path: &Path) -> Result<Self, DetectError> {
        Ok(Self { cascade: load_cascade(path)? })
    }

    /// Its boxes on `gray` downscaled to at most `max_width` wide (on the mirror
    /// image for [`Side::Mirrored`], mapped back to `gray`), in frame pixels, firm
    /// and faint alike, largest first.
    pub fn boxes(&mut self, gray: &Mat, max_width: u32, side: Side) -> Result<Vec<Rect>, DetectError> {
        let (w, h) = (gray.cols().max(1) as f32, gray.rows().max(1) as f32);
        let scale = (max_width as f32 / w).min(1.0);
        let Some(view) = TurnedView::of(gray, &FaceBox::level(Rect::new(0.0, 0.0, w, h)), scale)? else {
            return Ok(Vec::new());
        };
        let mut mirror = Mat::default();
        let image = match side {
            Side::AsIs => &view.image,
            Side::Mirrored => {
                opencv::core::flip(&view.image, &mut mirror, 1)?;
                &mirror
            }
        };
        let min = Size::new(HAAR_MIN_FACE_PX, HAAR_MIN_FACE_PX);
        let boxes = cascade_boxes(&mut self.cascade, image, min, Size::default(), FAINT_MIN_NEIGHBORS)?;
        let unmirror = |r: Rect| match side {
            Side::AsIs => r,
            Side::Mirrored => Rect::new(image.cols() as f32 - r.x - r.w, r.y, r.w, r.h),
        };
        Ok(boxes.into_iter().map(|b| view.back_to_frame(&unmirror(b.rect)).upright).collect())
    }
}

/// The profile cascade with the priors that turn its boxes into the boxes the
/// frontal cascade would give the same faces, so that everything after the
/// detector crops them alike.
pub struct ProfileSearch {
    cascade: ProfileCascade,
    /// Where the profile cascade's box sits on a face found as the image is.
    profile: CropPrior,
    frontal: CropPrior,
}

impl ProfileSearch {
    pub fn load(path: &Path, profile: CropPrior, frontal: CropPrior) -> Result<Self, DetectError> {
        Ok(Self { cascade: ProfileCascade::load(path)?, profile, frontal })
    }

    /// The faces the profile cascade finds on `side` of `gray`, as frontal-like
    /// faint boxes (a wide search: the cascade fires on clutter more often).
    fn detect(&mut self, gray: &Mat, max_width: u32, side: Side) -> Result<Vec<Detection>, DetectError> {
        let prior = if side == Side::Mirrored { self.profile.mirrored() } else { self.profile };
        let frontal_like = |r: Rect| Detection {
            face_box: FaceBox::level(prior.converted(&r, &self.frontal)),
            evidence: Evidence::Faint,
        };
        Ok(self.cascade.boxes(gray, max_width, side)?.into_iter().map(frontal_like).collect())
    }
}

/// One search of a detector run: the frontal cascade on the frame turned by
/// degrees, or the profile cascade on one side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Turned(f32),
    Profile(Side),
}

impl HaarDetector {
    pub fn new(path: &Path, config: DetectorConfig) -> Result<Self, DetectError> {
        Ok(Self { cascade: load_cascade(path)?, config, runs: 0, profile: None })
    }

    /// Also searches for profiles, as further steps of the turned searches
    /// ([`AngleSearch::Cycle`] and [`AngleSearch::All`]).
    pub fn search_profiles(&mut self, profile: ProfileSearch) {
        self.profile = Some(profile);
    }

    /// Searches `angles` from the next run on (starting a cycle afresh).
    pub fn set_angles(&mut self, angles: AngleSearch) {
        self.config.angles = angles;
        self.runs = 0;
    }

    /// Faces about the size of `around` near it (within a region twice its size),
    /// searched at a resolution where that face is [`LOCAL_FACE_PX`] wide rather than
    /// at the downscaled whole-frame resolution, and turned by its roll so that it
    /// is upright: the check that a tracked face the whole-frame search missed is
    /// still there. Largest first, turned as `around` is.
    pub fn detect_near(&mut self, gray: &Mat, around: &FaceBox) -> Result<Vec<FaceBox>, DetectError> {
        let side = 2.0 * around.upright.w.max(around.upright.h);
        if !side.is_finite() || around.upright.w < 1.0 {
            return Ok(Vec::new());
        }
        let scale = (LOCAL_FACE_PX / around.upright.w).min(1.0);
        let region = FaceBox::around(around.center_in_frame(), side, side, around.roll_rad);
        let Some(view) = TurnedView::of(gray, &region, scale)? else {
            return Ok(Vec::new());
        };
        let expected = around.upright.w * scale;
        let min = ((expected * 0.6) as i32).max(HAAR_MIN_FACE_PX);
        let max = ((expected * 1.6) as i32).max(min + 1);
        let boxes = cascade_boxes(
            &mut self.cascade,
            &view.image,
            Size::new(min, min),
            Size::new(max, max),
            HAAR_MIN_NEIGHBORS,
        )?;
        Ok(boxes.into_iter().map(|b| view.back_to_frame(&b.rect)).collect())
    }

    /// The tiles of a `w` x `h` frame for this detector's whole-frame resolution
    /// ([`tiles`]).
    pub fn tiles(&self, w: i32, h: i32) -> Vec<Tile> {
        tiles(w, h, (self.config.max_width as f32 / w.max(1) as f32).min(1.0))
    }

    /// Upright faces in `tile` of `gray`: the small faces the whole-frame search
    /// cannot see. Every box is faint.
    pub fn detect_tile(&mut self, gray: &Mat, tile: &Tile) -> Result<Vec<Detection>, DetectError> {
        let Some(view) = TurnedView::of(gray, &FaceBox::level(tile.region), tile.scale)? else {
            return Ok(Vec::new());
        };
        let (min, max) = (Size::new(HAAR_MIN_FACE_PX, HAAR_MIN_FACE_PX), Size::new(TILE_MAX_FACE_PX, TILE_MAX_FACE_PX));
        let boxes = cascade_boxes(&mut self.cascade, &view.image, min, max, TILE_MIN_NEIGHBORS)?;
        let faint = |b: CascadeBox| Detection { face_box: view.back_to_frame(&b.rect), evidence: Evidence::Faint };
        Ok(boxes.into_iter().map(faint).collect())
    }

    /// Faces in an 8-bit gray frame, largest first, in frame pixels, searched at the
    /// turns [`DetectorConfig::angles`] calls for on this run: the firm boxes, and
    /// the faint ones that overlap none of them.
    pub fn detect(&mut self, gray: &Mat) -> Result<Vec<Detection>, DetectError> {
        let wide = self.wide_steps();
        let steps: Vec<Step> = match self.config.angles {
            AngleSearch::Upright => vec![Step::Turned(0.0)],
            AngleSearch::All => std::iter::once(Step::Turned(0.0)).chain(wide).collect(),
            AngleSearch::Cycle => vec![cycle_step(self.runs, &wide)],
        };
        self.runs += 1;
        let mut found = Vec::new();
        for step in steps {
            found.extend(match step {
                Step::Turned(deg) => self.detect_turned(gray, deg.to_radians())?,
                Step::Profile(side) => match self.profile.as_mut() {
                    Some(p) => p.detect(gray, self.config.max_width, side)?,
                    None => Vec::new(),
                },
            });
        }
        let mut found = without_faint_duplicates(found);
        found.sort_by(|a, b| b.face_box.upright.area().total_cmp(&a.face_box.upright.area()));
        Ok(found)
    }

    /// The searches besides upright: the turned ones, then the profiles if set.
    fn wide_steps(&self) -> Vec<Step> {
        let turned = TURNED_SEARCH_DEG.iter().map(|&deg| Step::Turned(deg));
        let profiles = [Side::AsIs, Side::Mirrored].map(Step::Profile);
        turned.chain(profiles.into_iter().filter(|_| self.profile.is_some())).collect()
    }

    /// Faces rolled by about `roll_rad`: the cascade on the whole frame turned by
    /// `-roll_rad` (so they are upright), on a canvas that holds all of it,
    /// downscaled to as many pixels as the upright search's image (at most
    /// `max_width` wide), so that a turned run costs what an upright one does.
    fn detect_turned(&mut self, gray: &Mat, roll_rad: f32) -> Result<Vec<Detection>, DetectError> {
        let (w, h) = (gray.cols().max(1) as f32, gray.rows().max(1) as f32);
        let centre = Point::new(w / 2.0, h / 2.0);
        // The turned frame's size: the frame's bounds as seen turned by `roll_rad`.
        let (cw, ch) = FaceBox::around(centre, w, h, roll_rad).turned_bounds();
        let upright_scale = (self.config.max_width as f32 / w).min(1.0);
        let scale = upright_scale * ((w * h) / (cw * ch)).sqrt();
        let canvas = FaceBox::around(centre, cw, ch, roll_rad);
        let Some(view) = TurnedView::of(gray, &canvas, scale)? else {
            return Ok(Vec::new());
        };
        let min = Size::new(HAAR_MIN_FACE_PX, HAAR_MIN_FACE_PX);
        let boxes = cascade_boxes(&mut self.cascade, &view.image, min, Size::default(), FAINT_MIN_NEIGHBORS)?;
        let detection = |b: CascadeBox| Detection {
            face_box: view.back_to_frame(&b.rect),
            evidence: if b.hits > HAAR_MIN_NEIGHBORS { Evidence::Firm } else { Evidence::Faint },
        };
        Ok(boxes.into_iter().map(detection).collect())
    }
}

/// The cascade on a histogram-equalised copy of `gray`: boxes between `min` and
/// `max` in size (`max` 0: no limit) with more than `neighbors` raw hits, largest
/// first, in `gray`'s pixels. OpenCV groups the raw hits the same way whatever
/// `neighbors` is, so the boxes with more than 5 hits of a search at 2 are those
/// of a search at 5.
fn cascade_boxes(
    cascade: &mut CascadeClassifier,
    gray: &Mat,
    min: Size,
    max: Size,
    neighbors: i32,
) -> Result<Vec<CascadeBox>, DetectError> {
    let mut equalized = Mat::default();
    imgproc::equalize_hist(gray, &mut equalized)?;
    let (mut found, mut hits) = (Vector::<opencv::core::Rect>::new(), Vector::<i32>::new());
    cascade.detect_multi_scale2(&equalized, &mut found, &mut hits, HAAR_SCALE_FACTOR, neighbors, 0, min, max)?;
    let rect = |r: opencv::core::Rect| Rect::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32);
    let mut boxes: Vec<CascadeBox> =
        found.iter().zip(hits.iter()).map(|(r, hits)| CascadeBox { rect: rect(r), hits }).collect();
    boxes.sort_by(|a, b| b.rect.area().total_cmp(&a.rect.area()));
    Ok(boxes)
}

/// How much of a faint box may overlap a firm one (of the smaller's area) before
/// it counts as the same face, or as a part of it (the chin or mouth the cascade
/// fires on).
const FAINT_OVERLAP: f32 = 0.3;

/// `found` without the faint boxes that overlap a firm one.
fn without_faint_duplicates(found: Vec<Detection>) -> Vec<Detection> {
    let firm: Vec<FaceBox> = found.iter().filter(|d| d.confirms()).map(|d| d.face_box).collect();
    let apart = |d: &Detection| firm.iter().all(|f| f.overlap_of_smaller(&d.face_box) <= FAINT_OVERLAP);
    found.into_iter().filter(|d| d.confirms() || apart(d)).collect()
}

/// The search a [`AngleSearch::Cycle`] detector makes on run `run`: upright on even
/// runs, the `wide` searches in turn on odd ones.
fn cycle_step(run: usize, wide: &[Step]) -> Step {
    if run.is_multiple_of(2) || wide.is_empty() {
        Step::Turned(0.0)
    } else {
        wide[(run / 2) % wide.len()]
    }
}

/// A region of the frame turned upright and scaled, as the cascade searches it.
struct TurnedView {
    image: Mat,
    /// Frame pixels -> `image` pixels.
    to_image: Affine,
    roll_rad: f32,
}

impl TurnedView {
    /// `region` of `gray` (a box turned by its roll), turned level and scaled by
    /// `scale`: the frame is cut to what the region needs and downscaled first
    /// (area averaging, as a plain resize does), then turned. Parts of the region
    /// beyond the frame are black. `None` when the view would be smaller than the
    /// cascade's window.
    fn of(gray: &Mat, region: &FaceBox, scale: f32) -> Result<Option<TurnedView>, DetectError> {
        let (out_w, out_h) = ((region.upright.w * scale).round(), (region.upright.h * scale).round());
        if out_w < HAAR_MIN_FACE_PX as f32 || out_h < HAAR_MIN_FACE_PX as f32 {
            return Ok(None);
        }
        let frame = Rect::new(0.0, 0.0, gray.cols() as f32, gray.rows() as f32);
        let b = region.bounds_in_frame();
        let (x0, y0) = (b.x.max(0.0).floor(), b.y.max(0.0).floor());
        let (x1, y1) = ((b.x + b.w).min(frame.w).ceil(), (b.y + b.h).min(frame.h).ceil());
        if x1 - x0 < 1.0 || y1 - y0 < 1.0 {
            return Ok(None);
        }
        let roi = Mat::roi(gray, opencv::core::Rect::new(x0 as i32, y0 as i32, (x1 - x0) as i32, (y1 - y0) as i32))?;
        let small_size =
            Size::new((((x1 - x0) * scale).round() as i32).max(1), (((y1 - y0) * scale).round() as i32).max(1));
        let mut small = Mat::default();
        imgproc::resize(&roi, &mut small, small_size, 0.0, 0.0, imgproc::INTER_AREA)?;
        // Frame -> small: shift to the cut, then scale (by the sizes actually made).
        let (sx, sy) = (small_size.width as f32 / (x1 - x0), small_size.height as f32 / (y1 - y0));
        let to_small = Affine { a: sx, b: 0.0, c: 0.0, d: sy, tx: -x0 * sx, ty: -y0 * sy };
        let centre = to_small.apply(region.center_in_frame());
        let turn = turn_about(centre, -region.roll_rad, out_w, out_h);
        let to_image = turn.after(&to_small);
        let level_and_whole =
            region.roll_rad == 0.0 && b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= frame.w && b.y + b.h <= frame.h;
        let image = if level_and_whole {
            small
        } else {
            crate::imageops::warp_gray(&small, &turn, out_w as i32, out_h as i32)?
        };
        let to_image = if level_and_whole { to_small } else { to_image };
        Ok(Some(TurnedView { image, to_image, roll_rad: region.roll_rad }))
    }

    /// A box the cascade found in the view, as a frame box turned by the view's roll.
    fn back_to_frame(&self, found: &Rect) -> FaceBox {
        let m = &self.to_image;
        let scale = (m.a * m.d - m.b * m.c).abs().sqrt();
        FaceBox::around(m.inverse().apply(found.center()), found.w / scale, found.h / scale, self.roll_rad)
    }
}

/// The map from an image to a `w` x `h` image of it turned by `angle_rad` about
/// `centre` ([`Point::turned`]), `centre` landing in the middle.
fn turn_about(centre: Point, angle_rad: f32, w: f32, h: f32) -> Affine {
    let (sin, cos) = angle_rad.sin_cos();
    let (a, b, c, d) = (cos, -sin, sin, cos);
    let tx = w / 2.0 - (a * centre.x + b * centre.y);
    let ty = h / 2.0 - (c * centre.x + d * centre.y);
    Affine { a, b, c, d, tx, ty }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(x: f32, y: f32, side: f32, roll_rad: f32, evidence: Evidence) -> Detection {
        let face_box = FaceBox::around(Point::new(x, y), side, side, roll_rad);
        Detection { face_box, evidence }
    }

    /// A firm level box is an upright search; a turned or faint one a wide search,
    /// and only firm boxes confirm a track.
    #[test]
    fn evidence_and_roll_decide_the_search() {
        let firm = detection(100.0, 100.0, 80.0, 0.0, Evidence::Firm);
        assert_eq!((firm.search(), firm.confirms()), (Search::Upright, true));
        let turned = detection(100.0, 100.0, 80.0, 0.5, Evidence::Firm);
        assert_eq!((turned.search(), turned.confirms()), (Search::Wide, true));
        let faint = detection(100.0, 100.0, 80.0, 0.0, Evidence::Faint);
        assert_eq!((faint.search(), faint.confirms()), (Search::Wide, false));
    }

    /// A cycle searches upright on every other run and each wide search in turn
    /// between, profiles last; without wide searches, upright only.
    #[test]
    fn a_cycle_visits_every_search() {
        let wide: Vec<Step> = TURNED_SEARCH_DEG
            .iter()
            .map(|&d| Step::Turned(d))
            .chain([Step::Profile(Side::AsIs), Step::Profile(Side::Mirrored)])
            .collect();
        let steps: Vec<Step> = (0..12).map(|run| cycle_step(run, &wide)).collect();
        assert!(steps.iter().step_by(2).all(|s| *s == Step::Turned(0.0)), "{steps:?}");
        let odd: Vec<Step> = steps.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(odd, wide);
        assert_eq!(cycle_step(3, &[]), Step::Turned(0.0));
    }

    /// A faint box on a firm one's face (the same face, or its chin) goes; faint
    /// boxes elsewhere, and firm boxes that overlap, stay.
    #[test]
    fn faint_boxes_on_a_firm_face_are_dropped() {
        let face = detection(200.0, 200.0, 100.0, 0.0, Evidence::Firm);
        let chin = detection(200.0, 250.0, 40.0, 0.0, Evidence::Faint);
        let same = detection(205.0, 195.0, 110.0, 0.2, Evidence::Faint);
        let beside = detection(320.0, 200.0, 60.0, 0.0, Evidence::Faint);
        let firm_beside = detection(260.0, 200.0, 60.0, 0.0, Evidence::Firm);
        let kept = without_faint_duplicates(vec![face, chin, same, beside, firm_beside]);
        assert_eq!(kept, vec![face, beside, firm_beside]);
    }

    /// Each level of tiles covers the whole frame, and a face up to the level's
    /// largest box is whole in one of its tiles; the levels reach from 40 px faces
    /// to the smallest face of the whole-frame search without a gap; frames below
    /// HD get none.
    #[test]
    fn tiles_cover_an_hd_frame_at_every_face_size() {
        assert!(tiles(640, 360, 0.5).is_empty() && tiles(1279, 720, 0.25).is_empty());
        let whole_scale = 320.0 / 1920.0;
        let t = tiles(1920, 1080, whole_scale);
        let mut scales: Vec<f32> = t.iter().map(|t| t.scale).collect();
        scales.dedup();
        assert_eq!(scales.len(), 3, "{t:?}");
        assert!(t.iter().all(|t| t.region.w * t.scale <= TILE_MAX_PX + 0.01), "{t:?}");
        for &scale in &scales {
            let level: Vec<Rect> = t.iter().filter(|t| t.scale == scale).map(|t| t.region).collect();
            for y in (0..1080).step_by(7) {
                for x in (0..1920).step_by(7) {
                    let p = Point::new(x as f32, y as f32);
                    assert!(level.iter().any(|r| r.contains(p)), "{p:?} uncovered at {scale}");
                }
            }
            let face = TILE_MAX_FACE_PX as f32 / scale;
            for (x, y) in [(600.0, 300.0), (1920.0 - face, 1080.0 - face), (0.0, 0.0), (830.0, 660.0), (1000.0, 450.0)]
            {
                let f = Rect::new(x, y, face, face);
                let whole = |r: &Rect| r.contains(Point::new(f.x, f.y)) && r.contains(Point::new(f.x + f.w, f.y + f.h));
                assert!(level.iter().any(whole), "a face at {f:?} is whole in a tile at {scale}");
            }
        }
        // Face sizes (frame px) each level searches, finest first, then the whole frame's.
        let mut reach: Vec<(f32, f32)> =
            scales.iter().map(|s| (HAAR_MIN_FACE_PX as f32 / s, TILE_MAX_FACE_PX as f32 / s)).collect();
        reach.push((HAAR_MIN_FACE_PX as f32 / whole_scale, f32::INFINITY));
        assert!(reach[0].0 <= 40.0, "{reach:?}");
        assert!(reach.windows(2).all(|p| p[1].0 < p[0].1), "no gap between sizes: {reach:?}");
    }
}
