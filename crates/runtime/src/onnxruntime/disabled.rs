//! The ONNX Runtime backend when phiquant is built without the `onnxruntime` feature: loading
//! says so, and since no model can exist, every other method is unreachable by construction.

use std::path::Path;

use super::{DeviceSpec, GenaiConfig};
use crate::Error;

/// A model that cannot be created (the type has no values).
#[derive(Debug)]
pub(crate) enum Model {}

/// The cache of a model that cannot exist.
#[derive(Debug)]
pub(crate) enum Cache {}

impl Model {
    pub(crate) fn load(
        path: &Path,
        _config: &GenaiConfig,
        _device: DeviceSpec,
        _threads: usize,
    ) -> Result<Model, Error> {
        Err(Error::Backend {
            backend: super::BACKEND,
            path: path.to_path_buf(),
            message: "phiquant was built without ONNX Runtime (enable the `onnxruntime` feature)"
                .into(),
        })
    }

    pub(crate) fn new_cache(&self) -> Result<Cache, Error> {
        match *self {}
    }

    pub(crate) fn step(
        &self,
        _cache: &mut Cache,
        _tokens: &[u32],
        _past: usize,
        _logits: &mut Vec<f32>,
    ) -> Result<(), Error> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_says_what_is_missing() {
        let config = GenaiConfig::from_value(
            Path::new("genai_config.json"),
            &serde_json::json!({"model": {"vocab_size": 8, "context_length": 8, "decoder": {
                "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1,
                "head_size": 4}}}),
        )
        .unwrap();
        let err =
            Model::load(Path::new("m/model.onnx"), &config, super::super::Device::Cpu.into(), 0)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "m/model.onnx: ONNX Runtime: phiquant was built without ONNX Runtime (enable the \
             `onnxruntime` feature)"
        );
    }
}
