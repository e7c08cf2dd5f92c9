//! Q5_0: 32 five-bit codes, `d = m / -16` (`quantize_row_q5_0_ref`); the fifth bits live in
//! `qh`, bit `j` for element `j`.

use super::{GgmlBlock, fp16, from_fp16, q4_0::signed_absmax};
use crate::BlockFormat;

/// A Q5_0 block (22 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Fifth bits, little-endian u32.
    pub qh: [u8; 4],
    /// Low four bits: low nibble element `j`, high nibble element `j + 16`.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

impl GgmlBlock for BlockQ5_0 {
    const FORMAT: BlockFormat = BlockFormat::Q5_0;
    const BLOCK_LEN: usize = 32;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for (j, q) in qs.iter_mut().enumerate() {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            *q = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= u32::from((q0 & 0x10) >> 4) << j;
            qh |= u32::from((q1 & 0x10) >> 4) << (j + 16);
        }
        BlockQ5_0 { d: fp16(d), qh: qh.to_le_bytes(), qs }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = from_fp16(self.d);
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            out[j] = (((q & 0x0f) | h0) as i32 - 16) as f32 * d;
            out[j + 16] = (((q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}
