//! A streaming safetensors writer, the mirror of `phiquant_runtime::SafetensorsFile`'s reader
//! (format: huggingface/safetensors `README.md`): an 8-byte little-endian header length, the JSON
//! header (padded with spaces to a multiple of 8 bytes, as the reference writer does since 0.4),
//! then every tensor's bytes, contiguous, in the header's offset order. Offsets follow from the
//! planned shapes, so the header goes first and each tensor is produced and written in turn.

use std::{collections::BTreeMap, io::Write};

use phiquant_runtime::Dtype;
use serde_json::{Map, Value, json};

/// A tensor to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSafetensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
}

impl PlannedSafetensor {
    /// Bytes of data.
    pub fn nbytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size() as u64
    }
}

/// The length prefix and the header, for `tensors` laid out in the order given; `metadata` is
/// the `__metadata__` map (transformers wants `{"format": "pt"}`).
pub fn safetensors_header(
    tensors: &[PlannedSafetensor],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.nbytes();
        header.insert(
            t.name.clone(),
            json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut text = serde_json::to_vec(&Value::Object(header)).expect("JSON values serialize");
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out
}

/// Writes a whole safetensors file: `produce(i, tensor)` returns tensor `i`'s bytes (exactly
/// `tensor.nbytes()` of them) and is called once per tensor, in order.
pub fn write_safetensors<W: Write, E>(
    out: &mut W,
    tensors: &[PlannedSafetensor],
    metadata: &BTreeMap<String, String>,
    mut produce: impl FnMut(usize, &PlannedSafetensor) -> Result<Vec<u8>, E>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    out.write_all(&safetensors_header(tensors, metadata))?;
    for (i, t) in tensors.iter().enumerate() {
        let bytes = produce(i, t)?;
        assert_eq!(bytes.len() as u64, t.nbytes(), "tensor {} produced the wrong size", t.name);
        out.write_all(&bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use phiquant_runtime::SafetensorsFile;

    use super::*;

    #[test]
    fn round_trip_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let tensors = vec![
            PlannedSafetensor { name: "a.weight".into(), dtype: Dtype::F16, shape: vec![3, 2] },
            PlannedSafetensor { name: "b".into(), dtype: Dtype::BF16, shape: vec![5] },
        ];
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut file = std::fs::File::create(&path).unwrap();
        write_safetensors::<_, std::io::Error>(&mut file, &tensors, &meta, |i, t| {
            Ok((0..t.nbytes()).map(|b| (b as usize * 3 + i) as u8).collect())
        })
        .unwrap();
        drop(file);
        let header_len = safetensors_header(&tensors, &meta).len();
        assert_eq!(header_len % 8, 0);
        let f = SafetensorsFile::open(&path).unwrap();
        assert_eq!(f.metadata(), &meta);
        assert_eq!(f.info("a.weight").unwrap().shape, vec![3, 2]);
        assert_eq!(f.info("b").unwrap().dtype, Dtype::BF16);
        assert_eq!(f.data("b").unwrap(), &[1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
    }
}
