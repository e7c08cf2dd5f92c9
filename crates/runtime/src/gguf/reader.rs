//! A validating GGUF reader: every count and length is capped and checked against the bytes that
//! remain before anything is allocated, and tensor data must lie inside the file.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use super::{GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufValue};
use crate::{Error, HeaderProblem, TensorProblem};

const MAX_TENSORS: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_STRING: u64 = 1 << 26;
const MAX_ARRAY: u64 = 1 << 28;
const MAX_DIMS: u32 = 4;

/// One tensor's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Name.
    pub name: String,
    /// Dimensions as GGUF stores them: `ne0` (the row length) first.
    pub dims: Vec<u64>,
    /// The `ggml_type` number.
    pub type_id: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub nbytes: u64,
}

impl GgufTensorInfo {
    /// The element count.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The supported type, if it is one.
    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_id)
    }
}

/// An opened GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    index: BTreeMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    by_name: BTreeMap<String, usize>,
    data_start: u64,
}

struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], Error> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what,
                needed: n,
                remaining,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self, what: &'static str) -> Result<String, Error> {
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(
                self.malformed(format!("{what} of {len} bytes exceeds the limit of {MAX_STRING}"))
            );
        }
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    fn malformed(&self, what: String) -> Error {
        Error::GgufHeader { path: self.path.to_path_buf(), problem: HeaderProblem::Malformed(what) }
    }

    fn value(&mut self, type_id: u32, depth: u32) -> Result<GgufValue, Error> {
        const W: &str = "a metadata value";
        Ok(match type_id {
            0 => GgufValue::U8(self.take(1, W)?[0]),
            1 => GgufValue::I8(self.take(1, W)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.take(2, W)?.try_into().expect("2"))),
            3 => GgufValue::I16(i16::from_le_bytes(self.take(2, W)?.try_into().expect("2"))),
            4 => GgufValue::U32(self.u32(W)?),
            5 => GgufValue::I32(self.u32(W)? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32(W)?)),
            7 => match self.take(1, W)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.malformed(format!("boolean value {b}"))),
            },
            8 => GgufValue::String(self.string("a metadata string")?),
            9 => {
                if depth > 0 {
                    return Err(self.malformed("nested arrays".into()));
                }
                let elem = self.u32("an array type")?;
                let n = self.u64("an array length")?;
                if n > MAX_ARRAY {
                    return Err(self.malformed(format!(
                        "array of {n} elements exceeds the limit of {MAX_ARRAY}"
                    )));
                }
                // Each element takes at least one byte: refuse counts the file cannot hold.
                let remaining = (self.bytes.len() - self.pos) as u64;
                if n > remaining {
                    return Err(Error::Truncated {
                        path: self.path.to_path_buf(),
                        what: "an array",
                        needed: n,
                        remaining,
                    });
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(elem, items)
            }
            10 => GgufValue::U64(self.u64(W)?),
            11 => GgufValue::I64(self.u64(W)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(W)?)),
            t => return Err(self.malformed(format!("unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Opens and validates `path`.
    pub fn open(path: &Path) -> Result<GgufFile, Error> {
        let io = |op| move |source| Error::Io { op, path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io("opening"))?;
        // SAFETY: read-only map of a file phiquant never writes while reading (as in
        // safetensors.rs); a concurrent truncation by another process is the shared hazard of
        // every mmap-based model reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("mapping"))?;
        let mut c = Cursor { path, bytes: &map, pos: 0 };
        if c.take(4, "the GGUF magic")? != GGUF_MAGIC {
            return Err(c.malformed("not a GGUF file (bad magic)".into()));
        }
        let version = c.u32("the GGUF version")?;
        if !(2..=3).contains(&version) {
            return Err(c.malformed(format!("GGUF version {version} (phiquant reads 2 and 3)")));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
            return Err(c.malformed(format!(
                "{n_tensors} tensors and {n_kv} metadata entries exceed the limits"
            )));
        }
        let mut metadata = Vec::with_capacity(n_kv.min(4096) as usize);
        let mut index = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("a metadata key")?;
            let t = c.u32("a metadata type")?;
            let v = c.value(t, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(c.malformed(format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, v));
        }
        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => GGUF_DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(
                        c.malformed(format!("general.alignment {v:?} is not a power of two"))
                    );
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors.min(65536) as usize);
        let mut by_name = BTreeMap::new();
        for _ in 0..n_tensors {
            let name = c.string("a tensor name")?;
            let n_dims = c.u32("a tensor rank")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.malformed(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64("a tensor dimension")?);
            }
            let type_id = c.u32("a tensor type")?;
            let offset = c.u64("a tensor offset")?;
            let err =
                |problem| Error::Tensor { path: path.to_path_buf(), tensor: name.clone(), problem };
            let ty = GgmlType::from_id(type_id).ok_or_else(|| {
                err(TensorProblem::UnsupportedGgmlType {
                    id: type_id,
                    name: GgmlType::name_of(type_id),
                })
            })?;
            let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let bl = ty.0.block_len() as u64;
            if dims.contains(&0) {
                return Err(err(TensorProblem::Empty(shape)));
            }
            if !dims[0].is_multiple_of(bl) {
                return Err(err(TensorProblem::PartialBlock {
                    row: dims[0],
                    block: bl,
                    name: GgmlType::name_of(type_id),
                }));
            }
            let nbytes = numel
                .and_then(|n| (n / bl).checked_mul(ty.0.block_bytes() as u64))
                .ok_or_else(|| err(TensorProblem::ShapeOverflow(shape.clone())))?;
            if offset % alignment != 0 {
                return Err(err(TensorProblem::Misaligned { offset, alignment }));
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(err(TensorProblem::Duplicate { other: path.display().to_string() }));
            }
            tensors.push(GgufTensorInfo { name, dims, type_id, offset, nbytes });
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let data_len = (map.len() as u64).saturating_sub(data_start);
        for t in &tensors {
            let end = t.offset.saturating_add(t.nbytes);
            if end > data_len {
                return Err(Error::Tensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    problem: TensorProblem::OutOfRange { end, data_len },
                });
            }
        }
        let mut sorted: Vec<&GgufTensorInfo> = tensors.iter().collect();
        sorted.sort_by_key(|t| t.offset);
        for pair in sorted.windows(2) {
            if pair[0].offset + pair[0].nbytes > pair[1].offset {
                return Err(Error::Tensor {
                    path: path.to_path_buf(),
                    tensor: pair[1].name.clone(),
                    problem: TensorProblem::Overlap {
                        begin: pair[1].offset,
                        end: pair[1].offset + pair[1].nbytes,
                        other: pair[0].name.clone(),
                    },
                });
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version,
            alignment,
            metadata,
            index,
            tensors,
            by_name,
            data_start,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// A tensor's entry by name.
    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's raw bytes.
    pub fn data(&self, name: &str) -> Option<&[u8]> {
        let t = self.info(name)?;
        let start = (self.data_start + t.offset) as usize;
        self.map.get(start..start + t.nbytes as usize)
    }

    /// Tells the kernel that `name`'s pages will not be read again soon, so that they leave this
    /// process's resident set (as [`crate::SafetensorsFile::release`] does).
    pub fn release(&self, name: &str) {
        let Some(t) = self.info(name) else { return };
        #[cfg(unix)]
        {
            let page = 4096u64;
            let begin = self.data_start + t.offset;
            let start = begin.div_ceil(page) * page;
            let end = (begin + t.nbytes) / page * page;
            if end > start {
                // SAFETY: the map is a read-only, shared mapping of a file: MADV_DONTNEED only
                // drops the pages from this process, and later reads fault them back in from the
                // file unchanged. Callers release a tensor after its bytes were consumed.
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start as usize,
                        (end - start) as usize,
                    )
                };
            }
        }
    }

    /// A tensor dequantized to f32 (row-major, `dims[0]` values a row).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, Error> {
        let missing = || Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            problem: TensorProblem::Missing,
        };
        let t = self.info(name).ok_or_else(missing)?;
        let bytes = self.data(name).ok_or_else(missing)?;
        let ty = t.ggml_type().expect("checked on open");
        let mut out = vec![0f32; t.numel() as usize];
        phiquant_quant::dequantize_matrix(ty.0, bytes, t.dims[0] as usize, &mut out).map_err(
            |e| Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                problem: TensorProblem::UnknownDtype(e.to_string()),
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shared_smollm2_gguf() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            return;
        }
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.get("general.architecture").and_then(GgufValue::as_str), Some("llama"));
        assert_eq!(f.get("llama.block_count").and_then(GgufValue::as_u64), Some(30));
        assert_eq!(f.tensors().len(), 272);
        let emb = f.read_f32("token_embd.weight").unwrap();
        assert_eq!(emb.len(), 49152 * 576);
        assert!(emb.iter().all(|v| v.is_finite()));
    }

    /// A GGUF header with no metadata and one tensor `t` of `dims` and `ggml_type`.
    fn one_tensor(dims: &[u64], ggml_type: u32) -> Vec<u8> {
        let mut b = [b"GGUF".as_slice(), &3u32.to_le_bytes(), &1u64.to_le_bytes()].concat();
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.push(b't');
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ggml_type.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b
    }

    #[test]
    fn hostile_headers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GGU".to_vec(), "needs 4 bytes, only 3 remain"),
            (b"NOPE\x03\0\0\0".to_vec(), "invalid GGUF header: not a GGUF file (bad magic)"),
            ([b"GGUF".as_slice(), &9u32.to_le_bytes()].concat(), "GGUF version 9"),
            (
                [
                    b"GGUF".as_slice(),
                    &3u32.to_le_bytes(),
                    &u64::MAX.to_le_bytes(),
                    &0u64.to_le_bytes(),
                ]
                .concat(),
                "exceed the limits",
            ),
            (
                [
                    b"GGUF".as_slice(),
                    &3u32.to_le_bytes(),
                    &0u64.to_le_bytes(),
                    &1u64.to_le_bytes(),
                    &u64::MAX.to_le_bytes(),
                ]
                .concat(),
                "exceeds the limit",
            ),
            (one_tensor(&[8, 16], 2), "rows of 8 elements are not whole Q4_0 blocks of 32"),
            (one_tensor(&[0, 4], 0), "dimensions [0, 4] hold no element"),
        ];
        for (bytes, want) in cases {
            std::fs::write(&p, &bytes).unwrap();
            let msg = GgufFile::open(&p).unwrap_err().to_string();
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
        }
    }
}
