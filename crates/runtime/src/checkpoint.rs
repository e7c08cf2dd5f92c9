//! A Hugging Face checkpoint folder: `config.json` plus safetensors weights, single-file or sharded
//! through `model.safetensors.index.json`, checked against the config before anything reads a
//! value.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    DecoderSpec, Dtype, Error, SafetensorsFile, TensorInfo, TensorProblem, naming::is_ignorable,
    read_json_file,
};

/// The file names transformers uses for safetensors weights.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// A tensor's bytes: borrowed from its file's memory map when stored as they are (safetensors),
/// owned when the source computes them (a GGUF tensor dequantized to f32).
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// Name.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [usize],
    /// Little-endian bytes.
    pub data: Cow<'a, [u8]>,
}

impl TensorView<'_> {
    /// The values widened to `f32`; errors for non-float dtypes.
    pub fn to_f32(&self) -> Result<Vec<f32>, Error> {
        let mut out = vec![0f32; self.data.len() / self.dtype.size()];
        match self.dtype {
            Dtype::F32 => {
                for (o, b) in out.iter_mut().zip(self.data.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::F16 => {
                phiquant_quant::widen_f16(&self.data, &mut out).expect("sizes checked on open")
            }
            Dtype::BF16 => {
                phiquant_quant::widen_bf16(&self.data, &mut out).expect("sizes checked on open")
            }
            found => {
                return Err(Error::Tensor {
                    path: PathBuf::new(),
                    tensor: self.name.to_string(),
                    problem: TensorProblem::UnsupportedDtype {
                        found,
                        expected: "F32, F16 or BF16",
                    },
                });
            }
        }
        Ok(out)
    }
}

/// Where model weights come from: a safetensors checkpoint ([`Checkpoint`]) or a GGUF file
/// ([`crate::gguf::GgufModel`]), each handing out tensors under their Hugging Face names and in
/// the layout [`DecoderSpec::expected_tensors`] describes.
pub trait WeightSource {
    /// The model the weights belong to.
    fn spec(&self) -> &DecoderSpec;
    /// The model's tensors, in the fixed order of [`DecoderSpec::expected_tensors`].
    fn tensor_infos(&self) -> Vec<&TensorInfo>;
    /// One tensor's bytes.
    fn tensor(&self, name: &str) -> Result<TensorView<'_>, Error>;
    /// Says that `name` has been consumed, so that a streaming reader can drop its pages from
    /// the resident set; the default does nothing.
    fn release(&self, name: &str) {
        let _ = name;
    }
}

/// An opened, fully checked checkpoint folder.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    spec: DecoderSpec,
    files: Vec<SafetensorsFile>,
    /// Model tensors in the spec's order: (file index, tensor name).
    order: Vec<(usize, String)>,
    location: HashMap<String, usize>,
    ignored: Vec<String>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens `dir`, parses its config, opens every weight file and checks each tensor's name,
    /// shape and dtype against the config.
    pub fn open(dir: &Path) -> Result<Checkpoint, Error> {
        let spec = DecoderSpec::from_config_file(&dir.join("config.json"))?;
        let (files, listed) = open_weights(dir)?;
        let (order, ignored) = check_against_spec(dir, &spec, &files, &listed)?;
        let location = order.iter().map(|(i, n)| (n.clone(), *i)).collect();
        Ok(Checkpoint { dir: dir.to_path_buf(), spec, files, order, location, ignored })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The weight files, in the order they were opened.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Tensors present in the files that carry no weights of the model (a rotary `inv_freq`
    /// buffer, a copy of a tied LM head); they are not read.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }
}

impl WeightSource for Checkpoint {
    fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    fn tensor_infos(&self) -> Vec<&TensorInfo> {
        self.order
            .iter()
            .map(|(i, name)| self.files[*i].info(name).expect("checked on open"))
            .collect()
    }

    fn tensor(&self, name: &str) -> Result<TensorView<'_>, Error> {
        let missing = || Error::Tensor {
            path: self.dir.clone(),
            tensor: name.to_string(),
            problem: TensorProblem::Missing,
        };
        let file = &self.files[*self.location.get(name).ok_or_else(missing)?];
        let info = file.info(name).ok_or_else(missing)?;
        let data = file.data(name).ok_or_else(missing)?;
        Ok(TensorView {
            name: &info.name,
            dtype: info.dtype,
            shape: &info.shape,
            data: Cow::Borrowed(data),
        })
    }

    /// Drops `name`'s pages from the resident set once it has been consumed (see
    /// [`SafetensorsFile::release`]).
    fn release(&self, name: &str) {
        if let Some(&i) = self.location.get(name) {
            self.files[i].release(name);
        }
    }
}

/// Whether a file name read from an index or a listing stays inside its folder.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['/', '\\', '\0'])
        && name != "."
        && name != ".."
        && !name.contains(':')
}

/// File names of PyTorch pickle checkpoints, which phiquant refuses to load.
pub fn is_pickle_weight_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    [".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"].iter().any(|ext| base.ends_with(ext))
        && !base.ends_with(".safetensors")
        && (base.starts_with("pytorch_model")
            || !base.ends_with(".bin")
            || base.starts_with("model"))
}

/// The safetensors files of `dir` (with, for a sharded checkpoint, the tensors the index assigns
/// to each).
type Opened = (Vec<SafetensorsFile>, Option<BTreeMap<String, usize>>);

