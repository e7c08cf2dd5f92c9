//! Activation-aware weight quantization (AWQ) as a transform of the source model: each decoder
//! layer's weights are scaled (and clipped) so that the target's own round-to-nearest quantizer,
//! applied afterwards by the unchanged GGUF and ONNX writers, loses less of what the layer
//! computes (`../shared/DESIGN.md` §6; llm-awq `awq/quantize/auto_scale.py`, `auto_clip.py`).
//!
//! The transform streams: layers are processed one at a time through the runtime's
//! [`LayerRunner`], with one layer's float weights and the calibration windows' activations in
//! memory, and each transformed layer is appended to a scratch safetensors file.
//! [`awq_transform`] returns the result as a [`WeightSource`] ([`AwqWeights`]) that
//! [`SourceModel::with_weights`](crate::SourceModel::with_weights) puts in place of the original
//! weights for any writer.
//!
//! Per layer:
//! - one full-precision pass over every calibration window collects each linear input's mean
//!   magnitude per channel and its Gram matrix, and the attention block's and MLP's outputs on
//!   a subset of the windows (`loss_tokens`);
//! - for each scale group ([`ScaleGroup`]) the grid `a = 0, 1/20, .., 19/20` of duo scales
//!   `x_mean^a / (w_mean^(1-a) + 1e-4)`, plus unit scales (plain RTN, so AWQ never does worse
//!   on its own measure), is scored by the error of the group's output with the weights
//!   `Q(W * s) / s`, `Q` the target's quantizer for each matrix: the whole attention block for
//!   q/k/v, the whole MLP for gate/up, and through Gram matrices (every token, exactly) for
//!   v -> o and up -> down;
//! - the scales are folded into the RMSNorm weights or the preceding linear's rows: for v -> o
//!   only ever v's rows (never q or k rows of a fused Phi-3 `qkv_proj`), one scale per v
//!   channel, which under grouped-query attention multiplies the o columns of every query head
//!   that reads that channel (llm-awq skips the pair under GQA, and AutoAWQ's Phi-3 path pairs
//!   v rows with o columns one to one, which is wrong there);
//! - optionally ([`AwqOptionsBuilder::refine`]), a per-channel refinement of the chosen scales
//!   by coordinate descent on the same loss;
//! - a clipping search per row and block (the target's blocks, a shorter last one included)
//!   on v, o, gate, up and down (for formats with a zero point or a minimum, the block's
//!   maximum and minimum shrunk separately), each block's range chosen first on its own error
//!   and then with the row's other blocks on the whole row's output error, and then the row's
//!   block scales refitted by least squares on that error, the codes held
//!   ([`AwqOptionsBuilder::refit_scales`]);
//! - the full-precision layer's output is the next layer's input (or, as an option, the
//!   output with the quantized weights).
//!
//! Everything is parallel with rayon and sums run in a fixed order: the result depends on the
//! calibration windows alone, never on the thread count.

mod calib;
mod quantizers;
mod search;
mod weights;

use std::{collections::BTreeMap, io::BufWriter, path::Path, sync::Arc};

use phiquant_runtime::{
    DecoderSpec, Dtype, LayerRunner, LayerWeights, Linear, ModelWeights, TensorRole, WeightSource,
};
use serde::Serialize;

use self::search::{Activations, LayerSearch, rows_of};
pub use self::{
    calib::{
        CalibOrigin, Calibration, DEFAULT_CALIB_LEN, DEFAULT_CALIB_SAMPLES, MAX_CALIB_SAMPLES,
        check_calib_shape,
    },
    quantizers::LinearQuantizers,
    search::{GroupOutcome, GroupReport, LayerReport, ScaleGroup, v_channel_of_o_column},
    weights::AwqWeights,
};
use crate::{
    Error,
    hf::{PlannedSafetensor, write_safetensors},
};

/// How the next layer's calibration input is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// Run the layer with its scaled, clipped and quantized weights, so that the next layer is
    /// calibrated on the inputs it will see in the quantized model (costs one more pass).
    Quantized,
    /// The full-precision layer's output, from the statistics pass (llm-awq's and AutoAWQ's
    /// choice; the default).
    Float,
}

