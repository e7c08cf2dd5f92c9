//! The decoder graph, node for node as onnxruntime-genai's model builder lays it out
//! (`src/python/py/models/builders/base.py` and `phi.py` of onnxruntime-genai 0.18): the same op
//! types, node names, value names, initializer names and attributes, so that an artefact can be
//! compared with the builder's and loads in onnxruntime-genai unchanged.
//!
//! Weights are read, converted or quantized and streamed into the external data file one matrix
//! at a time, in graph order.

use std::io::Write;

use phiquant_quant::{Matrix, NBitsScheme, ScaleType, quantize_nbits};
use phiquant_runtime::{DecoderSpec, Linear, RopeScaling, RopeTables, WeightSource};

use super::{
    Ep, IoType, OnnxScheme, OnnxWeights,
    graph::{Attr, Dim, Graph, attribute, inline_tensor, value_info},
    proto::{GraphProto, NodeProto, data_type},
};
use crate::Error;

const MS: &str = "com.microsoft";
const MASK_SUB: &str = "/model/attn_mask_reformat/attn_mask_subgraph";

fn named(s: &str) -> Dim {
    Dim::Named(s.to_string())
}

fn fixed(v: usize) -> Dim {
    Dim::Fixed(v as i64)
}

/// Whether GroupQueryAttention can apply the rotary embedding itself: its kernels need a head
/// size that is a multiple of 16 and a cos/sin cache width (half the rotary dimension) that is a
/// multiple of 8 (onnxruntime `group_query_attention_helper.h`, `CheckRotaryCaches`).
pub fn gqa_rotary_supported(spec: &DecoderSpec) -> bool {
    let half = spec.rope.rotary_dim / 2;
    spec.head_dim.is_multiple_of(16) && half.is_multiple_of(8) && half <= spec.head_dim / 2
}

/// Whether the graph rotates q and k with `RotaryEmbedding` nodes before attention (unpacked
/// q/k/v, a `position_ids` input, LongRoPE caches concatenated): on DirectML always, as the builder
/// does, and on the other providers when GroupQueryAttention cannot rotate these shapes itself
/// (small heads, such as stories260K's 8).
pub fn rotary_outside(spec: &DecoderSpec, scheme: &OnnxScheme) -> bool {
    scheme.ep == Ep::Dml || !gqa_rotary_supported(spec)
}

/// The block size used for a matrix with `k` inputs: the scheme's, or for a matrix narrower than
/// one block the largest power of two (at least 16) that fits in K. ONNX Runtime's MatMulNBits
/// shape inference rejects a block longer than K ("Incompatible dimensions for matrix
/// multiplication"; the builder writes such graphs for small models and they fail to load).
pub fn block_for(k: usize, block_size: usize) -> usize {
    if k >= block_size {
        return block_size;
    }
    let fits = if k == 0 { 1 } else { 1usize << (usize::BITS - 1 - k.leading_zeros()) };
    fits.max(16)
}

/// Everything the layer builders share.
struct Ctx<'a, W: Write> {
    g: Graph<W>,
    spec: &'a DecoderSpec,
    source: &'a dyn WeightSource,
    scheme: &'a OnnxScheme,
    io: i32,
    /// Progress callback: called after each layer with (done, total).
    progress: &'a mut dyn FnMut(usize, usize),
}

