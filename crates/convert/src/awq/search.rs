//! AWQ on one decoder layer (`../shared/DESIGN.md` §6): statistics of every linear layer's input
//! over the calibration windows, a grid search of scales for each scale group, the scales folded
//! into the weights, a clipping search, and the layer's output for the next layer.

use std::ops::Range;

use phiquant_quant::{
    ChannelStats, ClipMode, ClipOutcome, ClipSearch, FakeQuant, Gram, awq_scales, clip_search,
    fake_quantize_scaled, gram_error, scale_gram, weight_mean,
};
use phiquant_runtime::{
    ActivationHook, DecoderSpec, LayerRunner, LayerWeights, Linear, LinearInput, rms_norm,
};
use rayon::prelude::*;
use serde::Serialize;

use super::{AwqOptions, LinearQuantizers, Propagation, REFINE_STEPS, Statistic};
use crate::Error;

/// A scale group: the layer whose output is divided by the scales, and the linear layers whose
/// input columns are multiplied by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleGroup {
    /// `input_layernorm` -> q, k, v; error measured on the attention block's output.
    Qkv,
    /// v -> o (the v rows of a fused `qkv_proj`): under grouped-query attention each v channel
    /// feeds the same channel of every query head of its group, so one scale per v channel
    /// multiplies all of those o columns. Error measured on o's output.
    VO,
    /// `post_attention_layernorm` -> gate, up; error measured on the MLP's output.
    GateUp,
    /// up -> down (the up half of a fused `gate_up_proj`); error measured on down's output.
    UpDown,
}

impl ScaleGroup {
    /// A short name: `qkv`, `v-o`, `gate-up`, `up-down`.
    pub fn name(self) -> &'static str {
        match self {
            ScaleGroup::Qkv => "qkv",
            ScaleGroup::VO => "v-o",
            ScaleGroup::GateUp => "gate-up",
            ScaleGroup::UpDown => "up-down",
        }
    }
}

/// What the search chose for one scale group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum GroupOutcome {
    /// Searched: the error with unit scales (plain round-to-nearest) and with the chosen ones.
    Searched {
        /// The chosen grid point `a` (`s = x_mean^a / (w_mean^(1-a) + 1e-4)`), or `None` when
        /// unit scales were best.
        alpha: Option<f32>,
        /// Squared error of the group's output with unit scales, per token and output.
        loss_rtn: f64,
        /// The same with the chosen scales.
        loss: f64,
        /// Channels whose scale the refinement ([`AwqOptionsBuilder::refine`]) changed from
        /// the grid point's (0 without it).
        ///
        /// [`AwqOptionsBuilder::refine`]: super::AwqOptionsBuilder::refine
        #[serde(skip_serializing_if = "is_zero")]
        refined: usize,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One scale group's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    /// The group.
    pub group: ScaleGroup,
    /// What was chosen.
    #[serde(flatten)]
    pub outcome: GroupOutcome,
}

/// What AWQ did to one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    /// The layer.
    pub layer: usize,
    /// Layers of the model.
    pub layers: usize,
    /// The scale groups, in order.
    pub groups: Vec<GroupReport>,
    /// The clipping search over every clipped matrix (v, o, gate, up, down; never q or k).
    #[serde(skip)]
    pub clip: ClipOutcome,
    /// Seconds spent on each phase: `statistics` (the full-precision pass), each group's
    /// search (`qkv`, `v-o`, `gate-up`, `up-down`), `clip`, and `propagation` (with
    /// [`Propagation::Quantized`](super::Propagation::Quantized)).
    pub phases: Vec<(&'static str, f64)>,
    /// Seconds spent on the layer.
    pub seconds: f64,
}

