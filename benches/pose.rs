//! Time per face of what head pose and openness add to a frame: the pose solve
//! (SQPnP for 68 points, EPnP and Gauss-Newton for 15), the eye and mouth aspect
//! ratios, and the pose's One Euro filter, on the annotated points of the einstein
//! photo (the solver's work does not depend on where the points come from). The
//! budget is 0.2 ms per face.
//! Run: `LIBTORCH_USE_PYTORCH=1 PATH=$PWD/.venv/bin:$PATH cargo bench --bench pose`

// A benchmark is test code: a setup failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use facekp::dataset::read_pts;
use facekp::landmarks::Scheme;
use facekp::pose::{CameraSpec, Openness, PoseSolver};
use facekp::smooth::{PoseFilter, SmoothParams};
use std::path::Path;

fn pose(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let truth68 = read_pts(&root.join("tests/data/einstein.pts")).unwrap();
    // The einstein photo's size.
    let frame = (817, 1024);
    let params = SmoothParams::default();
    let mut group = c.benchmark_group("pose");
    for scheme in [Scheme::P68, Scheme::P15] {
        let points = scheme.from_68(&truth68);
        let solver = PoseSolver::new(scheme, CameraSpec::default());
        let name = format!("{}-point", scheme.num_points());
        group.bench_function(BenchmarkId::new(name.as_str(), "solve"), |b| {
            b.iter(|| solver.solve(&points, frame).unwrap())
        });
        let mut filter = PoseFilter::default();
        group.bench_function(BenchmarkId::new(name.as_str(), "per-face"), |b| {
            b.iter(|| {
                let pose = solver.solve(&points, frame).unwrap().map(|p| filter.filter(p, 1.0 / 30.0, &params));
                (pose, Openness::from_points(&points))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pose);
criterion_main!(benches);
