//! Q6_K: super-blocks of 256 = 16 x 16 with 8-bit sub-block scales
//! (`quantize_row_q6_K_ref`, `make_qx_quants(16, 32, .., rmse_type 1)`).

use super::{GgmlBlock, fp16, from_fp16, nearest_int};
use crate::BlockFormat;

/// A Q6_K block (210 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    /// Low four bits of the codes.
    pub ql: [u8; 128],
    /// High two bits of the codes.
    pub qh: [u8; 64],
    /// Sixteen signed 8-bit sub-block scales.
    pub scales: [i8; 16],
    /// Super-block scale, f16.
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// `GROUP_MAX_EPS` of the reference: blocks below it are all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// `make_qx_quants` with `rmse_type = 1` (weights `x^2`) and no importance weights: a symmetric
/// fit of `x` to `-nmax..nmax-1`, searched over 19 scales; codes are written offset by `nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = -nmax_f / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = (q + nmax) as i8;
        let w = v * v;
        let qf = q as f32;
        sumlx += w * v * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

impl GgmlBlock for BlockQ6K {
    const FORMAT: BlockFormat = BlockFormat::Q6K;
    const BLOCK_LEN: usize = 256;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 256);
        let mut l = [0i8; 256];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let scale =
                make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return bytemuck::Zeroable::zeroed();
        }

        let iscale = -128.0 / max_scale;
        let d = fp16(1.0 / iscale);
        let mut sc = [0i8; 16];
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            let dj = from_fp16(d) * sc[j] as f32;
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dj).clamp(-32, 31) + 32) as i8;
            }
        }

        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            let (j, ql, qh) = (
                128 * half,
                &mut ql[64 * half..64 * half + 64],
                &mut qh[32 * half..32 * half + 32],
            );
            for k in 0..32 {
                let q = |o: usize| l[j + k + o] as u8;
                ql[k] = (q(0) & 0x0f) | ((q(64) & 0x0f) << 4);
                ql[k + 32] = (q(32) & 0x0f) | ((q(96) & 0x0f) << 4);
                qh[k] =
                    (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
            }
        }
        BlockQ6K { ql, qh, scales: sc, d }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = from_fp16(self.d);
        for half in 0..2 {
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            let sc = &self.scales[8 * half..8 * half + 8];
            let y = &mut out[128 * half..128 * half + 128];
            for k in 0..32 {
                let is = k / 16;
                let q1 = ((ql[k] & 0x0f) | ((qh[k] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[k + 32] & 0x0f) | (((qh[k] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[k] >> 4) | (((qh[k] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[k + 32] >> 4) | (((qh[k] >> 6) & 3) << 4)) as i8 - 32;
                y[k] = d * sc[is] as f32 * q1 as f32;
                y[k + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[k + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[k + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}
