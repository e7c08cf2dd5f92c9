//! A [`DecoderSpec`] rebuilt from a GGUF file's metadata: the inverse of the keys llama.cpp's
//! converter writes (`convert_hf_to_gguf.py` `set_gguf_parameters`; key names from
//! `gguf-py/gguf/constants.py`), for the architectures `llama` (Llama and Mistral), `phi3`
//! (plain, LongRoPE, partial rotary, sliding window) and `qwen2`.
//!
//! Floats are stored as f32 in GGUF. Each is read back as the shortest decimal that rounds to
//! that f32, which is the value config.json held whenever it had at most seven significant
//! digits (`1e-05`, `1.010204`), so a checkpoint taken through GGUF and back gets the same config.

use std::path::Path;

use super::{GgufFile, GgufValue};
use crate::{
    Architecture, Biases, DecoderSpec, Error, Rope, RopeScaling, SlidingWindow,
    config::{MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH},
};

/// The LongRoPE factor tensors llama.cpp's converter writes for Phi-3.
pub(crate) const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
pub(crate) const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// The architectures phiquant reads, as llama.cpp names them.
const ARCHITECTURES: &str = "llama, phi3 or qwen2";

/// Typed access to a GGUF file's metadata, every error naming the file and the key.
pub(crate) struct Meta<'a> {
    pub(crate) file: &'a GgufFile,
}

/// A metadata value as an error message shows it (arrays by their length only).
fn shown(v: &GgufValue) -> String {
    match v {
        GgufValue::String(s) if s.len() > 60 => {
            format!("{:?}...", &s[..s.floor_char_boundary(57)])
        }
        GgufValue::String(s) => format!("{s:?}"),
        GgufValue::Array(_, items) => format!("an array of {} values", items.len()),
        GgufValue::Bool(b) => b.to_string(),
        GgufValue::F32(x) => x.to_string(),
        GgufValue::F64(x) => x.to_string(),
        other => match other.as_u64() {
            Some(n) => n.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// The shortest decimal that rounds to `x` as an f32, as an f64.
pub(crate) fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

impl Meta<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    pub(crate) fn invalid(&self, key: &str, v: &GgufValue, expected: impl Into<String>) -> Error {
        Error::InvalidField {
            path: self.path().to_path_buf(),
            field: key.to_string(),
            value: shown(v),
            expected: expected.into(),
        }
    }

    pub(crate) fn missing(&self, key: &str) -> Error {
        Error::MissingKey { path: self.path().to_path_buf(), key: key.to_string() }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&GgufValue> {
        self.file.get(key)
    }

    /// An integer from 1 to `max`.
    pub(crate) fn uint(&self, key: &str, max: u64) -> Result<Option<usize>, Error> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match v.as_u64() {
            Some(n) if n >= 1 && n <= max => Ok(Some(n as usize)),
            _ => Err(self.invalid(key, v, format!("an integer from 1 to {max}"))),
        }
    }

    fn required_uint(&self, key: &str, max: u64) -> Result<usize, Error> {
        self.uint(key, max)?.ok_or_else(|| self.missing(key))
    }

    /// An integer from 0 to `max`.
    fn uint0(&self, key: &str, max: u64) -> Result<Option<usize>, Error> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n as usize)),
            _ => Err(self.invalid(key, v, format!("an integer from 0 to {max}"))),
        }
    }

    /// A finite positive float, read back as its decimal.
    fn positive(&self, key: &str) -> Result<Option<f64>, Error> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let x = match v {
            GgufValue::F32(x) => decimal(*x),
            other => other.as_f64().unwrap_or(f64::NAN),
        };
        if x.is_finite() && x > 0.0 {
            Ok(Some(x))
        } else {
            Err(self.invalid(key, v, "a finite positive number"))
        }
    }

    pub(crate) fn token_id(&self, key: &str) -> Result<Option<u32>, Error> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match v.as_u64() {
            Some(n) if n <= u64::from(u32::MAX) => Ok(Some(n as u32)),
            _ => Err(self.invalid(key, v, "a token id")),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.invalid(key, v, "true or false")),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&str>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.invalid(key, v, "a string")),
        }
    }

    /// A 1-D f32 tensor's values, each read back as its decimal.
    fn factors(&self, tensor: &str, len: usize) -> Result<Vec<f64>, Error> {
        let info = self.file.info(tensor).ok_or_else(|| Error::Tensor {
            path: self.path().to_path_buf(),
            tensor: tensor.to_string(),
            problem: crate::TensorProblem::MissingFromGguf,
        })?;
        if info.dims != [len as u64] {
            return Err(Error::Tensor {
                path: self.path().to_path_buf(),
                tensor: tensor.to_string(),
                problem: crate::TensorProblem::GgufDims {
                    found: info.dims.clone(),
                    expected: vec![len as u64],
                },
            });
        }
        Ok(self.file.read_f32(tensor)?.into_iter().map(decimal).collect())
    }
}

