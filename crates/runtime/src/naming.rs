//! One mapping from each architecture's tensor names, fused or not, onto the canonical parts of a
//! decoder.
//!
//! All four families use transformers' `model.layers.N.*` names; Phi-3 fuses q, k and v into
//! `self_attn.qkv_proj` (rows: q, then k, then v) and gate and up into `mlp.gate_up_proj` (rows:
//! gate, then up), as in transformers' `modeling_phi3.py`.

use std::ops::Range;

use serde::Serialize;

use crate::DecoderSpec;

/// A linear projection of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Linear {
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// MLP gate projection.
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
}

impl Linear {
    /// Every projection, in layer order.
    pub const ALL: [Linear; 7] =
        [Linear::Q, Linear::K, Linear::V, Linear::O, Linear::Gate, Linear::Up, Linear::Down];
}

/// What a stored tensor holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TensorRole {
    /// Token embedding, `[vocab, hidden]`.
    Embedding,
    /// Output projection, `[vocab, hidden]`.
    LmHead,
    /// The final RMSNorm.
    FinalNorm,
    /// The RMSNorm before attention.
    AttnNorm {
        /// Layer index.
        layer: usize,
    },
    /// The RMSNorm before the MLP.
    FfnNorm {
        /// Layer index.
        layer: usize,
    },
    /// A weight matrix holding one projection, or several stacked by rows when fused.
    Weight {
        /// Layer index.
        layer: usize,
        /// The projections, in row order.
        parts: Vec<Linear>,
    },
    /// A bias vector of one projection, or of several when fused.
    Bias {
        /// Layer index.
        layer: usize,
        /// The projections, in order.
        parts: Vec<Linear>,
    },
}

impl TensorRole {
    /// Whether this is a 2-D matrix multiplied with activations (a candidate for quantization).
    pub fn is_matrix(&self) -> bool {
        matches!(self, TensorRole::Embedding | TensorRole::LmHead | TensorRole::Weight { .. })
    }
}

/// A tensor the config implies, with its shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedTensor {
    /// The name in the checkpoint.
    pub name: String,
    /// The shape (rows first, as stored).
    pub shape: Vec<usize>,
    /// What it holds.
    pub role: TensorRole,
}

/// Where a canonical projection lives in the checkpoint: a range of rows of a stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSlice {
    /// The stored tensor's name.
    pub tensor: String,
    /// The rows of the projection within it.
    pub rows: Range<usize>,
}

/// Tensors some checkpoints carry that hold no weights of their own: older transformers saved
/// the rotary `inv_freq` buffer, and some tied checkpoints save a copy of the embedding as the
/// LM head.
pub(crate) fn is_ignorable(spec: &DecoderSpec, name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq") || (spec.tied_embeddings && name == LM_HEAD)
}

pub(crate) const LM_HEAD: &str = "lm_head.weight";

fn layer_prefix(layer: usize) -> String {
    format!("model.layers.{layer}.")
}

impl DecoderSpec {
    /// Rows and columns of a projection's weight: `[out_features, in_features]`.
    pub fn linear_shape(&self, linear: Linear) -> [usize; 2] {
        match linear {
            Linear::Q => [self.q_dim(), self.hidden_size],
            Linear::K | Linear::V => [self.kv_dim(), self.hidden_size],
            Linear::O => [self.hidden_size, self.q_dim()],
            Linear::Gate | Linear::Up => [self.intermediate_size, self.hidden_size],
            Linear::Down => [self.hidden_size, self.intermediate_size],
        }
    }

    /// The stored groups of projections: each inner list is stored as one tensor.
    fn weight_groups(&self) -> Vec<(&'static str, Vec<Linear>)> {
        if self.architecture.is_fused() {
            vec![
                ("self_attn.qkv_proj", vec![Linear::Q, Linear::K, Linear::V]),
                ("self_attn.o_proj", vec![Linear::O]),
                ("mlp.gate_up_proj", vec![Linear::Gate, Linear::Up]),
                ("mlp.down_proj", vec![Linear::Down]),
            ]
        } else {
            vec![
                ("self_attn.q_proj", vec![Linear::Q]),
                ("self_attn.k_proj", vec![Linear::K]),
                ("self_attn.v_proj", vec![Linear::V]),
                ("self_attn.o_proj", vec![Linear::O]),
                ("mlp.gate_proj", vec![Linear::Gate]),
                ("mlp.up_proj", vec![Linear::Up]),
                ("mlp.down_proj", vec![Linear::Down]),
            ]
        }
    }

    fn has_bias(&self, linear: Linear) -> bool {
        match linear {
            Linear::Q | Linear::K | Linear::V => self.biases.qkv,
            Linear::O => self.biases.o,
            Linear::Gate | Linear::Up | Linear::Down => self.biases.mlp,
        }
    }

