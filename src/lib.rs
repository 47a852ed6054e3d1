//! facekp: real-time facial keypoints. Frames come from a [`source`], faces from the
//! Haar [`detect`]or, crops through [`geometry`] and [`imageops`], keypoints from the
//! CNN in [`model`]; [`track`] follows faces from frame to frame and [`smooth`]
//! steadies their points; [`pipeline`] connects the stages, [`render`], [`encode`]
//! and [`output`] are the sinks; [`batch`] runs many videos. [`train`] trains the models, [`eval`] scores them on a
//! [`dataset`], and [`bench`] measures the pipeline.

pub mod batch;
pub mod bench;
pub mod dataset;
pub mod detect;
pub mod encode;
pub mod eval;
pub mod face;
pub mod fsutil;
pub mod geometry;
pub mod imageops;
pub mod kaggle;
pub mod landmarks;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod plot;
pub mod pose;
pub mod progress;
pub mod render;
pub mod smooth;
pub mod source;
pub mod track;
pub mod train;
