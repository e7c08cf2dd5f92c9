//! A validating reader for the safetensors format, with tensor data served from a memory map.
//!
//! Format (huggingface/safetensors `README.md`): an 8-byte little-endian header length `N`, `N`
//! bytes of JSON mapping each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets
//! relative to the data section that follows), and the data. phiquant parses the header itself,
//! rather than through the `safetensors` crate, so that every problem is reported with the tensor
//! it concerns and the byte counts involved; the rules enforced are the crate's (contiguous,
//! non-overlapping offsets covering the data section exactly).

use std::{
    collections::BTreeMap,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

use crate::{Dtype, Error, HeaderProblem, TensorProblem};

/// The largest header accepted, as in the reference implementation (100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// More tensors than any real checkpoint shard holds.
const MAX_TENSORS: usize = 1_000_000;

/// A tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    begin: u64,
    end: u64,
}

impl TensorInfo {
    /// An entry for a tensor that a source computes rather than maps (its data is not at an
    /// offset of any file): `numel * dtype.size()` bytes.
    pub(crate) fn computed(name: String, dtype: Dtype, shape: Vec<usize>) -> TensorInfo {
        let bytes = shape.iter().product::<usize>() as u64 * dtype.size() as u64;
        TensorInfo { name, dtype, shape, begin: 0, end: bytes }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data.
    pub fn byte_len(&self) -> u64 {
        self.end - self.begin
    }
}

/// One opened and validated safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: memmap2::Mmap,
    data_start: usize,
    tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

impl SafetensorsFile {
    /// Opens `path`, checks its header completely, and maps it.
    pub fn open(path: &Path) -> Result<SafetensorsFile, Error> {
        let io = |op| move |source| Error::Io { op, path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io("opening"))?;
        let file_len = file.metadata().map_err(io("reading metadata of"))?.len();
        let (header, data_len) = read_header(path, &mut file, file_len)?;
        let (tensors, metadata) = parse_header(path, &header)?;
        check_layout(path, &tensors, data_len)?;

        // SAFETY: the file is opened read-only and only read through this map. If another
        // process truncates or rewrites it while phiquant runs, reads may fault or see new bytes;
        // every reader of model files shares that hazard, and phiquant never writes to its inputs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("mapping"))?;
        let by_name = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            data_start: (8 + header.len() as u64) as usize,
            tensors,
            by_name,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors, in the order of their data.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The header's `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// A tensor's entry by name.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Tells the kernel that `name`'s pages will not be read again soon, so that they leave this
    /// process's resident set (they stay in the page cache and are read back if touched). Streaming
    /// exports call it after each tensor, which keeps their resident memory near one tensor.
    pub fn release(&self, name: &str) {
        let Some(t) = self.info(name) else { return };
        #[cfg(unix)]
        {
            let page = 4096usize;
            let start = (self.data_start + t.begin as usize).div_ceil(page) * page;
            let end = (self.data_start + t.end as usize) / page * page;
            if end > start {
                // SAFETY: the map is a read-only, shared mapping of a file: MADV_DONTNEED only
                // drops the pages from this process, and later reads fault them back in from the
                // file unchanged. No reference into the range is held across this call by phiquant
                // (callers release a tensor after its bytes were consumed).
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
    }

    /// A tensor's raw little-endian bytes.
    pub fn data(&self, name: &str) -> Option<&[u8]> {
        let t = self.info(name)?;
        let start = self.data_start + t.begin as usize;
        self.map.get(start..start + t.byte_len() as usize)
    }
}

fn read_header(path: &Path, file: &mut File, file_len: u64) -> Result<(Vec<u8>, u64), Error> {
    let io = |source| Error::Io { op: "reading", path: path.to_path_buf(), source };
    if file_len < 8 {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "the safetensors length prefix",
            needed: 8,
            remaining: file_len,
        });
    }
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(io)?;
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES {
        return Err(Error::Header {
            path: path.to_path_buf(),
            problem: HeaderProblem::TooLarge { len: n, max: MAX_HEADER_BYTES },
        });
    }
    let remaining = file_len - 8;
    if n > remaining {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "the safetensors header",
            needed: n,
            remaining,
        });
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    Ok((header, remaining - n))
}

type Parsed = (Vec<TensorInfo>, BTreeMap<String, String>);

fn parse_header(path: &Path, header: &[u8]) -> Result<Parsed, Error> {
    let malformed = |what: String| Error::Header {
        path: path.to_path_buf(),
        problem: HeaderProblem::Malformed(what),
    };
    let text = std::str::from_utf8(header).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    if !text.trim_start().starts_with('{') {
        return Err(malformed("does not start with `{`".into()));
    }
    let entries: BTreeMap<String, Value> =
        serde_json::from_str(text).map_err(|e| malformed(format!("not a JSON object: {e}")))?;
    if entries.len() > MAX_TENSORS {
        return Err(Error::Header {
            path: path.to_path_buf(),
            problem: HeaderProblem::TooManyTensors { count: entries.len(), max: MAX_TENSORS },
        });
    }

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value)
                .map_err(|e| malformed(format!("`__metadata__` is not a map of strings: {e}")))?;
            continue;
        }
        let tensor_err =
            |problem| Error::Tensor { path: path.to_path_buf(), tensor: name.clone(), problem };
        let raw: RawEntry = serde_json::from_value(value)
            .map_err(|e| malformed(format!("entry for tensor `{name}`: {e}")))?;
        let dtype = Dtype::from_safetensors(&raw.dtype)
            .ok_or_else(|| tensor_err(TensorProblem::UnknownDtype(raw.dtype.clone())))?;
        let shape: Option<Vec<usize>> =
            raw.shape.iter().map(|&d| usize::try_from(d).ok()).collect();
        let overflow = || {
            tensor_err(TensorProblem::ShapeOverflow(
                raw.shape.iter().map(|&d| d as usize).collect(),
            ))
        };
        let shape = shape.ok_or_else(overflow)?;
        let needed = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(dtype.size() as u64))
            .ok_or_else(overflow)?;
        let [begin, end] = raw.data_offsets;
        if end < begin {
            return Err(tensor_err(TensorProblem::ReversedOffsets { begin, end }));
        }
        if end - begin != needed {
            return Err(tensor_err(TensorProblem::SizeMismatch {
                shape,
                dtype,
                needed,
                span: end - begin,
            }));
        }
        tensors.push(TensorInfo { name, dtype, shape, begin, end });
    }
    tensors.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    Ok((tensors, metadata))
}

