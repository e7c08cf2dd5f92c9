//! One decoder layer's forward pass, following transformers' eager implementation
//! (`modeling_llama.py`, `modeling_phi3.py`, `modeling_qwen2.py`): RMSNorm, q/k/v projection
//! (with bias for Qwen2), rotary embedding, grouped-query attention with a causal (and optionally
//! sliding-window) mask, output projection, residual, RMSNorm, SiLU-gated MLP, residual.

use phiquant_quant::{dot, exp_inplace, matmul_xwt};
use rayon::prelude::*;

use super::{LayerWeights, rope::RopeCache};
use crate::{DecoderSpec, Linear};

/// The input of one or more projections that share it, as a hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct LinearInput<'a> {
    /// Layer index.
    pub layer: usize,
    /// The projections that read this input (q, k and v share theirs; so do gate and up).
    pub projections: &'static [Linear],
    /// Row-major activations, `rows x cols`.
    pub x: &'a [f32],
    /// Tokens.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

/// Receives the input activations of every linear layer as the forward pass reaches it.
pub trait ActivationHook {
    /// Called once per group of projections per layer per forward call.
    fn linear_input(&mut self, input: &LinearInput<'_>);
}

/// Key and value cache of one layer, `[kv_heads, capacity, head_dim]` each.
#[derive(Debug, Clone)]
pub(crate) struct LayerCache {
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
}

impl LayerCache {
    pub(crate) fn new(spec: &DecoderSpec, capacity: usize) -> LayerCache {
        let n = spec.num_kv_heads * capacity * spec.head_dim;
        LayerCache { k: vec![0.0; n], v: vec![0.0; n] }
    }
}

/// Buffers for a forward call of up to `rows` tokens over a cache of `capacity` positions.
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    xn: Vec<f32>,
    qkv: Vec<f32>,
    heads: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    scores: Vec<f32>,
    rows: usize,
}

impl Scratch {
    pub(crate) fn new(spec: &DecoderSpec, rows: usize, capacity: usize) -> Scratch {
        let (h, q, kv, i) = (spec.hidden_size, spec.q_dim(), spec.kv_dim(), spec.intermediate_size);
        Scratch {
            xn: vec![0.0; rows * h],
            qkv: vec![0.0; rows * (q + 2 * kv)],
            heads: vec![0.0; rows * q],
            attn: vec![0.0; rows * q],
            proj: vec![0.0; rows * h],
            gate_up: vec![0.0; rows * 2 * i],
            act: vec![0.0; rows * i],
            scores: vec![0.0; spec.num_heads * capacity],
            rows,
        }
    }
}

impl Scratch {
    /// The normalized input of the first `rows` tokens.
    pub(crate) fn xn_mut(&mut self, rows: usize) -> &mut [f32] {
        let h = self.xn.len() / self.rows.max(1);
        &mut self.xn[..rows * h]
    }

    /// A block's output for the first `rows` tokens.
    pub(crate) fn proj(&self, rows: usize) -> &[f32] {
        let h = self.proj.len() / self.rows.max(1);
        &self.proj[..rows * h]
    }
}

/// `out[r] = w * x[r] / sqrt(mean(x[r]^2) + eps)` for each row, as transformers' RMSNorm
/// (`x` and `out` hold whole rows of `w.len()` values).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = g * (v * inv);
        }
    }
}

fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(b.len()) {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    }
}

fn matmul(x: &[f32], rows: usize, k: usize, w: &[f32], out: &mut [f32]) {
    let n = w.len() / k;
    matmul_xwt(x, rows, k, w, n, &mut out[..rows * n])
        .expect("engine buffers are sized by the spec");
}

/// Everything a layer needs besides its weights.
pub(crate) struct LayerContext<'a> {
    pub(crate) spec: &'a DecoderSpec,
    pub(crate) rope: &'a RopeCache,
    pub(crate) layer: usize,
    /// Position of the first token of this call.
    pub(crate) start: usize,
    /// Position of the last token of the whole forward call (selects LongRoPE's factors).
    pub(crate) last_pos: usize,
    /// Positions the KV cache holds.
    pub(crate) capacity: usize,
}

