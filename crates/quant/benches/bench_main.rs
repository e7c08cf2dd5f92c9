//! Quantization throughput and the AWQ clipping search: `cargo bench -p phiquant-quant`.

use criterion::criterion_main;

mod benchmarks;

criterion_main!(benchmarks::quantize::benches, benchmarks::clip::benches);
