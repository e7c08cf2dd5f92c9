//! Quantization throughput: `cargo bench -p phiquant-quant`.

use criterion::criterion_main;

mod benchmarks;

criterion_main!(benchmarks::quantize::benches);
