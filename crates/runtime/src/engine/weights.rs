//! The model's weights in f32, laid out for the engine: q, k and v stacked into one matrix and
//! gate and up into another, whatever the checkpoint's layout, so that each is one matrix product.

use crate::{DecoderSpec, Error, Linear, WeightSource};

/// One decoder layer's weights, f32, row-major in the Hugging Face `[out, in]` layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// RMSNorm before attention, `[hidden]`.
    pub attn_norm: Vec<f32>,
    /// q, k and v stacked by rows, `[q_dim + 2 * kv_dim, hidden]`.
    pub qkv: Vec<f32>,
    /// Their biases, when the model has them, `[q_dim + 2 * kv_dim]`.
    pub qkv_bias: Option<Vec<f32>>,
    /// Attention output, `[hidden, q_dim]`.
    pub o: Vec<f32>,
    /// Its bias.
    pub o_bias: Option<Vec<f32>>,
    /// RMSNorm before the MLP, `[hidden]`.
    pub ffn_norm: Vec<f32>,
    /// gate and up stacked by rows, `[2 * intermediate, hidden]`.
    pub gate_up: Vec<f32>,
    /// Their biases.
    pub gate_up_bias: Option<Vec<f32>>,
    /// MLP down projection, `[hidden, intermediate]`.
    pub down: Vec<f32>,
    /// Its bias.
    pub down_bias: Option<Vec<f32>>,
}

/// Rows `rows` of the weight (or bias) of `linear` in layer `layer`, as f32.
fn slice_rows(
    source: &dyn WeightSource,
    layer: usize,
    linear: Linear,
    bias: bool,
) -> Result<Option<Vec<f32>>, Error> {
    let spec = source.spec();
    let loc = if bias {
        spec.bias_location(layer, linear)
    } else {
        Some(spec.weight_location(layer, linear))
    };
    let Some(loc) = loc else { return Ok(None) };
    let view = source.tensor(&loc.tensor)?;
    let cols = if bias { 1 } else { view.shape[1] };
    let all = view.to_f32()?;
    Ok(Some(all[loc.rows.start * cols..loc.rows.end * cols].to_vec()))
}

fn stacked(
    source: &dyn WeightSource,
    layer: usize,
    parts: &[Linear],
    bias: bool,
) -> Result<Option<Vec<f32>>, Error> {
    let mut out = Vec::new();
    for &p in parts {
        match slice_rows(source, layer, p, bias)? {
            Some(v) => out.extend_from_slice(&v),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

fn norm(source: &dyn WeightSource, name: &str) -> Result<Vec<f32>, Error> {
    source.tensor(name)?.to_f32()
}

impl LayerWeights {
    /// Loads layer `layer` from `source`, widening every tensor to f32.
    pub fn load(source: &dyn WeightSource, layer: usize) -> Result<LayerWeights, Error> {
        let p = format!("model.layers.{layer}.");
        let need = |v: Option<Vec<f32>>| v.expect("weights always exist");
        Ok(LayerWeights {
            attn_norm: norm(source, &format!("{p}input_layernorm.weight"))?,
            qkv: need(stacked(source, layer, &[Linear::Q, Linear::K, Linear::V], false)?),
            qkv_bias: stacked(source, layer, &[Linear::Q, Linear::K, Linear::V], true)?,
            o: need(slice_rows(source, layer, Linear::O, false)?),
            o_bias: slice_rows(source, layer, Linear::O, true)?,
            ffn_norm: norm(source, &format!("{p}post_attention_layernorm.weight"))?,
            gate_up: need(stacked(source, layer, &[Linear::Gate, Linear::Up], false)?),
            gate_up_bias: stacked(source, layer, &[Linear::Gate, Linear::Up], true)?,
            down: need(slice_rows(source, layer, Linear::Down, false)?),
            down_bias: slice_rows(source, layer, Linear::Down, true)?,
        })
    }
}

/// The whole model's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWeights {
    /// Token embedding, `[vocab, hidden]`.
    pub embed: Vec<f32>,
    /// Decoder layers.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm.
    pub final_norm: Vec<f32>,
    /// LM head, `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<Vec<f32>>,
}

impl ModelWeights {
    /// Loads every tensor of `source` as f32.
    pub fn load(source: &dyn WeightSource) -> Result<ModelWeights, Error> {
        let spec: &DecoderSpec = source.spec();
        let layers = (0..spec.num_layers)
            .map(|l| LayerWeights::load(source, l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ModelWeights {
            embed: norm(source, "model.embed_tokens.weight")?,
            layers,
            final_norm: norm(source, "model.norm.weight")?,
            lm_head: if spec.tied_embeddings {
                None
            } else {
                Some(norm(source, spec.lm_head_name())?)
            },
        })
    }

    /// No weights (for building rotary tables without a model).
    pub(crate) fn empty() -> ModelWeights {
        ModelWeights {
            embed: Vec::new(),
            layers: Vec::new(),
            final_norm: Vec::new(),
            lm_head: None,
        }
    }

    /// The LM head matrix.
    pub fn head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }
}
