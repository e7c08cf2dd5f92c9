//! Throughput in bytes of input weights per second for every format, on a 4096 x 4096 matrix
//! stored as f32 and as bf16, with 1 and 2 threads, next to a plain parallel copy of the same
//! bytes measured in the same run (the memory-bandwidth ceiling).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use phiquant_quant::{
    BlockFormat, ElementType, Matrix, NBitsScheme, ScaleType, quantize_matrix, quantize_nbits,
};
use rayon::prelude::*;

use super::{noise, pool};

const N: usize = 4096;
const K: usize = 4096;

fn weights() -> (Vec<u8>, Vec<u8>) {
    // A fixed xorshift stream scaled like real weights (std 0.02).
    let f32s: Vec<f32> =
        noise(N * K, 0x9e37_79b9_7f4a_7c15).into_iter().map(|v| v * 0.07).collect();
    let bf16: Vec<u8> =
        f32s.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
    (bytemuck::cast_slice(&f32s).to_vec(), bf16)
}

fn bench(c: &mut Criterion) {
    let (f32_bytes, bf16_bytes) = weights();
    let sources = [("f32", ElementType::F32, &f32_bytes), ("bf16", ElementType::Bf16, &bf16_bytes)];
    let mut group = c.benchmark_group("quantize_4096x4096");
    group.sample_size(10);
    for threads in [1, 2] {
        let pool = pool(threads);
        for (src_name, dtype, bytes) in sources {
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            let m = Matrix::new(bytes, dtype, N, K).expect("matrix");

            let mut copy = vec![0u8; bytes.len()];
            group.bench_function(BenchmarkId::new(format!("memcpy/{src_name}"), threads), |b| {
                b.iter(|| {
                    pool.install(|| {
                        copy.par_chunks_mut(1 << 20)
                            .zip(bytes.par_chunks(1 << 20))
                            .for_each(|(d, s)| d.copy_from_slice(s))
                    });
                    black_box(&copy);
                })
            });

            for (name, bits, bs, sym) in [
                ("int4-sym-b32", 4, 32, true),
                ("int4-asym-b32", 4, 32, false),
                ("int4-sym-b128", 4, 128, true),
                ("int8-sym-b32", 8, 32, true),
            ] {
                let scheme = NBitsScheme::new(bits, bs, sym, ScaleType::F32).expect("scheme");
                group.bench_function(
                    BenchmarkId::new(format!("{name}/{src_name}"), threads),
                    |b| {
                        b.iter(|| {
                            pool.install(|| {
                                black_box(quantize_nbits(&m, &scheme).expect("quantize"))
                            })
                        })
                    },
                );
            }
            for format in BlockFormat::ALL {
                group.bench_function(
                    BenchmarkId::new(format!("{}/{src_name}", format.name()), threads),
                    |b| {
                        b.iter(|| {
                            pool.install(|| {
                                black_box(quantize_matrix(format, &m).expect("quantize"))
                            })
                        })
                    },
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