/// The per-channel activation statistic `x_mean` of AWQ's scales `x_mean^a / w_mean^(1-a)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// `mean |x|`, the reference's (llm-awq `get_act_scale`, AutoAWQ `x.abs().view(-1,
    /// x.shape[-1]).mean(0)`).
    MeanAbs,
    /// `sqrt(mean x²)`: a channel's weight in the squared output error the search minimizes
    /// (the diagonal of the inputs' Gram matrix), which counts a channel's large values more.
    Rms,
}

/// The settings of an AWQ run; built by [`AwqOptionsBuilder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwqOptions {
    grid: usize,
    duo: bool,
    statistic: Statistic,
    clip: bool,
    joint_clip: bool,
    two_sided_clip: bool,
    refit_scales: bool,
    loss_tokens: usize,
    propagation: Propagation,
    refine: usize,
}

impl Default for AwqOptions {
    fn default() -> AwqOptions {
        AwqOptionsBuilder::new().build().expect("the defaults are valid")
    }
}

impl AwqOptions {
    /// Points of the scale grid.
    pub fn grid(&self) -> usize {
        self.grid
    }

    /// Whether scales use the weight statistic too (duo scaling).
    pub fn duo(&self) -> bool {
        self.duo
    }

    /// The activation statistic of the scales.
    pub fn statistic(&self) -> Statistic {
        self.statistic
    }

    /// Whether the clipping search runs.
    pub fn clip(&self) -> bool {
        self.clip
    }

    /// Whether each scale candidate is scored with its weights clipped.
    pub fn joint_clip(&self) -> bool {
        self.joint_clip
    }

    /// Whether asymmetric formats get the two-sided clipping search.
    pub fn two_sided_clip(&self) -> bool {
        self.two_sided_clip
    }

    /// Whether the clipping search refits each row's block scales on the row's output error.
    pub fn refit_scales(&self) -> bool {
        self.refit_scales
    }

    /// Tokens the attention block's and the MLP's errors are measured on.
    pub fn loss_tokens(&self) -> usize {
        self.loss_tokens
    }

    /// How the next layer's input is produced.
    pub fn propagation(&self) -> Propagation {
        self.propagation
    }

    /// Sweeps of the per-channel refinement after the grid search (0: none).
    pub fn refine(&self) -> usize {
        self.refine
    }
}

/// Builds [`AwqOptions`]; the defaults are the reference's (a grid of 20, duo scaling,
/// clipping after the scale search, the next layer calibrated on the full-precision layer's
/// output), with the block errors measured on 4096 tokens, and the two-sided clipping search
/// for formats with a zero point or a minimum.
#[derive(Debug, Clone)]
pub struct AwqOptionsBuilder {
    options: AwqOptions,
}

impl Default for AwqOptionsBuilder {
    fn default() -> AwqOptionsBuilder {
        AwqOptionsBuilder::new()
    }
}

/// The most grid points accepted.
pub const MAX_GRID: usize = 1000;

/// The most refinement sweeps accepted.
pub const MAX_REFINE: usize = 100;

/// The factors the refinement tries on each channel's scale.
pub const REFINE_STEPS: [f32; 4] = [0.6, 0.8, 1.25, 1.6];

impl AwqOptionsBuilder {
    /// The defaults.
    pub fn new() -> AwqOptionsBuilder {
        AwqOptionsBuilder {
            options: AwqOptions {
                grid: phiquant_quant::AWQ_GRID,
                duo: true,
                statistic: Statistic::MeanAbs,
                clip: true,
                joint_clip: false,
                two_sided_clip: true,
                refit_scales: true,
                loss_tokens: 4096,
                propagation: Propagation::Float,
                refine: 0,
            },
        }
    }

    /// Grid points `a = i / n`, `i` in `0..n` (default 20).
    pub fn grid(&mut self, n: usize) -> &mut Self {
        self.options.grid = n;
        self
    }

    /// Duo scaling (default on): `x_mean^a / (w_mean^(1-a) + 1e-4)`; off: `x_mean^a`.
    pub fn duo(&mut self, on: bool) -> &mut Self {
        self.options.duo = on;
        self
    }

    /// The activation statistic of the scales (default [`Statistic::MeanAbs`], the
    /// reference's).
    pub fn statistic(&mut self, s: Statistic) -> &mut Self {
        self.options.statistic = s;
        self
    }

