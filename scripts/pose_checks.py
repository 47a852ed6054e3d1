#!/usr/bin/env python3
"""The head pose targets of docs/BENCHMARKS.md, measured with `facekp run`.

turn:   each of the first N photos of helen68/val.csv, scaled to 640 px wide, turned
        counter-clockwise 1 degree a frame (0 -> +60 -> -60 -> 0, 240 frames, ffmpeg's
        rotate filter) into a video; `facekp run --keypoints` on it. The true roll of
        frame n is the annotated eye line of the photo plus the turn. Reports the
        roll error (median, 95th percentile) over the frames where the annotated
        face is followed (a found face near its turned position; other faces and
        false detections are left out), and the median over photos of the
        standard deviation of yaw.
mirror: the hamilton clip and its mirror image (ffmpeg hflip), `facekp run` on
        both; faces matched by the mirrored box centre. Reports the medians of
        |yaw + yaw'|, |roll + roll'| and |pitch - pitch'|.

Usage: python3 scripts/pose_checks.py [turn|mirror|all] [--photos N] [--work DIR]
(standard library only; needs ffmpeg and target/release/facekp).
"""
import argparse
import csv
import functools
import json
import math
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FACEKP = ROOT / "target" / "release" / "facekp"
WIDTH = 640
TURN = "if(lt(n,60),n,if(lt(n,180),120-n,n-240))"  # degrees, counter-clockwise


def turn_deg(n):
    return n if n < 60 else (120 - n if n < 180 else n - 240)


def ffmpeg(*args):
    if REUSE and Path(args[-1]).exists():
        return
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


REUSE = False  # --reuse: keep the videos and keypoint files already in --work


