//! `facekp batch`: many videos (and image folders) with one model load, one
//! output set per input, skipping inputs whose outputs exist, an overall progress
//! bar and `summary.json`. A failed input is reported and the others still run.

use super::args::BatchArgs;
use super::commands::{interrupt_flag, load_model};
use super::EXIT_INTERRUPTED;
use anyhow::{Context, Result};
use facekp::batch::{self, Annotate, BatchError, BatchInput, InputKind, InputRecord, Outputs, Status};
use facekp::detect::HaarDetector;
use facekp::model::Keypointer;
use facekp::pipeline::{self, OnInterrupt, Pace, Progress, RunOptions, RunSummary, StopReason};
use facekp::render::OverlayOptions;
use facekp::source::SourceSpec;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// An input of this process and its outputs.
struct Job {
    input: BatchInput,
    outputs: Outputs,
}

/// `facekp batch`.
pub fn batch(args: BatchArgs) -> Result<u8> {
    // Inputs first (missing paths, clashing stems), then the model and cascade.
    let all = batch::collect_inputs(&args.inputs)?;
    let annotate = if args.annotate { Annotate::Yes } else { Annotate::No };
    let jobs: Vec<Job> = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| args.shard.is_none_or(|s| s.takes(*i)))
        .map(|(_, input)| Job { outputs: Outputs::of(&input, &args.out_dir, args.format, annotate), input })
        .collect();
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|source| BatchError::OutDir { path: args.out_dir.clone(), source })?;
    let (todo, done): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| args.force || !j.outputs.exist());
    if !done.is_empty() {
        eprintln!(
            "skipping {} of {} inputs: their outputs exist in {} (--force redoes them)",
            done.len(),
            done.len() + todo.len(),
            args.out_dir.display()
        );
    }
    args.tracking.apply_threads()?;
    let mut records: Vec<InputRecord> =
        done.iter().map(|j| InputRecord::bare(&j.input.path, Status::Skipped, None)).collect();
    if !todo.is_empty() {
        let model = load_model(&args.model, None)?;
        HaarDetector::new(&args.tracking.cascade, Default::default())?;
        let stop = interrupt_flag()?;
        let mut runner = Runner { args: &args, model: Some(model), stop, bar: overall_bar(&todo) };
        for (n, job) in todo.iter().enumerate() {
            let record = runner.run(job, n + 1, todo.len());
            let interrupted = record.status == Status::Interrupted;
            records.push(record);
            if interrupted {
                break;
            }
        }
        runner.bar.finish_and_clear();
    }
    let summary = batch::merge_summary(&args.out_dir, &records)?;
    Ok(report(&records, &summary))
}

/// One bar over every frame of the inputs to do, with the input being processed.
fn overall_bar(todo: &[Job]) -> ProgressBar {
    let frames: u64 = todo.iter().map(|j| frame_count(&j.input)).sum();
    let bar = ProgressBar::new(frames);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} frames, {msg} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// An input's frame count as its container states it (0 when it does not open).
fn frame_count(input: &BatchInput) -> u64 {
    let source = facekp::source::open(&spec_of(input));
    source.ok().and_then(|s| s.info().frame_count).unwrap_or(0)
}

fn spec_of(input: &BatchInput) -> SourceSpec {
    match input.kind {
        InputKind::Video => SourceSpec::Video(input.path.clone()),
        InputKind::Images => SourceSpec::Images(input.path.clone()),
    }
}

/// Runs the jobs one after another with one model.
struct Runner<'a> {
    args: &'a BatchArgs,
    /// `None` only after a run that did not hand it back (reloaded for the next).
    model: Option<Keypointer>,
    stop: Arc<AtomicBool>,
    bar: ProgressBar,
}

