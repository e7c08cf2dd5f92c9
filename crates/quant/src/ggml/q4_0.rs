//! Q4_0: 32 four-bit codes and an f16 scale `d = m / -8`, `m` the signed absmax
//! (`quantize_row_q4_0_ref`). Code `j` and `j + 16` share byte `j`.

use super::{GgmlBlock, fp16, from_fp16};
use crate::BlockFormat;

/// A Q4_0 block (18 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Codes: low nibble element `j`, high nibble element `j + 16`.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// The signed value of largest magnitude (the first one on ties), as the references scan.
#[inline]
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

impl GgmlBlock for BlockQ4_0 {
    const FORMAT: BlockFormat = BlockFormat::Q4_0;
    const BLOCK_LEN: usize = 32;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for (j, q) in qs.iter_mut().enumerate() {
            // (int8_t)(x*id + 8.5f) truncates; the sum is in [0.5, 16.5].
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            *q = q0 | (q1 << 4);
        }
        BlockQ4_0 { d: fp16(d), qs }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = from_fp16(self.d);
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}
