//! A GGUF file as a [`WeightSource`]: each tensor handed out under its Hugging Face name, in
//! the layout [`DecoderSpec::expected_tensors`] describes, dequantized to f32 when asked for and
//! not before, so that a streaming export holds one tensor at a time.
//!
//! Undone on the way: llama.cpp's rotary row permutation of Llama-family q and k
//! ([`unpermute_qk`]); a Phi-3 file that stores q, k and v apart has them stacked into
//! `qkv_proj`. A tied LM head is simply absent, as in a tied checkpoint.

use std::{borrow::Cow, collections::BTreeMap, path::Path};

use super::{
    GgufFile, GgufValue, gguf_linear_name, gguf_name, qk_permutation,
    spec::{ROPE_FACTORS_LONG, ROPE_FACTORS_SHORT},
    unpermute_qk,
};
use crate::{
    DecoderSpec, Dtype, Error, RopeScaling, TensorInfo, TensorProblem, TensorRole, TensorView,
    WeightSource,
};

/// One GGUF tensor that makes up (some rows of) a Hugging Face tensor.
#[derive(Debug, Clone)]
struct Part {
    /// The GGUF name.
    name: String,
    /// Rows (ne1; 1 for a vector).
    rows: usize,
    /// Heads of llama.cpp's q/k permutation to undo, if any.
    heads: Option<usize>,
}

/// An opened GGUF file, checked against the model its metadata describes.
#[derive(Debug)]
pub struct GgufModel {
    file: GgufFile,
    spec: DecoderSpec,
    infos: Vec<TensorInfo>,
    parts: BTreeMap<String, Vec<Part>>,
}

impl GgufModel {
    /// Opens `path`, rebuilds its [`DecoderSpec`] from the metadata, and checks that every tensor
    /// the spec implies is present with the right dimensions and that no other tensor is.
    pub fn open(path: &Path) -> Result<GgufModel, Error> {
        GgufModel::from_file(GgufFile::open(path)?)
    }

    /// As [`GgufModel::open`], over a file already opened.
    pub fn from_file(file: GgufFile) -> Result<GgufModel, Error> {
        let spec = DecoderSpec::from_gguf(&file)?;
        let err = |tensor: &str, problem| Error::Tensor {
            path: file.path().to_path_buf(),
            tensor: tensor.to_string(),
            problem,
        };
        let dims_of = |name: &str, expected: Vec<u64>| -> Result<bool, Error> {
            match file.info(name) {
                None => Ok(false),
                Some(info) if info.dims == expected => Ok(true),
                Some(info) => {
                    Err(err(name, TensorProblem::GgufDims { found: info.dims.clone(), expected }))
                }
            }
        };
        let mut used: Vec<&str> = Vec::new();
        if matches!(spec.rope.scaling, RopeScaling::LongRope { .. }) {
            used.extend([ROPE_FACTORS_LONG, ROPE_FACTORS_SHORT]);
        }
        let mut infos = Vec::new();
        let mut parts = BTreeMap::new();
        for e in spec.expected_tensors() {
            let name = gguf_name(&e.role, &e.name);
            let dims: Vec<u64> = e.shape.iter().rev().map(|&d| d as u64).collect();
            let rows = |shape: &[usize]| shape.first().copied().unwrap_or(1);
            let cols = e.shape.get(1).copied();
            let (linears, layer, bias) = match &e.role {
                TensorRole::Weight { layer, parts } => (parts.as_slice(), *layer, false),
                TensorRole::Bias { layer, parts } => (parts.as_slice(), *layer, true),
                _ => (&[][..], 0, false),
            };
            let found = if dims_of(&name, dims)? {
                vec![Part { name, rows: rows(&e.shape), heads: qk_permutation(&spec, linears) }]
            } else if linears.len() > 1 {
                // A fused Hugging Face tensor stored as one GGUF tensor per projection.
                let mut split = Vec::new();
                for &l in linears {
                    let part = gguf_linear_name(layer, l, bias);
                    let r = spec.linear_shape(l)[0];
                    let d = match cols {
                        Some(c) => vec![c as u64, r as u64],
                        None => vec![r as u64],
                    };
                    if !dims_of(&part, d)? {
                        return Err(err(&name, TensorProblem::MissingFromGguf));
                    }
                    split.push(Part { name: part, rows: r, heads: None });
                }
                split
            } else {
                return Err(err(&name, TensorProblem::MissingFromGguf));
            };
            infos.push(TensorInfo::computed(e.name.clone(), Dtype::F32, e.shape.clone()));
            parts.insert(e.name, found);
        }
        for p in parts.values().flatten() {
            used.push(&p.name);
        }
        if let Some(extra) = file.tensors().iter().find(|t| !used.contains(&t.name.as_str())) {
            return Err(err(
                &extra.name,
                TensorProblem::UnexpectedGguf {
                    architecture: file
                        .get("general.architecture")
                        .and_then(GgufValue::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    layers: spec.num_layers,
                },
            ));
        }
        Ok(GgufModel { file, spec, infos, parts })
    }

    /// The file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// A tensor's values in f32, under its Hugging Face name.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, Error> {
        let parts = self.parts.get(name).ok_or_else(|| Error::Tensor {
            path: self.file.path().to_path_buf(),
            tensor: name.to_string(),
            problem: TensorProblem::Missing,
        })?;
        let mut out = Vec::new();
        for p in parts {
            let values = self.file.read_f32(&p.name)?;
            match p.heads {
                Some(heads) => {
                    let cols = values.len() / p.rows.max(1);
                    out.extend_from_slice(&unpermute_qk(&values, p.rows, cols, heads));
                }
                None if parts.len() == 1 => out = values,
                None => out.extend_from_slice(&values),
            }
        }
        Ok(out)
    }
}

impl WeightSource for GgufModel {
    fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    fn tensor_infos(&self) -> Vec<&TensorInfo> {
        self.infos.iter().collect()
    }

    fn tensor(&self, name: &str) -> Result<TensorView<'_>, Error> {
        let values = self.tensor_f32(name)?;
        let info = self.infos.iter().find(|i| i.name == name).expect("parts and infos agree");
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(TensorView {
            name: &info.name,
            dtype: Dtype::F32,
            shape: &info.shape,
            data: Cow::Owned(data),
        })
    }

    fn release(&self, name: &str) {
        for p in self.parts.get(name).into_iter().flatten() {
            self.file.release(&p.name);
        }
    }
}
