//! The data of a training run: data set folders (`DIR/train.csv`, `DIR/val.csv`,
//! `DIR/images/`) and Kaggle keypoints CSVs, as labelled faces in the model's
//! point scheme, and the pool an epoch draws from.

use super::augment::{LabelledFace, Placement};
use crate::dataset;
use crate::geometry::{CropPrior, Point};
use crate::kaggle::{self, KaggleFace};
use crate::landmarks::Scheme;
use crate::pose::{CameraSpec, Openness, PoseSolver};
use anyhow::{bail, Result};
use opencv::core::Mat;
use opencv::prelude::*;
use std::path::Path;

/// Every this-many-th row of a Kaggle CSV, from the first, is held out for
/// validation (the file has no split of its own).
pub const KAGGLE_VAL_EVERY: usize = 10;

/// Where a set's faces come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// A data set folder: photos with all 68 points.
    Folder,
    /// A Kaggle CSV: framed 96 px faces, some points missing.
    Kaggle,
}

/// One data set split: its name (also its annotation convention and output head)
/// and its faces.
pub struct TrainSet {
    pub name: String,
    pub kind: SetKind,
    pub faces: Vec<LabelledFace>,
    /// The 68 points of each face of a folder set (to match Haar boxes to faces when
    /// measuring the crop prior); empty for a Kaggle set.
    pub points68: Vec<Vec<Point>>,
    /// Which faces enter an epoch more often than the others, one per face.
    pub emphasis: Vec<Emphasis>,
}

/// The data sets of a run, training and validation splits.
pub struct Sets {
    pub train: Vec<TrainSet>,
    pub val: Vec<TrainSet>,
}

impl Sets {
    /// Loads every `--data` entry: a folder's `train.csv` (and `val.csv` where
    /// present), or a Kaggle CSV, split by [`KAGGLE_VAL_EVERY`].
    pub fn load(data: &[impl AsRef<Path>], scheme: Scheme) -> Result<Sets> {
        let mut sets = Sets { train: Vec::new(), val: Vec::new() };
        for entry in data {
            let entry = entry.as_ref();
            if entry.is_file() && kaggle::is_kaggle_csv(entry)? {
                sets.add_kaggle(entry, scheme)?;
            } else {
                sets.add_folder(entry, scheme)?;
            }
        }
        let names = sets.conventions();
        if let Some(twice) = names.iter().enumerate().find_map(|(i, n)| names[..i].contains(n).then_some(n)) {
            bail!("--data: two data sets are named {twice}; each set needs its own name (its output head)");
        }
        Ok(sets)
    }

    fn add_folder(&mut self, dir: &Path, scheme: Scheme) -> Result<()> {
        let name = dataset::set_name(dir);
        let (images, csv) = (dir.join("images"), dir.join("train.csv"));
        if !csv.is_file() {
            bail!("--data {}: no train.csv in this folder, and not a Kaggle keypoints CSV", dir.display());
        }
        eprintln!("loading {name}: {}", csv.display());
        self.train.push(folder_set(dataset::load_set(&name, &csv, &images)?, scheme)?);
        let val = dir.join("val.csv");
        if val.is_file() {
            self.val.push(folder_set(dataset::load_set(&name, &val, &images)?, scheme)?);
        }
        Ok(())
    }

    fn add_kaggle(&mut self, csv: &Path, scheme: Scheme) -> Result<()> {
        if scheme != Scheme::P15 {
            bail!("--data {}: a Kaggle keypoints CSV has 15 points: train it with --points 15", csv.display());
        }
        eprintln!("loading {}: {} (every {KAGGLE_VAL_EVERY}th row for validation)", kaggle::CONVENTION, csv.display());
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, face) in kaggle::read_kaggle_csv(csv)?.into_iter().enumerate() {
            let split = if i % KAGGLE_VAL_EVERY == 0 { &mut val } else { &mut train };
            split.push(kaggle_face(face));
        }
        let set = |faces: Vec<LabelledFace>| TrainSet {
            name: kaggle::CONVENTION.into(),
            kind: SetKind::Kaggle,
            emphasis: vec![Emphasis::None; faces.len()],
            faces,
            points68: Vec::new(),
        };
        self.train.push(set(train));
        if !val.is_empty() {
            self.val.push(set(val));
        }
        Ok(())
    }

    /// The conventions (output heads): one per training set.
    pub fn conventions(&self) -> Vec<String> {
        self.train.iter().map(|s| s.name.clone()).collect()
    }

    /// Whether a set can show where the Haar detector puts its box (a folder of
    /// photos can; framed Kaggle faces cannot).
    pub fn can_measure_prior(&self) -> bool {
        self.train.iter().any(|s| s.kind == SetKind::Folder)
    }

    /// Places the crops of each Kaggle set (both splits) from the framing box of
    /// its training rows under `prior` ([`kaggle::framing_box`]).
    pub fn frame_kaggle_faces(&mut self, prior: &CropPrior) -> Result<()> {
        for k in 0..self.train.len() {
            if self.train[k].kind != SetKind::Kaggle {
                continue;
            }
            let complete: Vec<Vec<Point>> = self.train[k].faces.iter().filter_map(complete_points).collect();
            let Some(framing) = kaggle::mean_detection(&complete, prior) else {
                bail!("--data: the Kaggle CSV has no row with all 15 points, so its crops cannot be framed");
            };
            let name = self.train[k].name.clone();
            for set in self.train.iter_mut().chain(self.val.iter_mut()).filter(|s| s.name == name) {
                set.faces.iter_mut().for_each(|f| f.placement = Placement::Detection(framing));
            }
        }
        Ok(())
    }
}

