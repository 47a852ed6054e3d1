#!/usr/bin/env python3
"""The peer: dlib's 68-point shape predictor on a facekp data set CSV, measured
the way `facekp eval` measures (same NME, same IoU >= 0.3 matching, same Haar
settings), with dlib's HOG detector boxes (upsample 1) and with Haar boxes.

Setup (own venv, not the torch one):
    python3 -m venv .venv-peer
    .venv-peer/bin/pip install dlib-bin face-recognition-models "opencv-python-headless<5" numpy
Run:
    .venv-peer/bin/python scripts/peer_dlib.py --csv ../shared/datasets/ytf68/val.csv [--points 15] [--json]
"""
import argparse, csv, json, math, os, statistics, sys, time

import cv2
import dlib
import face_recognition_models
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CASCADE = os.path.join(HERE, "..", "haarcascades", "haarcascade_frontalface_default.xml")
# Same settings as src/detect.rs.
HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS, HAAR_MIN_FACE_PX, DETECT_MAX_WIDTH = 1.1, 5, 24, 640
MATCH_IOU, FAILURE_NME = 0.3, 0.10
FROM_68 = {2: 42, 3: 45, 4: 39, 5: 36, 6: 22, 7: 26, 8: 21, 9: 17, 10: 30, 11: 54, 12: 48, 13: 51, 14: 57}


def to15(p):
    out = np.zeros((15, 2))
    out[0] = p[42:48].mean(0)
    out[1] = p[36:42].mean(0)
    for d, s in FROM_68.items():
        out[d] = p[s]
    return out


def nme(pred, truth, points):
    a, b = (36, 45) if points == 68 else (5, 3)
    iod = np.linalg.norm(truth[a] - truth[b])
    return float(np.linalg.norm(pred - truth, axis=1).mean() / max(iod, 1e-6))


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = min(ax + aw, bx + bw) - max(ax, bx)
    iy = min(ay + ah, by + bh) - max(ay, by)
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def haar_boxes(cascade, gray):
    scale = min(1.0, DETECT_MAX_WIDTH / gray.shape[1])
    small = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small = cv2.equalizeHist(small)
    found = cascade.detectMultiScale(small, HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS, 0, (HAAR_MIN_FACE_PX, HAAR_MIN_FACE_PX))
    return [tuple(v / scale for v in r) for r in found]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", required=True)
    ap.add_argument("--images")
    ap.add_argument("--points", type=int, choices=[68, 15], default=68)
    ap.add_argument("--boxes", choices=["hog", "haar"], action="append")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    images = args.images or os.path.join(os.path.dirname(os.path.abspath(args.csv)), "images")
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    cascade = cv2.CascadeClassifier(CASCADE)
    rows = list(csv.reader(open(args.csv)))[1:]
    results = {}
    for boxes in args.boxes or ["hog", "haar"]:
        errors, secs = [], 0.0
        for row in rows:
            truth68 = np.array([float(v) for v in row[1:]]).reshape(68, 2)
            img = cv2.imread(os.path.join(images, row[0]))
            rgb, gray = cv2.cvtColor(img, cv2.COLOR_BGR2RGB), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            x0, y0 = truth68.min(0)
            x1, y1 = truth68.max(0)
            tbox = (x0, y0, x1 - x0, y1 - y0)
            if boxes == "hog":
                dets = [(r.left(), r.top(), r.width(), r.height()) for r in hog(rgb, 1)]
            else:
                dets = haar_boxes(cascade, gray)
            scored = [(iou(d, tbox), d) for d in dets]
            scored = [s for s in scored if s[0] >= MATCH_IOU]
            if not scored:
                continue
            d = max(scored)[1]
            t = time.perf_counter()
            rect = dlib.rectangle(int(round(d[0])), int(round(d[1])), int(round(d[0] + d[2])), int(round(d[1] + d[3])))
            shape = predictor(rgb, rect)
            secs += time.perf_counter() - t
            pred = np.array([[p.x, p.y] for p in shape.parts()], dtype=float)
            if args.points == 15:
                pred, truth = to15(pred), to15(truth68)
            else:
                truth = truth68
            errors.append(nme(pred, truth, args.points))
        n = max(len(errors), 1)
        r = {
            "faces": len(rows),
            "detected": len(errors),
            "nme": sum(errors) / n,
            "median_nme": statistics.median(errors) if errors else float("nan"),
            "failure_rate": sum(e > FAILURE_NME for e in errors) / n,
            "ms_per_face": 1000 * secs / n,
        }
        results[boxes] = r
        print(f"dlib {args.points}-point, {boxes} boxes: faces {r['faces']}  detected {r['detected']}  NME {r['nme']:.4f}  "
              f"median {r['median_nme']:.4f}  failures {100 * r['failure_rate']:.2f}%  {r['ms_per_face']:.2f} ms/face")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