impl std::fmt::Display for LayerReport {
    /// `layer 3/30: qkv a=0.45 -38.2%, v-o a=0.10 -12.4%, gate-up a=0.30 -22.0%, up-down
    /// a=0.55 -41.3%, clip 12% of blocks, refit 96% of rows -11.4% (1.2 s)`: the chosen grid
    /// point of each group (`rtn` for unit scales) and how much it lowered the group's error
    /// against plain RTN; with the refinement, `(N refined)` after a group whose scales it
    /// changed; then the share of blocks clipped, of rows whose scales the refit changed, and
    /// the clipped matrices' output error against plain RTN's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |before: f64, after: f64| {
            if before > 0.0 {
                format!("{:+.1}%", (after / before - 1.0) * 100.0)
            } else {
                "-".into()
            }
        };
        write!(f, "layer {}/{}:", self.layer + 1, self.layers)?;
        for (i, g) in self.groups.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let GroupOutcome::Searched { alpha, loss_rtn, loss, refined } = &g.outcome;
            let a = alpha.map_or("rtn".to_string(), |a| format!("a={a:.2}"));
            write!(f, "{sep}{} {a} {}", g.group.name(), pct(*loss_rtn, *loss))?;
            if *refined > 0 {
                write!(f, " ({refined} refined)")?;
            }
        }
        if self.clip.blocks > 0 {
            write!(
                f,
                ", clip {:.0}% of blocks",
                self.clip.clipped_blocks as f64 * 100.0 / self.clip.blocks as f64
            )?;
            if self.clip.refitted_rows > 0 {
                let share = self.clip.refitted_rows as f64 * 100.0 / self.clip.rows as f64;
                write!(f, ", refit {share:.0}% of rows")?;
            }
            write!(f, " {}", pct(self.clip.error_before, self.clip.error_after))?;
        }
        write!(f, " ({:.1} s)", self.seconds)
    }
}

/// The residual stream of every calibration window at the current layer's input.
#[derive(Debug, Clone)]
pub(crate) struct Activations {
    pub(crate) x: Vec<f32>,
    pub(crate) windows: usize,
    pub(crate) len: usize,
}

/// Statistics of one linear input: mean magnitudes, and the Gram matrix when needed.
struct InputStats {
    mean: ChannelStats,
    gram: Option<Gram>,
}

impl InputStats {
    fn new(cols: usize, gram: bool) -> InputStats {
        InputStats { mean: ChannelStats::new(cols), gram: gram.then(|| Gram::new(cols)) }
    }

    fn add(&mut self, x: &[f32]) {
        self.mean.add(x);
        if let Some(g) = &mut self.gram {
            g.add(x);
        }
    }
}

/// The statistics of a layer's four linear inputs, filled by the activation hook.
struct Capture {
    qkv: InputStats,
    o: InputStats,
    gate_up: InputStats,
    down: InputStats,
}

impl ActivationHook for Capture {
    fn linear_input(&mut self, input: &LinearInput<'_>) {
        let stats = match input.projections.first() {
            Some(Linear::Q) => &mut self.qkv,
            Some(Linear::O) => &mut self.o,
            Some(Linear::Gate) => &mut self.gate_up,
            _ => &mut self.down,
        };
        stats.add(input.x);
    }
}

/// `n` indices spread evenly over `0..total`.
fn spread(total: usize, n: usize) -> Vec<usize> {
    let n = n.min(total);
    (0..n).map(|i| i * total / n).collect()
}

/// Rows of the stacked q/k/v matrix, and of the stacked gate/up matrix.
pub(crate) fn rows_of(spec: &DecoderSpec, linear: Linear) -> Range<usize> {
    let (q, kv, i) = (spec.q_dim(), spec.kv_dim(), spec.intermediate_size);
    match linear {
        Linear::Q => 0..q,
        Linear::K => q..q + kv,
        Linear::V => q + kv..q + 2 * kv,
        Linear::Gate => 0..i,
        Linear::Up => i..2 * i,
        Linear::O => 0..spec.hidden_size,
        Linear::Down => 0..spec.hidden_size,
    }
}

/// The v channel (row of v, `0..kv_dim`) that feeds each o input column (`0..q_dim`): query
/// head `h` reads key/value head `h / (num_heads / num_kv_heads)`, channel for channel. Without
/// grouped-query attention, the identity.
pub fn v_channel_of_o_column(spec: &DecoderSpec) -> Vec<usize> {
    let d = spec.head_dim;
    let group = (spec.num_heads / spec.num_kv_heads.max(1)).max(1);
    (0..spec.q_dim()).map(|c| (c / d / group) * d + c % d).collect()
}

