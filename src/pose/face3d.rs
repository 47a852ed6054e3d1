//! The 3D mean face the head pose is solved against: the 68 iBUG points as
//! vertices of MediaPipe's canonical face mesh. Model space: x to the image right,
//! y down, z away from the viewer, for a face looking at the camera (so a frontal
//! face has the camera's axes); units are the mesh's, centimetres on an average
//! head. The zero pose is the mesh's own frame; the mean training face (helen68
//! and lfpw68) sits at 5 degrees of pitch in it.
//!
//! Derived from `canonical_face_model.obj` of MediaPipe
//! (`mediapipe/modules/face_geometry/data/`, github.com/google/mediapipe),
//! Copyright The MediaPipe Authors, Apache License 2.0: each point is one vertex
//! of that mesh with y and z negated, chosen by `scripts/derive_mean_face.py`,
//! which fits the projected mesh to the mean 68-point shape of the helen68 and
//! lfpw68 training faces and moves each point to the vertex that projects nearest
//! to it (mirror pairs to mirror vertices). Residual of the fit: 1.7% of the
//! inter-ocular distance on average over points 17-67 (largest 4.5%, the brows);
//! 7% on the jaw contour, which the solver leaves out.

/// Model-space position of each of the 68 points (see the module documentation).
#[rustfmt::skip]
pub const MEAN_FACE_68: [[f32; 3]; 68] = [
    [-7.7431, -2.3650, 2.0052], // 0: vertex 127
    [-7.2973, -0.7632, 0.0488], // 1: vertex 227
    [-7.1593, 0.8118, 0.0720], // 2: vertex 137
    [-6.5832, 3.9413, -0.0703], // 3: vertex 215
    [-5.8431, 5.2480, -0.9241], // 4: vertex 138
    [-5.0853, 7.1786, -0.7147], // 5: vertex 136
    [-3.2107, 8.5333, -2.8020], // 6: vertex 149
    [-1.3137, 8.6400, -4.7025], // 7: vertex 171
    [0.0000, 9.4034, -4.2645], // 8: vertex 152
    [1.3137, 8.6400, -4.7025], // 9: vertex 396
    [3.2107, 8.5333, -2.8020], // 10: vertex 378
    [5.0853, 7.1786, -0.7147], // 11: vertex 365
    [5.8431, 5.2480, -0.9241], // 12: vertex 367
    [6.5832, 3.9413, -0.0703], // 13: vertex 435
    [7.1593, 0.8118, 0.0720], // 14: vertex 366
    [7.2973, -0.7632, 0.0488], // 15: vertex 447
    [7.7431, -2.3650, 2.0052], // 16: vertex 356
    [-5.7210, -4.2546, -2.8309], // 17: vertex 70
    [-4.9859, -4.8025, -3.7520], // 18: vertex 63
    [-3.9866, -5.1095, -4.4663], // 19: vertex 105
    [-2.6445, -4.5247, -4.9216], // 20: vertex 65
    [-1.2209, -4.1422, -5.1060], // 21: vertex 55
    [1.2209, -4.1422, -5.1060], // 22: vertex 285
    [2.6445, -4.5247, -4.9216], // 23: vertex 295
    [3.9866, -5.1095, -4.4663], // 24: vertex 334
    [4.9859, -4.8025, -3.7520], // 25: vertex 293
    [5.7210, -4.2546, -2.8309], // 26: vertex 300
    [0.0000, -2.4733, -5.7886], // 27: vertex 6
    [0.0000, -1.7284, -6.3167], // 28: vertex 197
    [0.0000, -0.3657, -7.2429], // 29: vertex 5
    [0.0000, 0.4632, -7.5866], // 30: vertex 4
    [-1.4056, 1.7142, -5.2411], // 31: vertex 98
    [-0.6624, 1.8193, -5.8638], // 32: vertex 99
    [0.0000, 2.0890, -6.0583], // 33: vertex 2
    [0.6624, 1.8193, -5.8638], // 34: vertex 328
    [1.4056, 1.7142, -5.2411], // 35: vertex 327
    [-4.6710, -2.6645, -3.0841], // 36: vertex 130
    [-3.7452, -3.1653, -3.9724], // 37: vertex 29
    [-2.6738, -3.2053, -4.0922], // 38: vertex 28
    [-1.9983, -2.4965, -3.6891], // 39: vertex 155
    [-2.7240, -2.3158, -3.7772], // 40: vertex 153
    [-3.6701, -2.3602, -3.6352], // 41: vertex 144
    [1.9983, -2.4965, -3.6891], // 42: vertex 382
    [2.6738, -3.2053, -4.0922], // 43: vertex 258
    [3.7452, -3.1653, -3.9724], // 44: vertex 259
    [4.6710, -2.6645, -3.0841], // 45: vertex 359
    [3.6701, -2.3602, -3.6352], // 46: vertex 373
    [2.7240, -2.3158, -3.7772], // 47: vertex 380
    [-3.1026, 4.3530, -4.0959], // 48: vertex 57
    [-1.9149, 3.8031, -5.0289], // 49: vertex 40
    [-0.7115, 3.3294, -5.8770], // 50: vertex 37
    [0.0000, 3.4064, -5.9795], // 51: vertex 0
    [0.7115, 3.3294, -5.8770], // 52: vertex 267
    [1.9149, 3.8031, -5.0289], // 53: vertex 270
    [3.1026, 4.3530, -4.0959], // 54: vertex 287
    [1.8386, 4.8287, -4.8237], // 55: vertex 321
    [0.6996, 5.2919, -5.4483], // 56: vertex 314
    [0.0000, 5.3651, -5.5354], // 57: vertex 17
    [-0.6996, 5.2919, -5.4483], // 58: vertex 84
    [-1.8386, 4.8287, -4.8237], // 59: vertex 91
    [-2.3212, 4.3291, -4.2582], // 60: vertex 76
    [-0.6060, 3.9246, -5.4449], // 61: vertex 38
    [0.0000, 3.9944, -5.2195], // 62: vertex 13
    [0.6060, 3.9246, -5.4449], // 63: vertex 268
    [2.3212, 4.3291, -4.2582], // 64: vertex 306
    [0.5832, 4.5180, -5.3399], // 65: vertex 317
    [0.0000, 4.5424, -5.4048], // 66: vertex 14
    [-0.5832, 4.5180, -5.3399], // 67: vertex 87
];