impl Runner<'_> {
    /// Runs job `n` of `total` and says how it went.
    fn run(&mut self, job: &Job, n: usize, total: usize) -> InputRecord {
        let name = job.input.path.display().to_string();
        self.bar.set_prefix(format!("inputs {n}/{total}"));
        self.bar.set_message(name.clone());
        self.bar.suspend(|| eprintln!("[{n}/{total}] {name}"));
        job.outputs.remove_stale_temps();
        let record = match self.pipeline(job) {
            Ok(summary) => record_of(&job.input, &summary),
            Err(e) => InputRecord::bare(&job.input.path, Status::Failed, Some(format!("{e:#}"))),
        };
        let line = match record.status {
            Status::Done => format!(
                "[{n}/{total}] done {name}: {} frames, {} faces, {:.1} fps",
                record.frames, record.faces, record.fps
            ),
            Status::Interrupted => format!("[{n}/{total}] interrupted {name}: its outputs were removed"),
            _ => format!("[{n}/{total}] error: {}", record.error.as_deref().unwrap_or("failed")),
        };
        self.bar.suspend(|| eprintln!("{line}"));
        record
    }

    fn pipeline(&mut self, job: &Job) -> Result<RunSummary> {
        let spec = spec_of(&job.input);
        let source = facekp::source::open(&spec)?;
        let model = match self.model.take() {
            Some(m) => m,
            None => load_model(&self.args.model, None)?,
        };
        let tracking = &self.args.tracking;
        let options = RunOptions {
            schedule: tracking.schedule(&spec),
            smoothing: tracking.smoothing(),
            camera: tracking.camera(),
            record_faces: false,
            show_window: false,
            output: job.outputs.video.clone(),
            keypoints: Some(job.outputs.keypoints.clone()),
            max_frames: None,
            progress: Progress::Shared(self.bar.clone()),
            overlay: OverlayOptions::default(),
            pace: Pace::FullSpeed,
            encoder: self.args.encoder,
            on_interrupt: OnInterrupt::Discard,
            source: spec.clone(),
        };
        let prepared = pipeline::Prepared::new(source, options, tracking.detector(&spec), &tracking.cascade, model)?;
        let finished = pipeline::run_keeping_model(prepared, self.stop.clone());
        self.model = finished.model;
        finished.summary.with_context(|| format!("input {}", job.input.path.display()))
    }
}

fn record_of(input: &BatchInput, s: &RunSummary) -> InputRecord {
    let status = if s.stop == StopReason::Interrupted { Status::Interrupted } else { Status::Done };
    InputRecord {
        input: input.path.clone(),
        status,
        frames: s.frames,
        faces: s.faces,
        frames_with_faces: s.frames_with_faces,
        undecodable: s.skipped,
        fps: (s.fps() * 10.0).round() / 10.0,
        secs: (s.secs * 100.0).round() / 100.0,
        error: None,
    }
}

/// Prints the closing summary and the failures; the exit code (1 when any input
/// failed, 130 when interrupted).
fn report(records: &[InputRecord], summary: &std::path::Path) -> u8 {
    let count = |status| records.iter().filter(|r| r.status == status).count();
    let done: Vec<&InputRecord> = records.iter().filter(|r| r.status == Status::Done).collect();
    let frames: u64 = done.iter().map(|r| r.frames).sum();
    let secs: f64 = done.iter().map(|r| r.secs).sum();
    eprintln!(
        "{} inputs: {} done ({frames} frames in {secs:.1} s), {} skipped (outputs exist), {} failed{}",
        records.len(),
        done.len(),
        count(Status::Skipped),
        count(Status::Failed),
        if count(Status::Interrupted) > 0 { ", stopped by a signal (rerun to resume)" } else { "" },
    );
    let failed: Vec<&InputRecord> = records.iter().filter(|r| r.status == Status::Failed).collect();
    if !failed.is_empty() {
        eprintln!("failed:");
        for r in &failed {
            eprintln!("  {}", r.error.as_deref().unwrap_or("failed"));
        }
    }
    eprintln!("wrote {}", summary.display());
    if count(Status::Interrupted) > 0 {
        EXIT_INTERRUPTED
    } else {
        u8::from(!failed.is_empty())
    }
}