impl DecoderSpec {
    /// Rebuilds the model that a GGUF file's metadata describes (llama.cpp's `llama`, `phi3` and
    /// `qwen2` architectures; a `llama` file with a sliding window is Mistral), checked as a
    /// config.json would be.
    ///
    /// What GGUF does not record is filled in as follows: the LM head is tied when the file has
    /// no `output.weight`; Llama biases are read off the tensors present; Qwen2 has no sliding
    /// window (GGUF does not store `max_window_layers`, and llama.cpp runs Qwen2 without); only
    /// one end-of-sequence token is stored (`tokenizer.ggml.eos_token_id`, plus `eot_token_id`
    /// when present); the dtype is not declared.
    pub fn from_gguf(file: &GgufFile) -> Result<DecoderSpec, Error> {
        let m = Meta { file };
        let key = "general.architecture";
        let arch = m.str(key)?.ok_or_else(|| m.missing(key))?;
        let mut architecture = match arch {
            "llama" => Architecture::Llama,
            "phi3" => Architecture::Phi3,
            "qwen2" => Architecture::Qwen2,
            _ => {
                return Err(m.invalid(
                    key,
                    &GgufValue::String(arch.into()),
                    format!("{ARCHITECTURES} (the architectures phiquant reads)"),
                ));
            }
        };
        let k = |name: &str| format!("{arch}.{name}");

        let num_layers = m.required_uint(&k("block_count"), MAX_LAYERS)?;
        let max_position_embeddings = m.required_uint(&k("context_length"), MAX_CONTEXT)?;
        let hidden_size = m.required_uint(&k("embedding_length"), MAX_WIDTH)?;
        let intermediate_size = m.required_uint(&k("feed_forward_length"), MAX_WIDTH)?;
        let heads_key = k("attention.head_count");
        let num_heads = m.required_uint(&heads_key, MAX_HEADS)?;
        let kv_key = k("attention.head_count_kv");
        let num_kv_heads = m.uint(&kv_key, MAX_HEADS)?.unwrap_or(num_heads);
        if num_heads % num_kv_heads != 0 {
            return Err(m.invalid(
                &kv_key,
                &GgufValue::U64(num_kv_heads as u64),
                format!("a divisor of {heads_key} ({num_heads})"),
            ));
        }
        let key_length = m.uint(&k("attention.key_length"), MAX_WIDTH)?;
        let value_length = m.uint(&k("attention.value_length"), MAX_WIDTH)?;
        let head_dim = match key_length {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(m.invalid(
                    &heads_key,
                    &GgufValue::U64(num_heads as u64),
                    format!(
                        "a divisor of {} ({hidden_size}) when {} is absent",
                        k("embedding_length"),
                        k("attention.key_length")
                    ),
                ));
            }
        };
        if let Some(v) = value_length
            && v != head_dim
        {
            return Err(m.invalid(
                &k("attention.value_length"),
                &GgufValue::U64(v as u64),
                format!("the key length ({head_dim}): phiquant's models have one head dimension"),
            ));
        }
        if !head_dim.is_multiple_of(2) {
            // Rotary embeddings turn pairs of dimensions, and the q/k row order halves heads.
            let (key, v) = match key_length {
                Some(d) => (k("attention.key_length"), d),
                None => (heads_key.clone(), num_heads),
            };
            return Err(m.invalid(
                &key,
                &GgufValue::U64(v as u64),
                format!("a head size that is even (got {head_dim})"),
            ));
        }
        let rms_key = k("attention.layer_norm_rms_epsilon");
        let rms_norm_eps = m.positive(&rms_key)?.ok_or_else(|| m.missing(&rms_key))?;

