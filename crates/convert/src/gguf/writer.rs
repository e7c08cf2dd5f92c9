//! A streaming GGUF v3 writer: the header, metadata and every tensor's entry are written first
//! (offsets follow from the planned shapes and types), then each tensor's bytes are produced and
//! written one at a time, so memory holds one tensor, not the model. Mirrors the reader in
//! `phiquant_runtime::gguf` field for field, alignment included.

use std::io::Write;

use phiquant_quant::BlockFormat;
use phiquant_runtime::gguf::{GGUF_MAGIC, GGUF_VERSION, GgmlType, GgufValue};

/// A tensor to write: its GGUF name, dimensions (`ne0`, the row length, first) and type.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, `ne0` first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub format: BlockFormat,
}

impl PlannedTensor {
    /// Bytes of data.
    pub fn nbytes(&self) -> u64 {
        let rows: u64 = self.dims[1..].iter().product();
        self.format.row_bytes(self.dims[0] as usize).expect("planned types fit their rows") as u64
            * rows
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(elem, items) => {
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// The header, metadata and tensor entries, padded to `alignment`, with each tensor's offset.
pub fn header_bytes(
    metadata: &[(String, GgufValue)],
    tensors: &[PlannedTensor],
    alignment: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&GGUF_MAGIC);
    out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_string(&mut out, k);
        out.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&GgmlType(t.format).id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + t.nbytes()).div_ceil(alignment) * alignment;
    }
    let padded = (out.len() as u64).div_ceil(alignment) * alignment;
    out.resize(padded as usize, 0);
    out
}

/// Writes a whole GGUF file to `out`: `produce(i, tensor)` returns tensor `i`'s bytes (exactly
/// `tensor.nbytes()` of them) and is called once per tensor, in order.
pub fn write_gguf<W: Write, E>(
    out: &mut W,
    metadata: &[(String, GgufValue)],
    tensors: &[PlannedTensor],
    alignment: u64,
    mut produce: impl FnMut(usize, &PlannedTensor) -> Result<Vec<u8>, E>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    out.write_all(&header_bytes(metadata, tensors, alignment))?;
    let zeros = vec![0u8; alignment as usize];
    for (i, t) in tensors.iter().enumerate() {
        let bytes = produce(i, t)?;
        assert_eq!(bytes.len() as u64, t.nbytes(), "tensor {} produced the wrong size", t.name);
        out.write_all(&bytes)?;
        // Both of llama.cpp's writers (gguf-py and gguf.cpp) pad after every tensor, the last one too.
        let pad = (bytes.len() as u64).div_ceil(alignment) * alignment - bytes.len() as u64;
        out.write_all(&zeros[..pad as usize])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use phiquant_runtime::gguf::GgufFile;

    use super::*;

    #[test]
    fn round_trip_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let metadata = vec![
            ("general.architecture".to_string(), GgufValue::String("llama".into())),
            ("general.alignment".to_string(), GgufValue::U32(64)),
            ("x.list".to_string(), GgufValue::strings(["a", "bc"])),
            ("x.f".to_string(), GgufValue::F32(1.5)),
            ("x.b".to_string(), GgufValue::Bool(true)),
        ];
        let tensors = vec![
            PlannedTensor { name: "a".into(), dims: vec![3], format: BlockFormat::F32 },
            PlannedTensor { name: "b".into(), dims: vec![64, 2], format: BlockFormat::Q8_0 },
        ];
        let mut file = std::fs::File::create(&path).unwrap();
        write_gguf::<_, std::io::Error>(&mut file, &metadata, &tensors, 64, |i, t| {
            Ok((0..t.nbytes()).map(|b| (b as usize + i) as u8).collect())
        })
        .unwrap();
        drop(file);
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.metadata(), &metadata[..]);
        assert_eq!(f.info("b").unwrap().dims, vec![64, 2]);
        assert_eq!(f.info("b").unwrap().offset, 64);
        assert_eq!(f.data("a").unwrap(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(f.data("b").unwrap().len(), 2 * 2 * 34);
    }
}
