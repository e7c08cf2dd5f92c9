//! Q4_1: 32 four-bit codes with an f16 scale `d = (max - min) / 15` and minimum `m = min`
//! (`quantize_row_q4_1_ref`).

use super::{GgmlBlock, fp16, from_fp16};
use crate::BlockFormat;

/// A Q4_1 block (20 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Codes: low nibble element `j`, high nibble element `j + 16`.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

impl GgmlBlock for BlockQ4_1 {
    const FORMAT: BlockFormat = BlockFormat::Q4_1;
    const BLOCK_LEN: usize = 32;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for (j, q) in qs.iter_mut().enumerate() {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            *q = q0 | (q1 << 4);
        }
        BlockQ4_1 { d: fp16(d), m: fp16(min), qs }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (from_fp16(self.d), from_fp16(self.m));
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0f) as f32 * d + m;
            out[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}