    /// The clipping search (default on). Off, the transform only scales: the model computes
    /// the same function (the acceptance test of the transform).
    pub fn clip(&mut self, on: bool) -> &mut Self {
        self.options.clip = on;
        self
    }

    /// Score every scale candidate with its weights clipped (the clipping search run inside
    /// the scale search; default off: scales first, then clipping, as the reference).
    pub fn joint_clip(&mut self, on: bool) -> &mut Self {
        self.options.joint_clip = on;
        self
    }

    /// For formats with a zero point or a minimum (asymmetric `MatMulNBits`, Q4_1, Q4_K),
    /// shrink each block's maximum and minimum separately (100 candidates) rather than its
    /// magnitude (10, the reference's search). Default on: such a format can use a range that
    /// is not centred on zero, and on every model and text measured it lowered the error
    /// (SmolLM2-135M g128 on sotu.txt: KLD 0.1661 to 0.1568; ten times the clipping
    /// candidates, which the export's time hardly shows; BENCHMARKS.md). Symmetric formats
    /// always get the reference's search.
    pub fn two_sided_clip(&mut self, on: bool) -> &mut Self {
        self.options.two_sided_clip = on;
        self
    }

    /// After the clipping search has chosen a row's ranges, refit the row's block scales by
    /// least squares on its output error, the codes held (default on; `clip_search` in
    /// `phiquant-quant` says how). The writers' round-to-nearest reproduces the refitted scales,
    /// and a row keeps its refit only when that lowers its error. Measured on stories260K g32
    /// and SmolLM2-135M g128 in BENCHMARKS.md.
    pub fn refit_scales(&mut self, on: bool) -> &mut Self {
        self.options.refit_scales = on;
        self
    }

    /// Calibration tokens on which the attention block's and the MLP's outputs are compared
    /// (default 4096; whole windows for attention). The statistics and the Gram matrices use
    /// every token.
    pub fn loss_tokens(&mut self, n: usize) -> &mut Self {
        self.options.loss_tokens = n;
        self
    }

    /// How the next layer's input is produced (default [`Propagation::Float`], which measured
    /// better on SmolLM2-135M; see BENCHMARKS.md).
    pub fn propagation(&mut self, p: Propagation) -> &mut Self {
        self.options.propagation = p;
        self
    }

    /// Sweeps of per-channel refinement after the grid search (default 0: off). Each sweep
    /// tries every channel's scale times each of [`REFINE_STEPS`] in turn, scored by the
    /// group's own loss, and keeps a change that lowers it; the sweeps stop early when one
    /// changes nothing. A sweep costs `4 x channels` evaluations of the group's loss (the grid
    /// costs 21), so this is for small models: on stories260K (64 channels) two sweeps take
    /// the search from 8 s to 2.5 to 3.5 minutes on 2 cores, and for a hidden size of 576 they
    /// are hundreds of times the grid's evaluations (BENCHMARKS.md).
    pub fn refine(&mut self, sweeps: usize) -> &mut Self {
        self.options.refine = sweeps;
        self
    }

    /// Checks the settings: one out of range is refused as [`Error::AwqSetting`].
    pub fn build(&self) -> Result<AwqOptions, Error> {
        let o = &self.options;
        let refuse =
            |setting, value, expected: String| Err(Error::AwqSetting { setting, value, expected });
        if o.grid == 0 || o.grid > MAX_GRID {
            return refuse("grid", o.grid, format!("expected 1 to {MAX_GRID} points"));
        }
        if o.refine > MAX_REFINE {
            return refuse("refine", o.refine, format!("expected 0 to {MAX_REFINE} sweeps"));
        }
        if o.loss_tokens == 0 {
            return refuse("loss_tokens", 0, "expected at least one token".into());
        }
        Ok(o.clone())
    }
}