def facekp_run(video, keypoints):
    if REUSE and keypoints.exists():
        return [json.loads(line) for line in open(keypoints)]
    subprocess.run([str(FACEKP), "run", "--headless", "--video", str(video), "--keypoints", str(keypoints)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [json.loads(line) for line in open(keypoints)]


def eye_line_deg(row):
    p = [(float(row[f"x{i}"]), float(row[f"y{i}"])) for i in range(68)]
    mean = lambda r: (sum(p[i][0] for i in r) / 6, sum(p[i][1] for i in r) / 6)
    (lx, ly), (rx, ry) = mean(range(36, 42)), mean(range(42, 48))
    return math.degrees(math.atan2(-(ry - ly), rx - lx))


@functools.lru_cache(maxsize=None)
def probe_size(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                          "-of", "csv=p=0", str(path)], check=True, capture_output=True, text=True).stdout
    w, h = out.strip().split(",")
    return int(w), int(h)


def annotated_face(row, photo, n):
    """Centre and width of the annotated face in frame n of the turned video."""
    w, h = probe_size(photo)
    s = WIDTH / w
    height = 2 * round(h * s / 2)
    pts = [(float(row[f"x{i}"]) * s, float(row[f"y{i}"]) * s) for i in range(68)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x, y = (min(xs) + max(xs)) / 2 - (WIDTH - 1) / 2, (min(ys) + max(ys)) / 2 - (height - 1) / 2
    a = math.radians(turn_deg(n))  # counter-clockwise as seen, y down
    cx = (WIDTH - 1) / 2 + x * math.cos(a) + y * math.sin(a)
    cy = (height - 1) / 2 - x * math.sin(a) + y * math.cos(a)
    return cx, cy, max(xs) - min(xs)


def is_annotated_face(f, centre):
    """Whether a found face is the annotated one (not another face or a false detection)."""
    cx, cy, width = centre
    fx, fy = f["box_x"] + f["box_w"] / 2, f["box_y"] + f["box_h"] / 2
    return math.hypot(fx - cx, fy - cy) < 0.3 * width and 0.5 < f["box_w"] / width < 2.0


def percentile(values, q):
    v = sorted(values)
    return v[round((len(v) - 1) * q)]


def turn_check(photos, work):
    rows = list(csv.DictReader(open(SHARED / "datasets/helen68/val.csv")))[:photos]
    errors, small, large, yaw_sds, followed = [], [], [], [], 0
    for k, row in enumerate(rows):
        video = work / f"turn{k}.mp4"
        photo = SHARED / "datasets/helen68/images" / row["image"]
        ffmpeg("-loop", "1", "-framerate", "30", "-i", str(photo),
               "-vf", f"scale={WIDTH}:-2,rotate='-({TURN})*PI/180':fillcolor=black", "-frames:v", "240",
               "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", str(video))
        base = eye_line_deg(row)
        yaws = []
        for frame in facekp_run(video, work / f"turn{k}.jsonl"):
            centre = annotated_face(row, photo, frame["frame"])
            faces = [f for f in frame["faces"] if f["pose"] and is_annotated_face(f, centre)]
            if not faces:
                continue
            f = faces[0]
            followed += 1
            err = (f["pose"]["roll"] - base - turn_deg(frame["frame"]) + 180) % 360 - 180
            errors.append(abs(err))
            (small if abs(turn_deg(frame["frame"])) <= 30 else large).append(abs(err))
            yaws.append(f["pose"]["yaw"])
        if len(yaws) > 1:
            yaw_sds.append(statistics.pstdev(yaws))
        print(f"photo {row['image']}: eye line {base:.1f}, followed {len(yaws)} of 240 frames")
    print(f"in-plane turn, {len(rows)} photos: roll error median {statistics.median(errors):.2f}, "
          f"p95 {percentile(errors, 0.95):.2f} degrees over {followed} followed frames of {240 * len(rows)}; "
          f"yaw sd per face median {statistics.median(yaw_sds):.2f} degrees")
    for name, e in (("at most 30", small), ("more than 30", large)):
        if e:
            print(f"  frames turned {name} degrees: {len(e)}, roll error median {statistics.median(e):.2f}, "
                  f"p95 {percentile(e, 0.95):.2f}")


def mirror_check(work):
    clip = SHARED / "videos/hamilton_clip.mp4"
    flipped = work / "hamilton_hflip.mp4"
    ffmpeg("-i", str(clip), "-vf", "hflip", "-vsync", "passthrough", "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", str(flipped))
    width = int(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=width", "-of", "csv=p=0", str(clip)],
                               check=True, capture_output=True, text=True).stdout.strip())
    a = facekp_run(clip, work / "hamilton.jsonl")
    b = facekp_run(flipped, work / "hamilton_hflip.jsonl")
    yaw, roll, pitch = [], [], []
    for fa, fb in zip(a, b):
        for f in fa["faces"]:
            cx, cy = width - 1 - (f["box_x"] + f["box_w"] / 2), f["box_y"] + f["box_h"] / 2
            near = [g for g in fb["faces"] if abs(g["box_x"] + g["box_w"] / 2 - cx) < f["box_w"] / 2
                    and abs(g["box_y"] + g["box_h"] / 2 - cy) < f["box_h"] / 2]
            if near and f["pose"] and near[0]["pose"]:
                p, q = f["pose"], near[0]["pose"]
                yaw.append(abs(p["yaw"] + q["yaw"]))
                roll.append(abs(p["roll"] + q["roll"]))
                pitch.append(abs(p["pitch"] - q["pitch"]))
    print(f"mirror, {len(yaw)} matched faces in {len(a)} frames: median |yaw + yaw'| {statistics.median(yaw):.2f}, "
          f"|roll + roll'| {statistics.median(roll):.2f}, |pitch - pitch'| {statistics.median(pitch):.2f} degrees")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=["turn", "mirror", "all"], nargs="?", default="all")
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--reuse", action="store_true", help="keep the files already in --work")
    args = ap.parse_args()
    global REUSE
    REUSE = args.reuse
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.check in ("turn", "all"):
            turn_check(args.photos, work)
        if args.check in ("mirror", "all"):
            mirror_check(work)


if __name__ == "__main__":
    main()
