//! The canonical description of a decoder-only transformer, shared by every architecture.

use serde::Serialize;

/// The model families phiquant reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum Architecture {
    /// `Phi3ForCausalLM`: Phi-3, Phi-3.5 and Phi-4-mini (fused `qkv_proj` and `gate_up_proj`).
    Phi3,
    /// `LlamaForCausalLM`.
    Llama,
    /// `MistralForCausalLM`.
    Mistral,
    /// `Qwen2ForCausalLM` (biases on q, k and v).
    Qwen2,
}

impl Architecture {
    /// Every architecture, in a fixed order.
    pub const ALL: [Architecture; 4] =
        [Architecture::Phi3, Architecture::Llama, Architecture::Mistral, Architecture::Qwen2];

    /// The transformers class name (`architectures[0]` in config.json).
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Phi3 => "Phi3ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The transformers `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Phi3 => "phi3",
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
        }
    }

    /// Whether checkpoints of this family store q, k and v (and gate and up) as one fused matrix.
    pub fn is_fused(self) -> bool {
        matches!(self, Architecture::Phi3)
    }
}

/// Rotary position embedding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rope {
    /// The base `theta`.
    pub theta: f64,
    /// How many leading dimensions of each head rotate (`head_dim * partial_rotary_factor`).
    pub rotary_dim: usize,
    /// Context extension, if any.
    pub scaling: RopeScaling,
}

/// Context-extension schemes for rotary embeddings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RopeScaling {
    /// Plain rotary embedding.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// Low-frequency division factor.
        factor: f64,
        /// Wavelength threshold factor below which frequencies are divided.
        low_freq_factor: f64,
        /// Wavelength threshold factor above which frequencies are kept.
        high_freq_factor: f64,
        /// The context the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
    /// Phi-3's LongRoPE: per-frequency factors, `short_factor` within the original context and
    /// `long_factor` beyond it.
    LongRope {
        /// Factors used up to the original context (`rotary_dim / 2` values).
        short_factor: Vec<f64>,
        /// Factors used beyond it (`rotary_dim / 2` values).
        long_factor: Vec<f64>,
        /// The context the model was pre-trained with.
        original_max_position_embeddings: usize,
        /// Explicit cos/sin scale for short contexts, when the config gives one.
        short_mscale: Option<f64>,
        /// Explicit cos/sin scale for long contexts, when the config gives one.
        long_mscale: Option<f64>,
        /// Explicit attention factor (transformers 5 `rope_parameters`), when given.
        attention_factor: Option<f64>,
    },
}

impl RopeScaling {
    /// A short name: `default`, `linear`, `llama3` or `longrope`.
    pub fn kind(&self) -> &'static str {
        match self {
            RopeScaling::None => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::LongRope { .. } => "longrope",
        }
    }
}

/// Sliding-window attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlidingWindow {
    /// How many past positions a token attends to.
    pub size: usize,
    /// The first layer that uses the window (Qwen2's `max_window_layers`; 0 elsewhere).
    pub first_layer: usize,
}

/// Which linear layers carry a bias vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Biases {
    /// q, k and v projections.
    pub qkv: bool,
    /// Attention output projection.
    pub o: bool,
    /// gate, up and down projections.
    pub mlp: bool,
}

/// One decoder-only transformer, independent of how its checkpoint names things.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecoderSpec {
    /// The family.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Whether config.json states `head_dim` (rather than implying hidden / heads).
    pub explicit_head_dim: bool,
    /// Rows of the embedding and LM head.
    pub vocab_size: usize,
    /// The longest context the model supports.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Whether the LM head reuses the embedding matrix.
    pub tied_embeddings: bool,
    /// Rotary embedding.
    pub rope: Rope,
    /// Sliding-window attention, if used.
    pub sliding_window: Option<SlidingWindow>,
    /// Bias vectors.
    pub biases: Biases,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (one or several).
    pub eos_token_ids: Vec<u32>,
    /// Padding token.
    pub pad_token_id: Option<u32>,
    /// The dtype the checkpoint declares (`torch_dtype` or `dtype`), as written.
    pub declared_dtype: Option<String>,
}

impl DecoderSpec {
    /// Rows of the query projection (`num_heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Rows of the key (and of the value) projection (`num_kv_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// LongRoPE's scale of cos and sin: the config's `attention_factor`, else
    /// `sqrt(1 + ln(max / original) / ln(original))` when the context is extended (transformers'
    /// `_compute_longrope_parameters`, which llama.cpp's converter writes as
    /// `rope.scaling.attn_factor`); `None` for other rotary schemes.
    pub fn longrope_attention_factor(&self) -> Option<f64> {
        let RopeScaling::LongRope { original_max_position_embeddings, attention_factor, .. } =
            &self.rope.scaling
        else {
            return None;
        };
        let orig = *original_max_position_embeddings as f64;
        let factor = self.max_position_embeddings as f64 / orig;
        Some(attention_factor.unwrap_or(if factor <= 1.0 {
            1.0
        } else {
            (1.0 + factor.ln() / orig.ln()).sqrt()
        }))
    }

    /// The context the model was pre-trained with (the LongRoPE or Llama 3 original context, or
    /// the maximum context otherwise).
    pub fn original_context(&self) -> usize {
        match &self.rope.scaling {
            RopeScaling::LongRope { original_max_position_embeddings, .. }
            | RopeScaling::Llama3 { original_max_position_embeddings, .. } => {
                *original_max_position_embeddings
            }
            RopeScaling::None | RopeScaling::Linear { .. } => self.max_position_embeddings,
        }
    }
}
