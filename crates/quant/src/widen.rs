//! Widening of stored half-precision floats to `f32`.

use crate::Error;

fn check(src: &[u8], dst: &[f32]) -> Result<(), Error> {
    if src.len() != dst.len() * 2 {
        return Err(Error::LengthMismatch {
            what: "half-precision source bytes",
            actual: src.len(),
            expected: dst.len() * 2,
        });
    }
    Ok(())
}

/// Widens little-endian IEEE f16 values in `src` into `dst` (exact: every f16 is an f32).
pub fn widen_f16(src: &[u8], dst: &mut [f32]) -> Result<(), Error> {
    check(src, dst)?;
    for (out, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *out = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
    Ok(())
}

/// Widens little-endian bfloat16 values in `src` into `dst` (exact: a bf16 is the upper half of
/// an f32).
pub fn widen_bf16(src: &[u8], dst: &mut [f32]) -> Result<(), Error> {
    check(src, dst)?;
    for (out, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *out = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_values() {
        // 1.0, -2.0, 65504 (max), smallest subnormal, +inf
        let bits: [u16; 5] = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00];
        let src: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut dst = [0f32; 5];
        widen_f16(&src, &mut dst).unwrap();
        assert_eq!(dst[..3], [1.0, -2.0, 65504.0]);
        assert_eq!(dst[3], 2f32.powi(-24));
        assert!(dst[4].is_infinite());
    }

    #[test]
    fn bf16_values() {
        let bits: [u16; 3] = [0x3f80, 0xc0a0, 0x3e20];
        let src: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut dst = [0f32; 3];
        widen_bf16(&src, &mut dst).unwrap();
        assert_eq!(dst, [1.0, -5.0, 0.15625]);
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut dst = [0f32; 2];
        assert!(matches!(widen_bf16(&[0; 3], &mut dst), Err(Error::LengthMismatch { .. })));
    }
}
