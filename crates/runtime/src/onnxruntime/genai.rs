//! Reading onnxruntime-genai's `genai_config.json`: what the decoder graph is called, the names
//! of its inputs and outputs, its cache geometry and the provider it was built for.
//!
//! Field names and defaults follow onnxruntime-genai's `src/config.cpp` and its model builder
//! (`src/python/py/models/builders/base.py`, `make_genai_config`); see DESIGN.md §3. Only the
//! decoder-only layout is read: one graph with `input_ids`, `attention_mask`, optional
//! `position_ids`, and per-layer `past_key_values.%d.key|value` in and `present.%d.key|value`
//! out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Device, Error, is_plain_file_name, read_json_file};

/// The configuration file's name inside an ONNX model folder.
pub const GENAI_CONFIG: &str = "genai_config.json";

/// Upper bounds on values read from the file, far above any real model; they keep a hostile file
/// from driving huge allocations.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
const MAX_LAYERS: u64 = 1024;
const MAX_HEADS: u64 = 4096;
const MAX_HEAD_SIZE: u64 = 1 << 14;
const MAX_VOCAB: u64 = 1 << 23;
const MAX_CONTEXT: u64 = 1 << 26;
const MAX_NAME_BYTES: usize = 1024;

/// The names the decoder graph gives its inputs and outputs; `%d` in a template stands for the
/// layer index.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GenaiNames {
    /// Token ids, int64 `[batch, sequence]`.
    pub input_ids: String,
    /// Ones over past and new positions, int64 `[batch, total]`.
    pub attention_mask: String,
    /// Positions of the new tokens, int64 `[batch, sequence]` (graphs with separate rotary nodes,
    /// as DirectML's).
    pub position_ids: String,
    /// Template of the past keys, `[batch, kv_heads, past, head_size]`.
    pub past_key_names: String,
    /// Template of the past values.
    pub past_value_names: String,
    /// Logits `[batch, sequence, vocab]`.
    pub logits: String,
    /// Template of the present keys, `[batch, kv_heads, past + sequence, head_size]`.
    pub present_key_names: String,
    /// Template of the present values.
    pub present_value_names: String,
}

/// One entry of `session_options.provider_options`: a provider and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderOptions {
    /// The provider as genai names it (`cuda`, `dml`, ...).
    pub name: String,
    /// Its options, as strings.
    pub options: BTreeMap<String, String>,
}

/// What phiquant reads from `genai_config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GenaiConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `model.type` (`phi3`, `llama`, ...).
    pub model_type: String,
    /// `model.vocab_size`: the length of a row of logits.
    pub vocab_size: usize,
    /// `model.context_length`: the most positions the graph was built for.
    pub context_length: usize,
    /// `model.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `model.eos_token_id` (an integer or a list).
    pub eos_token_ids: Vec<u32>,
    /// `model.decoder.filename`: the graph, inside the folder.
    pub filename: String,
    /// `model.decoder.num_hidden_layers`.
    pub num_layers: usize,
    /// `model.decoder.num_attention_heads`.
    pub num_heads: usize,
    /// `model.decoder.num_key_value_heads`.
    pub num_kv_heads: usize,
    /// `model.decoder.head_size`.
    pub head_size: usize,
    /// `model.decoder.inputs` and `model.decoder.outputs`.
    pub names: GenaiNames,
    /// `model.decoder.session_options.provider_options`, in order.
    pub providers: Vec<ProviderOptions>,
}

impl GenaiConfig {
    /// Reads and checks `dir/genai_config.json`.
    pub fn from_dir(dir: &Path) -> Result<GenaiConfig, Error> {
        let path = dir.join(GENAI_CONFIG);
        let value = read_json_file(&path, MAX_CONFIG_BYTES)?;
        GenaiConfig::from_value(&path, &value)
    }

