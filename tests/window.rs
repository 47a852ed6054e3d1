use crate::util::*;
use std::time::{Duration, Instant};
use x11rb::connection::Connection;

/// Runs facekp with its window under Xvfb, screenshots the display and looks for
/// the overlay's region colours over the face.
/// Starts Xvfb on a free display (it prints the number: -displayfd 1).
pub fn xvfb() -> (std::process::Child, String) {
    let mut xvfb = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "800x600x24", "-nolisten", "tcp"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("Xvfb runs");
    let mut number = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(xvfb.stdout.take().unwrap()).read_line(&mut number).unwrap();
    (xvfb, format!(":{}", number.trim()))
}

#[test]
fn window_shows_the_overlay_under_xvfb() {
    let (mut xvfb, display) = xvfb();
    let display = display.as_str();
    let dir = tempfile::tempdir().unwrap();
    let keypoints = dir.path().join("k.jsonl");
    let mut app = bin()
        .env("DISPLAY", display)
        .args(["run", "--video"])
        .arg(data("hamilton_clip.mp4"))
        .arg("--keypoints")
        .arg(&keypoints)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let shot = dir.path().join("shot.png");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut best = 0usize;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(700));
        let grabbed = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "x11grab", "-video_size", "800x600", "-i", display, "-frames:v", "1"])
            .arg(&shot)
            .status()
            .unwrap();
        assert!(grabbed.success(), "screenshot");
        let img = facekp::imageops::read_bgr(&shot).unwrap().unwrap();
        best = best.max(count_region_colours(&img));
        if best >= 3 || app.try_wait().unwrap().is_some() {
            break;
        }
    }
    let _ = app.kill();
    let status = app.wait().unwrap();
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    assert!(best >= 3, "overlay colours of {best} regions seen in the window (exit {status:?})");
}

/// The top-level window whose name starts with `prefix`, if one is mapped.
fn find_window(conn: &impl Connection, root: u32, prefix: &str) -> Option<u32> {
    use x11rb::protocol::xproto::{AtomEnum, ConnectionExt};
    let tree = conn.query_tree(root).ok()?.reply().ok()?;
    tree.children.into_iter().find(|&w| {
        conn.get_property(false, w, AtomEnum::WM_NAME, AtomEnum::STRING, 0, 256)
            .ok()
            .and_then(|c| c.reply().ok())
            .is_some_and(|p| p.value.starts_with(prefix.as_bytes()))
    })
}

/// Asks `window` to close the way a window manager's close button does: a
/// WM_PROTOCOLS client message carrying WM_DELETE_WINDOW.
fn send_close(conn: &impl Connection, window: u32) {
    use x11rb::protocol::xproto::{ClientMessageEvent, ConnectionExt, EventMask};
    let atom = |name: &[u8]| conn.intern_atom(false, name).unwrap().reply().unwrap().atom;
    let (protocols, delete) = (atom(b"WM_PROTOCOLS"), atom(b"WM_DELETE_WINDOW"));
    let event = ClientMessageEvent::new(32, window, protocols, [delete, x11rb::CURRENT_TIME, 0, 0, 0]);
    conn.send_event(false, window, EventMask::NO_EVENT, event).unwrap();
    conn.flush().unwrap();
}

/// Closing the window mid-video (as a window manager's close button does) stops
/// the run with exit 0, and both outputs are finalised with every frame shown.
#[test]
fn closing_the_window_stops_the_run_with_complete_outputs() {
    let (mut xvfb, display) = xvfb();
    let dir = tempfile::tempdir().unwrap();
    // A video long enough (10 loops of the clip) that the run cannot end by itself
    // before the close arrives.
    let long = dir.path().join("long.mp4");
    ffmpeg(&[
        "-stream_loop",
        "9",
        "-i",
        data("hamilton_clip.mp4").to_str().unwrap(),
        "-c",
        "copy",
        long.to_str().unwrap(),
    ]);
    let (video, keypoints) = (dir.path().join("o.mp4"), dir.path().join("k.jsonl"));
    let mut app = bin()
        .env("DISPLAY", &display)
        .args(["run", "--video"])
        .arg(&long)
        .arg("--output")
        .arg(&video)
        .arg("--keypoints")
        .arg(&keypoints)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (conn, screen) = x11rb::connect(Some(&display)).expect("connects to Xvfb");
    let root = conn.setup().roots[screen].root;
    // Poll for the window (up to 900 times, 100 ms apart: a guard against a hang).
    let window = (0..900)
        .find_map(|_| {
            let found = find_window(&conn, root, "facekp");
            if found.is_none() {
                assert!(app.try_wait().unwrap().is_none(), "facekp exited before its window appeared");
                std::thread::sleep(Duration::from_millis(100));
            }
            found
        })
        .expect("a facekp window appears");
    // Let it show some frames, then close.
    std::thread::sleep(Duration::from_secs(1));
    send_close(&conn, window);
    let out = app.wait_with_output().unwrap();
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "exit 0 on window close: {log}");
    let rows = jsonl(&keypoints).len() as u64;
    assert!(rows > 0 && rows < 10 * 275, "stopped mid-video after {rows} frames: {log}");
    assert_eq!(ffprobe_frames(&video), rows, "the video has every processed frame");
}

/// How many of the five region colours appear (at least 5 pixels each) on the
/// screen (the window is the only thing drawn on Xvfb's black root).
fn count_region_colours(img: &opencv::core::Mat) -> usize {
    use facekp::landmarks::Region;
    use facekp::render::region_rgb;
    use opencv::core::Vec3b;
    use opencv::prelude::*;
    Region::ALL
        .iter()
        .filter(|&&r| {
            let rgb = region_rgb(r);
            let mut n = 0;
            for y in 0..img.rows() {
                for x in 0..img.cols() {
                    let p = img.at_2d::<Vec3b>(y, x).unwrap();
                    if (p[2] as i32 - rgb[0] as i32).abs() < 24
                        && (p[1] as i32 - rgb[1] as i32).abs() < 24
                        && (p[0] as i32 - rgb[2] as i32).abs() < 24
                    {
                        n += 1;
                    }
                }
            }
            n >= 5
        })
        .count()
}