/// The tensors a layer stores (the checkpoint's layout: Phi-3's fused `qkv_proj` and
/// `gate_up_proj`, the others' separate projections), from engine-layout weights.
fn stored_tensors(
    spec: &DecoderSpec,
    layer: usize,
    w: &LayerWeights,
) -> BTreeMap<String, Vec<f32>> {
    let h = spec.hidden_size;
    let part = |p: Linear| -> &[f32] {
        let r = rows_of(spec, p);
        match p {
            Linear::Q | Linear::K | Linear::V => &w.qkv[r.start * h..r.end * h],
            Linear::O => &w.o,
            Linear::Gate | Linear::Up => &w.gate_up[r.start * h..r.end * h],
            Linear::Down => &w.down,
        }
    };
    let bias = |p: Linear| -> Option<&[f32]> {
        let r = rows_of(spec, p);
        match p {
            Linear::Q | Linear::K | Linear::V => w.qkv_bias.as_deref().map(|b| &b[r]),
            Linear::O => w.o_bias.as_deref(),
            Linear::Gate | Linear::Up => w.gate_up_bias.as_deref().map(|b| &b[r]),
            Linear::Down => w.down_bias.as_deref(),
        }
    };
    let mut out = BTreeMap::new();
    for t in layer_tensors(spec, layer) {
        let values = match &t.role {
            TensorRole::AttnNorm { .. } => w.attn_norm.clone(),
            TensorRole::FfnNorm { .. } => w.ffn_norm.clone(),
            TensorRole::Weight { parts, .. } => {
                parts.iter().flat_map(|&p| part(p)).copied().collect()
            }
            TensorRole::Bias { parts, .. } => {
                parts.iter().flat_map(|&p| bias(p).unwrap_or(&[])).copied().collect()
            }
            _ => continue,
        };
        out.insert(t.name, values);
    }
    out
}

/// The tensors of layer `layer`, in the spec's order.
fn layer_tensors(spec: &DecoderSpec, layer: usize) -> Vec<phiquant_runtime::ExpectedTensor> {
    spec.expected_tensors()
        .into_iter()
        .filter(|t| match t.role {
            TensorRole::AttnNorm { layer: l }
            | TensorRole::FfnNorm { layer: l }
            | TensorRole::Weight { layer: l, .. }
            | TensorRole::Bias { layer: l, .. } => l == layer,
            _ => false,
        })
        .collect()
}

/// Refuses NaN or infinity in layer `layer`'s tensors, naming the tensor, row and column.
fn check_finite(source: &dyn WeightSource, layer: usize) -> Result<(), Error> {
    for t in layer_tensors(source.spec(), layer) {
        let values = source.tensor(&t.name)?.to_f32()?;
        let cols = t.shape.last().copied().unwrap_or(1).max(1);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Quantize {
                tensor: t.name,
                source: phiquant_quant::Error::NonFinite {
                    row: i / cols,
                    col: i % cols,
                    value: values[i],
                },
            });
        }
    }
    Ok(())
}

