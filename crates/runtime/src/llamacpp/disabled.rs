//! The llama.cpp backend when phiquant is built without the `llama-cpp` feature: loading says so,
//! and since no model can exist, every other method is unreachable by construction.

use std::path::Path;

use crate::Error;

/// A model that cannot be created (the type has no values).
#[derive(Debug)]
pub(crate) enum Model {}

impl Model {
    pub(crate) fn load(path: &Path, _threads: usize) -> Result<Model, Error> {
        Err(Error::Backend {
            backend: super::BACKEND,
            path: path.to_path_buf(),
            message: "phiquant was built without llama.cpp (enable the `llama-cpp` feature)".into(),
        })
    }

    pub(crate) fn vocab_size(&self) -> usize {
        match *self {}
    }

    pub(crate) fn bos(&self) -> Option<u32> {
        match *self {}
    }

    pub(crate) fn add_bos(&self) -> bool {
        match *self {}
    }

    pub(crate) fn tokenize(&self, _text: &str, _add_bos: bool) -> Result<Vec<u32>, Error> {
        match *self {}
    }

    pub(crate) fn detokenize(&self, _ids: &[u32]) -> Result<String, Error> {
        match *self {}
    }

    pub(crate) fn logits(&self, _tokens: &[u32]) -> Result<Vec<f32>, Error> {
        match *self {}
    }

    pub(crate) fn generate_greedy(
        &self,
        _prompt: &[u32],
        _max_tokens: usize,
        _stop: &[u32],
    ) -> Result<Vec<u32>, Error> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_says_what_is_missing() {
        let err = Model::load(Path::new("m.gguf"), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.gguf: llama.cpp: phiquant was built without llama.cpp (enable the `llama-cpp` feature)"
        );
    }
}
