//! The numerics of activation-aware weight quantization (AWQ: Lin et al., 2023; mit-han-lab/llm-awq
//! `awq/quantize/auto_scale.py` and `auto_clip.py`, casper-hansen/AutoAWQ
//! `awq/quantize/quantizer.py`): per-channel activation statistics, the duo-scaling grid, output
//! errors measured through Gram matrices, and the clipping search.
//!
//! A scale `s` (one value per input channel of a group of linear layers) is folded into the
//! layer before them (an RMSNorm weight or a linear's rows, divided by `s`) and into the weights
//! (columns multiplied by `s`): the model computes the same function, but the quantizer sees
//! `W * s`, whose salient columns (large activations) get more resolution. The search tries
//! `s = x_mean^a / (w_mean^(1 - a) + 1e-4)` for `a` on a grid and keeps the one whose
//! fake-quantized weights `Q(W * s) / s` give the least output error.
//!
//! For a single linear layer the output error of replacing `W` by `W'` over inputs `X` is
//! `sum_r d_r G d_rᵀ` with `d = W - W'` and `G = XᵀX`: computed from the Gram matrix, it costs
//! `rows x cols²` instead of `tokens x rows x cols`, so every calibration token counts at no
//! extra cost per grid point. Sums are accumulated in a fixed order, in f64 where they run over
//! tokens, so that results never depend on the thread count.

use std::ops::Range;

use rayon::prelude::*;

use crate::{Error, FakeQuant, dot, linalg::matmul, matmul_xwt};

/// Points of AWQ's scale grid: `a = i / 20` for `i` in `0..20` (llm-awq and AutoAWQ use 20).
pub const AWQ_GRID: usize = 20;
/// The clipping search's steps: thresholds `max|w| * (1 - i / 20)` for `i` in `0..10` (llm-awq's
/// `n_grid = 20`, `max_shrink = 0.5`).
pub const CLIP_STEPS: usize = 10;
const CLIP_GRID: f32 = 20.0;

/// Per-input-channel magnitudes over every token seen, AWQ's activation statistic `x_mean`:
/// the mean absolute value (the reference's) and the root mean square.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    sum: Vec<f64>,
    sq: Vec<f64>,
    rows: u64,
}

impl ChannelStats {
    /// Statistics of `cols` channels, over no tokens yet.
    pub fn new(cols: usize) -> ChannelStats {
        ChannelStats { sum: vec![0.0; cols], sq: vec![0.0; cols], rows: 0 }
    }

    /// Adds `x`, row-major tokens of `cols` channels.
    pub fn add(&mut self, x: &[f32]) {
        let cols = self.sum.len();
        for row in x.chunks_exact(cols) {
            for ((s, q), &v) in self.sum.iter_mut().zip(&mut self.sq).zip(row) {
                let v = v as f64;
                *s += v.abs();
                *q += v * v;
            }
            self.rows += 1;
        }
    }

    /// Tokens seen.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// `mean |x|` per channel (zeros before any token).
    pub fn mean(&self) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        self.sum.iter().map(|s| (s / n) as f32).collect()
    }

    /// `sqrt(mean x²)` per channel (zeros before any token).
    pub fn rms(&self) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        self.sq.iter().map(|q| (q / n).sqrt() as f32).collect()
    }
}

/// The Gram matrix `XᵀX` of a linear layer's inputs, accumulated token chunk by token chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Gram {
    cols: usize,
    acc: Vec<f64>,
    rows: u64,
}

impl Gram {
    /// The Gram matrix of `cols` input channels over no tokens yet.
    pub fn new(cols: usize) -> Gram {
        Gram { cols, acc: vec![0.0; cols * cols], rows: 0 }
    }

    /// Adds the tokens `x` (row-major, `cols` channels each).
    pub fn add(&mut self, x: &[f32]) {
        let (k, t) = (self.cols, x.len() / self.cols.max(1));
        if t == 0 {
            return;
        }
        let mut xt = vec![0f32; k * t];
        for (r, row) in x.chunks_exact(k).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                xt[c * t + r] = v;
            }
        }
        let mut g = vec![0f32; k * k];
        matmul_xwt(&xt, k, t, &xt, k, &mut g).expect("sized above");
        for (a, v) in self.acc.iter_mut().zip(&g) {
            *a += *v as f64;
        }
        self.rows += t as u64;
    }

    /// Tokens seen.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The matrix in f32 (`cols x cols`), for the error kernels.
    pub fn matrix(&self) -> Vec<f32> {
        self.acc.iter().map(|&v| v as f32).collect()
    }
}

/// `diag(1 / s) G diag(1 / s)`: the Gram matrix of the inputs `X / s` that a scaled layer sees.
pub fn scale_gram(g: &[f32], s: &[f32]) -> Vec<f32> {
    let k = s.len();
    let mut out = g.to_vec();
    for (i, row) in out.chunks_exact_mut(k).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = *v / s[i] / s[j];
        }
    }
    out
}

/// AWQ's weight statistic `w_mean` over the input channels of several matrices that share their
/// input (`(weights, group)` pairs, each `rows x cols`): every weight divided by the largest
/// magnitude of its group in its row (plus 1e-6), averaged over all rows (AutoAWQ
/// `_search_best_scale`; a shorter last group is normalized by its own maximum).
pub fn weight_mean(parts: &[(&[f32], usize)], cols: usize) -> Vec<f32> {
    let mut sum = vec![0f64; cols];
    let mut rows = 0u64;
    for &(w, group) in parts {
        for row in w.chunks_exact(cols) {
            for (g, sums) in row.chunks(group.max(1)).zip(sum.chunks_mut(group.max(1))) {
                let max = g.iter().fold(0f32, |m, v| m.max(v.abs())) + 1e-6;
                for (s, v) in sums.iter_mut().zip(g) {
                    *s += (v.abs() / max) as f64;
                }
            }
            rows += 1;
        }
    }
    sum.iter().map(|s| (s / rows.max(1) as f64) as f32).collect()
}