    /// Builds the configuration from parsed JSON; `path` names the file in errors.
    pub fn from_value(path: &Path, value: &Value) -> Result<GenaiConfig, Error> {
        let r = Reader { path };
        let model = r.object(value.get("model"), "model")?;
        let decoder = r.object(model.get("decoder"), "model.decoder")?;
        let filename = match decoder.get("filename") {
            None | Some(Value::Null) => "model.onnx".to_string(),
            Some(v) => {
                let name = r.string(v, "model.decoder.filename")?;
                if !is_plain_file_name(&name) {
                    return Err(Error::UnsafeFileName { path: path.to_path_buf(), name });
                }
                name
            }
        };
        let inputs = r.optional_object(decoder.get("inputs"), "model.decoder.inputs")?;
        let outputs = r.optional_object(decoder.get("outputs"), "model.decoder.outputs")?;
        let name =
            |obj: Option<&Map<String, Value>>, section: &str, key: &str, default: &str| match obj
                .and_then(|o| o.get(key))
                .filter(|v| !v.is_null())
            {
                None => Ok(default.to_string()),
                Some(v) => r.string(v, &format!("model.decoder.{section}.{key}")),
            };
        let template = |obj, section: &str, key: &str, default: &str| {
            let t = name(obj, section, key, default)?;
            if t.matches("%d").count() != 1 || t.replace("%d", "").contains('%') {
                return Err(r.invalid(
                    &format!("model.decoder.{section}.{key}"),
                    &Value::String(t),
                    "a name with one `%d` for the layer index",
                ));
            }
            Ok(t)
        };
        for (obj, section) in [(inputs, "inputs"), (outputs, "outputs")] {
            // A cache of keys and values packed into one tensor (genai's `past_names`) is an
            // older layout that the builder no longer writes.
            for key in ["past_names", "present_names"] {
                if let Some(v) = obj.and_then(|o| o.get(key)).filter(|v| !v.is_null()) {
                    return Err(r.invalid(
                        &format!("model.decoder.{section}.{key}"),
                        v,
                        "separate key and value names (`past_key_names`, `past_value_names`)",
                    ));
                }
            }
        }
        let names = GenaiNames {
            input_ids: name(inputs, "inputs", "input_ids", "input_ids")?,
            attention_mask: name(inputs, "inputs", "attention_mask", "attention_mask")?,
            position_ids: name(inputs, "inputs", "position_ids", "position_ids")?,
            past_key_names: template(inputs, "inputs", "past_key_names", "past_key_values.%d.key")?,
            past_value_names: template(
                inputs,
                "inputs",
                "past_value_names",
                "past_key_values.%d.value",
            )?,
            logits: name(outputs, "outputs", "logits", "logits")?,
            present_key_names: template(outputs, "outputs", "present_key_names", "present.%d.key")?,
            present_value_names: template(
                outputs,
                "outputs",
                "present_value_names",
                "present.%d.value",
            )?,
        };
        let eos_token_ids = match model.get("eos_token_id") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|id| r.token(id, "model.eos_token_id"))
                .collect::<Result<Vec<_>, _>>()?,
            Some(id) => vec![r.token(id, "model.eos_token_id")?],
        };
        let bos_token_id = match model.get("bos_token_id") {
            None | Some(Value::Null) => None,
            Some(id) => Some(r.token(id, "model.bos_token_id")?),
        };
        let model_type = match model.get("type") {
            None | Some(Value::Null) => String::new(),
            Some(v) => r.string(v, "model.type")?,
        };
        let num_heads = r.uint(decoder, "model.decoder.num_attention_heads", 1, MAX_HEADS)?;
        let num_kv_heads = r.uint(decoder, "model.decoder.num_key_value_heads", 1, MAX_HEADS)?;
        if num_heads % num_kv_heads != 0 {
            return Err(r.invalid(
                "model.decoder.num_key_value_heads",
                &Value::from(num_kv_heads),
                &format!("a divisor of num_attention_heads ({num_heads})"),
            ));
        }
        Ok(GenaiConfig {
            path: path.to_path_buf(),
            model_type,
            vocab_size: r.uint(model, "model.vocab_size", 1, MAX_VOCAB)?,
            context_length: r.uint(model, "model.context_length", 1, MAX_CONTEXT)?,
            bos_token_id,
            eos_token_ids,
            filename,
            num_layers: r.uint(decoder, "model.decoder.num_hidden_layers", 1, MAX_LAYERS)?,
            num_heads,
            num_kv_heads,
            head_size: r.uint(decoder, "model.decoder.head_size", 1, MAX_HEAD_SIZE)?,
            names,
            providers: r.providers(decoder)?,
        })
    }

    /// The device the graph was built for: the first provider of `provider_options` (`cuda`,
    /// `dml`), or the CPU when there is none.
    pub fn device(&self) -> Result<Device, Error> {
        let Some(first) = self.providers.first() else { return Ok(Device::Cpu) };
        match first.name.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "dml" => Ok(Device::DirectMl),
            other => Err(Error::InvalidField {
                path: self.path.clone(),
                field: "model.decoder.session_options.provider_options".into(),
                value: format!("`{other}`"),
                expected: "cuda or dml, the providers phiquant runs (pass --device cpu to run \
                           the graph on the CPU provider)"
                    .into(),
            }),
        }
    }

    /// The names of the past inputs, interleaved: layer 0's key, layer 0's value, layer 1's key...
    pub fn past_names(&self) -> Vec<String> {
        let n = &self.names;
        interleaved(self.num_layers, &n.past_key_names, &n.past_value_names)
    }

    /// The names of the present outputs, in the order of [`GenaiConfig::past_names`].
    pub fn present_names(&self) -> Vec<String> {
        let n = &self.names;
        interleaved(self.num_layers, &n.present_key_names, &n.present_value_names)
    }

    /// The options given for `provider` (`cuda`, `dml`), if any.
    pub fn provider_options(&self, provider: &str) -> Option<&BTreeMap<String, String>> {
        self.providers.iter().find(|p| p.name == provider).map(|p| &p.options)
    }
}

