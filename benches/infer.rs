//! CPU inference time per face at batch 1 (and 8) for the shipped models, on
//! libtorch's default threads (one per core): the budget is 3 ms for 68 points at
//! 224 px and 1 ms for 15 points at 96 px. `batch1-1thread` is batch 1 on one
//! thread, as `facekp run` infers by default (`--cnn-threads 1`; the detector
//! has the other core). The models run in the precision `run` picks
//! (`Precision::auto`: bf16 convolutions on a CPU with AVX512-BF16); on such a CPU
//! the `face68-f32` and `face15-f32` rows are the same models in f32.
//! Run: `scripts/setup.sh && LIBTORCH_USE_PYTORCH=1 PATH=$PWD/.venv/bin:$PATH cargo bench --bench infer`

// A benchmark is test code: a setup failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use facekp::geometry::{CropPrior, Rect};
use facekp::imageops;
use facekp::model::{Keypointer, Precision};
use std::path::Path;

fn infer(c: &mut Criterion) {
    // As `facekp` does at start-up, before libtorch starts its threads.
    facekp::model::flush_denormals();
    let _guard = tch::no_grad_guard();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gray = imageops::read_gray(&root.join("tests/data/einstein.jpg")).unwrap().unwrap();
    let mut group = c.benchmark_group("infer");
    let auto = Precision::auto(tch::Device::Cpu);
    let precisions = if auto == Precision::F32 { vec![auto] } else { vec![auto, Precision::F32] };
    for (file, precision) in ["face68", "face15"].into_iter().flat_map(|f| precisions.iter().map(move |&p| (f, p))) {
        let model =
            Keypointer::load(&root.join(format!("weights/{file}.safetensors")), tch::Device::Cpu, precision, None)
                .unwrap();
        let name = if precision == auto { file.to_string() } else { format!("{file}-{}", precision.name()) };
        let name = name.as_str();
        let cfg = model.config();
        let prior: &CropPrior = &cfg.crop;
        let crop = prior.crop_for_detection(&Rect::new(150.0, 100.0, 200.0, 200.0));
        let pixels = imageops::extract_crop(&gray, &crop, cfg.input_size).unwrap();
        let single = vec![pixels.clone()];
        for batch in [1usize, 8] {
            let crops = vec![pixels.clone(); batch];
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(name, format!("batch{batch}")), &crops, |b, crops| {
                b.iter(|| model.infer(crops).unwrap())
            });
        }
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new(name, "batch1-1thread"), |b| b.iter(|| model.infer(&single).unwrap()));
        tch::set_num_threads(threads);
        group.bench_function(BenchmarkId::new(name, "crop"), |b| {
            b.iter(|| imageops::extract_crop(&gray, &crop, cfg.input_size).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, infer);
criterion_main!(benches);
