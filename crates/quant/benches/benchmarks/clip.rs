//! AWQ's clipping search (`clip_search`) on matrices shaped like Phi-3-mini's: rows of the MLP's
//! down projection (K = 8192) and of the attention and gate/up projections (K = 3072), int4
//! `MatMulNBits` blocks of 32 and 128 with a zero point (the two-sided search, 100 candidates a
//! block), on 1 and 2 threads, with the block scales' refit (the default) and without it
//! (`/norefit`), with f32 scales (cpu-int4: the refit predicts its errors) and with f16 scales
//! (`/f16`, cuda-int4 and dml-int4: it quantizes the refitted rows again and measures them).
//! The Gram matrix comes from inputs that share a common component, as real activations do, so
//! that the descent over a row's blocks has work to do.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use phiquant_quant::{ClipMode, ClipSearch, FakeQuant, Gram, NBitsScheme, ScaleType, clip_search};

use super::{noise, pool};

fn gram(cols: usize) -> Vec<f32> {
    let t = 512;
    let (z, e) = (noise(t, 0x9e37_79b9_7f4a_7c15), noise(t * cols, 0x2545_f491_4f6c_dd1d));
    let x: Vec<f32> = (0..t * cols).map(|i| z[i / cols] + 0.5 * e[i]).collect();
    let mut g = Gram::new(cols);
    g.add(&x);
    g.matrix()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("clip_search");
    group.sample_size(10);
    for (rows, cols) in [(40, 8192), (160, 3072)] {
        let g = gram(cols);
        let w = noise(rows * cols, 0x1234_5678_9abc_def1);
        for block in [32, 128] {
            let fq = FakeQuant::NBits(
                NBitsScheme::new(4, block, false, ScaleType::F32).expect("int4 scheme"),
            );
            group.throughput(Throughput::Elements(rows as u64));
            let f16 = FakeQuant::NBits(
                NBitsScheme::new(4, block, false, ScaleType::F16).expect("int4 scheme"),
            );
            let runs = [
                (&fq, true, "", 1),
                (&fq, true, "", 2),
                (&fq, false, "/norefit", 1),
                (&fq, false, "/norefit", 2),
                (&f16, true, "/f16", 1),
                (&f16, true, "/f16", 2),
            ];
            for (fq, refit, label, threads) in runs {
                let pool = pool(threads);
                let settings = ClipSearch { mode: ClipMode::TwoSided, refit };
                let name = format!("{rows}x{cols}/b{block}{label}");
                group.bench_function(BenchmarkId::new(name, threads), |b| {
                    b.iter(|| {
                        let mut w = w.clone();
                        pool.install(|| clip_search(&mut w, cols, fq, &g, settings))
                            .expect("clip search");
                        black_box(w)
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
