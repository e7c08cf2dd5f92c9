//! Error bounds every format must keep on random inputs, all-zero blocks, and non-finite input.

use phiquant_quant::{
    BlockFormat, Error, Matrix, NBitsScheme, ScaleType, dequantize_matrix, quantize_matrix,
    quantize_nbits,
};

use crate::util::Rng;

/// Worst-case error of round-to-nearest with an f16-rounded scale, relative to a block's absmax.
fn bound(format: BlockFormat) -> f32 {
    match format {
        BlockFormat::F32 => 0.0,
        BlockFormat::F16 => 1e-3,
        BlockFormat::Bf16 => 4e-3,
        BlockFormat::Q8_0 => 1.0 / 127.0,
        BlockFormat::Q5_0 => 1.0 / 16.0 * 1.002,
        BlockFormat::Q6K => 1.0 / 32.0 + 0.02,
        // Q4_0 has steps of amax/8 and clamps the side opposite the signed absmax at code 15: one
        // full step, plus the f16 rounding of d. Q4_1 errs by half of (max - min)/15. Q4_K's 6-bit
        // sub-scales and minimums add a little.
        BlockFormat::Q4_0 => 1.0 / 8.0 * 1.002,
        BlockFormat::Q4_1 => 1.0 / 15.0 * 1.02, // + the f16 rounding of the stored minimum
        BlockFormat::Q4K => 1.0 / 8.0 + 0.05,
        _ => unreachable!(),
    }
}

#[test]
fn round_trip_error_is_bounded() {
    let mut rng = Rng::new(42);
    for trial in 0..20 {
        let (rows, cols) = (3, 512);
        let std = [1e-3f32, 0.02, 1.0, 30.0][trial % 4];
        let x = rng.matrix(rows, cols, std);
        let m = Matrix::from_f32(&x, rows, cols).unwrap();
        for format in BlockFormat::ALL {
            let q = quantize_matrix(format, &m).unwrap();
            let mut y = vec![0f32; rows * cols];
            dequantize_matrix(format, &q, cols, &mut y).unwrap();
            let block = format.block_len().max(32);
            for (xb, yb) in x.chunks(block).zip(y.chunks(block)) {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = xb.iter().zip(yb).fold(0f32, |a, (p, q)| a.max((p - q).abs()));
                assert!(
                    worst <= bound(format) * amax * 1.0001 + 1e-30,
                    "{format} std {std}: error {worst} vs absmax {amax}"
                );
            }
        }
        for (bits, sym) in [(4, true), (4, false), (8, true), (8, false)] {
            for bs in [16, 32, 64, 128, 256] {
                let s = NBitsScheme::new(bits, bs, sym, ScaleType::F32).unwrap();
                let t = quantize_nbits(&m, &s).unwrap();
                let mut y = vec![0f32; rows * cols];
                t.dequantize(&mut y).unwrap();
                let levels = if bits == 4 { 15.0 } else { 255.0 };
                for (xb, yb) in x.chunks(bs).zip(y.chunks(bs)) {
                    let (lo, hi) = xb.iter().fold((0f32, 0f32), |(l, h), v| (l.min(*v), h.max(*v)));
                    // Half a step of the widest range either scheme uses, and the symmetric
                    // scheme's clamp of +absmax to code 15 costs one more step.
                    let step = if sym {
                        2.0 * hi.abs().max(lo.abs()) / (levels + 1.0)
                    } else {
                        (hi - lo) / levels
                    };
                    let worst = xb.iter().zip(yb).fold(0f32, |a, (p, q)| a.max((p - q).abs()));
                    assert!(
                        worst <= step * 1.0001 + 1e-30,
                        "int{bits} bs{bs} sym {sym}: {worst} vs step {step}"
                    );
                }
            }
        }
    }
}

#[test]
fn zero_blocks_give_zero_scales_and_no_nan() {
    let x = vec![0f32; 2 * 256];
    let m = Matrix::from_f32(&x, 2, 256).unwrap();
    for format in BlockFormat::ALL {
        let q = quantize_matrix(format, &m).unwrap();
        let mut y = vec![1f32; 512];
        dequantize_matrix(format, &q, 256, &mut y).unwrap();
        assert!(y.iter().all(|v| *v == 0.0), "{format}");
    }
    for sym in [true, false] {
        let t = quantize_nbits(&m, &NBitsScheme::new(4, 32, sym, ScaleType::F16).unwrap()).unwrap();
        let mut y = vec![1f32; 512];
        t.dequantize(&mut y).unwrap();
        assert!(y.iter().all(|v| *v == 0.0));
    }
}

#[test]
fn non_finite_input_names_the_row() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![0.1f32; 4 * 64];
        x[2 * 64 + 33] = bad;
        let m = Matrix::from_f32(&x, 4, 64).unwrap();
        for format in BlockFormat::ALL {
            if !format.fits_row(64) {
                continue;
            }
            let err = quantize_matrix(format, &m).unwrap_err();
            assert!(matches!(err, Error::NonFinite { row: 2, col: 33, .. }), "{format}: {err}");
        }
        let err = quantize_nbits(&m, &NBitsScheme::new(4, 32, true, ScaleType::F32).unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::NonFinite { row: 2, col: 33, .. }));
    }
}
