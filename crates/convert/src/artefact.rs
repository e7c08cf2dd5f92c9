//! What an artefact on disk is, for the tools that check it: its format and the bit width that
//! most of its weights are stored in (verification picks its default gates by that width).

use std::collections::BTreeMap;
use std::path::Path;

use phiquant_quant::BlockFormat;
use phiquant_runtime::{Checkpoint, Dtype, GenaiConfig, gguf::GgufFile, is_onnx_folder};
use prost::Message;

use crate::onnx::proto::{ModelProto, data_type};
use crate::{ArtefactFormat, Error};

/// The largest `model.onnx` read to find its weight types: the graph of phiquant's folders is a
/// few tens of kB (the weights live in `model.onnx.data`), and protobuf itself stops at 2 GiB.
const MAX_GRAPH_BYTES: u64 = 2 << 30;

/// An artefact's format and the nominal bits per weight of the type that holds most of its
/// matrix elements (4 for MatMulNBits int4 and llama.cpp Q4_0/Q4_1/Q4_K, 5 for Q5_0, 6 for Q6_K,
/// 8 for Q8_0 and MatMulNBits int8, 16 for f16 and bf16, 32 for f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtefactWeights {
    /// GGUF file, ONNX folder or Hugging Face folder.
    pub format: ArtefactFormat,
    /// Bits per weight of the dominant type.
    pub bits: u32,
}

/// Describes the artefact at `path`: a GGUF file, an onnxruntime-genai folder
/// (`genai_config.json`) or a Hugging Face checkpoint folder.
pub fn artefact_weights(path: &Path) -> Result<ArtefactWeights, Error> {
    let fail = |reason: &str| Error::Artefact { path: path.to_path_buf(), reason: reason.into() };
    // Element counts per bit width, over the tensors of two or more dimensions (the matrices).
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let format = if crate::is_gguf_file(path) {
        let file = GgufFile::open(path)?;
        for t in file.tensors().iter().filter(|t| t.dims.len() >= 2) {
            if let Some(ty) = t.ggml_type() {
                *counts.entry(format_bits(ty.0)).or_default() += t.numel();
            }
        }
        ArtefactFormat::Gguf
    } else if is_onnx_folder(path) {
        onnx_counts(path, &mut counts)?;
        ArtefactFormat::Onnx
    } else if path.is_dir() {
        let ckpt = Checkpoint::open(path)?;
        for t in ckpt.files().iter().flat_map(|f| f.tensors()).filter(|t| t.shape.len() >= 2) {
            let bits = match t.dtype {
                Dtype::F64 => 64,
                Dtype::F32 => 32,
                Dtype::F16 | Dtype::BF16 => 16,
                _ => continue,
            };
            *counts.entry(bits).or_default() += t.numel() as u64;
        }
        ArtefactFormat::Hf
    } else {
        return Err(fail(
            "not a GGUF file, an ONNX model folder (with genai_config.json) or a checkpoint folder",
        ));
    };
    let bits = counts
        .iter()
        .max_by_key(|&(bits, n)| (*n, std::cmp::Reverse(*bits)))
        .map(|(bits, _)| *bits)
        .ok_or_else(|| fail("holds no weight matrices"))?;
    Ok(ArtefactWeights { format, bits })
}

/// Nominal bits per weight of a llama.cpp type.
fn format_bits(format: BlockFormat) -> u32 {
    match format {
        BlockFormat::F32 => 32,
        BlockFormat::F16 | BlockFormat::Bf16 => 16,
        BlockFormat::Q8_0 => 8,
        BlockFormat::Q6K => 6,
        BlockFormat::Q5_0 => 5,
        BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4K => 4,
        // A format added later: its whole bits per weight, scales included.
        other => (other.block_bytes() * 8 / other.block_len().max(1)) as u32,
    }
}

/// Counts an ONNX folder's matrix elements by bit width: each `MatMulNBits` node's `K x N`
/// weight at its `bits`, every other float initializer of two or more dimensions at its type's.
fn onnx_counts(dir: &Path, counts: &mut BTreeMap<u32, u64>) -> Result<(), Error> {
    let config = GenaiConfig::from_dir(dir)?;
    let graph_path = dir.join(&config.filename);
    let io = |op| {
        let path = graph_path.clone();
        move |source| Error::Io { op, path, source }
    };
    let len = std::fs::metadata(&graph_path).map_err(io("reading metadata of"))?.len();
    if len > MAX_GRAPH_BYTES {
        return Err(Error::Artefact {
            path: graph_path,
            reason: format!("{len} bytes, more than a protobuf can hold ({MAX_GRAPH_BYTES})"),
        });
    }
    let bytes = std::fs::read(&graph_path).map_err(io("reading"))?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| Error::Artefact {
        path: graph_path.clone(),
        reason: format!("not an ONNX model: {e}"),
    })?;
    let Some(graph) = model.graph else { return Ok(()) };
    let mut quantized = std::collections::BTreeSet::new();
    for node in graph.node.iter().filter(|n| n.op_type.as_deref() == Some("MatMulNBits")) {
        let attr = |name: &str| {
            node.attribute.iter().find(|a| a.name.as_deref() == Some(name)).and_then(|a| a.i)
        };
        let (k, n) = (attr("K").unwrap_or(0).max(0) as u64, attr("N").unwrap_or(0).max(0) as u64);
        let bits = attr("bits").unwrap_or(4).clamp(1, 64) as u32;
        *counts.entry(bits).or_default() += k.saturating_mul(n);
        quantized.extend(node.input.iter().skip(1).cloned());
    }
    for init in &graph.initializer {
        if init.dims.len() < 2 || init.name.as_ref().is_some_and(|n| quantized.contains(n)) {
            continue;
        }
        let bits = match init.data_type {
            Some(data_type::FLOAT) => 32,
            Some(data_type::FLOAT16 | data_type::BFLOAT16) => 16,
            _ => continue,
        };
        let numel = init.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d.max(0) as u64));
        *counts.entry(bits).or_default() += numel;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "x").unwrap();
        let msg = artefact_weights(&file).unwrap_err().to_string();
        assert!(msg.contains("not a GGUF file, an ONNX model folder"), "{msg}");
        let empty = artefact_weights(dir.path()).unwrap_err().to_string();
        assert!(empty.contains("config.json"), "{empty}");
    }

    #[test]
    fn format_bits_are_nominal() {
        assert_eq!(format_bits(BlockFormat::Q4K), 4);
        assert_eq!(format_bits(BlockFormat::Q8_0), 8);
        assert_eq!(format_bits(BlockFormat::Bf16), 16);
    }
}