/// Runs AWQ over every layer of `source` with the calibration windows `calib`, searching
/// against `quantizers` (the target's quantizer of every linear layer), and returns the
/// transformed model. The transformed layers are written to the scratch file `scratch` (in
/// the folder of the artefacts; removed on error, and unlinked once mapped). `progress` gets
/// each layer's report as it is done.
pub fn awq_transform(
    source: Arc<dyn WeightSource + Send + Sync>,
    calib: &Calibration,
    quantizers: &LinearQuantizers,
    options: &AwqOptions,
    scratch: &Path,
    progress: &mut dyn FnMut(&LayerReport),
) -> Result<AwqWeights, Error> {
    let spec = source.spec().clone();
    if quantizers.layers() != spec.num_layers {
        return Err(Error::Internal(format!(
            "quantizers for {} layers, the model has {}",
            quantizers.layers(),
            spec.num_layers
        )));
    }
    let (h, len) = (spec.hidden_size, calib.len());
    if let Some(&t) = calib.windows().iter().flatten().find(|&&t| t as usize >= spec.vocab_size) {
        return Err(Error::Runtime(phiquant_runtime::Error::TokenOutOfRange {
            token: t,
            vocab_size: spec.vocab_size,
        }));
    }
    // Checked before any work: the runner refuses a rotary dimension it cannot apply.
    LayerRunner::new(&spec, len)?;
    let embedding = source.tensor("model.embed_tokens.weight")?.to_f32()?;
    source.release("model.embed_tokens.weight");
    let mut acts = Activations {
        x: calib.windows().iter().flat_map(|w| LayerRunner::embed(&embedding, h, w)).collect(),
        windows: calib.windows().len(),
        len,
    };
    drop(embedding);

    let planned: Vec<(usize, PlannedSafetensor)> = (0..spec.num_layers)
        .flat_map(|l| {
            layer_tensors(&spec, l).into_iter().map(move |t| {
                (l, PlannedSafetensor { name: t.name, dtype: Dtype::F32, shape: t.shape })
            })
        })
        .collect();
    let (owners, tensors): (Vec<usize>, Vec<PlannedSafetensor>) = planned.into_iter().unzip();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let io = |op: &'static str| {
        let path = scratch.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let result = (|| -> Result<(), Error> {
        let file = std::fs::File::create(scratch).map_err(io("creating"))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut done: Option<usize> = None;
        let mut pending = BTreeMap::new();
        write_safetensors(&mut w, &tensors, &metadata, |i, t| {
            let layer = owners[i];
            if done != Some(layer) {
                check_finite(source.as_ref(), layer)?;
                let weights = LayerWeights::load(source.as_ref(), layer)?;
                for t in layer_tensors(&spec, layer) {
                    source.release(&t.name);
                }
                let search = LayerSearch { spec: &spec, layer, quantizers, options };
                let (transformed, report) = search.run(weights, &mut acts)?;
                progress(&report);
                pending = stored_tensors(&spec, layer, &transformed);
                done = Some(layer);
            }
            let values = pending
                .remove(&t.name)
                .ok_or_else(|| Error::Internal(format!("AWQ produced no tensor `{}`", t.name)))?;
            Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .map_err(|e| match e {
            Error::Io { op, path, source } if path.as_os_str().is_empty() => {
                Error::Io { op, path: scratch.to_path_buf(), source }
            }
            other => other,
        })?;
        w.into_inner().map_err(|e| io("writing")(e.into_error()))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(scratch);
        return Err(e);
    }
    AwqWeights::open(source, scratch).map_err(|e| {
        let _ = std::fs::remove_file(scratch);
        Error::Runtime(e)
    })
}

/// The whole model in f32 with every linear layer's weights quantized and dequantized by
/// `quantizers` (the embedding, norms and LM head as they are): what the native engine runs to
/// measure a quantization's quality. Holds the whole model in memory.
pub fn fake_quantized_model(
    source: &dyn WeightSource,
    quantizers: &LinearQuantizers,
) -> Result<ModelWeights, Error> {
    let spec = source.spec();
    let mut weights = ModelWeights::load(source)?;
    let h = spec.hidden_size;
    for (l, w) in weights.layers.iter_mut().enumerate() {
        let apply = |m: &mut Vec<f32>, cols: usize, parts: &[Linear]| -> Result<(), Error> {
            for &p in parts {
                let r = rows_of(spec, p);
                let src = m[r.start * cols..r.end * cols].to_vec();
                quantizers
                    .get(l, p)
                    .apply(&src, cols, &mut m[r.start * cols..r.end * cols])
                    .map_err(|source| Error::Quantize {
                        tensor: spec.weight_location(l, p).tensor,
                        source,
                    })?;
            }
            Ok(())
        };
        apply(&mut w.qkv, h, &[Linear::Q, Linear::K, Linear::V])?;
        apply(&mut w.o, spec.q_dim(), &[Linear::O])?;
        apply(&mut w.gate_up, h, &[Linear::Gate, Linear::Up])?;
        apply(&mut w.down, spec.intermediate_size, &[Linear::Down])?;
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_refused_by_name() {
        let refused = |b: &mut AwqOptionsBuilder| b.build().unwrap_err().to_string();
        assert_eq!(
            refused(AwqOptionsBuilder::new().grid(0)),
            "AWQ grid 0: expected 1 to 1000 points"
        );
        assert!(refused(AwqOptionsBuilder::new().grid(MAX_GRID + 1)).contains("expected 1 to"));
        assert!(refused(AwqOptionsBuilder::new().loss_tokens(0)).starts_with("AWQ loss_tokens 0:"));
        let e = AwqOptionsBuilder::new().refine(MAX_REFINE + 1).build().unwrap_err();
        assert!(
            matches!(e, Error::AwqSetting { setting: "refine", value: 101, .. }),
            "{e}: the setting is named for callers to map to their options"
        );
        assert_eq!(e.to_string(), "AWQ refine 101: expected 0 to 100 sweeps");
        let o = AwqOptionsBuilder::new().refine(2).build().unwrap();
        assert_eq!((o.refine(), AwqOptions::default().refine()), (2, 0));
    }
}
