//! The same bytes for any number of threads (what `RAYON_NUM_THREADS=1` and `=2` select).

use phiquant_quant::{
    BlockFormat, ElementType, Matrix, NBitsScheme, ScaleType, quantize_matrix, quantize_nbits,
};

use crate::util::Rng;

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

#[test]
fn identical_bytes_for_1_2_and_3_threads() {
    let (rows, cols) = (67, 512);
    let values = Rng::new(7).matrix(rows, cols, 0.02);
    let bf16: Vec<u8> =
        values.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
    let sources = [
        Matrix::from_f32(&values, rows, cols).unwrap(),
        Matrix::new(&bf16, ElementType::Bf16, rows, cols).unwrap(),
    ];
    for m in &sources {
        for format in BlockFormat::ALL {
            let one = in_pool(1, || quantize_matrix(format, m).unwrap());
            for threads in [2, 3] {
                assert!(
                    one == in_pool(threads, || quantize_matrix(format, m).unwrap()),
                    "{format} with {threads} threads"
                );
            }
        }
        for (bits, bs, sym, st) in [
            (4, 32, true, ScaleType::F32),
            (4, 128, false, ScaleType::F16),
            (8, 64, false, ScaleType::F32),
        ] {
            let s = NBitsScheme::new(bits, bs, sym, st).unwrap();
            let one = in_pool(1, || quantize_nbits(m, &s).unwrap());
            assert_eq!(one, in_pool(2, || quantize_nbits(m, &s).unwrap()), "{s:?}");
        }
    }
}
