//! Writes a Kaggle "Facial Keypoints Detection" CSV built from an annotated data
//! set: each face cropped upright to 96x96 gray around its 15 derived points, framed
//! as Kaggle frames its faces, every other face cut down to the four points of most
//! Kaggle rows (eye centres, nose tip, bottom lip). To score and train on that
//! format without the Kaggle file itself.
//!
//! `cargo run --release --example kaggle_csv -- ../shared/datasets/helen68/val.csv out/kaggle_helen68_val.csv`

use anyhow::Context;
use facekp::dataset::load_set;
use facekp::kaggle::{faces_from_set, write_kaggle_csv};
use std::io::Write;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (csv, out) = match (args.get(1), args.get(2)) {
        (Some(c), Some(o)) => (Path::new(c), Path::new(o)),
        _ => anyhow::bail!("usage: kaggle_csv DATASET_CSV OUT_CSV"),
    };
    let images = csv.parent().unwrap_or(Path::new(".")).join("images");
    let set = load_set("set", csv, &images)?;
    let faces = faces_from_set(&set, 2)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("{}", out.display()))?);
    write_kaggle_csv(&mut file, &faces)?;
    file.flush()?;
    eprintln!("wrote {} ({} faces)", out.display(), faces.len());
    Ok(())
}