/// `template` with its `%d` replaced by `layer` (templates are checked to hold exactly one).
fn layer_name(template: &str, layer: usize) -> String {
    template.replacen("%d", &layer.to_string(), 1)
}

/// The key and value names of `layers` layers, interleaved.
fn interleaved(layers: usize, keys: &str, values: &str) -> Vec<String> {
    (0..layers).flat_map(|l| [layer_name(keys, l), layer_name(values, l)]).collect()
}

/// Field access with errors that name the file and the dotted field.
struct Reader<'a> {
    path: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, field: &str, value: &Value, expected: &str) -> Error {
        let mut shown = value.to_string();
        if shown.len() > 60 {
            shown.truncate(shown.floor_char_boundary(57));
            shown.push_str("...");
        }
        Error::InvalidField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            value: shown,
            expected: expected.to_string(),
        }
    }

    fn object<'v>(
        &self,
        value: Option<&'v Value>,
        field: &'static str,
    ) -> Result<&'v Map<String, Value>, Error> {
        match value {
            None | Some(Value::Null) => {
                Err(Error::MissingField { path: self.path.to_path_buf(), field })
            }
            Some(Value::Object(m)) => Ok(m),
            Some(v) => Err(self.invalid(field, v, "an object")),
        }
    }

    fn optional_object<'v>(
        &self,
        value: Option<&'v Value>,
        field: &'static str,
    ) -> Result<Option<&'v Map<String, Value>>, Error> {
        match value {
            None | Some(Value::Null) => Ok(None),
            v => self.object(v, field).map(Some),
        }
    }

    fn string(&self, value: &Value, field: &str) -> Result<String, Error> {
        match value {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_NAME_BYTES => Ok(s.clone()),
            v => Err(self.invalid(field, v, "a non-empty string")),
        }
    }

    fn uint(
        &self,
        obj: &Map<String, Value>,
        field: &'static str,
        min: u64,
        max: u64,
    ) -> Result<usize, Error> {
        let key = field.rsplit('.').next().unwrap_or(field);
        match obj.get(key) {
            None | Some(Value::Null) => {
                Err(Error::MissingField { path: self.path.to_path_buf(), field })
            }
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n as usize),
                _ => Err(self.invalid(field, v, &format!("an integer in [{min}, {max}]"))),
            },
        }
    }

    fn token(&self, value: &Value, field: &str) -> Result<u32, Error> {
        value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.invalid(field, value, "a token id"))
    }

    /// `session_options.provider_options`: a list of one-key objects `{"cuda": {"k": "v"}}`.
    fn providers(&self, decoder: &Map<String, Value>) -> Result<Vec<ProviderOptions>, Error> {
        const FIELD: &str = "model.decoder.session_options.provider_options";
        let Some(options) = decoder
            .get("session_options")
            .filter(|v| !v.is_null())
            .map(|v| self.object(Some(v), "model.decoder.session_options"))
            .transpose()?
            .and_then(|s| s.get("provider_options"))
            .filter(|v| !v.is_null())
        else {
            return Ok(Vec::new());
        };
        let list = options.as_array().ok_or_else(|| self.invalid(FIELD, options, "a list"))?;
        let mut providers = Vec::new();
        for entry in list {
            let map = entry
                .as_object()
                .filter(|m| m.len() == 1)
                .ok_or_else(|| self.invalid(FIELD, entry, "objects with one provider each"))?;
            for (name, opts) in map {
                let mut options = BTreeMap::new();
                match opts {
                    Value::Null => {}
                    Value::Object(o) => {
                        for (k, v) in o {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                Value::Number(_) | Value::Bool(_) => v.to_string(),
                                _ => {
                                    return Err(self.invalid(
                                        &format!("{FIELD}.{name}.{k}"),
                                        v,
                                        "a string",
                                    ));
                                }
                            };
                            options.insert(k.clone(), v);
                        }
                    }
                    v => return Err(self.invalid(&format!("{FIELD}.{name}"), v, "an object")),
                }
                providers.push(ProviderOptions { name: name.clone(), options });
            }
        }
        Ok(providers)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The decoder part of a genai_config.json as the model builder writes it for Phi-3 on CPU.
    fn builder_config() -> Value {
        json!({
            "model": {
                "bos_token_id": 1,
                "context_length": 128,
                "decoder": {
                    "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                    "filename": "model.onnx",
                    "head_size": 16,
                    "hidden_size": 64,
                    "inputs": {
                        "input_ids": "input_ids",
                        "attention_mask": "attention_mask",
                        "past_key_names": "past_key_values.%d.key",
                        "past_value_names": "past_key_values.%d.value"
                    },
                    "outputs": {
                        "logits": "logits",
                        "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"
                    },
                    "num_attention_heads": 4,
                    "num_hidden_layers": 2,
                    "num_key_value_heads": 4,
                    "sliding_window": {"window_size": 64, "slide_key_value_cache": false}
                },
                "eos_token_id": [2, 32000],
                "pad_token_id": 2,
                "type": "phi3",
                "vocab_size": 320
            },
            "search": {"max_length": 128, "past_present_share_buffer": true}
        })
    }

    fn parse(v: &Value) -> Result<GenaiConfig, Error> {
        GenaiConfig::from_value(Path::new("m/genai_config.json"), v)
    }

    #[test]
    fn reads_the_builder_layout() {
        let c = parse(&builder_config()).unwrap();
        assert_eq!(c.model_type, "phi3");
        assert_eq!((c.vocab_size, c.context_length, c.num_layers), (320, 128, 2));
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_size), (4, 4, 16));
        assert_eq!(c.bos_token_id, Some(1));
        assert_eq!(c.eos_token_ids, vec![2, 32000]);
        assert_eq!(c.filename, "model.onnx");
        assert_eq!(c.names.position_ids, "position_ids");
        assert_eq!(
            c.past_names(),
            [
                "past_key_values.0.key",
                "past_key_values.0.value",
                "past_key_values.1.key",
                "past_key_values.1.value"
            ]
        );
        assert_eq!(c.present_names()[..2], ["present.0.key", "present.0.value"]);
        assert_eq!(c.device().unwrap(), Device::Cpu);
    }

    #[test]
    fn providers_give_the_device() {
        let mut v = builder_config();
        v["model"]["decoder"]["session_options"]["provider_options"] =
            json!([{"cuda": {"enable_cuda_graph": "0", "device_id": 0}}]);
        let c = parse(&v).unwrap();
        assert_eq!(c.device().unwrap(), Device::Cuda);
        let cuda = c.provider_options("cuda").unwrap();
        assert_eq!(cuda["enable_cuda_graph"], "0");
        assert_eq!(cuda["device_id"], "0");

        v["model"]["decoder"]["session_options"]["provider_options"] =
            json!([{"dml": {"enable_graph_capture": "1"}}]);
        assert_eq!(parse(&v).unwrap().device().unwrap(), Device::DirectMl);

        v["model"]["decoder"]["session_options"]["provider_options"] = json!([{"qnn": {}}]);
        let msg = parse(&v).unwrap().device().unwrap_err().to_string();
        assert!(msg.contains("`qnn`") && msg.contains("--device cpu"), "{msg}");
    }

    #[test]
    fn malformed_fields_are_named() {
        let cases: [(&str, Value, &str); 6] = [
            (
                "/model/decoder/num_hidden_layers",
                json!(0),
                "`model.decoder.num_hidden_layers` is 0",
            ),
            ("/model/vocab_size", json!("320"), "`model.vocab_size` is \"320\""),
            (
                "/model/decoder/inputs/past_key_names",
                json!("past.key"),
                "one `%d` for the layer index",
            ),
            ("/model/decoder/filename", json!("../x.onnx"), "not a plain relative path"),
            ("/model/eos_token_id", json!([2, -1]), "`model.eos_token_id` is -1"),
            ("/model/decoder/num_key_value_heads", json!(3), "a divisor of num_attention_heads"),
        ];
        for (pointer, value, expected) in cases {
            let mut v = builder_config();
            *v.pointer_mut(pointer).unwrap() = value;
            let msg = parse(&v).unwrap_err().to_string();
            assert!(msg.starts_with("m/genai_config.json: "), "{msg}");
            assert!(msg.contains(expected), "{pointer}: {msg}");
        }
        let mut v = builder_config();
        v["model"]["decoder"].as_object_mut().unwrap().remove("head_size");
        assert_eq!(
            parse(&v).unwrap_err().to_string(),
            "m/genai_config.json: missing `model.decoder.head_size`"
        );
        assert!(parse(&json!([])).is_err());
    }
}