fn call_hook<'h>(
    hook: &mut Option<&mut (dyn ActivationHook + 'h)>,
    layer: usize,
    projections: &'static [Linear],
    x: &[f32],
    rows: usize,
    cols: usize,
) {
    if let Some(hk) = hook.as_deref_mut() {
        hk.linear_input(&LinearInput { layer, projections, x: &x[..rows * cols], rows, cols });
    }
}

/// Runs one layer over `rows` tokens of the residual stream `x` (`rows x hidden`), appending
/// their keys and values to `cache` at positions `start..start + rows`.
pub(crate) fn layer_forward<'h>(
    cx: &LayerContext<'_>,
    w: &LayerWeights,
    x: &mut [f32],
    rows: usize,
    cache: &mut LayerCache,
    s: &mut Scratch,
    mut hook: Option<&mut (dyn ActivationHook + 'h)>,
) {
    let h = cx.spec.hidden_size;
    let eps = cx.spec.rms_norm_eps as f32;
    rms_norm(&x[..rows * h], &w.attn_norm, eps, &mut s.xn[..rows * h]);
    attention_block(cx, w, rows, cache, s, &mut hook);
    for (a, b) in x[..rows * h].iter_mut().zip(s.proj.iter()) {
        *a += b;
    }
    rms_norm(&x[..rows * h], &w.ffn_norm, eps, &mut s.xn[..rows * h]);
    mlp_block(cx.spec, cx.layer, w, rows, s, &mut hook);
    for (a, b) in x[..rows * h].iter_mut().zip(s.proj.iter()) {
        *a += b;
    }
}

/// The attention block over `rows` tokens of normalized input in `s.xn`: q/k/v projection,
/// rotary embedding, attention against the cache (which receives the new keys and values),
/// output projection into `s.proj` (`rows x hidden`, before the residual).
pub(crate) fn attention_block<'h>(
    cx: &LayerContext<'_>,
    w: &LayerWeights,
    rows: usize,
    cache: &mut LayerCache,
    s: &mut Scratch,
    hook: &mut Option<&mut (dyn ActivationHook + 'h)>,
) {
    let (spec, capacity) = (cx.spec, cx.capacity);
    let (h, d) = (spec.hidden_size, spec.head_dim);
    let (q_dim, kv_dim) = (spec.q_dim(), spec.kv_dim());
    let xn = &s.xn[..rows * h];
    call_hook(hook, cx.layer, &[Linear::Q, Linear::K, Linear::V], xn, rows, h);
    let width = q_dim + 2 * kv_dim;
    let qkv = &mut s.qkv[..rows * width];
    matmul(xn, rows, h, &w.qkv, qkv);
    add_bias(qkv, w.qkv_bias.as_deref());
    for (t, row) in qkv.chunks_exact_mut(width).enumerate() {
        let pos = cx.start + t;
        let (q, rest) = row.split_at_mut(q_dim);
        let (k, v) = rest.split_at_mut(kv_dim);
        cx.rope.apply(q, d, pos, cx.last_pos);
        cx.rope.apply(k, d, pos, cx.last_pos);
        for g in 0..spec.num_kv_heads {
            let at = (g * capacity + pos) * d;
            cache.k[at..at + d].copy_from_slice(&k[g * d..(g + 1) * d]);
            cache.v[at..at + d].copy_from_slice(&v[g * d..(g + 1) * d]);
        }
    }
    attention(cx, qkv, rows, cache, capacity, &mut s.heads[..rows * q_dim], &mut s.scores);
    // Heads back to token-major order: [heads, rows, d] -> [rows, heads * d].
    let attn = &mut s.attn[..rows * q_dim];
    for hd in 0..spec.num_heads {
        for t in 0..rows {
            let src = (hd * rows + t) * d;
            attn[t * q_dim + hd * d..t * q_dim + (hd + 1) * d]
                .copy_from_slice(&s.heads[src..src + d]);
        }
    }
    call_hook(hook, cx.layer, &[Linear::O], attn, rows, q_dim);
    let proj = &mut s.proj[..rows * h];
    matmul(attn, rows, q_dim, &w.o, proj);
    add_bias(proj, w.o_bias.as_deref());
}

