//! GGUF export for llama.cpp: plan, metadata and a streaming writer.

mod metadata;
mod plan;
mod writer;

use std::{
    io::BufWriter,
    path::{Path, PathBuf},
};

use phiquant_quant::{ElementType, Matrix, quantize_matrix};
pub use phiquant_runtime::gguf::permute_qk;
use phiquant_runtime::{Dtype, WeightSource};

pub use self::{
    metadata::{arch_name, file_type, general_name, model_keys, size_label, tokenizer_keys},
    plan::{GgufScheme, TensorSource, plan_tensors},
    writer::{PlannedTensor, header_bytes, write_gguf},
};
use crate::{Error, SourceModel};

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufExport {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Tensors written.
    pub tensors: usize,
}

/// The values of one planned tensor in its GGUF type.
fn tensor_bytes(
    ckpt: &dyn WeightSource,
    planned: &PlannedTensor,
    source: &TensorSource,
) -> Result<Vec<u8>, Error> {
    let cols = planned.dims[0] as usize;
    let rows = (planned.numel() / planned.dims[0]) as usize;
    let quantize = |m: &Matrix<'_>, hf: &str| {
        quantize_matrix(planned.format, m)
            .map_err(|source| Error::Quantize { tensor: hf.to_string(), source })
    };
    match source {
        TensorSource::Checkpoint(name) => {
            let view = ckpt.tensor(name)?;
            let dtype = match view.dtype {
                Dtype::F32 => ElementType::F32,
                Dtype::F16 => ElementType::F16,
                _ => ElementType::Bf16,
            };
            let m = Matrix::new(&view.data, dtype, rows, cols)
                .map_err(|source| Error::Quantize { tensor: name.clone(), source })?;
            quantize(&m, name)
        }
        TensorSource::Permuted { tensor, heads } => {
            let values = ckpt.tensor(tensor)?.to_f32()?;
            let permuted = permute_qk(&values, rows, cols, *heads);
            let m = Matrix::from_f32(&permuted, rows, cols)
                .map_err(|source| Error::Quantize { tensor: tensor.clone(), source })?;
            quantize(&m, tensor)
        }
        TensorSource::Values(values) => {
            let m = Matrix::from_f32(values, rows, cols)
                .map_err(|source| Error::Quantize { tensor: planned.name.clone(), source })?;
            quantize(&m, &planned.name)
        }
    }
}

/// Writes `model` as a GGUF file at `out` (a [`crate::Staged`] file, which the caller syncs and
/// commits). The tokenizer keys come from the model's `tokenizer.json`, or for a GGUF input are
/// copied from it as they are. `progress(done, total)` is called after each tensor.
pub fn export_gguf(
    model: &SourceModel,
    scheme: &GgufScheme,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GgufExport, Error> {
    let ckpt = model.weights();
    let spec = model.spec();
    let plan = plan_tensors(spec, scheme);
    let params: u64 = plan
        .iter()
        .filter(|(_, s)| !matches!(s, TensorSource::Values(_)))
        .map(|(t, _)| t.numel())
        .sum();
    let mut metadata =
        model_keys(spec, model.name(), params, file_type(scheme.base, scheme.q4_k_m));
    // A GGUF input's descriptive keys go where llama.cpp's converter puts them: after the name
    // and before the size label.
    let at = metadata.iter().position(|(k, _)| k == "general.size_label").unwrap_or(0);
    metadata.splice(at..at, model.gguf_general_keys().iter().cloned());
    match model.gguf_tokenizer_keys() {
        Some(keys) => metadata.extend(keys.iter().cloned()),
        None => metadata.extend(tokenizer_keys(model.aux_files(), spec)?),
    }
    let (tensors, sources): (Vec<PlannedTensor>, Vec<TensorSource>) = plan.into_iter().unzip();

    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let file = std::fs::File::create(out).map_err(io("creating", out))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write_gguf(
        &mut w,
        &metadata,
        &tensors,
        phiquant_runtime::gguf::GGUF_DEFAULT_ALIGNMENT,
        |i, t| {
            let bytes = tensor_bytes(ckpt, t, &sources[i]);
            // The tensor's pages are done with: keep the resident set near one tensor.
            if let TensorSource::Checkpoint(name) | TensorSource::Permuted { tensor: name, .. } =
                &sources[i]
            {
                ckpt.release(name);
            }
            progress(i + 1, sources.len());
            bytes
        },
    )
    .map_err(|e| match e {
        // The writer's I/O errors carry no path: they are all on this file.
        Error::Io { op, path, source } if path.as_os_str().is_empty() => {
            Error::Io { op, path: out.to_path_buf(), source }
        }
        other => other,
    })?;
    let file = w.into_inner().map_err(|e| Error::Io {
        op: "writing",
        path: out.to_path_buf(),
        source: e.into_error(),
    })?;
    let bytes = file.metadata().map_err(io("reading metadata of", out))?.len();
    Ok(GgufExport { path: out.to_path_buf(), bytes, tensors: tensors.len() })
}

/// The writer's I/O errors, before `export_gguf` names the file they concern.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Error {
        Error::Io { op: "writing", path: PathBuf::new(), source }
    }
}

impl PlannedTensor {
    /// Elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}