/// The scales of grid point `alpha`: `x_mean^alpha / (w_mean^(1 - alpha) + 1e-4)` (duo scaling)
/// or `x_mean^alpha` without `w_mean`, at least 1e-4, divided by `sqrt(max * min)`; a value that
/// is not finite becomes 1 (AutoAWQ `_search_best_scale`).
pub fn awq_scales(x_mean: &[f32], w_mean: Option<&[f32]>, alpha: f32) -> Vec<f32> {
    let a = alpha as f64;
    let mut s: Vec<f64> = match w_mean {
        Some(w) => x_mean
            .iter()
            .zip(w)
            .map(|(&x, &w)| ((x as f64).powf(a) / ((w as f64).powf(1.0 - a) + 1e-4)).max(1e-4))
            .collect(),
        None => x_mean.iter().map(|&x| (x as f64).powf(a).max(1e-4)).collect(),
    };
    let (lo, hi) = s.iter().fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (hi * lo).sqrt();
    for v in &mut s {
        *v /= norm;
    }
    s.into_iter().map(|v| if v.is_finite() && v > 0.0 { v as f32 } else { 1.0 }).collect()
}

/// `Q(W * s) / s`: the weights a layer computes with once scaled by `s` (per column) and
/// quantized by `fq`, written into `out` (`rows x s.len()`).
pub fn fake_quantize_scaled(
    w: &[f32],
    s: &[f32],
    fq: &FakeQuant,
    out: &mut [f32],
) -> Result<(), Error> {
    let cols = s.len();
    fq.check_cols(cols)?;
    if w.len() != out.len() || !w.len().is_multiple_of(cols) {
        return Err(Error::LengthMismatch {
            what: "scaled weights",
            actual: w.len(),
            expected: out.len(),
        });
    }
    out.par_chunks_mut(cols).zip(w.par_chunks(cols)).for_each(|(o, x)| {
        let scaled = x.iter().zip(s).map(|(v, s)| v * s).collect::<Vec<_>>();
        for r in fq.blocks(cols) {
            fq.apply_block(&scaled[r.clone()], &mut o[r]);
        }
        for (v, s) in o.iter_mut().zip(s) {
            *v /= s;
        }
    });
    Ok(())
}

/// The output error `sum_r (w_r - w'_r) G (w_r - w'_r)ᵀ` of replacing `w` by `w_hat` (both
/// `rows x cols`) for inputs whose Gram matrix is `g` (`cols x cols`).
pub fn gram_error(w: &[f32], w_hat: &[f32], g: &[f32], cols: usize) -> Result<f64, Error> {
    if w.len() != w_hat.len() || g.len() != cols * cols || !w.len().is_multiple_of(cols.max(1)) {
        return Err(Error::LengthMismatch {
            what: "weights for the output error",
            actual: w_hat.len(),
            expected: w.len(),
        });
    }
    let rows = w.len() / cols.max(1);
    let d: Vec<f32> = w.iter().zip(w_hat).map(|(a, b)| a - b).collect();
    let mut dg = vec![0f32; d.len()];
    matmul_xwt(&d, rows, cols, g, cols, &mut dg)?;
    Ok(d.chunks_exact(cols).zip(dg.chunks_exact(cols)).map(|(a, b)| dot(a, b) as f64).sum())
}

/// What a clipping search did to one matrix.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClipOutcome {
    /// The output error of the quantized rows without clipping, `sum_r e_rᵀ G e_r` (`e_r` the
    /// row's quantization error).
    pub error_before: f64,
    /// The same error with the chosen ranges.
    pub error_after: f64,
    /// Blocks whose threshold was lowered.
    pub clipped_blocks: usize,
    /// Blocks searched.
    pub blocks: usize,
    /// Rows whose block scales the refit changed ([`ClipSearch::refit`]).
    pub refitted_rows: usize,
    /// Rows searched.
    pub rows: usize,
}

impl std::ops::AddAssign for ClipOutcome {
    /// The outcome of two searches together (the matrices of a layer).
    fn add_assign(&mut self, o: ClipOutcome) {
        self.error_before += o.error_before;
        self.error_after += o.error_after;
        self.clipped_blocks += o.clipped_blocks;
        self.blocks += o.blocks;
        self.refitted_rows += o.refitted_rows;
        self.rows += o.rows;
    }
}

/// The clipping search's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipSearch {
    /// How a block's candidate ranges are formed.
    pub mode: ClipMode,
    /// After the ranges are chosen, refit each row's block scales by least squares on the
    /// row's output error, the codes held (see [`clip_search`]).
    pub refit: bool,
}

/// How the clipping search chooses a block's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipMode {
    /// llm-awq's: one threshold `t = max|w_b| * (1 - i / 20)`, `i` in `0..10`, the block
    /// clamped to `[-t, t]`.
    Symmetric,
    /// The block's maximum and minimum shrunk separately, `max_b * (1 - i / 20)` and
    /// `min_b * (1 - j / 20)` for `i, j` in `0..10` (100 candidates): formats with a zero point
    /// or a minimum can use a range that is not centred on zero.
    TwoSided,
}

impl ClipMode {
    /// The `(max, min)` shrink factors tried, no clipping first.
    fn candidates(self) -> Vec<(f32, f32)> {
        let f = |i: usize| 1.0 - i as f32 / CLIP_GRID;
        match self {
            ClipMode::Symmetric => (0..CLIP_STEPS).map(|i| (f(i), f(i))).collect(),
            ClipMode::TwoSided => {
                (0..CLIP_STEPS).flat_map(|i| (0..CLIP_STEPS).map(move |j| (f(i), f(j)))).collect()
            }
        }
    }

    /// The clamp range of a block with extremes `min`, `max` for shrink factors `(a, b)`.
    fn range(self, min: f32, max: f32, (a, b): (f32, f32)) -> (f32, f32) {
        match self {
            ClipMode::Symmetric => {
                let t = max.abs().max(min.abs()) * a;
                (-t, t)
            }
            ClipMode::TwoSided => (min * b, max * a),
        }
    }
}