fn check_layout(path: &Path, tensors: &[TensorInfo], data_len: u64) -> Result<(), Error> {
    let mut cursor = 0u64;
    let mut previous: Option<&TensorInfo> = None;
    for t in tensors {
        let err =
            |problem| Error::Tensor { path: path.to_path_buf(), tensor: t.name.clone(), problem };
        if t.end > data_len {
            return Err(err(TensorProblem::OutOfRange { end: t.end, data_len }));
        }
        if t.begin < cursor {
            let other = previous.map(|p| p.name.clone()).unwrap_or_default();
            return Err(err(TensorProblem::Overlap { begin: t.begin, end: t.end, other }));
        }
        if t.begin > cursor {
            return Err(err(TensorProblem::Gap { bytes: t.begin - cursor }));
        }
        cursor = t.end;
        previous = Some(t);
    }
    if cursor != data_len {
        return Err(Error::Header {
            path: path.to_path_buf(),
            problem: HeaderProblem::TrailingBytes { bytes: data_len - cursor },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, header: &str, data_len: usize) -> PathBuf {
        let path = dir.join("t.safetensors");
        let mut f = File::create(&path).unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(&vec![7u8; data_len]).unwrap();
        path
    }

    fn open_err(header: &str, data_len: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), header, data_len);
        SafetensorsFile::open(&path).unwrap_err().to_string()
    }

    #[test]
    fn reads_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
        let path = write(dir.path(), header, 12);
        let f = SafetensorsFile::open(&path).unwrap();
        let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(f.info("b").unwrap().shape, vec![2]);
        assert_eq!(f.data("b").unwrap().len(), 8);
        assert_eq!(f.metadata()["format"], "pt");
    }

    #[test]
    fn layout_errors_name_the_tensor() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
                "tensor `b`: data_offsets [4, 12] overlap tensor `a`",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                8,
                "tensor `a`: data_offsets end at byte 16 but the data section has only 8 bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
                "tensor `a`: shape [3] of F32 needs 12 bytes but its data_offsets span 8",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
                "tensor `a`: 4 unclaimed bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                10,
                "2 bytes after the end",
            ),
            (
                r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                8,
                "tensor `a`: unknown dtype `Q9`",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                8,
                "end before they begin",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
                "is too large",
            ),
            (r#"{"a":{"dtype":"F32"}}"#, 0, "entry for tensor `a`: missing field `shape`"),
            (r#"[1,2]"#, 0, "does not start with `{`"),
        ];
        for (header, data_len, want) in cases {
            let msg = open_err(header, data_len);
            assert!(msg.contains(want), "{msg:?} does not contain {want:?}");
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn truncated_and_oversized_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.safetensors");
        std::fs::write(&path, [1, 2, 3]).unwrap();
        let msg = SafetensorsFile::open(&path).unwrap_err().to_string();
        assert!(
            msg.contains("the safetensors length prefix needs 8 bytes, only 3 remain"),
            "{msg}"
        );

        let mut bytes = 500u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        let msg = SafetensorsFile::open(&path).unwrap_err().to_string();
        assert!(msg.contains("the safetensors header needs 500 bytes, only 2 remain"), "{msg}");

        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        let msg = SafetensorsFile::open(&path).unwrap_err().to_string();
        assert!(msg.contains("exceeds the limit"), "{msg}");
    }
}
