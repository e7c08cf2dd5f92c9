//! Which tensors a GGUF holds, under which names, in which order and type, as llama.cpp's
//! converter (`convert_hf_to_gguf.py`, names from `gguf-py/gguf/tensor_mapping.py`) and quantizer
//! (`src/llama-quant.cpp`, `llama_tensor_get_type`) decide them.

use phiquant_quant::BlockFormat;
use phiquant_runtime::{
    DecoderSpec, RopeScaling, TensorRole,
    gguf::{gguf_name, qk_permutation},
};

use super::PlannedTensor;

/// How a tensor's values are obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorSource {
    /// A checkpoint tensor as stored.
    Checkpoint(String),
    /// A checkpoint q or k projection with llama.cpp's rotary row permutation.
    Permuted {
        /// The checkpoint tensor.
        tensor: String,
        /// Heads of the projection (query heads for q, key/value heads for k).
        heads: usize,
    },
    /// Values phiquant computes (LongRoPE factors).
    Values(Vec<f32>),
}

/// The weight types of a GGUF target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufScheme {
    /// The type of 2-D weights.
    pub base: BlockFormat,
    /// llama.cpp's Q4_K_M mixture on top of a Q4_K base.
    pub q4_k_m: bool,
    /// Every quantized tensor in the base type (`llama-quantize --pure`): no mixture and no
    /// higher-precision output tensor.
    pub pure: bool,
}

impl GgufScheme {
    /// Whether llama.cpp makes this type with `llama-quantize` (from a converted file) rather
    /// than with the converter itself; the two order tensors differently.
    pub fn made_by_quantize(&self) -> bool {
        !matches!(
            self.base,
            BlockFormat::F32 | BlockFormat::F16 | BlockFormat::Bf16 | BlockFormat::Q8_0
        )
    }
}

/// llama-quantize's tensor order (its loader's weight map): tensors outside the blocks first,
/// then block by block in layer order, names sorted within each group.
fn quantize_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |n: &str| {
        let layer = n
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<i64>().ok());
        (layer.unwrap_or(-1), n.to_string())
    };
    key(a).cmp(&key(b))
}

/// llama.cpp's `use_more_bits`: the layers the K-quant mixtures give more bits.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize).rem_euclid(3) == 2
}

/// The type llama.cpp's quantizer gives a 2-D tensor (`llama_tensor_get_type` for Q4_K_M,
/// then the fallback for rows that do not fit the block).
fn quantized_type(
    scheme: &GgufScheme,
    name: &str,
    is_output: bool,
    layer: Option<usize>,
    layers: usize,
    row: usize,
) -> BlockFormat {
    let mut t = scheme.base;
    if scheme.pure {
        return if t.fits_row(row) { t } else { BlockFormat::F16 };
    }
    if is_output {
        // The output matrix (the embedding when tied) gets 6 bits in every quantized file type.
        if !BlockFormat::Q6K.fits_row(row) {
            t = BlockFormat::Q8_0;
        } else if t != BlockFormat::Q8_0 {
            t = BlockFormat::Q6K;
        }
    } else if scheme.q4_k_m
        && (name.contains("attn_v.weight")
            || name.contains("attn_qkv.weight")
            || name.contains("ffn_down"))
        && use_more_bits(layer.unwrap_or(0), layers)
    {
        t = BlockFormat::Q6K;
    }
    if !t.fits_row(row) {
        t = match t {
            BlockFormat::Q4K => BlockFormat::Q5_0,
            BlockFormat::Q6K => BlockFormat::Q8_0,
            other => other,
        };
        if !t.fits_row(row) {
            t = BlockFormat::F16;
        }
    }
    t
}

/// The tensors of a GGUF for `spec`, with llama.cpp's names, dimensions and types, and where
/// each tensor's values come from.
pub fn plan_tensors(spec: &DecoderSpec, scheme: &GgufScheme) -> Vec<(PlannedTensor, TensorSource)> {
    let mut out = Vec::new();
    if let RopeScaling::LongRope { short_factor, long_factor, .. } = &spec.rope.scaling {
        for (name, f) in
            [("rope_factors_long.weight", long_factor), ("rope_factors_short.weight", short_factor)]
        {
            out.push((
                PlannedTensor {
                    name: name.into(),
                    dims: vec![f.len() as u64],
                    format: BlockFormat::F32,
                },
                TensorSource::Values(f.iter().map(|&v| v as f32).collect()),
            ));
        }
    }
    let mut tensors = spec.expected_tensors();
    // The converter walks the checkpoint's tensors in name order.
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    for e in tensors {
        let name = gguf_name(&e.role, &e.name);
        let dims: Vec<u64> = e.shape.iter().rev().map(|&d| d as u64).collect();
        let layer = match e.role {
            TensorRole::Weight { layer, .. } => Some(layer),
            _ => None,
        };
        let is_output = match e.role {
            TensorRole::LmHead => true,
            TensorRole::Embedding => spec.tied_embeddings,
            _ => false,
        };
        let format = if dims.len() == 1 || scheme.base == BlockFormat::F32 {
            BlockFormat::F32
        } else if matches!(scheme.base, BlockFormat::F16 | BlockFormat::Bf16) {
            scheme.base
        } else {
            quantized_type(scheme, &name, is_output, layer, spec.num_layers, dims[0] as usize)
        };
        let heads = match &e.role {
            TensorRole::Weight { parts, .. } | TensorRole::Bias { parts, .. } => {
                qk_permutation(spec, parts)
            }
            _ => None,
        };
        let source = match heads {
            Some(heads) => TensorSource::Permuted { tensor: e.name.clone(), heads },
            None => TensorSource::Checkpoint(e.name.clone()),
        };
        out.push((PlannedTensor { name, dims, format }, source));
    }
    if scheme.made_by_quantize() {
        out.sort_by(|a, b| quantize_order(&a.0.name, &b.0.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers() {
        let n = 30;
        let picked: Vec<usize> = (0..n).filter(|&i| use_more_bits(i, n)).collect();
        assert_eq!(picked, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn fallbacks_for_rows_that_do_not_fit() {
        let s = GgufScheme { base: BlockFormat::Q4K, q4_k_m: true, pure: false };
        assert_eq!(
            quantized_type(&s, "blk.3.attn_q.weight", false, Some(3), 30, 576),
            BlockFormat::Q5_0
        );
        assert_eq!(quantized_type(&s, "output.weight", true, None, 30, 576), BlockFormat::Q8_0);
        assert_eq!(
            quantized_type(&s, "blk.0.ffn_down.weight", false, Some(0), 30, 1536),
            BlockFormat::Q6K
        );
        assert_eq!(
            quantized_type(&s, "blk.0.ffn_down.weight", false, Some(0), 5, 172),
            BlockFormat::F16
        );
        let q4 = GgufScheme { base: BlockFormat::Q4_0, q4_k_m: false, pure: true };
        assert_eq!(
            quantized_type(&q4, "blk.0.ffn_down.weight", false, Some(0), 5, 172),
            BlockFormat::F16
        );
        assert_eq!(quantized_type(&q4, "token_embd.weight", true, None, 5, 64), BlockFormat::Q4_0);
        let q4 = GgufScheme { pure: false, ..q4 };
        assert_eq!(quantized_type(&q4, "output.weight", true, None, 5, 256), BlockFormat::Q6K);
    }
}
