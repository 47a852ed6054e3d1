#!/usr/bin/env python3
"""Derives the 3D mean face of src/pose/face3d.rs: the 68 iBUG points as vertices of
MediaPipe's canonical face mesh, checked against the mean 68-point shape of the
training faces.

Source: canonical_face_model.obj of MediaPipe (Apache-2.0, (c) The MediaPipe
Authors), mediapipe/modules/face_geometry/data/ in github.com/google/mediapipe.

Steps:
1. The mean shape: the 68 points of every face in helen68/train.csv and
   lfpw68/train.csv, each also mirrored (so the mean is symmetric: no yaw, no roll),
   aligned by generalised Procrustes (similarity), inter-ocular distance 1.
2. A first vertex for each point from the mesh's layout (START below).
3. Fit: the camera pose that projects the chosen vertices (jaw left out) best onto
   the mean shape (cv2.solvePnP, a 50-degree field of view), then each point is
   moved to the vertex whose projection lies nearest to its mean position (midline
   points only to midline vertices; mirror pairs to mirror vertices). Fit and move
   again until nothing changes.
4. Prints the per-point residual (fraction of the inter-ocular distance) before
   and after, and the Rust table (x right, y down, z away from the viewer, the
   mesh's units, which are centimetres on an average head).

Usage: python3 scripts/derive_mean_face.py canonical_face_model.obj ../shared/datasets
(needs numpy and opencv-python-headless<5).
"""
import csv
import sys

import cv2
import numpy as np

# MediaPipe vertex of each 68-point index, from the mesh's layout (contours of the
# jaw, brows, nose, eyes and lips); step 3 checks and corrects it.
START = [
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,  # jaw
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
]
FLIP = [
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
    27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    64, 63, 62, 61, 60, 67, 66, 65,
]
FIT = list(range(17, 68))  # the jaw contour slides along the cheek: left out
IMAGE = 1000.0  # the mean shape is placed in a 1000 px image
FOCAL = IMAGE / (2 * np.tan(np.radians(25)))


def load_vertices(path):
    rows = [line.split()[1:4] for line in open(path) if line.startswith("v ")]
    v = np.array(rows, dtype=np.float64)
    return v * np.array([1.0, -1.0, -1.0])  # y up, z to the viewer -> y down, z away


def load_shapes(folder):
    shapes = []
    for name in ("helen68", "lfpw68"):
        with open(f"{folder}/{name}/train.csv") as f:
            for row in csv.DictReader(f):
                p = np.array([[float(row[f"x{i}"]), float(row[f"y{i}"])] for i in range(68)])
                shapes.append(p)
                m = p[FLIP].copy()
                m[:, 0] *= -1
                shapes.append(m)
    return shapes


def normalise(p):
    p = p - p.mean(axis=0)
    return p / np.linalg.norm(p[45] - p[36])


def align(p, ref):
    """Similarity transform of p onto ref (least squares)."""
    a, b = p - p.mean(0), ref - ref.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    if np.linalg.det(u @ vt) < 0:  # a rotation, never a reflection
        u[:, -1] *= -1
        s[-1] *= -1
    r = u @ vt
    scale = s.sum() / (a**2).sum()
    return a @ r * scale + ref.mean(0)


def mean_shape(shapes):
    mean = normalise(shapes[0])
    for _ in range(5):
        mean = normalise(np.mean([align(normalise(s), mean) for s in shapes], axis=0))
    return upright(mean)


def upright(p):
    """Turns p so its eye line is level, then averages it with its mirror image."""
    d = p[42:48].mean(0) - p[36:42].mean(0)
    a = -np.arctan2(d[1], d[0])
    p = p @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    m = p[FLIP] * np.array([-1.0, 1.0])
    return normalise((p + m) / 2)


def fit(vertices, mapping, target):
    """Projects the mapped vertices with the pose that fits target's FIT points."""
    k = np.array([[FOCAL, 0, IMAGE / 2], [0, FOCAL, IMAGE / 2], [0, 0, 1]])
    obj = vertices[[mapping[i] for i in FIT]]
    ok, rvec, tvec = cv2.solvePnP(obj, target[FIT], k, None, flags=cv2.SOLVEPNP_SQPNP)
    ok, rvec, tvec = cv2.solvePnP(obj, target[FIT], k, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    proj, _ = cv2.projectPoints(vertices, rvec, tvec, k, None)
    return proj.reshape(-1, 2), rvec


def mirror_vertex(vertices):
    """Index of each vertex's mirror image (x negated)."""
    m = vertices * np.array([-1.0, 1.0, 1.0])
    d = np.linalg.norm(vertices[None, :, :] - m[:, None, :], axis=2)
    return d.argmin(axis=1)


def snap(proj, target, vertices, mirror):
    """Each point's nearest projected vertex, keeping the mesh's symmetry."""
    mapping = [0] * 68
    midline = np.where(np.abs(vertices[:, 0]) < 1e-6)[0]
    for i in range(68):
        j = FLIP[i]
        if j == i:
            d = np.linalg.norm(proj[midline] - target[i], axis=1)
            mapping[i] = int(midline[d.argmin()])
        elif i < j:
            cost = np.linalg.norm(proj - target[i], axis=1) + np.linalg.norm(proj[mirror] - target[j], axis=1)
            mapping[i] = int(cost.argmin())
            mapping[j] = int(mirror[mapping[i]])
    return mapping


def residuals(proj, mapping, target, iod):
    return np.array([np.linalg.norm(proj[mapping[i]] - target[i]) / iod for i in range(68)])


def main():
    vertices = load_vertices(sys.argv[1])
    target = mean_shape(load_shapes(sys.argv[2]))
    iod = 0.3 * IMAGE
    target = target * iod + IMAGE / 2
    mirror = mirror_vertex(vertices)
    mapping = list(START)
    proj, _ = fit(vertices, mapping, target)
    before = residuals(proj, mapping, target, iod)
    for _ in range(10):
        new = snap(proj, target, vertices, mirror)
        if new == mapping:
            break
        mapping = new
        proj, _ = fit(vertices, mapping, target)
    after = residuals(proj, mapping, target, iod)
    _, rvec = fit(vertices, mapping, target)
    report(mapping, before, after, rvec)
    print_table(vertices, mapping)


def report(mapping, before, after, rvec):
    print(f"fit pose of the mean shape (Rodrigues, degrees): {np.degrees(rvec.ravel()).round(2)}")
    for i in range(68):
        moved = "" if mapping[i] == START[i] else f" (moved from {START[i]})"
        print(f"point {i:2}: vertex {mapping[i]:3} residual {before[i]:.3f} -> {after[i]:.3f}{moved}")
    f = np.array(FIT)
    print(f"mean residual, fitted points: {before[f].mean():.4f} -> {after[f].mean():.4f}; "
          f"max {before[f].max():.4f} -> {after[f].max():.4f}; jaw mean {after[:17].mean():.4f}")


def print_table(vertices, mapping):
    print("pub const MEAN_FACE_68: [[f32; 3]; 68] = [")
    for i in range(68):
        x, y, z = vertices[mapping[i]]
        print(f"    [{x:.4f}, {y:.4f}, {z:.4f}], // {i}: vertex {mapping[i]}")
    print("];")


if __name__ == "__main__":
    main()