impl<W: Write> Ctx<'_, W> {
    fn hidden(&self, last: usize) -> Vec<Dim> {
        vec![named("batch_size"), named("sequence_length"), fixed(last)]
    }

    fn node(
        &mut self,
        op: &str,
        domain: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> Result<(), Error> {
        self.g.node(op, domain, name, inputs, outputs, attrs)
    }

    /// A default-domain node `name` with one output, `{name}/output_0`, which it returns.
    fn op(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> Result<String, Error> {
        let out = format!("{name}/output_0");
        self.g.node(op, "", name, inputs, &[&out], attrs)?;
        Ok(out)
    }

    /// A tensor of the checkpoint as f32; NaN or infinity is an error naming the tensor, row and
    /// column (a float artefact would carry it silently).
    fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, Error> {
        let view = self.source.tensor(name)?;
        let cols = view.shape.last().copied().unwrap_or(1).max(1);
        let values = view.to_f32()?;
        drop(view);
        // Its pages are done with: keep the resident set near one tensor.
        self.source.release(name);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Quantize {
                tensor: name.to_string(),
                source: phiquant_quant::Error::NonFinite {
                    row: i / cols,
                    col: i % cols,
                    value: values[i],
                },
            });
        }
        Ok(values)
    }

    /// The rows of projections `parts` of `layer`, stacked (q, k, v order for packed QKV).
    fn linear_rows(&self, layer: usize, parts: &[Linear]) -> Result<(Vec<f32>, usize), Error> {
        let mut out = Vec::new();
        let mut rows = 0;
        let mut cached: Option<(String, Vec<f32>)> = None;
        let cols = self.spec.linear_shape(parts[0])[1];
        for &part in parts {
            let loc = self.spec.weight_location(layer, part);
            if cached.as_ref().is_none_or(|(n, _)| *n != loc.tensor) {
                let data = self.tensor_f32(&loc.tensor)?;
                cached = Some((loc.tensor.clone(), data));
            }
            let data = &cached.as_ref().expect("just filled").1;
            out.extend_from_slice(&data[loc.rows.start * cols..loc.rows.end * cols]);
            rows += loc.rows.len();
        }
        Ok((out, rows))
    }

    /// The biases of projections `parts` of `layer`, stacked; `None` when the model has none.
    fn bias_rows(&self, layer: usize, parts: &[Linear]) -> Result<Option<Vec<f32>>, Error> {
        let mut out = Vec::new();
        for &part in parts {
            let Some(loc) = self.spec.bias_location(layer, part) else {
                return Ok(None);
            };
            let data = self.tensor_f32(&loc.tensor)?;
            out.extend_from_slice(&data[loc.rows.clone()]);
        }
        Ok(Some(out))
    }

    /// Values in the I/O type as little-endian bytes.
    fn io_bytes(&self, values: &[f32]) -> Vec<u8> {
        to_bytes(values, self.scheme.io)
    }

    /// A float initializer in the I/O type.
    fn io_initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<(), Error> {
        let raw = self.io_bytes(values);
        self.g.initializer(name, self.io, dims, &raw)
    }

    /// `MatMul` (float) or `MatMulNBits` (int4) of `input` by the weight `w` (`[n, k]`, Hugging
    /// Face layout) named as the builder names `/…/MatMul`; returns the output value name.
    fn matmul(
        &mut self,
        name: &str,
        input: &str,
        w: &[f32],
        n: usize,
        k: usize,
        output: Option<&str>,
    ) -> Result<String, Error> {
        let weight = format!("{}.weight", name[1..].replace('/', "."));
        let out = output.map(str::to_string).unwrap_or_else(|| format!("{name}/output_0"));
        match self.scheme.weights {
            OnnxWeights::Float => {
                let mut t = vec![0f32; n * k];
                for r in 0..n {
                    for c in 0..k {
                        t[c * n + r] = w[r * k + c];
                    }
                }
                self.io_initializer(&weight, &[k, n], &t)?;
                self.node("MatMul", "", name, &[input, &weight], &[&out], vec![])?;
            }
            OnnxWeights::Int4 { block_size, symmetric, accuracy_level } => {
                let block_size = block_for(k, block_size);
                let (bq, sc, zp) = self.quantize_int4(&weight, w, n, k, block_size, symmetric)?;
                let mut inputs = vec![input.to_string(), bq, sc];
                inputs.extend(zp);
                let mut attrs = vec![
                    ("K", Attr::Int(k as i64)),
                    ("N", Attr::Int(n as i64)),
                    ("bits", Attr::Int(4)),
                    ("block_size", Attr::Int(block_size as i64)),
                ];
                if accuracy_level > 0 {
                    attrs.push(("accuracy_level", Attr::Int(accuracy_level as i64)));
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                self.node("MatMulNBits", MS, &format!("{name}_Q4"), &inputs, &[&out], attrs)?;
            }
        }
        self.g.value(&out, self.io, self.hidden(n));
        Ok(out)
    }

    /// Quantizes `w` (`[n, k]`) to int4 `MatMulNBits` initializers `{name}_Q4`, `{name}_scales`
    /// and (asymmetric) `{name}_zero_points`; returns their names.
    fn quantize_int4(
        &mut self,
        name: &str,
        w: &[f32],
        n: usize,
        k: usize,
        block_size: usize,
        symmetric: bool,
    ) -> Result<(String, String, Option<String>), Error> {
        let scale_type = match self.scheme.io {
            IoType::F32 => ScaleType::F32,
            IoType::F16 => ScaleType::F16,
        };
        let quant_err = |source| Error::Quantize { tensor: name.to_string(), source };
        let nbits = NBitsScheme::new(4, block_size, symmetric, scale_type).map_err(quant_err)?;
        let m = Matrix::from_f32(w, n, k).map_err(quant_err)?;
        let q = quantize_nbits(&m, &nbits).map_err(quant_err)?;
        let kb = q.k_blocks();
        let (bq, sc) = (format!("{name}_Q4"), format!("{name}_scales"));
        self.g.initializer(&bq, data_type::UINT8, &[n, kb, nbits.blob_bytes()], &q.b)?;
        self.g.initializer(&sc, self.io, &[n, kb], &q.scales)?;
        let zn = match &q.zero_points {
            Some(zp) => {
                let zn = format!("{name}_zero_points");
                self.g.initializer(&zn, data_type::UINT8, &[n, kb.div_ceil(2)], zp)?;
                Some(zn)
            }
            None => None,
        };
        Ok((bq, sc, zn))
    }

    /// `Add` of a bias initializer `/…/Add` to `input`.
    fn add_bias(&mut self, name: &str, input: &str, bias: &[f32]) -> Result<String, Error> {
        let init = format!("{}.bias", name[1..].replace('/', "."));
        self.io_initializer(&init, &[bias.len()], bias)?;
        let out = format!("{name}/output_0");
        self.node("Add", "", name, &[input, &init], &[&out], vec![])?;
        self.g.value(&out, self.io, self.hidden(bias.len()));
        Ok(out)
    }
}

