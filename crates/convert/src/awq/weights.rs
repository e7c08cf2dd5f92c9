//! The transformed model as a [`WeightSource`]: each layer's scaled and clipped float weights
//! from a scratch safetensors file, everything else from the original source.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use phiquant_runtime::{
    DecoderSpec, Error as RuntimeError, SafetensorsFile, TensorInfo, TensorView, WeightSource,
};

/// A model whose decoder layers were transformed by AWQ. The layers' tensors (in the
/// checkpoint's own layout: fused or not, f32) are read from a scratch file that is unlinked as
/// soon as it is mapped (on Unix; elsewhere when this value is dropped), so that nothing is left
/// behind however the process ends; the embedding, final norm and LM head come from the
/// original source unchanged.
pub struct AwqWeights {
    base: Arc<dyn WeightSource + Send + Sync>,
    file: Option<SafetensorsFile>,
    path: PathBuf,
    unlinked: bool,
}

impl std::fmt::Debug for AwqWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwqWeights").field("path", &self.path).finish()
    }
}

impl AwqWeights {
    /// Opens the scratch file `path` (written by the transform) over `base`.
    pub(crate) fn open(
        base: Arc<dyn WeightSource + Send + Sync>,
        path: &Path,
    ) -> Result<AwqWeights, RuntimeError> {
        let file = SafetensorsFile::open(path)?;
        // The map keeps the data; the name is no longer needed.
        let unlinked = cfg!(unix) && std::fs::remove_file(path).is_ok();
        Ok(AwqWeights { base, file: Some(file), path: path.to_path_buf(), unlinked })
    }

    fn file(&self) -> &SafetensorsFile {
        self.file.as_ref().expect("present until dropped")
    }
}

impl Drop for AwqWeights {
    fn drop(&mut self) {
        self.file = None;
        if !self.unlinked {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl WeightSource for AwqWeights {
    fn spec(&self) -> &DecoderSpec {
        self.base.spec()
    }

    fn tensor_infos(&self) -> Vec<&TensorInfo> {
        self.base
            .tensor_infos()
            .into_iter()
            .map(|i| self.file().info(&i.name).unwrap_or(i))
            .collect()
    }

    fn tensor(&self, name: &str) -> Result<TensorView<'_>, RuntimeError> {
        let file = self.file();
        match (file.info(name), file.data(name)) {
            (Some(info), Some(data)) => Ok(TensorView {
                name: &info.name,
                dtype: info.dtype,
                shape: &info.shape,
                data: std::borrow::Cow::Borrowed(data),
            }),
            _ => self.base.tensor(name),
        }
    }

    fn release(&self, name: &str) {
        if self.file().info(name).is_some() {
            self.file().release(name);
        } else {
            self.base.release(name);
        }
    }
}
