//! facekp: real-time facial keypoints. Frames come from a [`source`], faces from the
//! Haar [`detect`]or, crops through [`geometry`] and [`imageops`], keypoints from the
//! CNN in [`model`]; [`pipeline`] connects the stages, [`render`] and [`output`] are
//! the sinks, and [`train`] trains and evaluates the models.

pub mod bench;
pub mod detect;
pub mod face;
pub mod fsutil;
pub mod geometry;
pub mod imageops;
pub mod landmarks;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod render;
pub mod smooth;
pub mod source;
pub mod track;
pub mod train;
