//! `facekp bench`: end-to-end speed from the pipeline's own counters, and the
//! steadiness (jitter) of keypoints on a still photo with fresh noise per frame.

use crate::face::Face;
use crate::geometry::Point;
use crate::landmarks::Scheme;
use crate::pipeline::{median, RunSummary};
use serde::Serialize;

pub mod ghosts;
pub mod motion;
pub mod scale;
pub mod sweep;

/// Frames excluded from the figures while caches, allocators and filters settle.
pub const WARMUP_FRAMES: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub frames: usize,
    pub faces: u64,
    pub fps: f64,
    pub decode_ms: f64,
    pub detect_ms: f64,
    /// Median time of a tile search (HD video), 0 without any.
    pub tile_ms: f64,
    pub infer_ms_per_face: f64,
    pub draw_ms: f64,
    pub latency_ms: f64,
    /// 95th percentile of the capture-to-display latency.
    pub latency_p95_ms: f64,
    /// Frames a live source dropped because a newer one arrived.
    pub dropped: u64,
    pub detector_runs: u64,
    /// Frames that searched a tile for small faces.
    pub tile_searches: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Frames the jitter was measured on (those of the longest track).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_frames: Option<usize>,
    /// The jitter from the longest track's [`WARMUP_FRAMES`]-th frame on: its
    /// filters settled, when the detector found the face only after the run's
    /// warm-up (a track's first points come from a detector box and differ from
    /// the tracked ones by about 1% of the inter-ocular distance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_settled: Option<f64>,
}

/// Per-point standard deviation over frames divided by the inter-ocular distance,
/// averaged over points, for the face followed longest (the track id present on
/// most frames; other frames are left out). `None` with fewer than two frames.
pub fn jitter(faces_per_frame: &[Vec<Face>], scheme: Scheme) -> Option<f64> {
    let longest = longest_track(faces_per_frame)?;
    let tracks: Vec<&Vec<Point>> = faces_per_frame
        .iter()
        .filter_map(|faces| faces.iter().find(|f| f.track == longest))
        .map(|f| &f.points)
        .collect();
    if tracks.len() < 2 {
        return None;
    }
    let n = tracks.len() as f64;
    let k = scheme.num_points();
    let mean: Vec<(f64, f64)> = (0..k)
        .map(|i| {
            let (sx, sy) = tracks.iter().fold((0.0, 0.0), |(sx, sy), p| (sx + p[i].x as f64, sy + p[i].y as f64));
            (sx / n, sy / n)
        })
        .collect();
    let (a, b) = scheme.outer_eye_corners();
    let iod = ((mean[a].0 - mean[b].0).powi(2) + (mean[a].1 - mean[b].1).powi(2)).sqrt();
    let sd_sum: f64 = (0..k)
        .map(|i| {
            let var = tracks
                .iter()
                .map(|p| (p[i].x as f64 - mean[i].0).powi(2) + (p[i].y as f64 - mean[i].1).powi(2))
                .sum::<f64>()
                / n;
            var.sqrt()
        })
        .sum();
    Some(sd_sum / k as f64 / iod.max(1e-6))
}

/// The id of the track present on most frames (the oldest of equals).
fn longest_track(faces_per_frame: &[Vec<Face>]) -> Option<u64> {
    let mut counts: std::collections::HashMap<u64, usize> = Default::default();
    for f in faces_per_frame.iter().flatten() {
        *counts.entry(f.track).or_default() += 1;
    }
    counts.into_iter().max_by_key(|&(id, n)| (n, std::cmp::Reverse(id))).map(|(id, _)| id)
}

/// The frames from the longest track's `skip`-th frame on (none when it is shorter).
fn after_track_start(faces_per_frame: &[Vec<Face>], skip: usize) -> &[Vec<Face>] {
    let Some(longest) = longest_track(faces_per_frame) else { return &[] };
    let on_track = |faces: &Vec<Face>| faces.iter().any(|f| f.track == longest);
    let start = faces_per_frame.iter().enumerate().filter(|(_, f)| on_track(f)).nth(skip).map(|(i, _)| i);
    start.map_or(&[], |i| &faces_per_frame[i..])
}

/// Frames on which the longest track appears.
fn longest_track_frames(faces_per_frame: &[Vec<Face>]) -> usize {
    let mut counts: std::collections::HashMap<u64, usize> = Default::default();
    for f in faces_per_frame.iter().flatten() {
        *counts.entry(f.track).or_default() += 1;
    }
    counts.values().copied().max().unwrap_or(0)
}

/// Whether a bench run measures the jitter of the longest track (`bench --still`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    Measure,
    Skip,
}

