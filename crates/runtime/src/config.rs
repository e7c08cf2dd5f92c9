//! Reading a Hugging Face `config.json` into a [`DecoderSpec`], and writing one back.
//!
//! The field names and defaults follow transformers' `configuration_{phi3,llama,mistral,qwen2}.py`.
//! transformers 5 moved `rope_theta` and `rope_scaling` into one `rope_parameters` object; both
//! spellings are read, and the transformers 4 spelling (which transformers 5 still reads) is
//! written.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{
    Architecture, Biases, DecoderSpec, Error, Rope, RopeScaling, SlidingWindow, read_json_file,
};

/// Upper bounds on config values. They are far above any real model and keep a hostile config from
/// driving huge allocations later on.
pub(crate) const MAX_LAYERS: u64 = 1024;
pub(crate) const MAX_WIDTH: u64 = 1 << 20;
pub(crate) const MAX_HEADS: u64 = 4096;
pub(crate) const MAX_VOCAB: u64 = 1 << 23;
pub(crate) const MAX_CONTEXT: u64 = 1 << 26;
const MAX_CONFIG_BYTES: u64 = 16 << 20;

impl DecoderSpec {
    /// Reads and checks `config.json` at `path`.
    pub fn from_config_file(path: &Path) -> Result<DecoderSpec, Error> {
        let value = read_json_file(path, MAX_CONFIG_BYTES)?;
        DecoderSpec::from_config_value(path, &value)
    }

    /// Builds a spec from an already parsed config; `path` names the file in errors.
    pub fn from_config_value(path: &Path, value: &Value) -> Result<DecoderSpec, Error> {
        let obj = value.as_object().ok_or_else(|| Error::InvalidField {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            value: kind_of(value).into(),
            expected: "a JSON object".into(),
        })?;
        Fields { path: path.to_path_buf(), obj }.spec()
    }
}

impl DecoderSpec {
    /// The spec as a transformers 4 `config.json` object, which [`DecoderSpec::from_config_value`]
    /// reads back into an equal spec and transformers loads. `torch_dtype` is the spec's
    /// `declared_dtype`. Keys are sorted, so the text is deterministic.
    pub fn to_config_value(&self) -> Value {
        let mut c = Map::new();
        let mut put = |k: &str, v: Value| {
            c.insert(k.to_string(), v);
        };
        let a = self.architecture;
        put("architectures", Value::from(vec![a.class_name()]));
        put("model_type", a.model_type().into());
        put("hidden_act", "silu".into());
        put("hidden_size", self.hidden_size.into());
        put("intermediate_size", self.intermediate_size.into());
        put("num_hidden_layers", self.num_layers.into());
        put("num_attention_heads", self.num_heads.into());
        put("num_key_value_heads", self.num_kv_heads.into());
        if self.explicit_head_dim {
            put("head_dim", self.head_dim.into());
        }
        put("vocab_size", self.vocab_size.into());
        put("max_position_embeddings", self.max_position_embeddings.into());
        put("rms_norm_eps", self.rms_norm_eps.into());
        put("rope_theta", self.rope.theta.into());
        if self.rope.rotary_dim != self.head_dim {
            put(
                "partial_rotary_factor",
                partial_rotary_factor(self.head_dim, self.rope.rotary_dim).into(),
            );
        }
        put("tie_word_embeddings", self.tied_embeddings.into());
        put("bos_token_id", self.bos_token_id.into());
        put(
            "eos_token_id",
            match self.eos_token_ids.as_slice() {
                [] => Value::Null,
                [one] => (*one).into(),
                many => many.into(),
            },
        );
        put("pad_token_id", self.pad_token_id.into());
        if let Some(d) = &self.declared_dtype {
            put("torch_dtype", d.as_str().into());
        }
        put("use_cache", true.into());
        let window = self.sliding_window.map(|w| w.size);
        match a {
            Architecture::Llama => {
                put("attention_bias", self.biases.qkv.into());
                put("mlp_bias", self.biases.mlp.into());
            }
            Architecture::Phi3 | Architecture::Mistral => put("sliding_window", window.into()),
            Architecture::Qwen2 => {
                put("use_sliding_window", window.is_some().into());
                put("sliding_window", window.into());
                if let Some(w) = self.sliding_window {
                    put("max_window_layers", w.first_layer.into());
                }
            }
        }
        let scaling = match &self.rope.scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear { factor } => {
                serde_json::json!({ "rope_type": "linear", "factor": factor })
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                short_mscale,
                long_mscale,
                attention_factor,
            } => {
                // Phi3Config (transformers 4) wants exactly these three keys, and the original
                // context at the top level; the optional scales exist only in configs that had
                // them, and are kept so that phiquant reads the same model back.
                put("original_max_position_embeddings", (*original_max_position_embeddings).into());
                let mut s = serde_json::json!({
                    "type": "longrope",
                    "short_factor": short_factor,
                    "long_factor": long_factor,
                });
                for (k, v) in [
                    ("short_mscale", short_mscale),
                    ("long_mscale", long_mscale),
                    ("attention_factor", attention_factor),
                ] {
                    if let Some(v) = v {
                        s[k] = (*v).into();
                    }
                }
                s
            }
        };
        put("rope_scaling", scaling);
        Value::Object(c)
    }
}