    /// Every tensor the config implies, in a fixed order: embedding, each layer, final norm, LM
    /// head.
    pub fn expected_tensors(&self) -> Vec<ExpectedTensor> {
        let mut out = vec![ExpectedTensor {
            name: "model.embed_tokens.weight".into(),
            shape: vec![self.vocab_size, self.hidden_size],
            role: TensorRole::Embedding,
        }];
        let norm =
            |name: String, role| ExpectedTensor { name, shape: vec![self.hidden_size], role };
        for layer in 0..self.num_layers {
            let p = layer_prefix(layer);
            out.push(norm(format!("{p}input_layernorm.weight"), TensorRole::AttnNorm { layer }));
            for (stem, parts) in self.weight_groups() {
                let rows: usize = parts.iter().map(|l| self.linear_shape(*l)[0]).sum();
                let cols = self.linear_shape(parts[0])[1];
                if parts.iter().all(|l| self.has_bias(*l)) {
                    out.push(ExpectedTensor {
                        name: format!("{p}{stem}.bias"),
                        shape: vec![rows],
                        role: TensorRole::Bias { layer, parts: parts.clone() },
                    });
                }
                out.push(ExpectedTensor {
                    name: format!("{p}{stem}.weight"),
                    shape: vec![rows, cols],
                    role: TensorRole::Weight { layer, parts },
                });
            }
            out.push(norm(
                format!("{p}post_attention_layernorm.weight"),
                TensorRole::FfnNorm { layer },
            ));
        }
        out.push(norm("model.norm.weight".into(), TensorRole::FinalNorm));
        if !self.tied_embeddings {
            out.push(ExpectedTensor {
                name: LM_HEAD.into(),
                shape: vec![self.vocab_size, self.hidden_size],
                role: TensorRole::LmHead,
            });
        }
        out
    }

    fn locate(&self, layer: usize, linear: Linear, suffix: &str) -> TensorSlice {
        let (stem, parts) = self
            .weight_groups()
            .into_iter()
            .find(|(_, parts)| parts.contains(&linear))
            .expect("every projection belongs to one stored group");
        let start: usize =
            parts.iter().take_while(|l| **l != linear).map(|l| self.linear_shape(*l)[0]).sum();
        TensorSlice {
            tensor: format!("{}{stem}.{suffix}", layer_prefix(layer)),
            rows: start..start + self.linear_shape(linear)[0],
        }
    }

    /// Where the weight of `linear` in `layer` is stored.
    pub fn weight_location(&self, layer: usize, linear: Linear) -> TensorSlice {
        self.locate(layer, linear, "weight")
    }

    /// Where the bias of `linear` in `layer` is stored, if it has one.
    pub fn bias_location(&self, layer: usize, linear: Linear) -> Option<TensorSlice> {
        self.has_bias(linear).then(|| self.locate(layer, linear, "bias"))
    }

    /// The name of the matrix used as the LM head (the embedding when tied).
    pub fn lm_head_name(&self) -> &'static str {
        if self.tied_embeddings { "model.embed_tokens.weight" } else { LM_HEAD }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, Biases, Rope, RopeScaling};

    fn spec(architecture: Architecture) -> DecoderSpec {
        DecoderSpec {
            architecture,
            hidden_size: 64,
            intermediate_size: 172,
            num_layers: 2,
            num_heads: 8,
            num_kv_heads: 4,
            head_dim: 8,
            explicit_head_dim: true,
            vocab_size: 512,
            max_position_embeddings: 512,
            rms_norm_eps: 1e-5,
            tied_embeddings: true,
            rope: Rope { theta: 1e4, rotary_dim: 8, scaling: RopeScaling::None },
            sliding_window: None,
            biases: if architecture == Architecture::Qwen2 {
                Biases { qkv: true, o: false, mlp: false }
            } else {
                Biases::default()
            },
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
            declared_dtype: None,
        }
    }

    #[test]
    fn fused_phi3_slices() {
        let s = spec(Architecture::Phi3);
        let k = s.weight_location(1, Linear::K);
        assert_eq!(k.tensor, "model.layers.1.self_attn.qkv_proj.weight");
        assert_eq!(k.rows, 64..96);
        assert_eq!(s.weight_location(0, Linear::V).rows, 96..128);
        let up = s.weight_location(0, Linear::Up);
        assert_eq!(up.tensor, "model.layers.0.mlp.gate_up_proj.weight");
        assert_eq!(up.rows, 172..344);
        let names: Vec<_> = s.expected_tensors().into_iter().map(|t| (t.name, t.shape)).collect();
        assert!(
            names.contains(&("model.layers.0.self_attn.qkv_proj.weight".into(), vec![128, 64]))
        );
        assert!(names.contains(&("model.layers.0.mlp.gate_up_proj.weight".into(), vec![344, 64])));
        // Tied: no LM head; 1 embedding + 2 x (2 norms + 4 matrices) + final norm.
        assert_eq!(names.len(), 1 + 2 * 6 + 1);
    }

    #[test]
    fn split_llama_and_qwen2_biases() {
        let s = spec(Architecture::Llama);
        assert_eq!(
            s.weight_location(0, Linear::Down).tensor,
            "model.layers.0.mlp.down_proj.weight"
        );
        assert_eq!(s.weight_location(0, Linear::Down).rows, 0..64);
        assert_eq!(s.bias_location(0, Linear::Q), None);
        let q = spec(Architecture::Qwen2);
        let b = q.bias_location(1, Linear::V).unwrap();
        assert_eq!(b.tensor, "model.layers.1.self_attn.v_proj.bias");
        assert_eq!(b.rows, 0..32);
        assert_eq!(q.bias_location(1, Linear::O), None);
        let biases =
            q.expected_tensors().into_iter().filter(|t| matches!(t.role, TensorRole::Bias { .. }));
        assert_eq!(biases.count(), 2 * 3);
    }
}
