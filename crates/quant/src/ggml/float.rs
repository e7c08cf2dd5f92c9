//! Unquantized storage: F32, F16 and BF16 rows, converted as llama.cpp converts them
//! (`ggml_fp32_to_fp16_row`, `ggml_compute_fp32_to_bf16` in `ggml/src/ggml-impl.h`).

use rayon::prelude::*;

use crate::{Error, Matrix};

fn convert<const W: usize>(
    m: &Matrix<'_>,
    out: &mut [u8],
    f: impl Fn(f32) -> [u8; W] + Sync,
) -> Result<(), Error> {
    out.par_chunks_mut(m.cols() * W).enumerate().try_for_each_init(
        || vec![0f32; m.cols()],
        |buf, (r, dst)| {
            m.read_row(r, buf)?;
            for (o, &v) in dst.chunks_exact_mut(W).zip(buf.iter()) {
                o.copy_from_slice(&f(v));
            }
            Ok(())
        },
    )
}

pub(super) fn quantize_f32(m: &Matrix<'_>, out: &mut [u8]) -> Result<(), Error> {
    convert(m, out, f32::to_le_bytes)
}

pub(super) fn quantize_f16(m: &Matrix<'_>, out: &mut [u8]) -> Result<(), Error> {
    convert(m, out, super::fp16)
}

/// Round to nearest even on the upper 16 bits (inputs are finite: NaN is refused earlier).
pub(crate) fn bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

pub(super) fn quantize_bf16(m: &Matrix<'_>, out: &mut [u8]) -> Result<(), Error> {
    convert(m, out, |v| bf16_bits(v).to_le_bytes())
}

pub(super) fn dequantize_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway too, and rounds up to the even 1 + 2^-6... i.e. 0x3f82.
        assert_eq!(bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(bf16_bits(-2.0), 0xc000);
    }
}