/// AWQ's clipping search, with the row's blocks chosen together. For every row of `w`
/// (`rows x cols`, blocks as `fq` lays them out) and every block, each candidate range of `mode`
/// is clamped and fake-quantized; first each block takes the range whose own error `dᵀ G_bb d`
/// is least (llm-awq `auto_clip_layer`, which measures the same per-block error on sampled
/// tokens), then coordinate descent over the row's blocks (at most `CLIP_SWEEPS` (4) sweeps,
/// fewer when one changes nothing) re-chooses each block's range on the whole row's output error
/// `eᵀ G e`, the other blocks' errors held: blocks whose inputs are correlated can cancel part
/// of each other's error, which the per-block error cannot see. A range is only replaced by one
/// with a strictly lower error (the first on ties, so no clipping unless it helps). `w` is
/// clamped in place. Float formats are left alone.
///
/// With [`ClipSearch::refit`], each row's clamped blocks `v_b` are then multiplied by the
/// factors `f_b` that minimize the row's output error `eᵀ G e` with the codes held, where
/// `e = sum_b f_b Q(v_b) - w`: a linear least-squares problem in the row's `f`, solved in
/// closed form (Cholesky, f64). The target's quantizers are scale-equivariant, `Q(f v) = f Q(v)`
/// for `f > 0` (the block's scale is derived from its extremes, the codes and zero point do
/// not change), so the writer's own round-to-nearest reproduces the refitted scales; a
/// continuous fit of the block scales given the codes, as llama.cpp's `make_qx_quants` fits a
/// block's scale to importance-weighted values (`ggml-quants.c`), here on the whole row's
/// output error with G's cross-block terms. A refitted row is kept only when its error is
/// strictly lower. Because a stored scale rounds (f16) and the K-quants' sub-block scales are
/// themselves quantized, that error is measured on the row quantized again; for the formats
/// with f32 scales it is predicted from the normal equations instead, which saves a product
/// with G per row (see `ClipRows::refit`).
///
/// Rows are searched in chunks whose candidates' error vectors fit in `CLIP_CHUNK_FLOATS`;
/// within a chunk the products with G are matrix products over all its rows (G is read once per
/// chunk, not once per row), and the rows take each step of the descent together. Chunks are
/// sized by memory, never by the thread count, and every reduction runs in a fixed order, so
/// the result does not depend on the thread count.
pub fn clip_search(
    w: &mut [f32],
    cols: usize,
    fq: &FakeQuant,
    g: &[f32],
    settings: ClipSearch,
) -> Result<ClipOutcome, Error> {
    clip_search_with(w, cols, fq, g, settings, fq.is_scale_equivariant())
}

/// [`clip_search`], with the refit's errors predicted (`predict`, only for a scale-equivariant
/// format) or measured.
fn clip_search_with(
    w: &mut [f32],
    cols: usize,
    fq: &FakeQuant,
    g: &[f32],
    settings: ClipSearch,
    predict: bool,
) -> Result<ClipOutcome, Error> {
    let mode = settings.mode;
    fq.check_cols(cols)?;
    if g.len() != cols * cols || !w.len().is_multiple_of(cols) {
        return Err(Error::LengthMismatch {
            what: "Gram matrix for clipping",
            actual: g.len(),
            expected: cols * cols,
        });
    }
    if fq.clip_len().is_none() {
        return Ok(ClipOutcome::default());
    }
    let blocks: Vec<Range<usize>> = fq.blocks(cols).collect();
    // G's diagonal block for each block's columns.
    let g_bb: Vec<Vec<f32>> = blocks
        .iter()
        .map(|r| {
            r.clone().flat_map(|i| &g[i * cols + r.start..i * cols + r.end]).copied().collect()
        })
        .collect();
    let predict = predict && fq.is_scale_equivariant();
    let cands = mode.candidates();
    let search = ClipRows { cols, fq, g, g_bb: &g_bb, blocks: &blocks, mode, cands, predict };
    let (steps, nb) = (search.cands.len(), blocks.len());
    let chunk_rows = (CLIP_CHUNK_FLOATS / (steps * cols).max(1)).max(1);
    let rows_total = w.len() / cols;
    let mut out = ClipOutcome { blocks: rows_total * nb, rows: rows_total, ..Default::default() };
    let (mut d, mut dg, mut own) = (Vec::new(), Vec::new(), Vec::new());
    let (mut e, mut ge, mut orig) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in w.chunks_mut(chunk_rows * cols) {
        let rows = chunk.len() / cols;
        d.resize(rows * steps * cols, 0f32);
        own.resize(rows * nb * steps, 0f64);
        // Every row's error vector for every candidate, block by block (block `b` of the chunk
        // at `rows * steps * start_b`, row-major by row then candidate), and each one's own
        // error `dᵀ G_bb d` (`own[(row * nb + b) * steps + c]`), through one matrix product
        // with G_bb per block.
        for (b, r) in blocks.iter().enumerate() {
            let (n, at) = (r.len(), rows * steps * r.start);
            let db = &mut d[at..at + rows * steps * n];
            db.par_chunks_mut(steps * n)
                .zip(chunk.par_chunks(cols))
                .for_each(|(d, row)| search.candidate_errors(b, &row[r.clone()], d));
            dg.resize(rows * steps * n, 0f32);
            matmul_xwt(db, rows * steps, n, &g_bb[b], n, &mut dg)?;
            let (db, dg) = (&*db, &dg[..]);
            own.par_chunks_mut(nb * steps).enumerate().for_each(|(i, own)| {
                let at = i * steps * n;
                for (c, o) in own[b * steps..(b + 1) * steps].iter_mut().enumerate() {
                    let v = at + c * n..at + (c + 1) * n;
                    *o = dot(&db[v.clone()], &dg[v]) as f64;
                }
            });
        }
        let (d, own) = (&d[..], &own[..]);
        // Each block's own best first (the first on ties), then the rows' error vectors with
        // no clipping and with those choices, and their products with G, as matrix products.
        let mut picks: Vec<Vec<usize>> = own
            .par_chunks(nb * steps)
            .map(|own| {
                own.chunks_exact(steps)
                    .map(|e| (1..steps).fold(0, |best, c| if e[c] < e[best] { c } else { best }))
                    .collect()
            })
            .collect();
        e.resize(2 * rows * cols, 0f32);
        ge.resize(2 * rows * cols, 0f32);
        let (e0, e1) = e.split_at_mut(rows * cols);
        for (i, (e0, e1)) in e0.chunks_exact_mut(cols).zip(e1.chunks_exact_mut(cols)).enumerate() {
            for (b, r) in blocks.iter().enumerate() {
                e0[r.clone()].copy_from_slice(&d[search.at(rows, i, b, 0)]);
                e1[r.clone()].copy_from_slice(&d[search.at(rows, i, b, picks[i][b])]);
            }
        }
        matmul_xwt(&e, 2 * rows, cols, g, cols, &mut ge)?;
        let (e0, e1) = e.split_at_mut(rows * cols);
        let (ge0, ge1) = ge.split_at_mut(rows * cols);
        let before: Vec<f64> = e0
            .par_chunks(cols)
            .zip(ge0.par_chunks(cols))
            .map(|(e, ge)| dot(e, ge) as f64)
            .collect();
        if nb > 1 {
            search.sweeps(rows, d, own, &mut picks, e1, ge1)?;
        }
        if settings.refit {
            orig.clear();
            orig.extend_from_slice(chunk);
        }
        // Clamp each row to its chosen ranges.
        chunk.par_chunks_mut(cols).zip(&picks).for_each(|(row, pick)| {
            let mut buf = Vec::new();
            for (r, &c) in blocks.iter().zip(pick).filter(|&(_, &c)| c != 0) {
                buf.clear();
                buf.extend_from_slice(&row[r.clone()]);
                search.clamp(&buf, extremes(&buf), c, &mut row[r.clone()]);
            }
        });
        let mut after: Vec<f64> = e1
            .par_chunks(cols)
            .zip(ge1.par_chunks(cols))
            .map(|(e, ge)| dot(e, ge) as f64)
            .collect();
        if settings.refit {
            out.refitted_rows += search.refit(chunk, &orig, e1, ge1, &mut after)?;
        }
        let found: Vec<(f64, f64, usize)> = picks
            .iter()
            .zip(&before)
            .zip(&after)
            .map(|((pick, &before), &after)| {
                (before, after, pick.iter().filter(|&&c| c != 0).count())
            })
            .collect();
        for (before, after, clipped) in found {
            out.error_before += before;
            out.error_after += after;
            out.clipped_blocks += clipped;
        }
    }
    Ok(out)
}

