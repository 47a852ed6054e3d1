//! Property tests: parsers and loaders take arbitrary input without panicking;
//! crops at and beyond image borders are always well-formed.

use crate::util::*;
use facekp::dataset::{parse_csv, parse_pts};
use facekp::geometry::{frame_points_from_unit, unit_points_from_frame, CropPrior, Point, Rect};
use facekp::imageops;
use facekp::model::{Keypointer, ModelConfig, Precision};
use opencv::core::{Mat, Scalar, CV_8UC1};
use proptest::prelude::*;

fn weights68() -> PathBuf {
    weights("face68.safetensors")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn csv_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_csv(bytes.as_slice(), Path::new("fuzz.csv"));
    }

    #[test]
    fn csv_parser_never_panics_on_near_valid_rows(cells in proptest::collection::vec("[-0-9.eE+a-z]{0,6}", 0..140)) {
        let mut text = String::from("image");
        for i in 0..68 { text.push_str(&format!(",x{i},y{i}")); }
        text.push_str("\na.jpg,");
        text.push_str(&cells.join(","));
        let _ = parse_csv(text.as_bytes(), Path::new("fuzz.csv"));
    }

    #[test]
    fn pts_parser_never_panics(text in "(version: 1\n)?(n_points: [0-9]{1,3}\n)?(\\{\n)?([-0-9. ]{0,12}\n){0,8}(\\}\n)?") {
        let _ = parse_pts(&text, Path::new("fuzz.pts"));
    }

    #[test]
    fn model_config_loading_never_panics(text in ".{0,400}") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(&p, &text).unwrap();
        let _ = ModelConfig::load(&p);
    }

    #[test]
    fn model_config_with_changed_numbers_is_validated(
        channel in -5i64..5000, extra in 0usize..20, width in -5i64..5000, stage in 0usize..5, scale in -2.0f32..3.0
    ) {
        let text = std::fs::read_to_string(weights68().with_extension("json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["channels"][stage] = channel.into();
        v["extra_convs"][stage] = extra.into();
        v["heatmaps"]["width"] = width.into();
        v["heatmaps"]["stage"] = stage.into();
        v["crop"]["scale_mean"] = serde_json::json!(scale);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(&p, v.to_string()).unwrap();
        std::fs::copy(weights68(), dir.path().join("m.safetensors")).unwrap();
        // Either a clear error or a loadable model; never a panic.
        let _ = Keypointer::load(&dir.path().join("m.safetensors"), tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None);
    }

    #[test]
    fn truncated_or_corrupted_weights_are_errors(cut in 0.0f64..1.0, flip in any::<u8>(), at in 0.0f64..1.0) {
        let bytes = std::fs::read(weights68()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(weights68().with_extension("json"), dir.path().join("m.json")).unwrap();
        let mut cut_bytes = bytes[..(bytes.len() as f64 * cut) as usize].to_vec();
        let w = dir.path().join("m.safetensors");
        std::fs::write(&w, &cut_bytes).unwrap();
        prop_assert!(Keypointer::load(&w, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None).is_err());
        // A flipped byte in the header is an error or still loads; never a panic.
        cut_bytes = bytes.clone();
        let i = ((cut_bytes.len().min(4096) - 1) as f64 * at) as usize;
        cut_bytes[i] ^= flip;
        std::fs::write(&w, &cut_bytes).unwrap();
        let _ = Keypointer::load(&w, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None);
    }

    #[test]
    fn crops_at_image_borders_are_padded_and_invertible(
        w in 8i32..200, h in 8i32..200, x in -300.0f32..400.0, y in -300.0f32..400.0, size in 4.0f32..400.0
    ) {
        let img = Mat::new_rows_cols_with_default(h, w, CV_8UC1, Scalar::all(128.0)).unwrap();
        let prior = CropPrior { dx_mean: 0.0, dx_std: 0.1, dy_mean: -0.18, dy_std: 0.04, scale_mean: 1.19, log_scale_std: 0.08, crop_padding: 1.5 };
        let crop = prior.crop_for_detection(&Rect::new(x, y, size, size));
        let pixels = imageops::extract_crop(&img, &crop, 96).unwrap();
        prop_assert_eq!(pixels.len(), 96 * 96);
        let p = [Point::new(x, y), Point::new(x + size, y + size)];
        let back = frame_points_from_unit(&unit_points_from_frame(&p, &crop, 96), &crop, 96);
        for (a, b) in p.iter().zip(&back) {
            prop_assert!(a.distance(*b) < 1e-2 * size.max(1.0));
        }
    }
}