        // The vocabulary is the embedding's row count (ne1).
        let embd = file.info("token_embd.weight").ok_or_else(|| Error::Tensor {
            path: file.path().to_path_buf(),
            tensor: "token_embd.weight".into(),
            problem: crate::TensorProblem::MissingFromGguf,
        })?;
        let vocab_size = match embd.dims.as_slice() {
            [_, v] if *v >= 1 && *v <= MAX_VOCAB => *v as usize,
            _ => {
                return Err(Error::Tensor {
                    path: file.path().to_path_buf(),
                    tensor: "token_embd.weight".into(),
                    problem: crate::TensorProblem::GgufDims {
                        found: embd.dims.clone(),
                        expected: vec![hidden_size as u64, 0],
                    },
                });
            }
        };
        if let Some(v) = m.uint(&k("vocab_size"), MAX_VOCAB)?
            && v != vocab_size
        {
            return Err(m.invalid(
                &k("vocab_size"),
                &GgufValue::U64(v as u64),
                format!("the rows of token_embd.weight ({vocab_size})"),
            ));
        }

        let window = m.uint0(&k("attention.sliding_window"), MAX_CONTEXT)?.filter(|w| *w > 0);
        if architecture == Architecture::Llama && window.is_some() {
            // llama.cpp's converter writes Mistral as `llama`; only Mistral has a window.
            architecture = Architecture::Mistral;
        }
        // Qwen2's window depends on `max_window_layers`, which GGUF does not store; llama.cpp
        // runs Qwen2 without a window, and so does the rebuilt model.
        let sliding_window = window
            .filter(|_| architecture != Architecture::Qwen2)
            .map(|size| SlidingWindow { size, first_layer: 0 });