fn folder_set(set: dataset::LoadedSet, scheme: Scheme) -> Result<TrainSet> {
    let points68: Vec<Vec<Point>> = set.annotations.iter().map(|a| a.points.clone()).collect();
    let emphasis = emphasis_of(&set.images, &points68)?;
    let faces = set
        .images
        .into_iter()
        .zip(&points68)
        .map(|(gray, p)| LabelledFace::complete(gray, scheme.from_68(p)))
        .collect();
    Ok(TrainSet { name: set.name, kind: SetKind::Folder, faces, points68, emphasis })
}

/// A Kaggle row as a labelled face; its placement is set once the prior is known.
fn kaggle_face(face: KaggleFace) -> LabelledFace {
    let present: Vec<bool> = face.points.iter().map(Option::is_some).collect();
    let points = face.points.iter().map(|p| p.unwrap_or_default()).collect();
    LabelledFace { gray: face.image, points, present, placement: Placement::AroundPoints }
}

fn complete_points(face: &LabelledFace) -> Option<Vec<Point>> {
    face.present.iter().all(|&p| p).then(|| face.points.clone())
}

/// A face whose annotated eye aspect ratio is below this, on either eye, has a
/// closed eye. They are few (40 of the 803 HELEN training faces), and a model
/// trained on them once an epoch leaves closed eyes half open.
pub const CLOSED_EYE_EAR: f32 = 0.15;
/// How many times more often than its set's other faces a closed-eye face enters
/// an epoch.
pub const CLOSED_EYE_REPEAT: usize = 3;

/// A face whose labels' head pose (the pose solver's yaw, frame width as focal
/// length) turns further than this many degrees is a turned face. Turned faces are
/// a small part of the data sets, and the profile search finds them at run time.
pub const TURNED_YAW_DEG: f32 = 30.0;
/// How many times more often than its set's frontal faces a turned face enters an
/// epoch (a turned face with a closed eye: the closed-eye repeat).
pub const TURNED_REPEAT: usize = 2;

/// Why a face enters an epoch more often than its set's others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emphasis {
    None,
    /// An eye's aspect ratio is under [`CLOSED_EYE_EAR`].
    ClosedEye,
    /// The head turns further than [`TURNED_YAW_DEG`] (and no eye is closed).
    Turned,
}

impl Emphasis {
    /// The emphasis of a face with 68 labelled `points68` in a photo of
    /// `frame_size` (width, height); `solver` is a 68-point pose solver.
    pub fn of(points68: &[Point], frame_size: (u32, u32), solver: &PoseSolver) -> opencv::Result<Emphasis> {
        if Openness::from_points(points68).is_some_and(|o| o.eyes.iter().any(|&e| e < CLOSED_EYE_EAR)) {
            return Ok(Emphasis::ClosedEye);
        }
        let turned = solver.solve(points68, frame_size)?.is_some_and(|pose| pose.yaw.abs() > TURNED_YAW_DEG);
        Ok(if turned { Emphasis::Turned } else { Emphasis::None })
    }

    /// How many times the face enters an epoch for each of its set's repeats.
    pub fn times(self) -> usize {
        match self {
            Emphasis::None => 1,
            Emphasis::ClosedEye => CLOSED_EYE_REPEAT,
            Emphasis::Turned => TURNED_REPEAT,
        }
    }
}

/// The emphasis of each face of a folder set (`images`, their 68 `points68`).
fn emphasis_of(images: &[Mat], points68: &[Vec<Point>]) -> Result<Vec<Emphasis>> {
    let solver = PoseSolver::new(Scheme::P68, CameraSpec::default());
    let size = |gray: &Mat| (gray.cols() as u32, gray.rows() as u32);
    Ok(images.iter().zip(points68).map(|(gray, p)| Emphasis::of(p, size(gray), &solver)).collect::<Result<_, _>>()?)
}

/// What an epoch trains on: every face of data set k, `repeat[k]` times (closed-eye
/// and turned faces more often: [`Emphasis`]), each time with its own
/// random crop.
pub struct Pool<'a> {
    /// Each face with the index of its set (and output head).
    pub faces: Vec<(&'a LabelledFace, usize)>,
    /// Indices into `faces`, each face as often as its set repeats.
    pub order: Vec<usize>,
    pub batches: usize,
}

impl Pool<'_> {
    /// The crops of an epoch.
    pub fn crops(sets: &Sets, repeat: &[usize]) -> usize {
        sets.train.iter().zip(repeat).map(|(s, r)| s.emphasis.iter().map(|e| e.times()).sum::<usize>() * r).sum()
    }

    pub fn new<'a>(sets: &'a Sets, repeat: &[usize], batch_size: usize) -> Pool<'a> {
        let faces: Vec<(&LabelledFace, usize)> =
            sets.train.iter().enumerate().flat_map(|(k, s)| s.faces.iter().map(move |f| (f, k))).collect();
        let times = sets.train.iter().zip(repeat).flat_map(|(s, r)| s.emphasis.iter().map(move |e| e.times() * r));
        let order: Vec<usize> = times.enumerate().flat_map(|(i, n)| std::iter::repeat_n(i, n)).collect();
        let batches = order.len() / batch_size;
        Pool { faces, order, batches }
    }
}
