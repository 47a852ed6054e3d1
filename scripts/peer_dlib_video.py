#!/usr/bin/env python3
"""The dlib video peer for `facekp bench`: HOG detector (upsample 0) on every frame
+ the 68-point shape predictor, headless, drawing the points into the frame, with
the same figures (fps after 10 warm-up frames, median ms per stage, jitter on a
still photo with fresh Gaussian noise of sigma 3 per frame).

    .venv-peer/bin/python scripts/peer_dlib_video.py --video ../shared/videos/hamilton_clip.mp4 [--json]
    .venv-peer/bin/python scripts/peer_dlib_video.py --still ../shared/samples/ibug68/einstein.jpg --frames 300 [--json]
(.venv-peer: see scripts/peer_dlib.py)
"""
import argparse, json, statistics, sys, time

import cv2
import dlib
import face_recognition_models
import numpy as np

WARMUP_FRAMES = 10
NOISE_SIGMA = 3.0


def frames(args):
    if args.video:
        cap = cv2.VideoCapture(args.video)
        n = 0
        while args.frames is None or n < args.frames:
            t = time.perf_counter()
            ok, img = cap.read()
            if not ok:
                return
            n += 1
            yield img, (time.perf_counter() - t) * 1000
    else:
        base = cv2.imread(args.still)
        rng = np.random.default_rng(12345)
        for _ in range(args.frames or 300):
            t = time.perf_counter()
            noisy = np.clip(base.astype(np.float32) + rng.normal(0, NOISE_SIGMA, base.shape), 0, 255).astype(np.uint8)
            yield noisy, (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--video")
    src.add_argument("--still")
    ap.add_argument("--frames", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    decode, detect, infer, draw, done, largest = [], [], [], [], [], []
    faces_total = 0
    start = time.perf_counter()
    for img, decode_ms in frames(args):
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        t = time.perf_counter()
        rects = hog(rgb, 0)
        detect.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        shapes = [np.array([[p.x, p.y] for p in predictor(rgb, r).parts()], float) for r in rects]
        if shapes:
            infer.append((time.perf_counter() - t) * 1000 / len(shapes))
        t = time.perf_counter()
        for s in shapes:
            for x, y in s.astype(int):
                cv2.circle(img, (int(x), int(y)), 2, (0, 255, 0), -1)
        draw.append((time.perf_counter() - t) * 1000)
        decode.append(decode_ms)
        done.append(time.perf_counter() - start)
        faces_total += len(shapes)
        areas = [r.width() * r.height() for r in rects]
        largest.append(shapes[int(np.argmax(areas))] if shapes else None)
    w = min(WARMUP_FRAMES, max(len(done) - 2, 0))
    n = len(done) - w
    report = {
        "frames": n,
        "faces": faces_total,
        "fps": (n - 1) / (done[-1] - done[w]) if n > 1 else 0.0,
        "decode_ms": statistics.median(decode[w:]),
        "detect_ms": statistics.median(detect[w:]),
        "infer_ms_per_face": statistics.median(infer) if infer else 0.0,
        "draw_ms": statistics.median(draw[w:]),
        "detector_runs": len(done),
    }
    if args.still:
        pts = np.array([s for s in largest[w:] if s is not None])
        if len(pts) >= 2:
            mean = pts.mean(0)
            iod = np.linalg.norm(mean[36] - mean[45])
            sd = np.sqrt(((pts - mean) ** 2).sum(2).mean(0))
            report["jitter"] = float(sd.mean() / iod)
    print(f"dlib: frames {report['frames']}  faces {report['faces']}  fps {report['fps']:.1f}  "
          f"median ms decode {report['decode_ms']:.2f} detect {report['detect_ms']:.2f} "
          f"infer/face {report['infer_ms_per_face']:.2f} draw {report['draw_ms']:.2f}"
          + (f"  jitter {report['jitter']:.5f}" if "jitter" in report else ""))
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