/// A `partial_rotary_factor` that gives back `rotary_dim` through transformers' (and
/// phiquant's) `int(head_dim * factor)`: the plain quotient, nudged up by an ulp or two when
/// rounding would land just below the integer.
fn partial_rotary_factor(head_dim: usize, rotary_dim: usize) -> f64 {
    let mut f = rotary_dim as f64 / head_dim as f64;
    for _ in 0..4 {
        if (head_dim as f64 * f) as usize >= rotary_dim {
            break;
        }
        f = f.next_up();
    }
    f
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 { format!("{}...", &s[..s.floor_char_boundary(57)]) } else { s }
}

struct Fields<'a> {
    path: PathBuf,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn invalid(&self, field: &str, value: &Value, expected: impl Into<String>) -> Error {
        Error::InvalidField {
            path: self.path.clone(),
            field: field.to_string(),
            value: shown(value),
            expected: expected.into(),
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn uint_in(
        &self,
        obj: &Map<String, Value>,
        prefix: &str,
        field: &str,
        max: u64,
    ) -> Result<Option<usize>, Error> {
        let Some(v) = obj.get(field).filter(|v| !v.is_null()) else { return Ok(None) };
        let name = format!("{prefix}{field}");
        match v.as_u64() {
            Some(n) if n >= 1 && n <= max => Ok(Some(n as usize)),
            _ => Err(self.invalid(&name, v, format!("an integer from 1 to {max}"))),
        }
    }

    fn uint(&self, field: &str, max: u64) -> Result<Option<usize>, Error> {
        self.uint_in(self.obj, "", field, max)
    }

    fn required_uint(&self, field: &'static str, max: u64) -> Result<usize, Error> {
        self.uint(field, max)?.ok_or(Error::MissingField { path: self.path.clone(), field })
    }

    fn float_in(
        &self,
        obj: &Map<String, Value>,
        prefix: &str,
        field: &str,
    ) -> Result<Option<f64>, Error> {
        let Some(v) = obj.get(field).filter(|v| !v.is_null()) else { return Ok(None) };
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(self.invalid(&format!("{prefix}{field}"), v, "a finite number")),
        }
    }

    fn positive_float_in(
        &self,
        obj: &Map<String, Value>,
        prefix: &str,
        field: &str,
    ) -> Result<Option<f64>, Error> {
        match self.float_in(obj, prefix, field)? {
            Some(x) if x <= 0.0 => {
                Err(self.invalid(&format!("{prefix}{field}"), &obj[field], "a positive number"))
            }
            other => Ok(other),
        }
    }

    fn bool(&self, field: &str) -> Result<Option<bool>, Error> {
        let Some(v) = self.get(field) else { return Ok(None) };
        v.as_bool().map(Some).ok_or_else(|| self.invalid(field, v, "true or false"))
    }

    fn token_id(&self, field: &str) -> Result<Option<u32>, Error> {
        let Some(v) = self.get(field) else { return Ok(None) };
        match v.as_u64() {
            Some(n) if n <= u64::from(u32::MAX) => Ok(Some(n as u32)),
            _ => Err(self.invalid(field, v, "a token id")),
        }
    }

    fn token_ids(&self, field: &str) -> Result<Vec<u32>, Error> {
        let Some(v) = self.get(field) else { return Ok(Vec::new()) };
        let bad = || self.invalid(field, v, "a token id or a list of token ids");
        let one = |x: &Value| x.as_u64().filter(|n| *n <= u64::from(u32::MAX)).map(|n| n as u32);
        match v {
            Value::Array(items) => items.iter().map(|x| one(x).ok_or_else(bad)).collect(),
            _ => one(v).map(|id| vec![id]).ok_or_else(bad),
        }
    }

    fn architecture(&self) -> Result<Architecture, Error> {
        let named = match self.get("architectures") {
            Some(Value::Array(list)) => match list.first() {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => return Err(self.invalid("architectures", other, "a class name")),
                None => None,
            },
            Some(other) => {
                return Err(self.invalid("architectures", other, "a list of class names"));
            }
            None => None,
        };
        if let Some(name) = named {
            return Architecture::ALL.into_iter().find(|a| a.class_name() == name).ok_or_else(
                || Error::UnknownArchitecture { path: self.path.clone(), found: name.into() },
            );
        }
        match self.get("model_type") {
            Some(Value::String(t)) => {
                Architecture::ALL.into_iter().find(|a| a.model_type() == t).ok_or_else(|| {
                    Error::UnknownArchitecture { path: self.path.clone(), found: t.clone() }
                })
            }
            Some(other) => Err(self.invalid("model_type", other, "a string")),
            None => Err(Error::MissingField { path: self.path.clone(), field: "architectures" }),
        }
    }

    fn spec(&self) -> Result<DecoderSpec, Error> {
        let architecture = self.architecture()?;
        let hidden_size = self.required_uint("hidden_size", MAX_WIDTH)?;
        let intermediate_size = self.required_uint("intermediate_size", MAX_WIDTH)?;
        let num_layers = self.required_uint("num_hidden_layers", MAX_LAYERS)?;
        let num_heads = self.required_uint("num_attention_heads", MAX_HEADS)?;
        let num_kv_heads = self.uint("num_key_value_heads", MAX_HEADS)?.unwrap_or(num_heads);
        let vocab_size = self.required_uint("vocab_size", MAX_VOCAB)?;
        let max_position_embeddings = self.required_uint("max_position_embeddings", MAX_CONTEXT)?;

        if num_heads % num_kv_heads != 0 {
            return Err(self.invalid(
                "num_key_value_heads",
                &self.obj["num_key_value_heads"],
                format!("a divisor of num_attention_heads ({num_heads})"),
            ));
        }
        let explicit_head_dim = self.get("head_dim").is_some();
        let head_dim = match self.uint("head_dim", MAX_WIDTH)? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(self.invalid(
                    "num_attention_heads",
                    &self.obj["num_attention_heads"],
                    format!("a divisor of hidden_size ({hidden_size}) when head_dim is not given"),
                ));
            }
        };
        if !head_dim.is_multiple_of(2) {
            // Rotary embeddings turn pairs of dimensions, and llama.cpp's q/k row order splits
            // each head in halves: an odd head size fits neither.
            let field = if explicit_head_dim { "head_dim" } else { "num_attention_heads" };
            let v = self.obj.get(field).cloned().unwrap_or(Value::Null);
            return Err(self.invalid(
                field,
                &v,
                format!("a head size that is even (got {head_dim}: rotary embeddings turn pairs of dimensions)"),
            ));
        }

        let act = self.get("hidden_act").or_else(|| self.get("hidden_activation"));
        if let Some(v) = act
            && v.as_str() != Some("silu")
        {
            return Err(self.invalid("hidden_act", v, "\"silu\" (SwiGLU MLP)"));
        }

        let rms_norm_eps = match self.float_in(self.obj, "", "rms_norm_eps")? {
            Some(e) if e > 0.0 && e < 1.0 => e,
            Some(_) => {
                return Err(self.invalid(
                    "rms_norm_eps",
                    &self.obj["rms_norm_eps"],
                    "a number in (0, 1)",
                ));
            }
            None => 1e-6,
        };

        let rope = self.rope(architecture, head_dim, max_position_embeddings)?;
        let sliding_window = self.sliding_window(architecture, num_layers)?;

        let biases = match architecture {
            Architecture::Qwen2 => Biases { qkv: true, o: false, mlp: false },
            Architecture::Llama => {
                let attn = self.bool("attention_bias")?.unwrap_or(false);
                Biases { qkv: attn, o: attn, mlp: self.bool("mlp_bias")?.unwrap_or(false) }
            }
            Architecture::Phi3 | Architecture::Mistral => Biases::default(),
        };

        let declared_dtype = self
            .get("torch_dtype")
            .or_else(|| self.get("dtype"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        Ok(DecoderSpec {
            architecture,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            explicit_head_dim,
            vocab_size,
            max_position_embeddings,
            rms_norm_eps,
            tied_embeddings: self.bool("tie_word_embeddings")?.unwrap_or(false),
            rope,
            sliding_window,
            biases,
            bos_token_id: self.token_id("bos_token_id")?,
            eos_token_ids: self.token_ids("eos_token_id")?,
            pad_token_id: self.token_id("pad_token_id")?,
            declared_dtype,
        })
    }

    /// The rope parameters: transformers 4 writes `rope_theta` and `rope_scaling` at the top level,
    /// transformers 5 one `rope_parameters` object holding both.
    fn rope(&self, arch: Architecture, head_dim: usize, max_ctx: usize) -> Result<Rope, Error> {
        let params = match self.get("rope_parameters") {
            Some(Value::Object(m)) => Some(m),
            Some(other) => return Err(self.invalid("rope_parameters", other, "an object")),
            None => None,
        };
        let theta = match self.positive_float_in(self.obj, "", "rope_theta")? {
            Some(t) => t,
            None => match params {
                Some(p) => {
                    self.positive_float_in(p, "rope_parameters.", "rope_theta")?.unwrap_or(10_000.0)
                }
                None => 10_000.0,
            },
        };

        let partial = match self.float_in(self.obj, "", "partial_rotary_factor")? {
            Some(f) => Some(("partial_rotary_factor", f)),
            None => match params {
                Some(p) => self
                    .float_in(p, "rope_parameters.", "partial_rotary_factor")?
                    .map(|f| ("rope_parameters.partial_rotary_factor", f)),
                None => None,
            },
        };
        let rotary_dim = match partial {
            None => head_dim,
            Some((field, f)) => {
                let dim = (head_dim as f64 * f) as usize;
                if !(f > 0.0 && f <= 1.0) || dim == 0 || !dim.is_multiple_of(2) {
                    let v = Value::from(f);
                    return Err(self.invalid(
                        field,
                        &v,
                        format!("a factor in (0, 1] giving an even rotary dimension of head_dim {head_dim}"),
                    ));
                }
                dim
            }
        };

        let (prefix, scaling) = match self.get("rope_scaling") {
            Some(Value::Object(m)) => ("rope_scaling.", Some(m)),
            Some(other) => return Err(self.invalid("rope_scaling", other, "an object or null")),
            None => ("rope_parameters.", params),
        };
        let scaling = match scaling {
            None => RopeScaling::None,
            Some(s) => self.rope_scaling(arch, prefix, s, rotary_dim, max_ctx)?,
        };
        Ok(Rope { theta, rotary_dim, scaling })
    }

    fn rope_scaling(
        &self,
        arch: Architecture,
        prefix: &str,
        s: &Map<String, Value>,
        rotary_dim: usize,
        max_ctx: usize,
    ) -> Result<RopeScaling, Error> {
        let type_field = if s.contains_key("rope_type") { "rope_type" } else { "type" };
        let kind = match s.get(type_field) {
            None | Some(Value::Null) => "default",
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                return Err(self.invalid(&format!("{prefix}{type_field}"), other, "a string"));
            }
        };
        let original = |fields: &Self| -> Result<usize, Error> {
            let inner =
                fields.uint_in(s, prefix, "original_max_position_embeddings", MAX_CONTEXT)?;
            match inner.or(fields.uint("original_max_position_embeddings", MAX_CONTEXT)?) {
                Some(n) => Ok(n),
                None => Err(Error::MissingField {
                    path: fields.path.clone(),
                    field: "original_max_position_embeddings",
                }),
            }
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => {
                let factor =
                    self.positive_float_in(s, prefix, "factor")?.ok_or(Error::MissingField {
                        path: self.path.clone(),
                        field: "rope_scaling.factor",
                    })?;
                Ok(RopeScaling::Linear { factor })
            }
            "llama3" => {
                let need = |field: &'static str| -> Result<f64, Error> {
                    self.positive_float_in(s, prefix, field)?
                        .ok_or(Error::MissingField { path: self.path.clone(), field })
                };
                Ok(RopeScaling::Llama3 {
                    factor: need("factor")?,
                    low_freq_factor: need("low_freq_factor")?,
                    high_freq_factor: need("high_freq_factor")?,
                    original_max_position_embeddings: original(self)?,
                })
            }
            // "su" is the name early Phi-3 128k configs used for LongRoPE.
            "longrope" | "su" if arch == Architecture::Phi3 => {
                let factors = |field: &'static str| -> Result<Vec<f64>, Error> {
                    let name = format!("{prefix}{field}");
                    let v = s
                        .get(field)
                        .ok_or(Error::MissingField { path: self.path.clone(), field })?;
                    let expected =
                        format!("a list of {} positive numbers (rotary_dim / 2)", rotary_dim / 2);
                    let list =
                        v.as_array().ok_or_else(|| self.invalid(&name, v, expected.clone()))?;
                    let values: Option<Vec<f64>> = list
                        .iter()
                        .map(|x| x.as_f64().filter(|f| f.is_finite() && *f > 0.0))
                        .collect();
                    match values {
                        Some(vals) if vals.len() == rotary_dim / 2 => Ok(vals),
                        _ => Err(self.invalid(&name, v, expected)),
                    }
                };
                let original = original(self)?;
                if original > max_ctx {
                    return Err(self.invalid(
                        "original_max_position_embeddings",
                        &Value::from(original),
                        format!("at most max_position_embeddings ({max_ctx})"),
                    ));
                }
                Ok(RopeScaling::LongRope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    original_max_position_embeddings: original,
                    short_mscale: self.positive_float_in(s, prefix, "short_mscale")?,
                    long_mscale: self.positive_float_in(s, prefix, "long_mscale")?,
                    attention_factor: self.positive_float_in(s, prefix, "attention_factor")?,
                })
            }
            other => Err(self.invalid(
                &format!("{prefix}{type_field}"),
                &Value::from(other),
                match arch {
                    Architecture::Phi3 => "default, linear, llama3 or longrope",
                    _ => "default, linear or llama3",
                },
            )),
        }
    }

    fn sliding_window(
        &self,
        arch: Architecture,
        layers: usize,
    ) -> Result<Option<SlidingWindow>, Error> {
        let size = self.uint("sliding_window", MAX_CONTEXT)?;
        Ok(match arch {
            Architecture::Llama => None,
            Architecture::Phi3 | Architecture::Mistral => {
                size.map(|size| SlidingWindow { size, first_layer: 0 })
            }
            Architecture::Qwen2 => {
                // transformers' Qwen2 uses the window only when `use_sliding_window` is set, and
                // then only on layers from `max_window_layers` on.
                if self.bool("use_sliding_window")?.unwrap_or(false) {
                    let first_layer =
                        self.uint("max_window_layers", MAX_LAYERS)?.unwrap_or(layers).min(layers);
                    size.map(|size| SlidingWindow { size, first_layer })
                } else {
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<DecoderSpec, Error> {
        let value: Value = serde_json::from_str(json).unwrap();
        DecoderSpec::from_config_value(Path::new("config.json"), &value)
    }

    const BASE: &str = r#""hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
        "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
        "max_position_embeddings": 512"#;

    #[test]
    fn llama_defaults() {
        let s = spec(&format!(r#"{{"architectures": ["LlamaForCausalLM"], {BASE}}}"#)).unwrap();
        assert_eq!(s.architecture, Architecture::Llama);
        assert_eq!(s.head_dim, 8);
        assert_eq!(s.rope.theta, 10_000.0);
        assert_eq!(s.rope.rotary_dim, 8);
        assert_eq!(s.rope.scaling, RopeScaling::None);
        assert!(!s.tied_embeddings);
        assert_eq!(s.sliding_window, None);
    }

    #[test]
    fn an_odd_head_size_is_refused() {
        let config = |heads: &str| {
            format!(
                r#"{{"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                   "intermediate_size": 172, "num_hidden_layers": 2, "num_key_value_heads": 1,
                   "vocab_size": 512, "max_position_embeddings": 512, {heads}}}"#
            )
        };
        let e =
            spec(&config(r#""num_attention_heads": 1, "head_dim": 7"#)).unwrap_err().to_string();
        assert!(e.contains("head_dim") && e.contains("even"), "{e}");
        // 64 / 64 heads: a head size of 1, derived.
        let e = spec(&config(r#""num_attention_heads": 64"#)).unwrap_err().to_string();
        assert!(e.contains("num_attention_heads") && e.contains("even"), "{e}");
    }

    #[test]
    fn model_type_is_a_fallback_for_architectures() {
        let s = spec(&format!(r#"{{"model_type": "qwen2", {BASE}}}"#)).unwrap();
        assert_eq!(s.architecture, Architecture::Qwen2);
        assert!(s.biases.qkv && !s.biases.o);
    }

    #[test]
    fn transformers_5_rope_parameters() {
        let s = spec(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE},
               "rope_parameters": {{"rope_type": "default", "rope_theta": 1000000.0}}}}"#
        ))
        .unwrap();
        assert_eq!(s.rope.theta, 1e6);
        assert_eq!(s.rope.scaling, RopeScaling::None);
    }

    #[test]
    fn phi4_mini_partial_rotary_longrope() {
        let f6 = "[1.0, 1.1, 1.2, 1.3, 1.4, 1.5]";
        let s = spec(&format!(
            r#"{{"architectures": ["Phi3ForCausalLM"], "hidden_size": 96, "intermediate_size": 160,
               "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
               "vocab_size": 320, "max_position_embeddings": 512, "original_max_position_embeddings": 128,
               "partial_rotary_factor": 0.75, "sliding_window": 512,
               "rope_scaling": {{"type": "longrope", "short_factor": {f6}, "long_factor": {f6}}}}}"#
        ))
        .unwrap();
        assert_eq!(s.head_dim, 16);
        assert_eq!(s.rope.rotary_dim, 12);
        assert_eq!(s.original_context(), 128);
        assert!(
            matches!(&s.rope.scaling, RopeScaling::LongRope { short_factor, .. } if short_factor.len() == 6)
        );
        assert_eq!(s.sliding_window, Some(SlidingWindow { size: 512, first_layer: 0 }));
    }

    #[test]
    fn longrope_factor_count_is_checked() {
        let err = spec(&format!(
            r#"{{"architectures": ["Phi3ForCausalLM"], {BASE}, "original_max_position_embeddings": 64,
               "rope_scaling": {{"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}}}}"#
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("rope_scaling.short_factor") && msg.contains("4 positive numbers"),
            "{msg}"
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"architectures": ["GPT2LMHeadModel"]}"#, "unknown architecture `GPT2LMHeadModel`"),
            (r#"{"architectures": ["LlamaForCausalLM"]}"#, "missing `hidden_size`"),
            (
                r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": -4}"#,
                "`hidden_size` is -4, expected an integer",
            ),
            (
                r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 1,
                   "num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 3,
                   "vocab_size": 10, "max_position_embeddings": 8}"#,
                "`num_key_value_heads` is 3, expected a divisor of num_attention_heads (8)",
            ),
            (
                r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 1,
                   "num_hidden_layers": 99999, "num_attention_heads": 8,
                   "vocab_size": 10, "max_position_embeddings": 8}"#,
                "`num_hidden_layers` is 99999, expected an integer from 1 to 1024",
            ),
            ("[1, 2]", "expected a JSON object"),
        ];
        for (json, want) in cases {
            let msg = spec(json).unwrap_err().to_string();
            assert!(msg.starts_with("config.json: "), "{msg}");
            assert!(msg.contains(want), "{msg} does not contain {want}");
        }
    }

    #[test]
    fn unsupported_activation_and_rope_type() {
        let gelu = spec(&format!(
            r#"{{"architectures": ["MistralForCausalLM"], {BASE}, "hidden_act": "gelu"}}"#
        ));
        assert!(gelu.unwrap_err().to_string().contains("`hidden_act` is \"gelu\""));
        let yarn = spec(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#
        ));
        assert!(yarn.unwrap_err().to_string().contains("rope_scaling.rope_type` is \"yarn\""));
    }

    #[test]
    fn qwen2_window_only_when_enabled() {
        let off = spec(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}, "sliding_window": 4096}}"#
        ))
        .unwrap();
        assert_eq!(off.sliding_window, None);
        let on = spec(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}, "sliding_window": 4096,
               "use_sliding_window": true, "max_window_layers": 3}}"#
        ))
        .unwrap();
        assert_eq!(on.sliding_window, Some(SlidingWindow { size: 4096, first_layer: 3 }));
    }

    #[test]
    fn written_configs_read_back_equal() {
        let f6 = "[1.0, 1.1, 1.2, 1.3, 1.4, 1.5]";
        let configs = [
            format!(
                r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "head_dim": 8,
                "attention_bias": true, "eos_token_id": [2, 7], "torch_dtype": "float16",
                "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}}}"#
            ),
            format!(
                r#"{{"architectures": ["MistralForCausalLM"], {BASE}, "sliding_window": 32,
                "rope_scaling": {{"type": "linear", "factor": 2.0}}}}"#
            ),
            format!(
                r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}, "sliding_window": 64,
                "use_sliding_window": true, "max_window_layers": 2, "tie_word_embeddings": true}}"#
            ),
            format!(
                r#"{{"architectures": ["Phi3ForCausalLM"], "hidden_size": 96,
               "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 6,
               "num_key_value_heads": 2, "vocab_size": 320, "max_position_embeddings": 512,
               "original_max_position_embeddings": 128, "partial_rotary_factor": 0.75,
               "pad_token_id": 3, "rms_norm_eps": 1e-5, "rope_theta": 250000.0,
               "rope_scaling": {{"type": "longrope", "short_factor": {f6}, "long_factor": {f6},
               "attention_factor": 1.25}}}}"#
            ),
        ];
        for json in configs {
            let s = spec(&json).unwrap();
            let back =
                DecoderSpec::from_config_value(Path::new("c"), &s.to_config_value()).unwrap();
            assert_eq!(back, s, "{json}");
        }
        // A rotary dimension whose quotient rounds below the integer in f64.
        for (hd, rd) in [(96, 32), (80, 64), (128, 96), (112, 24)] {
            assert_eq!((hd as f64 * partial_rotary_factor(hd, rd)) as usize, rd);
        }
    }

    #[test]
    fn eos_list() {
        let s = spec(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "eos_token_id": [2, 32007]}}"#
        ))
        .unwrap();
        assert_eq!(s.eos_token_ids, vec![2, 32007]);
    }
}
