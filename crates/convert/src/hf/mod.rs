//! Hugging Face checkpoint export: a folder that transformers, phiquant and the other tools
//! read (`config.json` in the transformers 4 spelling, the tokenizer and generation files, and
//! one `model.safetensors` in f16 or bf16), from any [`SourceModel`], a GGUF file included.

mod safetensors;

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use phiquant_quant::{BlockFormat, Matrix, quantize_matrix};
use phiquant_runtime::{AUX_FILE_NAMES, Dtype, SINGLE_FILE};
use serde_json::Value;

pub use self::safetensors::{PlannedSafetensor, safetensors_header, write_safetensors};
use crate::{Error, SourceModel};

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct HfExport {
    /// The folder.
    pub path: PathBuf,
    /// The size of its files together.
    pub bytes: u64,
    /// Tensors written.
    pub tensors: usize,
}

/// The element type of a Hugging Face target: f16 or bf16.
fn dtype_of(format: BlockFormat) -> Option<(Dtype, &'static str)> {
    match format {
        BlockFormat::F16 => Some((Dtype::F16, "float16")),
        BlockFormat::Bf16 => Some((Dtype::BF16, "bfloat16")),
        _ => None,
    }
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    out.push(b'\n');
    out
}

/// The files of the folder besides the weights: `config.json` from the spec, the source's
/// tokenizer and generation files, and a `generation_config.json` from the spec when the source
/// has none.
fn small_files(model: &SourceModel, torch_dtype: &str) -> Vec<(String, Vec<u8>)> {
    let mut spec = model.spec().clone();
    spec.declared_dtype = Some(torch_dtype.to_string());
    let mut files = vec![("config.json".to_string(), pretty(&spec.to_config_value()))];
    for (name, bytes) in model.aux_files().iter() {
        files.push((name.to_string(), bytes.to_vec()));
    }
    if model.aux_files().get("generation_config.json").is_none() {
        let mut g = serde_json::Map::new();
        g.insert("bos_token_id".into(), spec.bos_token_id.into());
        g.insert(
            "eos_token_id".into(),
            match spec.eos_token_ids.as_slice() {
                [] => Value::Null,
                [one] => (*one).into(),
                many => many.into(),
            },
        );
        if let Some(p) = spec.pad_token_id {
            g.insert("pad_token_id".into(), p.into());
        }
        files.push(("generation_config.json".into(), pretty(&Value::Object(g))));
    }
    files.sort();
    files
}

/// A tensor's values in the target type.
fn tensor_bytes(
    model: &SourceModel,
    t: &PlannedSafetensor,
    format: BlockFormat,
) -> Result<Vec<u8>, Error> {
    let values = model.weights().tensor(&t.name)?.to_f32()?;
    let cols = t.shape.last().copied().unwrap_or(1);
    let rows = values.len() / cols.max(1);
    let m = Matrix::from_f32(&values, rows, cols)
        .map_err(|source| Error::Quantize { tensor: t.name.clone(), source })?;
    quantize_matrix(format, &m).map_err(|source| Error::Quantize { tensor: t.name.clone(), source })
}

/// Whether an existing `out` is a folder phiquant may replace: one holding only the files an
/// export writes.
fn replaceable(out: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(out) else { return false };
    entries.flatten().all(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        e.file_type().is_ok_and(|t| t.is_file())
            && (name == "config.json"
                || name == crate::MANIFEST_FILE
                || name == SINGLE_FILE
                || AUX_FILE_NAMES.contains(&name.as_str()))
    })
}

/// Checks that `out` can take a Hugging Face export: absent, or a folder that holds only an
/// earlier export's files (a folder of other files is never replaced).
pub fn check_destination(out: &Path) -> Result<(), Error> {
    if out.exists() && !(out.is_dir() && replaceable(out)) {
        return Err(Error::Io {
            op: "replacing",
            path: out.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and holds files other than an earlier export's; remove it or choose another --out",
            ),
        });
    }
    Ok(())
}

/// Writes `model` as a Hugging Face folder with weights in `format` (F16 or BF16) into the empty
/// folder `dir` (a [`crate::Staged`] folder, which the caller commits; see
/// [`check_destination`]). The weights are read, converted (round to nearest even) and written
/// one tensor at a time, in name order, so the bytes depend only on the source.
/// `progress(done, total)` is called after each tensor.
pub fn export_hf(
    model: &SourceModel,
    format: BlockFormat,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<HfExport, Error> {
    let Some((dtype, torch_dtype)) = dtype_of(format) else {
        return Err(Error::Target {
            target: format!("hf-{}", format.name().to_ascii_lowercase()),
            reason: "Hugging Face folders are written in f16 or bf16".into(),
        });
    };
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let mut tensors: Vec<PlannedSafetensor> = model
        .weights()
        .tensor_infos()
        .into_iter()
        .map(|i| PlannedSafetensor { name: i.name.clone(), dtype, shape: i.shape.clone() })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);

    let mut bytes = 0u64;
    for (name, contents) in small_files(model, torch_dtype) {
        let path = dir.join(&name);
        std::fs::write(&path, &contents).map_err(io("writing", &path))?;
        bytes += contents.len() as u64;
    }
    let path = dir.join(SINGLE_FILE);
    let file = std::fs::File::create(&path).map_err(io("creating", &path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let total = tensors.len();
    write_safetensors(&mut w, &tensors, &metadata, |i, t| {
        let b = tensor_bytes(model, t, format);
        model.weights().release(&t.name);
        progress(i + 1, total);
        b
    })
    .map_err(|e| match e {
        Error::Io { op, path: p, source } if p.as_os_str().is_empty() => {
            Error::Io { op, path: path.clone(), source }
        }
        other => other,
    })?;
    w.flush().map_err(io("writing", &path))?;
    let file = w.into_inner().map_err(|e| Error::Io {
        op: "writing",
        path: path.clone(),
        source: e.into_error(),
    })?;
    bytes += file.metadata().map_err(io("reading metadata of", &path))?.len();
    Ok(HfExport { path: dir.to_path_buf(), bytes, tensors: tensors.len() })
}
