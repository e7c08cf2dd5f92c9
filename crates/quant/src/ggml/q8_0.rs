//! Q8_0: 32 signed bytes and an f16 scale `d = amax / 127` (`quantize_row_q8_0_ref`).

use super::{GgmlBlock, fp16, from_fp16};
use crate::BlockFormat;

/// A Q8_0 block (34 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

impl GgmlBlock for BlockQ8_0 {
    const FORMAT: BlockFormat = BlockFormat::Q8_0;
    const BLOCK_LEN: usize = 32;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, v) in qs.iter_mut().zip(x) {
            // roundf: halves away from zero.
            *q = (v * id).round() as i8;
        }
        BlockQ8_0 { d: fp16(d), qs }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = from_fp16(self.d);
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}