fn open_weights(dir: &Path) -> Result<Opened, Error> {
    let index_path = dir.join(INDEX_FILE);
    if index_path.is_file() {
        let value = read_json_file(&index_path, MAX_INDEX_BYTES)?;
        let index: Index = serde_json::from_value(value)
            .map_err(|source| Error::Json { path: index_path.clone(), source })?;
        // Shards in name order; each tensor assigned to its shard's position.
        let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (tensor, shard) in &index.weight_map {
            if !is_plain_file_name(shard) {
                return Err(Error::UnsafeFileName {
                    path: index_path.clone(),
                    name: shard.clone(),
                });
            }
            shards.entry(shard).or_default().push(tensor);
        }
        let mut files = Vec::with_capacity(shards.len());
        let mut listed = BTreeMap::new();
        for (i, (shard, tensors)) in shards.iter().enumerate() {
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(Error::MissingShard {
                    path: index_path.clone(),
                    shard: shard.to_string(),
                    tensor: tensors[0].to_string(),
                });
            }
            let file = SafetensorsFile::open(&path)?;
            for t in tensors {
                if file.info(t).is_none() {
                    return Err(Error::Tensor {
                        path,
                        tensor: t.to_string(),
                        problem: TensorProblem::NotInShard,
                    });
                }
                listed.insert(t.to_string(), i);
            }
            files.push(file);
        }
        return Ok((files, Some(listed)));
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok((vec![SafetensorsFile::open(&single)?], None));
    }

    let mut pickles = Vec::new();
    let mut others = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        op: "listing",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            others.push(name);
        } else if is_pickle_weight_name(&name) {
            pickles.push(name);
        }
    }
    pickles.sort();
    others.sort();
    if others.is_empty() && !pickles.is_empty() {
        return Err(Error::PickleOnly { path: dir.to_path_buf(), files: pickles });
    }
    Err(Error::NoWeights { path: dir.to_path_buf(), found: others })
}

type Checked = (Vec<(usize, String)>, Vec<String>);

fn check_against_spec(
    dir: &Path,
    spec: &DecoderSpec,
    files: &[SafetensorsFile],
    listed: &Option<BTreeMap<String, usize>>,
) -> Result<Checked, Error> {
    // Where each tensor is, refusing duplicates and (for shards) tensors the index leaves out.
    let mut present: HashMap<&str, usize> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        for t in file.tensors() {
            if let Some(listed) = listed
                && listed.get(&t.name) != Some(&i)
            {
                if let Some(&owner) = listed.get(&t.name) {
                    return Err(Error::Tensor {
                        path: file.path().to_path_buf(),
                        tensor: t.name.clone(),
                        problem: TensorProblem::Duplicate {
                            other: files[owner].path().display().to_string(),
                        },
                    });
                }
                return Err(Error::Tensor {
                    path: dir.join(INDEX_FILE),
                    tensor: t.name.clone(),
                    problem: TensorProblem::NotInShard,
                });
            }
            if let Some(prev) = present.insert(&t.name, i) {
                return Err(Error::Tensor {
                    path: file.path().to_path_buf(),
                    tensor: t.name.clone(),
                    problem: TensorProblem::Duplicate {
                        other: files[prev].path().display().to_string(),
                    },
                });
            }
        }
    }

    let weights_path = |name: &str| match present.get(name) {
        Some(&i) => files[i].path().to_path_buf(),
        None if listed.is_some() => dir.join(INDEX_FILE),
        None => dir.join(SINGLE_FILE),
    };

    let expected = spec.expected_tensors();
    let mut order = Vec::with_capacity(expected.len());
    for e in &expected {
        let err = |problem| Error::Tensor {
            path: weights_path(&e.name),
            tensor: e.name.clone(),
            problem,
        };
        let &i = present.get(e.name.as_str()).ok_or_else(|| err(TensorProblem::Missing))?;
        let info = files[i].info(&e.name).expect("indexed above");
        check_tensor(info, &e.shape).map_err(err)?;
        order.push((i, e.name.clone()));
    }

    let expected_names: std::collections::HashSet<&str> =
        expected.iter().map(|e| e.name.as_str()).collect();
    let mut ignored = Vec::new();
    let mut unexpected: Vec<&str> =
        present.keys().copied().filter(|n| !expected_names.contains(n)).collect();
    unexpected.sort_unstable();
    for name in unexpected {
        let err =
            |problem| Error::Tensor { path: weights_path(name), tensor: name.to_string(), problem };
        if !is_ignorable(spec, name) {
            return Err(err(TensorProblem::Unexpected {
                architecture: spec.architecture.class_name(),
                layers: spec.num_layers,
            }));
        }
        if name == crate::naming::LM_HEAD {
            let info = files[present[name]].info(name).expect("indexed above");
            check_tensor(info, &[spec.vocab_size, spec.hidden_size]).map_err(err)?;
        }
        ignored.push(name.to_string());
    }
    Ok((order, ignored))
}

fn check_tensor(info: &TensorInfo, shape: &[usize]) -> Result<(), TensorProblem> {
    if !info.dtype.is_weight_float() {
        return Err(TensorProblem::UnsupportedDtype {
            found: info.dtype,
            expected: "F32, F16 or BF16",
        });
    }
    if info.shape != shape {
        return Err(TensorProblem::ShapeMismatch {
            found: info.shape.clone(),
            expected: shape.to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in ["", "..", "../x.safetensors", "a/b", "a\\b", "/etc/passwd", "C:x"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
        assert!(is_pickle_weight_name("pytorch_model.bin"));
        assert!(is_pickle_weight_name("pytorch_model-00001-of-00002.bin"));
        assert!(is_pickle_weight_name("consolidated.00.pth"));
        assert!(is_pickle_weight_name("model.pt"));
        assert!(!is_pickle_weight_name("model.safetensors"));
        assert!(!is_pickle_weight_name("training_args.json"));
    }
}
