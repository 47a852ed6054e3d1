//! Image folders: every record names its image, also past an undecodable file.

use crate::util::*;

/// Frame `n` of hamilton_clip as the image `out`.
fn frame(n: u32, out: &Path) {
    ffmpeg(&[
        "-i",
        data("hamilton_clip.mp4").to_str().unwrap(),
        "-vf",
        &format!("select=eq(n\\,{n})"),
        "-frames:v",
        "1",
        out.to_str().unwrap(),
    ]);
}

#[test]
fn an_undecodable_image_in_the_middle_leaves_every_record_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("shots");
    std::fs::create_dir(&imgs).unwrap();
    frame(190, &imgs.join("a.png"));
    std::fs::write(imgs.join("b.jpg"), [0u8, 1, 2, 3]).unwrap();
    frame(0, &imgs.join("c.jpg"));
    frame(230, &imgs.join("d.png"));
    let (k_jsonl, k_csv) = (dir.path().join("k.jsonl"), dir.path().join("k.csv"));
    for k in [&k_jsonl, &k_csv] {
        let out = bin()
            .args(["run", "--headless", "--no-smooth", "--images"])
            .arg(&imgs)
            .arg("--keypoints")
            .arg(k)
            .output()
            .unwrap();
        let log = stderr(&out);
        assert!(out.status.success(), "{log}");
        assert!(log.contains("1 files could not be decoded and were skipped: b.jpg"), "{log}");
    }
    let rows = jsonl(&k_jsonl);
    let named: Vec<&str> = rows.iter().map(|r| r["image"].as_str().unwrap()).collect();
    assert_eq!(named, ["a.png", "c.jpg", "d.png"]);
    assert!(rows.iter().all(|r| r["timestamp_ms"].is_null()), "no invented timestamps");
    // The faces recorded under each name are the ones found in that image alone.
    for (i, name) in named.iter().enumerate() {
        let alone = dir.path().join(format!("alone{i}"));
        std::fs::create_dir(&alone).unwrap();
        std::fs::copy(imgs.join(name), alone.join(name)).unwrap();
        let k = alone.join("k.jsonl");
        let out = bin()
            .args(["run", "--headless", "--no-smooth", "--images"])
            .arg(&alone)
            .arg("--keypoints")
            .arg(&k)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let boxes = |r: &serde_json::Value| -> Vec<(String, String)> {
            let faces = r["faces"].as_array().unwrap().iter();
            faces.map(|f| (f["box_x"].to_string(), f["points"].to_string())).collect()
        };
        assert_eq!(boxes(&rows[i]), boxes(&jsonl(&k)[0]), "{name}: its record holds its own faces");
    }
    let text = std::fs::read_to_string(&k_csv).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    assert_eq!(&header[..4], ["frame", "timestamp_ms", "face", "track"]);
    assert_eq!(header.last(), Some(&"image"));
    let csv_names: Vec<(&str, &str)> =
        text.lines().skip(1).map(|l| (l.split(',').nth(1).unwrap(), l.rsplit(',').next().unwrap())).collect();
    assert!(csv_names.iter().all(|(t, _)| t.is_empty()), "empty timestamps: {csv_names:?}");
    let faced: Vec<&str> = rows
        .iter()
        .filter(|r| !r["faces"].as_array().unwrap().is_empty())
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    let mut csv_images: Vec<&str> = csv_names.iter().map(|(_, n)| *n).collect();
    csv_images.dedup();
    assert_eq!(csv_images, faced, "a CSV row per face, named");
    // batch takes the folder as one input, with the same records.
    let out = dir.path().join("out");
    let b = bin().args(["batch", "--no-smooth"]).arg(&imgs).arg("--out-dir").arg(&out).output().unwrap();
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(std::fs::read(out.join("shots.jsonl")).unwrap(), std::fs::read(&k_jsonl).unwrap());
}