/// Error vectors (floats) the clipping search holds at once (64 MiB): rows are searched in chunks
/// of at most this many candidates' errors, at least one row. For K = 8192 and the two-sided
/// search's 100 candidates that is 20 rows.
const CLIP_CHUNK_FLOATS: usize = 1 << 24;

/// The most sweeps of the clipping search's pass over a row's blocks.
pub const CLIP_SWEEPS: usize = 4;

/// Floats (f64) of the refit's normal equations held at once (16 MiB): rows are refitted in
/// chunks of at most this many `nb x nb` matrices' entries, at least one row.
const REFIT_CHUNK_FLOATS: usize = 1 << 21;

/// What the clipping search needs for every row.
struct ClipRows<'a> {
    cols: usize,
    fq: &'a FakeQuant,
    g: &'a [f32],
    g_bb: &'a [Vec<f32>],
    blocks: &'a [Range<usize>],
    mode: ClipMode,
    cands: Vec<(f32, f32)>,
    /// Whether the refit predicts its errors (see [`ClipRows::refit`]).
    predict: bool,
}

impl ClipRows<'_> {
    /// Where candidate `c`'s error vector of block `b` of row `i` sits in a chunk of `rows`.
    fn at(&self, rows: usize, i: usize, b: usize, c: usize) -> Range<usize> {
        let (r, steps) = (&self.blocks[b], self.cands.len());
        let start = rows * steps * r.start + (i * steps + c) * r.len();
        start..start + r.len()
    }

    /// `x` (a block whose extremes are `min`, `max`) clamped to candidate `c`'s range, into
    /// `out`.
    fn clamp(&self, x: &[f32], (min, max): (f32, f32), c: usize, out: &mut [f32]) {
        let (lo, hi) = self.mode.range(min, max, self.cands[c]);
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v.max(lo).min(hi);
        }
    }

    /// The error of block `b` of a row (its values `x`) for every candidate, `Q(clamp(x)) - x`,
    /// into `d` (`candidates x n`).
    fn candidate_errors(&self, b: usize, x: &[f32], d: &mut [f32]) {
        let n = x.len();
        debug_assert_eq!(n, self.blocks[b].len());
        let range = extremes(x);
        let mut buf = vec![0f32; n];
        for (c, d) in d.chunks_exact_mut(n).enumerate() {
            self.clamp(x, range, c, &mut buf);
            self.fq.apply_block(&buf, d);
            for (dd, &v) in d.iter_mut().zip(x) {
                *dd -= v;
            }
        }
    }

    /// Coordinate descent over the blocks of a chunk of `rows` whose candidate errors are `d`
    /// and own errors `own`, from the blocks' own choices `picks`, with each row's error vector
    /// `e` and `G e` (`rows x cols` each) for them. Block by block, every row re-chooses that
    /// block's range on its whole error, the other blocks held (a range is replaced only by a
    /// strictly better one, the first of those on ties); then the rows that changed it update
    /// `e` and `G e` together, one product with G's rows of the block. At most `CLIP_SWEEPS` (4)
    /// sweeps; a row stops when a sweep changes nothing for it (it is at a fixed point), and
    /// the search when every row has.
    fn sweeps(
        &self,
        rows: usize,
        d: &[f32],
        own: &[f64],
        picks: &mut [Vec<usize>],
        e: &mut [f32],
        ge: &mut [f32],
    ) -> Result<(), Error> {
        let (cols, steps, nb) = (self.cols, self.cands.len(), self.blocks.len());
        let mut moving = vec![true; rows];
        let (mut delta, mut update) = (Vec::new(), Vec::new());
        for _ in 0..CLIP_SWEEPS {
            let mut changed = vec![false; rows];
            for (b, r) in self.blocks.iter().enumerate() {
                let n = r.len();
                // Each moving row's better range for block `b`, if any.
                let moves: Vec<Option<usize>> = picks
                    .par_iter()
                    .zip(e.par_chunks(cols).zip(ge.par_chunks(cols)))
                    .enumerate()
                    .map(|(i, (pick, (e, ge)))| {
                        if !moving[i] {
                            return None;
                        }
                        let at = |c: usize| self.at(rows, i, b, c);
                        // What the other blocks contribute to `(G e)_b`.
                        let eb = &e[r.clone()];
                        let cross: Vec<f32> = (0..n)
                            .map(|j| ge[r.start + j] - dot(&self.g_bb[b][j * n..(j + 1) * n], eb))
                            .collect();
                        let own = &own[(i * nb + b) * steps..(i * nb + b + 1) * steps];
                        let score = |c: usize| own[c] + 2.0 * dot(&d[at(c)], &cross) as f64;
                        let mut best = (score(pick[b]), pick[b]);
                        for c in (0..steps).filter(|&c| c != pick[b]) {
                            let s = score(c);
                            if s < best.0 {
                                best = (s, c);
                            }
                        }
                        (best.1 != pick[b]).then_some(best.1)
                    })
                    .collect();
                let movers: Vec<usize> = (0..rows).filter(|&i| moves[i].is_some()).collect();
                if movers.is_empty() {
                    continue;
                }
                // The movers' changes of `e` on the block, then `G e` updated by their product
                // with G's rows of the block (G is symmetric: those rows are its columns).
                delta.resize(movers.len() * n, 0f32);
                for (&i, dl) in movers.iter().zip(delta.chunks_exact_mut(n)) {
                    let c = moves[i].unwrap_or_default();
                    let eb = &mut e[i * cols + r.start..i * cols + r.end];
                    for ((dl, v), &new) in
                        dl.iter_mut().zip(eb.iter_mut()).zip(&d[self.at(rows, i, b, c)])
                    {
                        *dl = new - *v;
                        *v = new;
                    }
                    picks[i][b] = c;
                    changed[i] = true;
                }
                update.resize(movers.len() * cols, 0f32);
                let g_rows = &self.g[r.start * cols..r.end * cols];
                matmul(&delta, movers.len(), n, g_rows, cols, true, &mut update)?;
                for (&i, u) in movers.iter().zip(update.chunks_exact(cols)) {
                    for (a, &v) in ge[i * cols..(i + 1) * cols].iter_mut().zip(u) {
                        *a += v;
                    }
                }
            }
            moving = changed;
            if !moving.contains(&true) {
                break;
            }
        }
        Ok(())
    }

    /// The refit of [`clip_search`] on a chunk of rows: `v` the clamped rows, `w` the original
    /// ones, `e` and `G e` the rows' error vectors (`Q(v) - w`) and their products with G, and
    /// `errors` each row's `eᵀ G e`. A row whose refit lowers its error takes it in `v` and
    /// `errors`. Returns how many did.
    ///
    /// With `predict` (a scale-equivariant format, [`FakeQuant::is_scale_equivariant`]) the
    /// refitted row's error is predicted from the normal equations: with `δ = (f - 1) ∘ Q(v)`
    /// (each block's values times its factor less one), `e'ᵀ G e' = eᵀ G e + 2 δᵀ G e + δᵀ G δ`,
    /// where `δᵀ G e = sum_b (f_b - 1) Q(v_b)ᵀ (G e)_b` and `δᵀ G δ = (f - 1)ᵀ M (f - 1)`, all
    /// known already. It differs from the measured error only by the f32 rounding of the new
    /// scales (a code whose value lies within that rounding of a half step can round the other
    /// way), and it saves quantizing the rows again and one product with G; `e` and `G e` are
    /// then left as they were. Otherwise the refitted rows are quantized again and measured, and
    /// a row that takes its refit takes the new `e` and `G e` too.
    fn refit(
        &self,
        v: &mut [f32],
        w: &[f32],
        e: &mut [f32],
        ge: &mut [f32],
        errors: &mut [f64],
    ) -> Result<usize, Error> {
        let (cols, nb) = (self.cols, self.blocks.len());
        let rows = v.len() / cols;
        let predict = self.predict;
        let mut q = vec![0f32; v.len()];
        self.fq.apply(v, cols, &mut q)?;
        // The normal equations `M f = r` of each row, `M_bc = Q(v_b)ᵀ G_bc Q(v_c)` and
        // `r_b = Q(v_b)ᵀ (G w)_b`, built block by block from `P = Q(v_b)ᵀ G_b,:`, one matrix
        // product over the sub-chunk's rows; for the prediction, `s_b = Q(v_b)ᵀ (G e)_b` too.
        let sub = (REFIT_CHUNK_FLOATS / (nb * nb)).max(1);
        let mut fits: Vec<(Option<Vec<f64>>, Option<f64>)> = Vec::with_capacity(rows);
        let (mut qb, mut p) = (Vec::new(), Vec::new());
        for start in (0..rows).step_by(sub) {
            let n_rows = sub.min(rows - start);
            let mut m = vec![0f64; n_rows * nb * nb];
            let mut r = vec![0f64; n_rows * nb];
            let mut s = vec![0f64; n_rows * nb];
            for (b, range) in self.blocks.iter().enumerate() {
                let n = range.len();
                qb.clear();
                for i in start..start + n_rows {
                    qb.extend_from_slice(&q[i * cols + range.start..i * cols + range.end]);
                }
                p.resize(n_rows * cols, 0f32);
                let g_rows = &self.g[range.start * cols..range.end * cols];
                matmul(&qb, n_rows, n, g_rows, cols, true, &mut p)?;
                m.par_chunks_mut(nb * nb)
                    .zip(r.par_chunks_mut(nb))
                    .zip(s.par_chunks_mut(nb))
                    .zip(p.par_chunks(cols))
                    .enumerate()
                    .for_each(|(i, (((m, r), s), p))| {
                        let row = (start + i) * cols..(start + i + 1) * cols;
                        let (q, w) = (&q[row.clone()], &w[row.clone()]);
                        r[b] = dot(p, w) as f64;
                        s[b] = dot(&q[range.clone()], &ge[row][range.clone()]) as f64;
                        for (c, rc) in self.blocks.iter().enumerate() {
                            m[b * nb + c] = dot(&p[rc.clone()], &q[rc.clone()]) as f64;
                        }
                    });
            }
            fits.par_extend(
                m.par_chunks_mut(nb * nb)
                    .zip(r.par_chunks_mut(nb))
                    .zip(s.par_chunks(nb))
                    .zip(&errors[start..start + n_rows])
                    .map(|(((m, r), s), &before)| {
                        // A block quantized to all zeros has no scale to fit: its factor stays 1.
                        for b in 0..nb {
                            if m[b * nb + b] > 0.0 {
                                continue;
                            }
                            for c in 0..nb {
                                (m[b * nb + c], m[c * nb + b]) = (0.0, 0.0);
                            }
                            (m[b * nb + b], r[b]) = (1.0, 1.0);
                        }
                        let kept = predict.then(|| m.to_vec());
                        if !cholesky_solve(m, r, nb) || !r.iter().all(|&f| f.is_finite() && f > 0.0)
                        {
                            return (None, None);
                        }
                        let after = kept.map(|m| {
                            let mut after = before;
                            for b in 0..nb {
                                let db = r[b] - 1.0;
                                after += 2.0 * db * s[b];
                                for c in 0..nb {
                                    after += db * m[b * nb + c] * (r[c] - 1.0);
                                }
                            }
                            after
                        });
                        (Some(r.to_vec()), after)
                    }),
            );
        }
        let scaled = |row: &mut [f32], f: &[f64]| {
            for (range, &f) in self.blocks.iter().zip(f) {
                for x in &mut row[range.clone()] {
                    *x *= f as f32;
                }
            }
        };
        let mut taken = 0;
        if predict {
            for ((row, (f, new)), error) in v.chunks_exact_mut(cols).zip(&fits).zip(errors) {
                if let (Some(f), &Some(new)) = (f, new)
                    && new < *error
                {
                    scaled(row, f);
                    *error = new;
                    taken += 1;
                }
            }
            return Ok(taken);
        }
        // The refitted rows quantized again, and their errors.
        let mut cand = v.to_vec();
        for (row, (f, _)) in cand.chunks_exact_mut(cols).zip(&fits) {
            if let Some(f) = f {
                scaled(row, f);
            }
        }
        self.fq.apply(&cand, cols, &mut q)?;
        for (a, &b) in q.iter_mut().zip(w) {
            *a -= b;
        }
        let mut gq = vec![0f32; q.len()];
        matmul_xwt(&q, rows, cols, self.g, cols, &mut gq)?;
        for (i, error) in errors.iter_mut().enumerate() {
            let row = i * cols..(i + 1) * cols;
            let new = dot(&q[row.clone()], &gq[row.clone()]) as f64;
            if new < *error {
                v[row.clone()].copy_from_slice(&cand[row.clone()]);
                e[row.clone()].copy_from_slice(&q[row.clone()]);
                ge[row.clone()].copy_from_slice(&gq[row]);
                *error = new;
                taken += 1;
            }
        }
        Ok(taken)
    }
}

