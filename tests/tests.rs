//! Integration tests: the real `facekp` binary with the shipped weights on real
//! videos and photos (fixtures in tests/data, copied from ../shared). One test
//! binary (each links OpenCV and libtorch), one module per concern.

// Test helpers fail the test on bad fixtures, as the tests themselves do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accuracy;
mod bad_input;
mod batch;
mod camera_lost;
mod fuzz;
mod ghosts;
mod images;
mod kaggle;
mod motion;
mod output_video;
mod pace;
mod pose;
mod robustness;
mod run;
mod small_faces;
mod training;
mod turned;
mod util;
mod window;