/// Per v channel, the mean of `per_column` (one value per o input column) over the columns it
/// feeds.
fn per_v_channel(map: &[usize], kv_dim: usize, per_column: &[f32]) -> Vec<f32> {
    let (mut sum, mut n) = (vec![0f64; kv_dim], vec![0u32; kv_dim]);
    for (&v, &x) in map.iter().zip(per_column) {
        sum[v] += x as f64;
        n[v] += 1;
    }
    sum.iter().zip(&n).map(|(s, &n)| (s / n.max(1) as f64) as f32).collect()
}

/// The layer at work: its spec, quantizers, options and a runner.
pub(crate) struct LayerSearch<'a> {
    pub(crate) spec: &'a DecoderSpec,
    pub(crate) layer: usize,
    pub(crate) quantizers: &'a LinearQuantizers,
    pub(crate) options: &'a AwqOptions,
}

impl LayerSearch<'_> {
    fn fq(&self, linear: Linear) -> &FakeQuant {
        self.quantizers.get(self.layer, linear)
    }

    /// `Q(W * s) / s` for the parts of a stacked matrix (`None` scales: plain fake quantization).
    /// With `clip` (the parts to clip and the Gram matrix of the unscaled inputs), those parts
    /// are clipped after scaling and before quantization, as the clipping search will clip them
    /// if these scales are chosen: scale and clip searched together.
    fn quantized_parts(
        &self,
        w: &[f32],
        cols: usize,
        parts: &[Linear],
        s: Option<&[f32]>,
        clip: Option<(&[Linear], &[f32])>,
    ) -> Result<Vec<f32>, Error> {
        let mut out = vec![0f32; w.len()];
        let clip =
            clip.map(|(which, g)| (which, s.map_or_else(|| g.to_vec(), |s| scale_gram(g, s))));
        for &p in parts {
            let r = rows_of(self.spec, p);
            let (src, dst) =
                (&w[r.start * cols..r.end * cols], &mut out[r.start * cols..r.end * cols]);
            let fq = self.fq(p);
            let res = match (&clip, s) {
                (Some((which, g)), _) if which.contains(&p) => {
                    let mut scaled = src.to_vec();
                    if let Some(s) = s {
                        scale_columns_of(&mut scaled, cols, s);
                    }
                    clip_search(&mut scaled, cols, fq, g, self.clip_settings(fq))
                        .and_then(|_| fq.apply(&scaled, cols, dst))
                        .map(|()| {
                            if let Some(s) = s {
                                for row in dst.chunks_exact_mut(cols) {
                                    divide(row, s);
                                }
                            }
                        })
                }
                (_, Some(s)) => fake_quantize_scaled(src, s, fq, dst),
                (_, None) => fq.apply(src, cols, dst),
            };
            res.map_err(|source| self.quant_err(p, source))?;
        }
        Ok(out)
    }

    /// Two-sided clipping for formats with a zero point when the options ask for it, and the
    /// scale refit as they say.
    fn clip_settings(&self, fq: &FakeQuant) -> ClipSearch {
        let mode = if self.options.two_sided_clip && fq.is_asymmetric() {
            ClipMode::TwoSided
        } else {
            ClipMode::Symmetric
        };
        ClipSearch { mode, refit: self.options.refit_scales }
    }

    fn quant_err(&self, linear: Linear, source: phiquant_quant::Error) -> Error {
        Error::Quantize { tensor: self.spec.weight_location(self.layer, linear).tensor, source }
    }

    /// Runs AWQ on layer `self.layer` with full-precision weights `w` over `acts`: returns the
    /// scaled and clipped float weights and the report, and leaves in `acts` the next layer's
    /// input.
    pub(crate) fn run(
        &self,
        mut w: LayerWeights,
        acts: &mut Activations,
    ) -> Result<(LayerWeights, LayerReport), Error> {
        let started = std::time::Instant::now();
        let spec = self.spec;
        let (h, qd, inter) = (spec.hidden_size, spec.q_dim(), spec.intermediate_size);
        let (windows, len) = (acts.windows, acts.len);
        let eps = spec.rms_norm_eps as f32;
        let opts = self.options;
        let v_of = v_channel_of_o_column(spec);
        let spread_v = |s: &[f32]| -> Vec<f32> { v_of.iter().map(|&v| s[v]).collect() };
        let mut runner = LayerRunner::new(spec, len)?;
        let mut tick = std::time::Instant::now();
        let mut phases = Vec::new();
        let mut mark = |what: &'static str| {
            phases.push((what, tick.elapsed().as_secs_f64()));
            tick = std::time::Instant::now();
        };

        // The windows the attention block's error is measured on, and the tokens the MLP's is.
        let attn_windows = spread(windows, opts.loss_tokens.div_ceil(len).max(1));
        let mlp_tokens = spread(windows * len, opts.loss_tokens.max(1));

        // 1. The full-precision pass: statistics, Gram matrices, and the blocks' outputs on
        //    the loss subsets.
        let mut cap = Capture {
            qkv: InputStats::new(h, opts.clip),
            o: InputStats::new(qd, true),
            gate_up: InputStats::new(h, opts.clip),
            down: InputStats::new(inter, true),
        };
        let (mut attn_in, mut attn_target) = (Vec::new(), Vec::new());
        let (mut mlp_in, mut mlp_target) = (Vec::new(), Vec::new());
        let (mut xn, mut out, mut x2) =
            (vec![0f32; len * h], vec![0f32; len * h], vec![0f32; len * h]);
        let mut next = 0;
        for j in 0..windows {
            let x = &mut acts.x[j * len * h..(j + 1) * len * h];
            rms_norm(x, &w.attn_norm, eps, &mut xn);
            runner.attention(self.layer, &w, &xn, len, &mut out, Some(&mut cap))?;
            if attn_windows.binary_search(&j).is_ok() {
                attn_in.extend_from_slice(&xn);
                attn_target.extend_from_slice(&out);
            }
            for ((a, b), c) in x2.iter_mut().zip(x.iter()).zip(&out) {
                *a = b + c;
            }
            rms_norm(&x2, &w.ffn_norm, eps, &mut xn);
            runner.mlp(self.layer, &w, &xn, len, &mut out, Some(&mut cap))?;
            while next < mlp_tokens.len() && mlp_tokens[next] < (j + 1) * len {
                let t = mlp_tokens[next] - j * len;
                mlp_in.extend_from_slice(&xn[t * h..(t + 1) * h]);
                mlp_target.extend_from_slice(&out[t * h..(t + 1) * h]);
                next += 1;
            }
            if opts.propagation == Propagation::Float {
                for ((a, b), c) in x.iter_mut().zip(&x2).zip(&out) {
                    *a = b + c;
                }
            }
        }

        mark("statistics");
        // 2. The scale searches, all on the full-precision layer (as llm-awq and AutoAWQ).
        let mut groups = Vec::new();
        let qkv_parts = [Linear::Q, Linear::K, Linear::V];
        let gu_parts = [Linear::Gate, Linear::Up];
        let gram = |s: &InputStats| s.gram.as_ref().map(Gram::matrix).unwrap_or_default();
        let (g_qkv, g_o, g_gu, g_down) =
            (gram(&cap.qkv), gram(&cap.o), gram(&cap.gate_up), gram(&cap.down));
        // Scale and clip searched together: each candidate's loss with its clipped weights.
        let on = opts.clip && opts.joint_clip;
        let joint = |g, parts| joint_clip(on, g, parts);

        // input_layernorm -> q, k, v, on the attention block's output.
        let x_mean = x_stat(&cap.qkv.mean, opts.statistic);
        let w_mean = self.w_mean(&w.qkv, h, &qkv_parts);
        let attn_rows = attn_in.len() / h;
        let (s_qkv, outcome) = self.grid(
            &x_mean,
            &w_mean,
            attn_rows * h,
            |s, runner| {
                let cand = LayerWeights {
                    qkv: self.quantized_parts(
                        &w.qkv,
                        h,
                        &qkv_parts,
                        s,
                        joint(&g_qkv, &[Linear::V]),
                    )?,
                    qkv_bias: w.qkv_bias.clone(),
                    o: w.o.clone(),
                    o_bias: w.o_bias.clone(),
                    ..empty_weights()
                };
                let mut out = vec![0f32; len * h];
                let mut sse = 0f64;
                for (xn, target) in
                    attn_in.chunks_exact(len * h).zip(attn_target.chunks_exact(len * h))
                {
                    runner.attention(self.layer, &cand, xn, len, &mut out, None)?;
                    sse += squared_error(&out, target);
                }
                Ok(sse)
            },
            &runner,
        )?;
        groups.push(GroupReport { group: ScaleGroup::Qkv, outcome });
        mark("qkv");

        // v -> o, on o's output through the Gram matrix of o's inputs; one scale per v channel
        // (spread over the o columns it feeds), the statistics averaged over those columns.
        let tokens = cap.o.mean.rows() as usize;
        let kv = spec.kv_dim();
        let x_mean = per_v_channel(&v_of, kv, &x_stat(&cap.o.mean, opts.statistic));
        let w_mean = per_v_channel(&v_of, kv, &self.w_mean(&w.o, qd, &[Linear::O]));
        let (s_vo, outcome) = self.grid(
            &x_mean,
            &w_mean,
            tokens * h,
            |s, _| {
                let s = s.map(spread_v);
                let clip = joint(&g_o, &[Linear::O]);
                let w_hat = self.quantized_parts(&w.o, qd, &[Linear::O], s.as_deref(), clip)?;
                gram_error(&w.o, &w_hat, &g_o, qd).map_err(|e| self.quant_err(Linear::O, e))
            },
            &runner,
        )?;
        groups.push(GroupReport { group: ScaleGroup::VO, outcome });
        let s_o = s_vo.as_deref().map(spread_v);

        mark("v-o");
        // post_attention_layernorm -> gate, up, on the MLP's output (per token, so any tokens).
        let x_mean = x_stat(&cap.gate_up.mean, opts.statistic);
        let w_mean = self.w_mean(&w.gate_up, h, &gu_parts);
        let (s_gu, outcome) = self.grid(
            &x_mean,
            &w_mean,
            mlp_in.len(),
            |s, runner| {
                let cand = LayerWeights {
                    gate_up: self.quantized_parts(
                        &w.gate_up,
                        h,
                        &gu_parts,
                        s,
                        joint(&g_gu, &gu_parts),
                    )?,
                    gate_up_bias: w.gate_up_bias.clone(),
                    down: w.down.clone(),
                    down_bias: w.down_bias.clone(),
                    ..empty_weights()
                };
                let mut out = vec![0f32; len * h];
                let mut sse = 0f64;
                for (xn, target) in mlp_in.chunks(len * h).zip(mlp_target.chunks(len * h)) {
                    let rows = xn.len() / h;
                    runner.mlp(self.layer, &cand, xn, rows, &mut out[..rows * h], None)?;
                    sse += squared_error(&out[..rows * h], target);
                }
                Ok(sse)
            },
            &runner,
        )?;
        groups.push(GroupReport { group: ScaleGroup::GateUp, outcome });
        mark("gate-up");

        // up -> down, on down's output through the Gram matrix of down's inputs.
        let x_mean = x_stat(&cap.down.mean, opts.statistic);
        let w_mean = self.w_mean(&w.down, inter, &[Linear::Down]);
        let (s_ud, outcome) = self.grid(
            &x_mean,
            &w_mean,
            tokens * h,
            |s, _| {
                let w_hat = self.quantized_parts(
                    &w.down,
                    inter,
                    &[Linear::Down],
                    s,
                    joint(&g_down, &[Linear::Down]),
                )?;
                gram_error(&w.down, &w_hat, &g_down, inter)
                    .map_err(|e| self.quant_err(Linear::Down, e))
            },
            &runner,
        )?;
        groups.push(GroupReport { group: ScaleGroup::UpDown, outcome });
        mark("up-down");

        // 3. Fold the scales in: the previous layer's output divided, the columns multiplied.
        if let Some(s) = &s_qkv {
            divide(&mut w.attn_norm, s);
            scale_columns(&mut w.qkv, s);
        }
        if let (Some(s), Some(s_o)) = (&s_vo, &s_o) {
            let v = rows_of(spec, Linear::V);
            scale_rows(&mut w.qkv[v.start * h..v.end * h], h, s);
            if let Some(b) = &mut w.qkv_bias {
                divide(&mut b[v], s);
            }
            scale_columns_of(&mut w.o, qd, s_o);
        }
        if let Some(s) = &s_gu {
            divide(&mut w.ffn_norm, s);
            scale_columns(&mut w.gate_up, s);
        }
        if let Some(s) = &s_ud {
            let up = rows_of(spec, Linear::Up);
            scale_rows(&mut w.gate_up[up.start * h..up.end * h], h, s);
            if let Some(b) = &mut w.gate_up_bias {
                divide(&mut b[up], s);
            }
            scale_columns_of(&mut w.down, inter, s);
        }

        // 4. Clipping, against the Gram matrices of the scaled inputs; never q or k, whose
        //    errors the softmax amplifies (llm-awq `auto_clip_block`).
        let mut clip = ClipOutcome::default();
        if opts.clip {
            let scaled = |g: &[f32], s: &Option<Vec<f32>>| match s {
                Some(s) => scale_gram(g, s),
                None => g.to_vec(),
            };
            let g = scaled(&g_qkv, &s_qkv);
            let v = rows_of(spec, Linear::V);
            clip += self.clip(&mut w.qkv[v.start * h..v.end * h], h, Linear::V, &g)?;
            let g = scaled(&g_o, &s_o);
            clip += self.clip(&mut w.o, qd, Linear::O, &g)?;
            let g = scaled(&g_gu, &s_gu);
            for p in gu_parts {
                let r = rows_of(spec, p);
                clip += self.clip(&mut w.gate_up[r.start * h..r.end * h], h, p, &g)?;
            }
            let g = scaled(&g_down, &s_ud);
            clip += self.clip(&mut w.down, inter, Linear::Down, &g)?;
        }

        mark("clip");
        // 5. The next layer's input: this layer's output with its quantized weights, so that
        //    the next layer is calibrated on what it will see, or the full-precision output.
        if opts.propagation == Propagation::Quantized {
            let wq = LayerWeights {
                qkv: self.quantized_parts(&w.qkv, h, &qkv_parts, None, None)?,
                o: self.quantized_parts(&w.o, qd, &[Linear::O], None, None)?,
                gate_up: self.quantized_parts(&w.gate_up, h, &gu_parts, None, None)?,
                down: self.quantized_parts(&w.down, inter, &[Linear::Down], None, None)?,
                ..w.clone()
            };
            for x in acts.x.chunks_exact_mut(len * h) {
                runner.run(self.layer, &wq, x, len, None)?;
            }
        }
        if opts.propagation == Propagation::Quantized {
            mark("propagation");
        }
        let report = LayerReport {
            layer: self.layer,
            layers: spec.num_layers,
            groups,
            clip,
            phases,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((w, report))
    }

    /// AWQ's weight statistic over the parts of a stacked matrix, each with its own groups.
    fn w_mean(&self, w: &[f32], cols: usize, parts: &[Linear]) -> Vec<f32> {
        let slices: Vec<(&[f32], usize)> = parts
            .iter()
            .map(|&p| {
                let r = rows_of(self.spec, p);
                (&w[r.start * cols..r.end * cols], self.fq(p).group_len())
            })
            .collect();
        weight_mean(&slices, cols)
    }

    /// The grid search: unit scales (round-to-nearest) and every grid point, each scored by
    /// `loss(scales, runner)` in parallel; the least loss wins, the earliest candidate on ties
    /// (so unit scales unless a grid point is strictly better). `norm` divides the losses for
    /// the report. Returns the scales (`None` for unit scales) and the outcome.
    fn grid(
        &self,
        x_mean: &[f32],
        w_mean: &[f32],
        norm: usize,
        loss: impl Fn(Option<&[f32]>, &mut LayerRunner) -> Result<f64, Error> + Sync,
        runner: &LayerRunner,
    ) -> Result<(Option<Vec<f32>>, GroupOutcome), Error> {
        let n = self.options.grid;
        let duo = self.options.duo.then_some(w_mean);
        let alpha = |c: usize| (c - 1) as f32 / n as f32;
        let losses = (0..=n)
            .into_par_iter()
            .map_init(
                || runner.clone(),
                |r, c| {
                    let s = (c > 0).then(|| awq_scales(x_mean, duo, alpha(c)));
                    loss(s.as_deref(), r)
                },
            )
            .collect::<Result<Vec<f64>, Error>>()?;
        let mut best = 0;
        for (c, &l) in losses.iter().enumerate() {
            if l < losses[best] {
                best = c;
            }
        }
        let mut scales = (best > 0).then(|| awq_scales(x_mean, duo, alpha(best)));
        let (mut least, mut refined) = (losses[best], 0);
        if self.options.refine > 0 {
            let start = scales.clone().unwrap_or_else(|| vec![1.0; x_mean.len()]);
            let (s, l) = self.refine(start.clone(), least, &loss, runner)?;
            if l < least {
                refined = s.iter().zip(&start).filter(|(a, b)| a != b).count();
                (scales, least) = (Some(s), l);
            }
        }
        let norm = norm.max(1) as f64;
        let outcome = GroupOutcome::Searched {
            alpha: (best > 0).then(|| alpha(best)),
            loss_rtn: losses[0] / norm,
            loss: least / norm,
            refined,
        };
        Ok((scales, outcome))
    }

    /// Coordinate descent on the scales from the grid's choice: each channel in turn, its scale
    /// times each of [`REFINE_STEPS`] (scored in parallel), the least loss kept when it is
    /// strictly below the current one; at most `options.refine` sweeps, fewer when one changes
    /// nothing. Returns the scales and their loss.
    fn refine(
        &self,
        mut s: Vec<f32>,
        mut least: f64,
        loss: &(impl Fn(Option<&[f32]>, &mut LayerRunner) -> Result<f64, Error> + Sync),
        runner: &LayerRunner,
    ) -> Result<(Vec<f32>, f64), Error> {
        for _ in 0..self.options.refine {
            let mut changed = false;
            for c in 0..s.len() {
                let losses = REFINE_STEPS
                    .par_iter()
                    .map_init(
                        || runner.clone(),
                        |r, &f| {
                            let mut t = s.clone();
                            t[c] *= f;
                            loss(Some(&t), r)
                        },
                    )
                    .collect::<Result<Vec<f64>, Error>>()?;
                let mut pick = None;
                for (i, &l) in losses.iter().enumerate() {
                    if l < least {
                        (least, pick) = (l, Some(i));
                    }
                }
                if let Some(i) = pick {
                    s[c] *= REFINE_STEPS[i];
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok((s, least))
    }

    fn clip(
        &self,
        w: &mut [f32],
        cols: usize,
        linear: Linear,
        g: &[f32],
    ) -> Result<ClipOutcome, Error> {
        let fq = self.fq(linear);
        clip_search(w, cols, fq, g, self.clip_settings(fq)).map_err(|e| self.quant_err(linear, e))
    }
}

/// AWQ's activation statistic `x_mean` of a linear's inputs, as the options choose it.
fn x_stat(s: &ChannelStats, which: Statistic) -> Vec<f32> {
    match which {
        Statistic::MeanAbs => s.mean(),
        Statistic::Rms => s.rms(),
    }
}

/// The clipping `quantized_parts` applies when scale and clip are searched together.
fn joint_clip<'a>(
    on: bool,
    g: &'a [f32],
    parts: &'a [Linear],
) -> Option<(&'a [Linear], &'a [f32])> {
    on.then_some((parts, g))
}

/// A `LayerWeights` with nothing in it, to fill the fields a block uses.
fn empty_weights() -> LayerWeights {
    LayerWeights {
        attn_norm: Vec::new(),
        qkv: Vec::new(),
        qkv_bias: None,
        o: Vec::new(),
        o_bias: None,
        ffn_norm: Vec::new(),
        gate_up: Vec::new(),
        gate_up_bias: None,
        down: Vec::new(),
        down_bias: None,
    }
}

fn squared_error(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

fn divide(v: &mut [f32], s: &[f32]) {
    for (a, b) in v.iter_mut().zip(s) {
        *a /= b;
    }
}

/// Multiplies every row's columns by `s` (`w` has rows of `s.len()`).
fn scale_columns(w: &mut [f32], s: &[f32]) {
    scale_columns_of(w, s.len(), s);
}

fn scale_columns_of(w: &mut [f32], cols: usize, s: &[f32]) {
    for row in w.chunks_exact_mut(cols) {
        for (a, b) in row.iter_mut().zip(s) {
            *a *= b;
        }
    }
}

/// Divides row `r` of `w` (rows of `cols`) by `s[r]`.
fn scale_rows(w: &mut [f32], cols: usize, s: &[f32]) {
    for (row, d) in w.chunks_exact_mut(cols).zip(s) {
        for a in row.iter_mut() {
            *a /= d;
        }
    }
}