/// Solves `m x = r` in place (`r` becomes `x`) for a symmetric positive definite `m` (`n x n`,
/// row-major; overwritten by its Cholesky factor). False when `m` is not positive definite.
fn cholesky_solve(m: &mut [f64], r: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let d = m[j * n + j] - (0..j).map(|k| m[j * n + k] * m[j * n + k]).sum::<f64>();
        if d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return false;
        }
        let d = d.sqrt();
        m[j * n + j] = d;
        for i in j + 1..n {
            let s = m[i * n + j] - (0..j).map(|k| m[i * n + k] * m[j * n + k]).sum::<f64>();
            m[i * n + j] = s / d;
        }
    }
    // L y = r, then Lᵀ x = y.
    for i in 0..n {
        r[i] = (r[i] - (0..i).map(|k| m[i * n + k] * r[k]).sum::<f64>()) / m[i * n + i];
    }
    for i in (0..n).rev() {
        r[i] = (r[i] - (i + 1..n).map(|k| m[k * n + i] * r[k]).sum::<f64>()) / m[i * n + i];
    }
    true
}

/// The least and greatest values of `x`.
fn extremes(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockFormat, NBitsScheme, ScaleType};

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn channel_statistics_are_the_mean_magnitude_and_the_rms() {
        let mut s = ChannelStats::new(2);
        assert_eq!((s.mean(), s.rms(), s.rows()), (vec![0.0; 2], vec![0.0; 2], 0));
        s.add(&[3.0, -1.0, -4.0, 1.0]);
        s.add(&[0.0, -1.0]);
        assert_eq!(s.rows(), 3);
        assert_eq!(s.mean(), vec![7.0 / 3.0, 1.0]);
        // sqrt((9 + 16 + 0) / 3) and sqrt(3 / 3).
        assert_eq!(s.rms(), vec![(25.0f64 / 3.0).sqrt() as f32, 1.0]);
    }

    #[test]
    fn scales_follow_the_reference_formula() {
        let x = [0.5f32, 2.0, 8.0];
        let w = [0.25f32, 0.5, 1.0];
        // alpha 0 without w_mean: all ones.
        assert_eq!(awq_scales(&x, None, 0.0), vec![1.0, 1.0, 1.0]);
        // x only, alpha 0.5: sqrt(x) = [0.707, 1.414, 2.828], normalized by sqrt(max * min) = 1.414.
        let s = awq_scales(&x, None, 0.5);
        for (a, b) in s.iter().zip([0.5f32, 1.0, 2.0]) {
            assert!((a - b).abs() < 1e-6, "{s:?}");
        }
        // Duo: x^a / (w^(1-a) + 1e-4), then normalized; the geometric middle is 1.
        let s = awq_scales(&x, Some(&w), 0.3);
        let raw: Vec<f64> = x
            .iter()
            .zip(&w)
            .map(|(&x, &w)| (x as f64).powf(0.3) / ((w as f64).powf(0.7) + 1e-4))
            .collect();
        let norm = (raw[0] * raw[2]).sqrt();
        for (a, r) in s.iter().zip(&raw) {
            assert!((*a as f64 - r / norm).abs() < 1e-6);
        }
        // A dead channel cannot produce a zero, infinite or NaN scale.
        let s = awq_scales(&[0.0, 1.0], Some(&[0.0, 1.0]), 0.9);
        assert!(s.iter().all(|v| v.is_finite() && *v > 0.0), "{s:?}");
    }

    #[test]
    fn weight_mean_normalizes_per_group_and_row() {
        // One row, groups of 2: [1, -2 | 4, 0] -> [0.5, 1 | 1, 0] (within 1e-6).
        let w = [1.0f32, -2.0, 4.0, 0.0];
        let m = weight_mean(&[(&w, 2)], 4);
        for (a, b) in m.iter().zip([0.5, 1.0, 1.0, 0.0]) {
            assert!((a - b).abs() < 1e-5, "{m:?}");
        }
        // Two matrices average over all their rows; a short last group uses its own maximum.
        let w2 = [2.0f32, 2.0, 2.0, 1.0];
        let m = weight_mean(&[(&w, 3), (&w2, 3)], 4);
        assert!((m[3] - 0.5).abs() < 1e-5 && (m[0] - 0.625).abs() < 1e-5, "{m:?}");
    }

    #[test]
    fn gram_error_equals_the_output_error() {
        let (t, rows, cols) = (50, 6, 40);
        let x = noise(t * cols, 1);
        let w = noise(rows * cols, 2);
        let w_hat: Vec<f32> = w.iter().map(|v| v + 0.01 * v.signum()).collect();
        let mut g = Gram::new(cols);
        g.add(&x[..20 * cols]);
        g.add(&x[20 * cols..]);
        assert_eq!(g.rows(), 50);
        let got = gram_error(&w, &w_hat, &g.matrix(), cols).unwrap();
        let mut y = vec![0f32; t * rows];
        let mut y_hat = vec![0f32; t * rows];
        matmul_xwt(&x, t, cols, &w, rows, &mut y).unwrap();
        matmul_xwt(&x, t, cols, &w_hat, rows, &mut y_hat).unwrap();
        let want: f64 = y.iter().zip(&y_hat).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        assert!((got / want - 1.0).abs() < 1e-4, "{got} vs {want}");
        // Scaling the Gram matrix is the Gram matrix of the scaled inputs.
        let s: Vec<f32> = (0..cols).map(|i| 0.5 + i as f32 * 0.05).collect();
        let xs: Vec<f32> =
            x.chunks(cols).flat_map(|r| r.iter().zip(&s).map(|(v, s)| v / s)).collect();
        let mut gs = Gram::new(cols);
        gs.add(&xs);
        for (a, b) in scale_gram(&g.matrix(), &s).iter().zip(gs.matrix()) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0));
        }
    }

    #[test]
    fn scaled_fake_quantization_with_unit_scales_is_plain_fake_quantization() {
        let (rows, cols) = (4, 96);
        let w = noise(rows * cols, 3);
        let fq = FakeQuant::NBits(NBitsScheme::new(4, 32, false, ScaleType::F32).unwrap());
        let mut a = vec![0f32; w.len()];
        let mut b = vec![0f32; w.len()];
        fake_quantize_scaled(&w, &vec![1.0; cols], &fq, &mut a).unwrap();
        fq.apply(&w, cols, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn clipping_never_increases_the_error_and_helps_on_outliers() {
        let (t, rows, cols) = (64, 8, 64);
        let x = noise(t * cols, 4);
        let mut w = noise(rows * cols, 5);
        // One outlier per row: clipping it trades a small error there for resolution elsewhere.
        for r in 0..rows {
            w[r * cols + r] = 3.0;
        }
        let mut g = Gram::new(cols);
        g.add(&x);
        let g = g.matrix();
        for (fq, mode) in [
            (
                FakeQuant::NBits(NBitsScheme::new(4, 32, true, ScaleType::F32).unwrap()),
                ClipMode::Symmetric,
            ),
            (
                FakeQuant::NBits(NBitsScheme::new(4, 16, false, ScaleType::F16).unwrap()),
                ClipMode::Symmetric,
            ),
            (
                FakeQuant::NBits(NBitsScheme::new(4, 16, false, ScaleType::F32).unwrap()),
                ClipMode::TwoSided,
            ),
            (FakeQuant::Ggml(BlockFormat::Q4_0), ClipMode::Symmetric),
            (FakeQuant::Ggml(BlockFormat::Q4_1), ClipMode::TwoSided),
        ] {
            let orig = w.clone();
            let mut clipped = w.clone();
            let out = clip_search(&mut clipped, cols, &fq, &g, ClipSearch { mode, refit: false })
                .unwrap();
            assert!(out.error_after <= out.error_before, "{fq:?}: {out:?}");
            assert!(out.clipped_blocks > 0, "{fq:?}: {out:?}");
            // The reported error is the error of the clamped weights, quantized.
            let mut q = vec![0f32; w.len()];
            fq.apply(&clipped, cols, &mut q).unwrap();
            let mut q0 = vec![0f32; w.len()];
            fq.apply(&orig, cols, &mut q0).unwrap();
            let full = gram_error(&orig, &q, &g, cols).unwrap();
            let full0 = gram_error(&orig, &q0, &g, cols).unwrap();
            assert!(full < full0, "{fq:?}: {full} vs {full0}");
            // The reported errors are the rows' whole output errors.
            for (got, want) in [(out.error_before, full0), (out.error_after, full)] {
                assert!((got - want).abs() <= 1e-4 * want, "{fq:?}: {got} vs {want}");
            }
        }
        // Float formats have nothing to clip.
        let two_sided = ClipSearch { mode: ClipMode::TwoSided, refit: true };
        let mut f = w.clone();
        let out =
            clip_search(&mut f, cols, &FakeQuant::Ggml(BlockFormat::F16), &g, two_sided).unwrap();
        assert_eq!((out.blocks, f), (0, w));
    }

    #[test]
    fn blocks_chosen_together_cancel_errors_the_per_block_search_cannot_see() {
        // Inputs whose channels share a common component, so that the blocks' errors add up
        // through the Gram matrix's off-diagonal blocks.
        let (t, rows, cols, group) = (256, 16, 96, 32);
        let z = noise(t, 6);
        let eps = noise(t * cols, 7);
        let x: Vec<f32> = (0..t * cols).map(|i| z[i / cols] + 0.3 * eps[i] + 0.2).collect();
        let mut w = noise(rows * cols, 8);
        for r in 0..rows {
            w[r * cols + (r * 7) % cols] = 2.5;
        }
        let mut gram = Gram::new(cols);
        gram.add(&x);
        let g = gram.matrix();
        for (fq, mode) in [
            (
                FakeQuant::NBits(NBitsScheme::new(4, group, false, ScaleType::F32).unwrap()),
                ClipMode::TwoSided,
            ),
            (FakeQuant::Ggml(BlockFormat::Q4_0), ClipMode::Symmetric),
        ] {
            let group = fq.blocks(cols).next().unwrap().len();
            // Each block searched on its own: a matrix of that block's columns, and G_bb.
            let mut alone = w.clone();
            for r in fq.blocks(cols) {
                let n = r.len();
                let mut part: Vec<f32> =
                    w.chunks_exact(cols).flat_map(|row| row[r.clone()].to_vec()).collect();
                let g_bb: Vec<f32> = r
                    .clone()
                    .flat_map(|i| g[i * cols + r.start..i * cols + r.end].to_vec())
                    .collect();
                clip_search(&mut part, n, &fq, &g_bb, ClipSearch { mode, refit: false }).unwrap();
                for (row, p) in alone.chunks_exact_mut(cols).zip(part.chunks_exact(n)) {
                    row[r.clone()].copy_from_slice(p);
                }
            }
            let mut together = w.clone();
            let out = clip_search(&mut together, cols, &fq, &g, ClipSearch { mode, refit: false })
                .unwrap();
            let error = |clipped: &[f32]| {
                let mut q = vec![0f32; w.len()];
                fq.apply(clipped, cols, &mut q).unwrap();
                gram_error(&w, &q, &g, cols).unwrap()
            };
            let (e_alone, e_together) = (error(&alone), error(&together));
            assert!(
                e_together < 0.9 * e_alone,
                "{fq:?} (group {group}): {e_together} vs {e_alone}"
            );
            assert!((out.error_after - e_together).abs() <= 1e-4 * e_together, "{out:?}");
        }
    }

    /// The Gram matrix of 512 tokens of `cols` inputs that share a common component, so that a
    /// row's blocks interact through G (noise seeds `seed` and `seed + 1`).
    fn correlated_gram(cols: usize, seed: u64) -> Vec<f32> {
        let t = 512;
        let (z, eps) = (noise(t, seed), noise(t * cols, seed + 1));
        let x: Vec<f32> = (0..t * cols).map(|i| z[i / cols] + 0.4 * eps[i] + 0.1).collect();
        let mut gram = Gram::new(cols);
        gram.add(&x);
        gram.matrix()
    }

    #[test]
    fn the_refits_predicted_errors_match_the_measured_ones() {
        // The f32-scale formats predict a refitted row's error from the normal equations: the
        // same rows refitted and the same error as quantizing them again and measuring.
        let (rows, cols) = (40, 576);
        let g = correlated_gram(cols, 21);
        let w = noise(rows * cols, 23);
        for (symmetric, mode) in [(false, ClipMode::TwoSided), (true, ClipMode::Symmetric)] {
            for block in [32, 128] {
                let s = NBitsScheme::new(4, block, symmetric, ScaleType::F32).unwrap();
                let fq = FakeQuant::NBits(s);
                assert!(fq.is_scale_equivariant());
                let settings = ClipSearch { mode, refit: true };
                let (mut predicted, mut measured) = (w.clone(), w.clone());
                let a = clip_search_with(&mut predicted, cols, &fq, &g, settings, true).unwrap();
                let b = clip_search_with(&mut measured, cols, &fq, &g, settings, false).unwrap();
                assert!(a.refitted_rows > rows / 2, "{fq:?}: {a:?}");
                assert_eq!(predicted, measured, "{fq:?}");
                assert_eq!(a.refitted_rows, b.refitted_rows, "{fq:?}");
                let rel = (a.error_after - b.error_after).abs() / b.error_after;
                assert!(rel <= 1e-5, "{fq:?}: {a:?} vs {b:?}");
                assert_eq!((a.error_before, a.clipped_blocks), (b.error_before, b.clipped_blocks));
            }
        }
        let f16 = NBitsScheme::new(4, 32, false, ScaleType::F16).unwrap();
        assert!(!FakeQuant::NBits(f16).is_scale_equivariant());
        for f in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q4K] {
            assert!(!FakeQuant::Ggml(f).is_scale_equivariant());
        }
    }

    #[test]
    fn the_refit_scales_whole_blocks_and_lowers_the_error() {
        let (rows, cols) = (12, 512);
        let g = correlated_gram(cols, 9);
        let w = noise(rows * cols, 11);
        for (fq, mode) in [
            (
                FakeQuant::NBits(NBitsScheme::new(4, 64, false, ScaleType::F32).unwrap()),
                ClipMode::TwoSided,
            ),
            (
                FakeQuant::NBits(NBitsScheme::new(4, 32, true, ScaleType::F16).unwrap()),
                ClipMode::Symmetric,
            ),
            (FakeQuant::Ggml(BlockFormat::Q4_0), ClipMode::Symmetric),
            (FakeQuant::Ggml(BlockFormat::Q4_1), ClipMode::TwoSided),
            (FakeQuant::Ggml(BlockFormat::Q4K), ClipMode::TwoSided),
        ] {
            let (mut plain, mut refit) = (w.clone(), w.clone());
            let a =
                clip_search(&mut plain, cols, &fq, &g, ClipSearch { mode, refit: false }).unwrap();
            let b =
                clip_search(&mut refit, cols, &fq, &g, ClipSearch { mode, refit: true }).unwrap();
            assert_eq!((a.refitted_rows, a.rows, b.rows), (0, rows, rows), "{fq:?}");
            assert!(b.refitted_rows > 0, "{fq:?}: {b:?}");
            assert!(b.error_after < 0.99 * a.error_after, "{fq:?}: {b:?} vs {a:?}");
            assert_eq!((a.error_before, a.clipped_blocks), (b.error_before, b.clipped_blocks));
            // The reported error is that of the refitted weights as the format rounds them.
            let mut q = vec![0f32; w.len()];
            fq.apply(&refit, cols, &mut q).unwrap();
            let full = gram_error(&w, &q, &g, cols).unwrap();
            assert!((b.error_after - full).abs() <= 1e-4 * full, "{fq:?}: {b:?} vs {full}");
            // Each block of a refitted row is the clamped block times one positive factor.
            for (p, r) in plain.chunks_exact(cols).zip(refit.chunks_exact(cols)) {
                for range in fq.blocks(cols) {
                    let (p, r) = (&p[range.clone()], &r[range]);
                    let i = (0..p.len()).max_by(|&i, &j| p[i].abs().total_cmp(&p[j].abs()));
                    let f = r[i.unwrap()] / p[i.unwrap()];
                    assert!(f > 0.0, "{fq:?}: factor {f}");
                    for (&p, &r) in p.iter().zip(r) {
                        assert!((p * f - r).abs() <= 1e-6 * p.abs().max(1.0), "{fq:?}");
                    }
                }
            }
        }
    }
}