fn to_bytes(values: &[f32], io: IoType) -> Vec<u8> {
    match io {
        IoType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        IoType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
    }
}

/// Writes the whole decoder into `g`; returns the finished graph.
pub(super) fn build<W: Write>(
    g: Graph<W>,
    spec: &DecoderSpec,
    source: &dyn WeightSource,
    scheme: &OnnxScheme,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(GraphProto, W), Error> {
    let io = match scheme.io {
        IoType::F32 => data_type::FLOAT,
        IoType::F16 => data_type::FLOAT16,
    };
    let mut cx = Ctx { g, spec, source, scheme, io, progress };
    inputs_and_outputs(&mut cx);
    let rope = RopeTables::new(spec);
    let position_ids = preprocessing(&mut cx, &rope)?;
    let mut residual = embedding(&mut cx)?;
    let mut skip: Option<String> = None;
    let n = spec.num_layers;
    for layer in 0..n {
        let (normed, res) = layernorm(
            &mut cx,
            layer,
            "input",
            &residual,
            skip.as_deref(),
            &format!("model.layers.{layer}.input_layernorm.weight"),
        )?;
        residual = res;
        let attn = attention(&mut cx, layer, &normed, position_ids.as_deref())?;
        let (normed, res) = layernorm(
            &mut cx,
            layer,
            "post_attention",
            &residual,
            Some(&attn),
            &format!("model.layers.{layer}.post_attention_layernorm.weight"),
        )?;
        residual = res;
        skip = Some(mlp(&mut cx, layer, &normed)?);
        (cx.progress)(layer + 1, n);
    }
    // The final norm: a SkipSimplifiedLayerNormalization named as layer `n`'s, with one output.
    let name = format!("/model/layers.{n}/final_norm_layernorm/SkipLayerNorm");
    let weight = format!("model.layers.{n}.final_norm_layernorm.weight");
    let values = cx.tensor_f32("model.norm.weight")?;
    cx.io_initializer(&weight, &[spec.hidden_size], &values)?;
    let out = format!("/model/layers.{n}/final_norm_layernorm/output_0");
    let skip = skip.expect("at least one layer");
    let eps = Attr::Float(spec.rms_norm_eps as f32);
    cx.node(
        "SkipSimplifiedLayerNormalization",
        MS,
        &name,
        &[&residual, &skip, &weight],
        &[&out],
        vec![("epsilon", eps)],
    )?;
    cx.g.value(&out, io, cx.hidden(spec.hidden_size));
    lm_head(&mut cx, &out)?;
    cx.g.finish("main_graph")
}

fn inputs_and_outputs<W: Write>(cx: &mut Ctx<'_, W>) {
    let spec = cx.spec;
    let bs = || vec![named("batch_size"), named("sequence_length")];
    cx.g.input("input_ids", data_type::INT64, bs());
    cx.g.input(
        "attention_mask",
        data_type::INT64,
        vec![named("batch_size"), named("total_sequence_length")],
    );
    if rotary_outside(spec, cx.scheme) {
        cx.g.input("position_ids", data_type::INT64, bs());
    }
    let kv = |len: &str| {
        vec![named("batch_size"), fixed(spec.num_kv_heads), named(len), named("kv_cache_dim")]
    };
    for kind in ["key", "value"] {
        for layer in 0..spec.num_layers {
            cx.g.input(
                &format!("past_key_values.{layer}.{kind}"),
                cx.io,
                kv("past_sequence_length"),
            );
        }
    }
    cx.g.output(
        "logits",
        cx.io,
        vec![named("batch_size"), named("sequence_length"), fixed(spec.vocab_size)],
    );
    for kind in ["key", "value"] {
        for layer in 0..spec.num_layers {
            cx.g.output(&format!("present.{layer}.{kind}"), cx.io, kv("total_sequence_length"));
        }
    }
}

/// The attention-mask subgraph (seqlens_k and total_seq_len for GroupQueryAttention), the
/// position-id reformatting of DML LongRoPE graphs, and the rotary caches. Returns the name of
/// the position ids the rotary nodes read (DML only).
fn preprocessing<W: Write>(
    cx: &mut Ctx<'_, W>,
    rope: &RopeTables,
) -> Result<Option<String>, Error> {
    let spec = cx.spec;
    let dml = rotary_outside(spec, cx.scheme);
    let longrope = matches!(spec.rope.scaling, RopeScaling::LongRope { .. });
    let orig = spec.original_context();
    let mut position_ids = dml.then(|| "position_ids".to_string());
    if dml && longrope {
        let b = "/model/pos_ids_reformat";
        let c = format!("/model/constants/INT64/{orig}");
        cx.op(
            "ReduceMax",
            &format!("{b}/ReduceMax"),
            &["position_ids"],
            vec![("keepdims", Attr::Int(0))],
        )?;
        cx.op(
            "GreaterOrEqual",
            &format!("{b}/GreaterOrEqual"),
            &[&format!("{b}/ReduceMax/output_0"), &c],
            vec![],
        )?;
        cx.op(
            "Cast",
            &format!("{b}/Cast"),
            &[&format!("{b}/GreaterOrEqual/output_0")],
            vec![("to", Attr::Int(data_type::INT64 as i64))],
        )?;
        cx.op("Mul", &format!("{b}/Mul"), &[&format!("{b}/Cast/output_0"), &c], vec![])?;
        let out = format!("{b}/Add_1/output_0");
        cx.node(
            "Add",
            "",
            &format!("{b}/Add_1"),
            &[&format!("{b}/Mul/output_0"), "position_ids"],
            &[&out],
            vec![],
        )?;
        cx.g.value(&out, data_type::INT64, vec![named("batch_size"), named("sequence_length")]);
        position_ids = Some(out);
    }

    // seqlens_k = ReduceSum(attention_mask) - 1, total_seq_len = Shape(attention_mask)[1].
    let one_list = "/model/constants/INT64/[1]";
    cx.op(
        "ReduceSum",
        &format!("{MASK_SUB}/ReduceSum"),
        &["attention_mask", one_list],
        vec![("keepdims", Attr::Int(0))],
    )?;
    cx.op(
        "Sub",
        &format!("{MASK_SUB}/Sub"),
        &[&format!("{MASK_SUB}/ReduceSum/output_0"), one_list],
        vec![],
    )?;
    cx.op(
        "Cast",
        &format!("{MASK_SUB}/Sub/Cast"),
        &[&format!("{MASK_SUB}/Sub/output_0")],
        vec![("to", Attr::Int(data_type::INT32 as i64))],
    )?;
    cx.op("Shape", &format!("{MASK_SUB}/Shape"), &["attention_mask"], vec![])?;
    cx.op(
        "Gather",
        &format!("{MASK_SUB}/Gather"),
        &[&format!("{MASK_SUB}/Shape/output_0"), "/model/constants/INT64/1"],
        vec![("axis", Attr::Int(0))],
    )?;
    cx.op(
        "Cast",
        &format!("{MASK_SUB}/Gather/Cast"),
        &[&format!("{MASK_SUB}/Gather/output_0")],
        vec![("to", Attr::Int(data_type::INT32 as i64))],
    )?;

    // Rotary caches: one pair; LongRoPE on CPU/CUDA picks short or long caches with an If on the
    // total length; on DML (no If) the caches are [short; long] and positions beyond the original
    // context are offset by it.
    let half = rope.half();
    let ctx_len = spec.max_position_embeddings;
    match (longrope, dml) {
        (false, _) => {
            let (cos, sin) = rope.cos_sin(false, ctx_len);
            cx.io_initializer("cos_cache", &[ctx_len, half], &cos)?;
            cx.io_initializer("sin_cache", &[ctx_len, half], &sin)?;
        }
        (true, true) => {
            let (mut cos, mut sin) = rope.cos_sin(false, orig);
            let (lc, ls) = rope.cos_sin(true, ctx_len);
            cos.extend_from_slice(&lc);
            sin.extend_from_slice(&ls);
            cx.io_initializer("cos_cache", &[orig + ctx_len, half], &cos)?;
            cx.io_initializer("sin_cache", &[orig + ctx_len, half], &sin)?;
        }
        (true, false) => {
            let b = "/model/rope_caches_subgraph";
            cx.node(
                "Greater",
                "",
                &format!("{b}/Greater"),
                &[
                    &format!("{MASK_SUB}/Gather/output_0"),
                    &format!("/model/constants/INT64/{orig}"),
                ],
                &[&format!("{b}/Greater/output_0")],
                vec![],
            )?;
            let branch = |which: &str, long: bool, len: usize| {
                let (cos, sin) = rope.cos_sin(long, len);
                let mut nodes = Vec::new();
                let mut outs = Vec::new();
                for (kind, vals) in [("cos", cos), ("sin", sin)] {
                    let out = format!("{kind}_cache_{which}");
                    let t = inline_tensor(
                        "",
                        cx.io,
                        &[len as i64, half as i64],
                        to_bytes(&vals, cx.scheme.io),
                    );
                    let mut node = NodeProto {
                        output: vec![out.clone()],
                        name: Some(format!("/{which}/{kind}_cache/Constant")),
                        op_type: Some("Constant".into()),
                        ..Default::default()
                    };
                    node.attribute.push(attribute("value", Attr::Tensor(t)));
                    nodes.push(node);
                    outs.push(value_info(&out, cx.io, &[fixed(len), fixed(half)]));
                }
                GraphProto {
                    node: nodes,
                    name: Some(format!("{which}_rope_caches_graph")),
                    output: outs,
                    ..Default::default()
                }
            };
            let then_branch = branch("large", true, ctx_len);
            let else_branch = branch("small", false, orig);
            cx.node(
                "If",
                "",
                &format!("{b}/If"),
                &[&format!("{b}/Greater/output_0")],
                &["cos_cache", "sin_cache"],
                vec![
                    ("then_branch", Attr::Graph(then_branch)),
                    ("else_branch", Attr::Graph(else_branch)),
                ],
            )?;
        }
    }
    Ok(position_ids)
}

/// The embedding lookup: float `Gather`, `Transpose` + `Gather` of the float lm_head when tied,
/// or `GatherBlockQuantized` on the int4 lm_head when tied and quantized. Returns its output.
fn embedding<W: Write>(cx: &mut Ctx<'_, W>) -> Result<String, Error> {
    let spec = cx.spec;
    let b = "/model/embed_tokens";
    let (vocab, hidden) = (spec.vocab_size, spec.hidden_size);
    let out = match (spec.tied_embeddings, cx.scheme.weights) {
        (true, OnnxWeights::Int4 { block_size, symmetric, .. }) => {
            // GatherBlockQuantized cannot skip a padded last block: it reads the lm_head's int4
            // weights only when the hidden size is a whole number of blocks. Otherwise the
            // embedding gets its own int4 table in the largest block (at least 16) that divides
            // the hidden size, or stays float when none does.
            let lm_block = block_for(hidden, block_size);
            let own_block = (4..=lm_block.trailing_zeros())
                .rev()
                .map(|p| 1usize << p)
                .find(|b| hidden.is_multiple_of(*b));
            let (weights, block) = if hidden.is_multiple_of(lm_block) {
                ("lm_head.MatMul.weight".to_string(), lm_block)
            } else if let Some(block) = own_block {
                let values = cx.tensor_f32("model.embed_tokens.weight")?;
                let name = "model.embed_tokens.weight";
                cx.quantize_int4(name, &values, vocab, hidden, block, symmetric)?;
                (name.to_string(), block)
            } else {
                let values = cx.tensor_f32("model.embed_tokens.weight")?;
                cx.io_initializer("model.embed_tokens.weight", &[vocab, hidden], &values)?;
                let out = format!("{b}/Gather/output_0");
                cx.node(
                    "Gather",
                    "",
                    &format!("{b}/Gather"),
                    &["model.embed_tokens.weight", "input_ids"],
                    &[&out],
                    vec![],
                )?;
                cx.g.value(&out, cx.io, cx.hidden(hidden));
                return Ok(out);
            };
            let shape_c = format!("/model/constants/INT64/[{vocab}, {}]", hidden / 2);
            let reshaped = format!("{b}/Reshape/output_0");
            cx.node(
                "Reshape",
                "",
                &format!("{b}/Reshape"),
                &[&format!("{weights}_Q4"), &shape_c],
                &[&reshaped],
                vec![],
            )?;
            let mut inputs =
                vec![reshaped.clone(), "input_ids".into(), format!("{weights}_scales")];
            if !symmetric {
                inputs.push(format!("{weights}_zero_points"));
            }
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let out = format!("{b}/GatherBlockQuantized/output_0");
            cx.node(
                "GatherBlockQuantized",
                MS,
                &format!("{b}/GatherBlockQuantized"),
                &inputs,
                &[&out],
                vec![
                    ("bits", Attr::Int(4)),
                    ("block_size", Attr::Int(block as i64)),
                    ("gather_axis", Attr::Int(0)),
                    ("quantize_axis", Attr::Int(1)),
                ],
            )?;
            out
        }
        (true, OnnxWeights::Float) => {
            let t = format!("{b}/Transpose/output_0");
            cx.node(
                "Transpose",
                "",
                &format!("{b}/Transpose"),
                &["lm_head.MatMul.weight"],
                &[&t],
                vec![("perm", Attr::Ints(vec![1, 0]))],
            )?;
            let out = format!("{b}/Gather/output_0");
            cx.node("Gather", "", &format!("{b}/Gather"), &[&t, "input_ids"], &[&out], vec![])?;
            out
        }
        (false, _) => {
            let values = cx.tensor_f32("model.embed_tokens.weight")?;
            cx.io_initializer("model.embed_tokens.weight", &[vocab, hidden], &values)?;
            let out = format!("{b}/Gather/output_0");
            cx.node(
                "Gather",
                "",
                &format!("{b}/Gather"),
                &["model.embed_tokens.weight", "input_ids"],
                &[&out],
                vec![],
            )?;
            out
        }
    };
    cx.g.value(&out, cx.io, cx.hidden(hidden));
    Ok(out)
}

/// An RMS norm: `SimplifiedLayerNormalization` for the first, `SkipSimplifiedLayerNormalization`
/// (adding `skip` to the residual) after. Returns (normed output, new residual).
fn layernorm<W: Write>(
    cx: &mut Ctx<'_, W>,
    layer: usize,
    location: &str,
    residual: &str,
    skip: Option<&str>,
    source_name: &str,
) -> Result<(String, String), Error> {
    let hidden = cx.spec.hidden_size;
    let weight = format!("model.layers.{layer}.{location}_layernorm.weight");
    let values = cx.tensor_f32(source_name)?;
    cx.io_initializer(&weight, &[hidden], &values)?;
    let p = format!("/model/layers.{layer}/{location}_layernorm");
    let out0 = format!("{p}/output_0");
    let eps = Attr::Float(cx.spec.rms_norm_eps as f32);
    // The first norm has nothing to add. The builder uses SimplifiedLayerNormalization there,
    // an ONNX Runtime op declared in the default ONNX domain, which `onnx.checker` rejects
    // ("No Op registered for SimplifiedLayerNormalization"); a SkipSimplifiedLayerNormalization
    // (com.microsoft, on every EP) with an exact zero `x - x` as the skip computes the same values.
    let skip = match skip {
        Some(s) => s.to_string(),
        None => {
            let zero = format!("{p}/Sub/output_0");
            cx.node("Sub", "", &format!("{p}/Sub"), &[residual, residual], &[&zero], vec![])?;
            cx.g.value(&zero, cx.io, cx.hidden(hidden));
            zero
        }
    };
    let out3 = format!("{p}/output_3");
    cx.node(
        "SkipSimplifiedLayerNormalization",
        MS,
        &format!("{p}/SkipLayerNorm"),
        &[residual, &skip, &weight],
        &[&out0, "", "", &out3],
        vec![("epsilon", eps)],
    )?;
    cx.g.value(&out3, cx.io, cx.hidden(hidden));
    cx.g.value(&out0, cx.io, cx.hidden(hidden));
    Ok((out0, out3))
}

fn attention<W: Write>(
    cx: &mut Ctx<'_, W>,
    layer: usize,
    input: &str,
    position_ids: Option<&str>,
) -> Result<String, Error> {
    let spec = cx.spec;
    let p = format!("/model/layers.{layer}/attn");
    let hidden = spec.hidden_size;
    let past_k = format!("past_key_values.{layer}.key");
    let past_v = format!("past_key_values.{layer}.value");
    let present_k = format!("present.{layer}.key");
    let present_v = format!("present.{layer}.value");
    let seqlens = format!("{MASK_SUB}/Sub/Cast/output_0");
    let total = format!("{MASK_SUB}/Gather/Cast/output_0");
    let gqa_out = format!("{p}/GroupQueryAttention/output_0");
    let packed = !rotary_outside(spec, cx.scheme);
    let gqa_inputs: Vec<String> = if packed {
        let parts = [Linear::Q, Linear::K, Linear::V];
        let (w, rows) = cx.linear_rows(layer, &parts)?;
        let mut qkv = cx.matmul(&format!("{p}/qkv_proj/MatMul"), input, &w, rows, hidden, None)?;
        drop(w);
        if let Some(b) = cx.bias_rows(layer, &parts)? {
            qkv = cx.add_bias(&format!("{p}/qkv_proj/Add"), &qkv, &b)?;
        }
        vec![qkv, String::new(), String::new()]
    } else {
        let mut outs = Vec::new();
        for (part, stem) in [(Linear::Q, "q_proj"), (Linear::K, "k_proj"), (Linear::V, "v_proj")] {
            let (w, rows) = cx.linear_rows(layer, &[part])?;
            let mut o = cx.matmul(&format!("{p}/{stem}/MatMul"), input, &w, rows, hidden, None)?;
            if let Some(b) = cx.bias_rows(layer, &[part])? {
                o = cx.add_bias(&format!("{p}/{stem}/Add"), &o, &b)?;
            }
            outs.push(o);
        }
        let pos = position_ids.expect("graphs with RotaryEmbedding nodes take position_ids");
        let partial = spec.rope.rotary_dim != spec.head_dim;
        for (i, (which, heads)) in
            [("q", spec.num_heads), ("k", spec.num_kv_heads)].into_iter().enumerate()
        {
            let name = format!("{p}/{which}_rotary/RotaryEmbedding");
            let out = format!("{name}/output_0");
            cx.node(
                "RotaryEmbedding",
                MS,
                &name,
                &[&outs[i], pos, "cos_cache", "sin_cache"],
                &[&out],
                vec![
                    ("interleaved", Attr::Int(0)),
                    ("num_heads", Attr::Int(if partial { heads as i64 } else { 0 })),
                    (
                        "rotary_embedding_dim",
                        Attr::Int(if partial { spec.rope.rotary_dim as i64 } else { 0 }),
                    ),
                ],
            )?;
            cx.g.value(&out, cx.io, cx.hidden(heads * spec.head_dim));
            outs[i] = out;
        }
        outs
    };
    let (cos, sin) = if packed { ("cos_cache", "sin_cache") } else { ("", "") };
    // A window at least as long as the context changes nothing; the builder writes -1 then.
    let window = match spec.sliding_window {
        Some(sw) if layer >= sw.first_layer && sw.size < spec.max_position_embeddings => {
            sw.size as i64
        }
        _ => -1,
    };
    let inputs = [
        gqa_inputs[0].as_str(),
        gqa_inputs[1].as_str(),
        gqa_inputs[2].as_str(),
        past_k.as_str(),
        past_v.as_str(),
        seqlens.as_str(),
        total.as_str(),
        cos,
        sin,
        "",
        "",
        "",
    ];
    cx.node(
        "GroupQueryAttention",
        MS,
        &format!("{p}/GroupQueryAttention"),
        &inputs,
        &[&gqa_out, &present_k, &present_v],
        vec![
            ("num_heads", Attr::Int(spec.num_heads as i64)),
            ("kv_num_heads", Attr::Int(spec.num_kv_heads as i64)),
            ("scale", Attr::Float(1.0 / (spec.head_dim as f32).sqrt())),
            ("local_window_size", Attr::Int(window)),
            ("softcap", Attr::Float(0.0)),
            ("do_rotary", Attr::Int(packed as i64)),
            ("rotary_interleaved", Attr::Int(0)),
        ],
    )?;
    cx.g.value(&gqa_out, cx.io, cx.hidden(spec.q_dim()));
    let (w, rows) = cx.linear_rows(layer, &[Linear::O])?;
    let mut out =
        cx.matmul(&format!("{p}/o_proj/MatMul"), &gqa_out, &w, rows, spec.q_dim(), None)?;
    if let Some(b) = cx.bias_rows(layer, &[Linear::O])? {
        out = cx.add_bias(&format!("{p}/o_proj/Add"), &out, &b)?;
    }
    Ok(out)
}

fn mlp<W: Write>(cx: &mut Ctx<'_, W>, layer: usize, input: &str) -> Result<String, Error> {
    let spec = cx.spec;
    let p = format!("/model/layers.{layer}/mlp");
    let (hidden, inter) = (spec.hidden_size, spec.intermediate_size);
    let proj = |cx: &mut Ctx<'_, W>, part: Linear, stem: &str, input: &str, k: usize| {
        let (w, rows) = cx.linear_rows(layer, &[part])?;
        let mut o = cx.matmul(&format!("{p}/{stem}/MatMul"), input, &w, rows, k, None)?;
        if let Some(b) = cx.bias_rows(layer, &[part])? {
            o = cx.add_bias(&format!("{p}/{stem}/Add"), &o, &b)?;
        }
        Ok::<_, Error>(o)
    };
    let gate = proj(cx, Linear::Gate, "gate_proj", input, hidden)?;
    let up = proj(cx, Linear::Up, "up_proj", input, hidden)?;
    let sig = format!("{p}/act_fn/Sigmoid/output_0");
    cx.node("Sigmoid", "", &format!("{p}/act_fn/Sigmoid"), &[&gate], &[&sig], vec![])?;
    cx.g.value(&sig, cx.io, cx.hidden(inter));
    let act = format!("{p}/act_fn/Mul/output_0");
    cx.node("Mul", "", &format!("{p}/act_fn/Mul"), &[&gate, &sig], &[&act], vec![])?;
    cx.g.value(&act, cx.io, cx.hidden(inter));
    let prod = format!("{p}/Mul/output_0");
    cx.node("Mul", "", &format!("{p}/Mul"), &[&act, &up], &[&prod], vec![])?;
    cx.g.value(&prod, cx.io, cx.hidden(inter));
    proj(cx, Linear::Down, "down_proj", &prod, inter)
}

fn lm_head<W: Write>(cx: &mut Ctx<'_, W>, input: &str) -> Result<(), Error> {
    let spec = cx.spec;
    let w = cx.tensor_f32(spec.lm_head_name())?;
    cx.matmul("/lm_head/MatMul", input, &w, spec.vocab_size, spec.hidden_size, Some("logits"))?;
    Ok(())
}