/// The samples of the frames of `v` after the first `w` that have one.
fn taken_after(v: &[Option<f64>], w: usize) -> Vec<f64> {
    v[w.min(v.len())..].iter().flatten().copied().collect()
}

/// The figures of a bench run, after [`WARMUP_FRAMES`].
pub fn report(summary: &RunSummary, scheme: Scheme, jitter_of: Jitter) -> BenchReport {
    let still = jitter_of == Jitter::Measure;
    let s = &summary.samples;
    let w = WARMUP_FRAMES.min(s.done_secs.len().saturating_sub(2));
    let frames = s.done_secs.len() - w;
    let measured = &summary.faces_per_frame[w.min(summary.faces_per_frame.len())..];
    let fps = if frames > 1 {
        (frames - 1) as f64 / (s.done_secs[s.done_secs.len() - 1] - s.done_secs[w]).max(1e-9)
    } else {
        0.0
    };
    BenchReport {
        frames,
        faces: summary.faces,
        fps,
        decode_ms: median(&s.decode_ms[w..]),
        detect_ms: median(&taken_after(&s.detect_ms, w)),
        tile_ms: median(&taken_after(&s.tile_ms, w)),
        infer_ms_per_face: median(&s.infer_ms_per_face),
        draw_ms: median(&s.draw_ms[w..]),
        latency_ms: median(&s.latency_ms[w..]),
        latency_p95_ms: {
            let mut l = s.latency_ms[w..].to_vec();
            l.sort_by(f64::total_cmp);
            l.get((l.len() * 95 / 100).min(l.len().saturating_sub(1))).copied().unwrap_or(0.0)
        },
        dropped: summary.dropped,
        detector_runs: s.detector_runs,
        tile_searches: s.tile_ms.iter().flatten().count(),
        jitter: still.then(|| jitter(measured, scheme)).flatten(),
        jitter_frames: still.then(|| longest_track_frames(measured)),
        jitter_settled: still.then(|| jitter(after_track_start(measured, WARMUP_FRAMES), scheme)).flatten(),
    }
}

