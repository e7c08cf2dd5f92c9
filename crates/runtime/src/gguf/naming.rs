//! llama.cpp's tensor names for the Hugging Face ones (`gguf-py/gguf/tensor_mapping.py`,
//! `constants.py`), and the rotary row permutation its converter applies to Llama-family q and k
//! weights (`convert_hf_to_gguf.py`, `LlamaModel.permute`). The GGUF writer and the GGUF reader
//! share both, so that what one writes the other reads back.

use crate::{Architecture, DecoderSpec, Linear, TensorRole};

/// llama.cpp's name for the Hugging Face tensor `hf_name`, which plays `role`.
pub fn gguf_name(role: &TensorRole, hf_name: &str) -> String {
    let suffix = if hf_name.ends_with(".bias") { "bias" } else { "weight" };
    let stem = match role {
        TensorRole::Embedding => return "token_embd.weight".into(),
        TensorRole::LmHead => return "output.weight".into(),
        TensorRole::FinalNorm => return "output_norm.weight".into(),
        TensorRole::AttnNorm { layer } => return format!("blk.{layer}.attn_norm.weight"),
        TensorRole::FfnNorm { layer } => return format!("blk.{layer}.ffn_norm.weight"),
        TensorRole::Weight { layer, .. } | TensorRole::Bias { layer, .. } => {
            let part = hf_name.rsplit('.').nth(1).unwrap_or_default();
            let name = match part {
                "q_proj" => "attn_q",
                "k_proj" => "attn_k",
                "v_proj" => "attn_v",
                "qkv_proj" => "attn_qkv",
                "o_proj" => "attn_output",
                "gate_proj" => "ffn_gate",
                "up_proj" | "gate_up_proj" => "ffn_up",
                "down_proj" => "ffn_down",
                other => other,
            };
            format!("blk.{layer}.{name}")
        }
    };
    format!("{stem}.{suffix}")
}

/// llama.cpp's name for one projection's weight (or bias) stored on its own: the form a fused
/// Phi-3 `qkv_proj` takes in GGUF files that keep q, k and v apart.
pub fn gguf_linear_name(layer: usize, linear: Linear, bias: bool) -> String {
    let part = match linear {
        Linear::Q => "attn_q",
        Linear::K => "attn_k",
        Linear::V => "attn_v",
        Linear::O => "attn_output",
        Linear::Gate => "ffn_gate",
        Linear::Up => "ffn_up",
        Linear::Down => "ffn_down",
    };
    format!("blk.{layer}.{part}.{}", if bias { "bias" } else { "weight" })
}

/// The heads over which llama.cpp's converter permutes the rows of a tensor holding exactly the
/// projections `parts`: query heads for q, key/value heads for k, in the Llama family only
/// (Phi-3 and Qwen2 use the NeoX rotary layout and are stored as they are).
pub fn qk_permutation(spec: &DecoderSpec, parts: &[Linear]) -> Option<usize> {
    if !matches!(spec.architecture, Architecture::Llama | Architecture::Mistral) {
        return None;
    }
    match parts {
        [Linear::Q] => Some(spec.num_heads),
        [Linear::K] => Some(spec.num_kv_heads),
        _ => None,
    }
}

/// llama.cpp's rotary permutation of a q or k weight `[rows, cols]` (rows = heads x head_dim):
/// within each head, the two interleaved halves become contiguous
/// (`reshape(heads, 2, head_dim / 2, cols).swapaxes(1, 2)` in `convert_hf_to_gguf.py`).
pub fn permute_qk(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    reorder_rows(w, rows, cols, heads, false)
}

/// The inverse of [`permute_qk`]: a GGUF q or k weight back in the Hugging Face row order.
pub fn unpermute_qk(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    reorder_rows(w, rows, cols, heads, true)
}

fn reorder_rows(w: &[f32], rows: usize, cols: usize, heads: usize, inverse: bool) -> Vec<f32> {
    debug_assert_eq!(w.len(), rows * cols);
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                // Row (h, j, i) of the (heads, 2, half) view is row (h, i, j) once permuted.
                let hf = h * hd + j * half + i;
                let gguf = h * hd + i * 2 + j;
                let (src, dst) = if inverse { (gguf, hf) } else { (hf, gguf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_halves_and_inverts() {
        // One head of 4 rows (halves [0,1] and [2,3]) becomes rows 0,2,1,3.
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let p = permute_qk(&w, 4, 2, 1);
        assert_eq!(p, vec![0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(unpermute_qk(&p, 4, 2, 1), w);
        let w: Vec<f32> = (0..3 * 16 * 5).map(|i| i as f32).collect();
        assert_eq!(unpermute_qk(&permute_qk(&w, 48, 5, 3), 48, 5, 3), w);
        assert_ne!(permute_qk(&w, 48, 5, 3), w);
    }
}
