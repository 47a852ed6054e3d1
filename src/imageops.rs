//! OpenCV image operations shared by training, evaluation and run time: loading,
//! gray conversion and the crop warp. Frame pixels in, crop pixels out; the crop
//! geometry itself is [`crate::geometry`]'s.

use crate::geometry::{Affine, CropSquare};
use opencv::core::{Mat, Scalar, Size, BORDER_CONSTANT};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use std::path::Path;

/// Reads an image file as 8-bit gray; `None` when OpenCV cannot decode it.
pub fn read_gray(path: &Path) -> opencv::Result<Option<Mat>> {
    let img = imgcodecs::imread(path, imgcodecs::IMREAD_GRAYSCALE)?;
    Ok(if img.empty() { None } else { Some(img) })
}

/// Reads an image file as 8-bit BGR; `None` when OpenCV cannot decode it.
pub fn read_bgr(path: &Path) -> opencv::Result<Option<Mat>> {
    let img = imgcodecs::imread(path, imgcodecs::IMREAD_COLOR)?;
    Ok(if img.empty() { None } else { Some(img) })
}

/// 8-bit gray of an 8-bit BGR (3 channels) or gray (1 channel) frame.
pub fn to_gray(frame: &Mat) -> opencv::Result<Mat> {
    match frame.channels() {
        1 => Ok(frame.clone()),
        4 => {
            let mut gray = Mat::default();
            imgproc::cvt_color(frame, &mut gray, imgproc::COLOR_BGRA2GRAY, 0)?;
            Ok(gray)
        }
        _ => {
            let mut gray = Mat::default();
            imgproc::cvt_color(frame, &mut gray, imgproc::COLOR_BGR2GRAY, 0)?;
            Ok(gray)
        }
    }
}

/// Warps the `crop` region of a gray frame into `input_size`² gray pixels, row-major.
/// Parts of the crop outside the frame are black (faces at the border are padded,
/// never clipped by an ROI).
pub fn extract_crop(gray: &Mat, crop: &CropSquare, input_size: u32) -> opencv::Result<Vec<u8>> {
    let side = input_size as i32;
    Ok(warp_gray(gray, &crop.crop_from_frame(input_size), side, side)?.data_bytes()?.to_vec())
}

/// `gray` mapped by `m` (source pixels -> output pixels) into a `w` x `h` image,
/// bilinear, black beyond the source.
pub fn warp_gray(gray: &Mat, m: &Affine, w: i32, h: i32) -> opencv::Result<Mat> {
    let rows = Mat::from_slice_2d(&m.to_rows())?;
    let mut out = Mat::default();
    imgproc::warp_affine(
        gray,
        &mut out,
        &rows,
        Size::new(w, h),
        imgproc::INTER_LINEAR,
        BORDER_CONSTANT,
        Scalar::all(0.0),
    )?;
    Ok(out)
}