/// The MLP block over `rows` tokens of normalized input in `s.xn`: gate and up projections,
/// SiLU gating, down projection into `s.proj` (`rows x hidden`, before the residual).
pub(crate) fn mlp_block<'h>(
    spec: &DecoderSpec,
    layer: usize,
    w: &LayerWeights,
    rows: usize,
    s: &mut Scratch,
    hook: &mut Option<&mut (dyn ActivationHook + 'h)>,
) {
    let (h, inter) = (spec.hidden_size, spec.intermediate_size);
    let xn = &s.xn[..rows * h];
    call_hook(hook, layer, &[Linear::Gate, Linear::Up], xn, rows, h);
    let gu = &mut s.gate_up[..rows * 2 * inter];
    matmul(xn, rows, h, &w.gate_up, gu);
    add_bias(gu, w.gate_up_bias.as_deref());
    let act = &mut s.act[..rows * inter];
    // silu(gate) * up, with the exponentials computed a row at a time by the vector kernel.
    act.par_chunks_mut(inter).zip(gu.par_chunks(2 * inter)).for_each(|(a, g)| {
        let (gate, up) = g.split_at(inter);
        for (o, &gv) in a.iter_mut().zip(gate) {
            *o = -gv;
        }
        exp_inplace(a);
        for ((o, &gv), &uv) in a.iter_mut().zip(gate).zip(up) {
            *o = gv / (1.0 + *o) * uv;
        }
    });
    call_hook(hook, layer, &[Linear::Down], act, rows, inter);
    let proj = &mut s.proj[..rows * h];
    matmul(act, rows, inter, &w.down, proj);
    add_bias(proj, w.down_bias.as_deref());
}

/// Grouped-query attention of the `rows` new queries against the cache (which already holds
/// their own keys), written head-major into `out` (`[heads, rows, d]`).
fn attention(
    cx: &LayerContext<'_>,
    qkv: &[f32],
    rows: usize,
    cache: &LayerCache,
    capacity: usize,
    out: &mut [f32],
    scores: &mut [f32],
) {
    let spec = cx.spec;
    let d = spec.head_dim;
    let group = spec.num_heads / spec.num_kv_heads;
    let width = spec.q_dim() + 2 * spec.kv_dim();
    let scale = 1.0 / (d as f32).sqrt();
    let window = spec.sliding_window.filter(|w| cx.layer >= w.first_layer).map(|w| w.size);
    out.par_chunks_mut(rows * d).zip(scores.par_chunks_mut(capacity)).enumerate().for_each(
        |(hd, (o, sc))| {
            let g = hd / group;
            let keys = &cache.k[g * capacity * d..(g + 1) * capacity * d];
            let values = &cache.v[g * capacity * d..(g + 1) * capacity * d];
            for t in 0..rows {
                let pos = cx.start + t;
                let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let q = &qkv[t * width + hd * d..t * width + (hd + 1) * d];
                let row = &mut sc[lo..=pos];
                let mut max = f32::NEG_INFINITY;
                for (j, s) in row.iter_mut().enumerate() {
                    let k = &keys[(lo + j) * d..(lo + j + 1) * d];
                    *s = dot(q, k) * scale;
                    max = max.max(*s);
                }
                for s in row.iter_mut() {
                    *s -= max;
                }
                exp_inplace(row);
                let sum: f32 = row.iter().sum();
                let out_t = &mut o[t * d..(t + 1) * d];
                out_t.fill(0.0);
                for (j, s) in row.iter().enumerate() {
                    let p = s / sum;
                    let v = &values[(lo + j) * d..(lo + j + 1) * d];
                    for (a, b) in out_t.iter_mut().zip(v) {
                        *a += p * b;
                    }
                }
            }
        },
    );
}