impl BenchReport {
    pub fn print_human(&self, total_frames: u64) {
        println!("frames        {} (after {} warm-up)", self.frames, WARMUP_FRAMES);
        println!("faces         {}", self.faces);
        println!("fps           {:.1}", self.fps);
        println!(
            "median ms     decode {:.2}  detect {:.2}  infer/face {:.2}  draw {:.2}",
            self.decode_ms, self.detect_ms, self.infer_ms_per_face, self.draw_ms
        );
        println!(
            "latency ms    median {:.1}, 95th percentile {:.1} (capture to shown)",
            self.latency_ms, self.latency_p95_ms
        );
        if self.dropped > 0 {
            println!("dropped       {} stale frames", self.dropped);
        }
        println!("detector runs {} of {} frames", self.detector_runs, total_frames);
        if self.tile_searches > 0 {
            println!("tile searches {} of {} frames, median {:.2} ms", self.tile_searches, total_frames, self.tile_ms);
        }
        if let Some(j) = self.jitter {
            println!(
                "jitter        {j:.5} of the inter-ocular distance (longest track, {} frames)",
                self.jitter_frames.unwrap_or(0)
            );
        }
        if let Some(j) = self.jitter_settled {
            println!("jitter        {j:.5} after the track's first {WARMUP_FRAMES} frames");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;

    fn face(dx: f32) -> Vec<Face> {
        let mut points: Vec<Point> = (0..68).map(|i| Point::new(i as f32, 0.0)).collect();
        points[36] = Point::new(0.0, 0.0);
        points[45] = Point::new(100.0, 0.0);
        for p in &mut points {
            p.x += dx;
        }
        vec![Face { box_in_frame: Rect::new(0.0, 0.0, 100.0, 100.0), points, track: 1, pose: None, openness: None }]
    }

    #[test]
    fn jitter_is_zero_for_still_points_and_scales_with_motion() {
        let still: Vec<Vec<Face>> = (0..10).map(|_| face(0.0)).collect();
        assert_eq!(jitter(&still, Scheme::P68), Some(0.0));
        // Alternating +-1 px: sd 1 px over an IOD of 100 px.
        let moving: Vec<Vec<Face>> = (0..10).map(|i| face(if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        assert!((jitter(&moving, Scheme::P68).unwrap() - 0.01).abs() < 1e-6);
        assert_eq!(jitter(&[vec![], vec![]], Scheme::P68), None);
    }

    /// The detector runs on every 5th frame, 100 ms on the warm-up frames and 10
    /// ms after; tiles on the others. Only the warm-up frames' runs are left out.
    #[test]
    fn detect_medians_leave_out_the_warm_up_frames_not_the_first_runs() {
        let frames = 40;
        let warm = |i: usize, ms: f64| if i < WARMUP_FRAMES { 100.0 } else { ms };
        let samples = crate::pipeline::StageSamples {
            decode_ms: vec![1.0; frames],
            detect_ms: (0..frames).map(|i| (i % 5 == 0).then(|| warm(i, 10.0))).collect(),
            tile_ms: (0..frames).map(|i| (i % 5 != 0).then(|| warm(i, 20.0 + i as f64))).collect(),
            draw_ms: vec![1.0; frames],
            latency_ms: vec![1.0; frames],
            done_secs: (0..frames).map(|i| i as f64 / 30.0).collect(),
            detector_runs: 8,
            ..Default::default()
        };
        let summary = RunSummary {
            samples,
            faces_per_frame: vec![vec![]; frames],
            frames: frames as u64,
            faces: 0,
            frames_with_faces: 0,
            dropped: 0,
            skipped: 0,
            skipped_names: Vec::new(),
            display_skipped: 0,
            encoder: None,
            secs: 1.0,
            stop: crate::pipeline::StopReason::End,
            outputs: Vec::new(),
        };
        let r = report(&summary, Scheme::P68, Jitter::Skip);
        assert_eq!(r.detect_ms, 10.0);
        // The 24 tile frames after warm-up are 11-14, 16-19, ..., 36-39; the 13th
        // is frame 26.
        assert_eq!(r.tile_ms, 46.0);
        assert_eq!(r.tile_searches, 32);
        assert_eq!(r.frames, frames - WARMUP_FRAMES);
    }

    #[test]
    fn the_settled_frames_start_at_the_longest_tracks_nth_frame() {
        let frames: Vec<Vec<Face>> = (0..10).map(|i| if i < 3 { vec![] } else { face(0.0) }).collect();
        assert_eq!(after_track_start(&frames, 2).len(), 5);
        assert!(after_track_start(&frames, 7).is_empty());
        assert!(after_track_start(&[], 0).is_empty());
    }
}

/// How keypoints with tracking compare to detecting on every frame, on one video.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// Faces of the detect-every-frame pass that the tracked pass also has.
    pub faces_compared: usize,
    /// Faces of the detect-every-frame pass.
    pub faces_detected: usize,
    /// Mean point distance between the passes over the inter-ocular distance.
    pub mean_diff_iod: f64,
    /// Runs of 10+ consecutive frames in which the detector alone follows a face.
    pub runs_10plus: usize,
    /// Of those, runs the tracked pass covers on fewer than half of the frames.
    pub runs_missed: usize,
}

/// The face of `faces` overlapping `b` most (IoU >= 0.3).
fn matching<'a>(faces: &'a [Face], b: &crate::geometry::Rect) -> Option<&'a Face> {
    faces
        .iter()
        .map(|f| (f.box_in_frame.iou(b), f))
        .filter(|(iou, _)| *iou >= 0.3)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, f)| f)
}

pub fn agreement(detected: &[Vec<Face>], tracked: &[Vec<Face>], scheme: Scheme) -> Agreement {
    let (ea, eb) = scheme.outer_eye_corners();
    let (mut sum, mut compared, mut total) = (0.0, 0usize, 0usize);
    // Per detector track id: (frame, covered by the tracked pass).
    let mut runs: std::collections::BTreeMap<u64, Vec<(usize, bool)>> = Default::default();
    for (i, (dets, trks)) in detected.iter().zip(tracked).enumerate() {
        for d in dets {
            total += 1;
            let m = matching(trks, &d.box_in_frame);
            runs.entry(d.track).or_default().push((i, m.is_some()));
            if let Some(t) = m {
                let iod = d.points[ea].distance(d.points[eb]).max(1.0) as f64;
                let mean = d.points.iter().zip(&t.points).map(|(p, q)| p.distance(*q) as f64).sum::<f64>()
                    / d.points.len() as f64;
                sum += mean / iod;
                compared += 1;
            }
        }
    }
    let (mut runs_10plus, mut runs_missed) = (0, 0);
    for frames in runs.values() {
        // Split into consecutive runs.
        let mut start = 0;
        for k in 1..=frames.len() {
            if k == frames.len() || frames[k].0 != frames[k - 1].0 + 1 {
                let run = &frames[start..k];
                if run.len() >= 10 {
                    runs_10plus += 1;
                    let covered = run.iter().filter(|f| f.1).count();
                    if covered * 2 < run.len() {
                        runs_missed += 1;
                    }
                }
                start = k;
            }
        }
    }
    Agreement {
        faces_compared: compared,
        faces_detected: total,
        mean_diff_iod: if compared > 0 { sum / compared as f64 } else { 0.0 },
        runs_10plus,
        runs_missed,
    }
}