        if file.info("rope_freqs.weight").is_some() {
            return Err(Error::Unsupported {
                what: format!(
                    "{}: tensor `rope_freqs.weight` (Llama 3 rope scaling)",
                    file.path().display()
                ),
                limit: "phiquant cannot recover config.json's llama3 rope_scaling from it".into(),
            });
        }
        let theta = m.positive(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        let rotary_dim = m.uint(&k("rope.dimension_count"), MAX_WIDTH)?.unwrap_or(head_dim);
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
            return Err(m.invalid(
                &k("rope.dimension_count"),
                &GgufValue::U64(rotary_dim as u64),
                format!("an even number from 2 to the head size ({head_dim})"),
            ));
        }
        let scaling = match m.str(&k("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => {
                let fk = k("rope.scaling.factor");
                RopeScaling::Linear { factor: m.positive(&fk)?.ok_or_else(|| m.missing(&fk))? }
            }
            Some(other) => {
                return Err(m.invalid(
                    &k("rope.scaling.type"),
                    &GgufValue::String(other.into()),
                    "none or linear (the rope scaling phiquant reads from GGUF)",
                ));
            }
        };
        let long = file.info(ROPE_FACTORS_LONG).is_some();
        let short = file.info(ROPE_FACTORS_SHORT).is_some();
        let scaling = if long || short {
            if architecture != Architecture::Phi3 || scaling != RopeScaling::None {
                let tensor = if long { ROPE_FACTORS_LONG } else { ROPE_FACTORS_SHORT };
                return Err(Error::Tensor {
                    path: file.path().to_path_buf(),
                    tensor: tensor.into(),
                    problem: crate::TensorProblem::UnexpectedGguf {
                        architecture: arch.into(),
                        layers: num_layers,
                    },
                });
            }
            let half = rotary_dim / 2;
            let ok = k("rope.scaling.original_context_length");
            let original = m.required_uint(&ok, MAX_CONTEXT)?;
            let short_factor = m.factors(ROPE_FACTORS_SHORT, half)?;
            let long_factor = m.factors(ROPE_FACTORS_LONG, half)?;
            let mut longrope = RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings: original,
                short_mscale: None,
                long_mscale: None,
                attention_factor: None,
            };
            // The attention factor is stored whether or not config.json gave one: keep it only
            // when it differs from the one transformers derives from the two contexts.
            if let Some(stored) = m.get(&k("rope.scaling.attn_factor")) {
                let GgufValue::F32(stored) = *stored else {
                    return Err(m.invalid(&k("rope.scaling.attn_factor"), stored, "a float32"));
                };
                let probe = DecoderSpec {
                    rope: Rope { theta, rotary_dim, scaling: longrope.clone() },
                    max_position_embeddings,
                    ..placeholder(architecture)
                };
                let derived = probe.longrope_attention_factor().unwrap_or(1.0);
                if derived as f32 != stored
                    && let RopeScaling::LongRope { attention_factor, .. } = &mut longrope
                {
                    *attention_factor = Some(decimal(stored));
                }
            }
            longrope
        } else {
            scaling
        };

        let has = |name: &str| file.info(name).is_some();
        let biases = match architecture {
            Architecture::Llama => {
                let attn = has("blk.0.attn_q.bias");
                Biases { qkv: attn, o: attn, mlp: has("blk.0.ffn_down.bias") }
            }
            Architecture::Qwen2 => Biases { qkv: true, o: false, mlp: false },
            _ => Biases::default(),
        };

        let mut eos_token_ids = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if let Some(id) = m.token_id(key)?
                && !eos_token_ids.contains(&id)
            {
                eos_token_ids.push(id);
            }
        }
        let spec = DecoderSpec {
            architecture,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            explicit_head_dim: key_length.is_some(),
            vocab_size,
            max_position_embeddings,
            rms_norm_eps,
            tied_embeddings: !has("output.weight"),
            rope: Rope { theta, rotary_dim, scaling },
            sliding_window,
            biases,
            bos_token_id: m.token_id("tokenizer.ggml.bos_token_id")?,
            eos_token_ids,
            pad_token_id: m.token_id("tokenizer.ggml.padding_token_id")?,
            declared_dtype: None,
        };
        // Every check config.json gets (rotary dimension, LongRoPE factor counts, contexts).
        DecoderSpec::from_config_value(file.path(), &spec.to_config_value())
    }
}

/// A spec with every field but the architecture zero, for computing derived values.
fn placeholder(architecture: Architecture) -> DecoderSpec {
    DecoderSpec {
        architecture,
        hidden_size: 0,
        intermediate_size: 0,
        num_layers: 0,
        num_heads: 0,
        num_kv_heads: 0,
        head_dim: 0,
        explicit_head_dim: false,
        vocab_size: 0,
        max_position_embeddings: 0,
        rms_norm_eps: 0.0,
        tied_embeddings: false,
        rope: Rope { theta: 0.0, rotary_dim: 0, scaling: RopeScaling::None },
        sliding_window: None,
        biases: Biases::default(),
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        pad_token_id: None,
        declared_dtype: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_of_f32_values() {
        assert_eq!(decimal(1e-5), 1e-5);
        assert_eq!(decimal(1.010204), 1.010204);
        assert_eq!(decimal(500_000.0), 500_000.0);
        assert_eq!(decimal(0.1), 0.1);
    }
}
