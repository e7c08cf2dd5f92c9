//! The export targets (names follow the official Phi-3 ONNX releases) and which of them fit a
//! model's shapes.

use phiquant_quant::{BlockFormat, BlockLayout, MATMUL_NBITS_BLOCK_SIZES};
use phiquant_runtime::{DecoderSpec, TensorRole};
use serde::Serialize;

/// The file format of an artefact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtefactFormat {
    /// ONNX for ONNX Runtime and onnxruntime-genai.
    Onnx,
    /// GGUF v3 for llama.cpp.
    Gguf,
    /// A Hugging Face checkpoint folder (config.json, tokenizer files, model.safetensors).
    Hf,
}

/// How 4-bit weights are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// Round to nearest.
    Rtn,
    /// Activation-aware weight quantization.
    Awq,
}

/// The weights of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Weights {
    /// Unquantized (F32 or F16).
    Float {
        /// The stored type.
        #[serde(serialize_with = "format_name")]
        dtype: BlockFormat,
    },
    /// ONNX Runtime `MatMulNBits` int4.
    Int4 {
        /// How the codes are chosen.
        algo: Algo,
        /// Elements per block.
        block_size: usize,
        /// Symmetric (no zero points) or asymmetric.
        symmetric: bool,
        /// `MatMulNBits` `accuracy_level` (0 = unset).
        accuracy_level: u8,
    },
    /// A llama.cpp type, or a mixture based on it.
    Gguf {
        /// The base type.
        #[serde(serialize_with = "format_name")]
        base: BlockFormat,
        /// A llama.cpp mixture name (`Q4_K_M`) when tensors get different types.
        mixture: Option<&'static str>,
        /// How the weights given to llama.cpp's quantizer are prepared: as they are (RTN), or
        /// scaled and clipped by AWQ first (4-bit types only).
        algo: Algo,
    },
}

/// One export target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The `--target` name.
    pub name: &'static str,
    /// The artefact's format.
    pub format: ArtefactFormat,
    /// Default weight scheme (each part can be overridden at export).
    pub weights: Weights,
    /// Activation type at the model's inputs and outputs.
    pub io_dtype: &'static str,
    /// The runtime and device that consume the artefact.
    pub consumer: &'static str,
    /// The folder name of the matching official release, if any.
    pub release_name: Option<&'static str>,
    /// A caveat users should know.
    pub note: Option<&'static str>,
}

fn format_name<S: serde::Serializer>(f: &BlockFormat, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.name())
}

const fn int4(algo: Algo, block_size: usize, symmetric: bool, accuracy_level: u8) -> Weights {
    Weights::Int4 { algo, block_size, symmetric, accuracy_level }
}

const fn gguf(base: BlockFormat) -> Weights {
    Weights::Gguf { base, mixture: None, algo: Algo::Rtn }
}

const fn onnx(
    name: &'static str,
    weights: Weights,
    io_dtype: &'static str,
    consumer: &'static str,
    release_name: Option<&'static str>,
    note: Option<&'static str>,
) -> Target {
    Target { name, format: ArtefactFormat::Onnx, weights, io_dtype, consumer, release_name, note }
}

const fn gguf_target(name: &'static str, weights: Weights) -> Target {
    Target {
        name,
        format: ArtefactFormat::Gguf,
        weights,
        io_dtype: "-",
        consumer: "llama.cpp (CPU, CUDA, Metal, ...)",
        release_name: None,
        note: None,
    }
}

const fn hf_target(name: &'static str, dtype: BlockFormat) -> Target {
    Target {
        name,
        format: ArtefactFormat::Hf,
        weights: Weights::Float { dtype },
        io_dtype: "-",
        consumer: "transformers and other Hugging Face checkpoint readers",
        release_name: None,
        note: Some(
            "from a GGUF input the weights are its dequantized values, not the model it was made from",
        ),
    }
}

/// Every target, in the order `phiquant targets` lists them (`../shared/DESIGN.md` §2; the
/// Hugging Face folders re-target GGUF files and give benchmark peers the same input).
pub const TARGETS: [Target; 14] = [
    onnx(
        "cpu-int4",
        int4(Algo::Rtn, 32, true, 4),
        "fp32",
        "ONNX Runtime CPU EP",
        Some("cpu-int4-rtn-block-32-acc-level-4"),
        None,
    ),
    onnx(
        "mobile-int4",
        int4(Algo::Rtn, 32, true, 4),
        "fp32",
        "ONNX Runtime CPU EP on ARM phones",
        Some("cpu-int4-rtn-block-32-acc-level-4"),
        Some("the official release serves CPU and mobile with one artefact"),
    ),
    onnx(
        "cuda-int4",
        int4(Algo::Rtn, 32, true, 0),
        "fp16",
        "ONNX Runtime CUDA EP",
        Some("cuda-int4-rtn-block-32"),
        None,
    ),
    onnx(
        "cuda-fp16",
        Weights::Float { dtype: BlockFormat::F16 },
        "fp16",
        "ONNX Runtime CUDA EP",
        Some("cuda-fp16"),
        None,
    ),
    onnx(
        "dml-int4",
        int4(Algo::Awq, 128, false, 0),
        "fp16",
        "ONNX Runtime DirectML EP (Windows)",
        Some("directml-int4-awq-block-128"),
        Some(
            "DirectML is deprecated by its vendor (onnxruntime issues #23783, #25899) but still supported here",
        ),
    ),
    onnx(
        "cpu-fp32",
        Weights::Float { dtype: BlockFormat::F32 },
        "fp32",
        "ONNX Runtime CPU EP",
        None,
        Some("the reference graph"),
    ),
    gguf_target("gguf-f32", gguf(BlockFormat::F32)),
    gguf_target("gguf-f16", gguf(BlockFormat::F16)),
    gguf_target("gguf-q8_0", gguf(BlockFormat::Q8_0)),
    gguf_target("gguf-q4_0", gguf(BlockFormat::Q4_0)),
    gguf_target("gguf-q4_1", gguf(BlockFormat::Q4_1)),
    gguf_target(
        "gguf-q4_k_m",
        Weights::Gguf { base: BlockFormat::Q4K, mixture: Some("Q4_K_M"), algo: Algo::Rtn },
    ),
    hf_target("hf-f16", BlockFormat::F16),
    hf_target("hf-bf16", BlockFormat::Bf16),
];

/// The target called `name`.
pub fn find_target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

impl Target {
    /// The exact weight scheme in words, as manifests and `phiquant targets` print it.
    pub fn scheme(&self) -> String {
        match self.weights {
            Weights::Float { dtype } if self.format == ArtefactFormat::Hf => format!(
                "Hugging Face folder: config.json (transformers 4), tokenizer and generation \
                 files, model.safetensors in {} (every tensor rounded to nearest even from its \
                 f32 value)",
                dtype.name().to_ascii_lowercase()
            ),
            Weights::Float { dtype } => format!("{} weights", dtype.name().to_ascii_lowercase()),
            Weights::Int4 { algo, block_size, symmetric, accuracy_level } => {
                let algo = match algo {
                    Algo::Rtn => "RTN",
                    Algo::Awq => "AWQ",
                };
                let sym = if symmetric {
                    "symmetric (ONNX Runtime MLAS: scale = -m/8, m the signed absmax)"
                } else {
                    "asymmetric (zero points)"
                };
                let acc = if accuracy_level > 0 {
                    format!(", accuracy_level {accuracy_level}")
                } else {
                    String::new()
                };
                format!("int4 {algo}, block {block_size}, {sym}{acc}, MatMulNBits")
            }
            Weights::Gguf { base, mixture, algo } => {
                let kind = match mixture {
                    None => format!("llama.cpp {base}"),
                    Some(m) => {
                        format!(
                            "llama.cpp {m} (Q4_K base, Q6_K for output and some attn_v/ffn_down)"
                        )
                    }
                };
                match algo {
                    Algo::Rtn => kind,
                    Algo::Awq => format!("{kind}, weights scaled and clipped by AWQ first"),
                }
            }
        }
    }
}

/// Per-export changes to a target's default weight scheme (`--algo`, `--group-size`,
/// `--symmetric`/`--asymmetric`, `--accuracy-level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuantOverrides {
    /// `--algo`.
    pub algo: Option<Algo>,
    /// `--group-size`.
    pub group_size: Option<usize>,
    /// `--symmetric` (true) or `--asymmetric` (false).
    pub symmetric: Option<bool>,
    /// `--accuracy-level`.
    pub accuracy_level: Option<u8>,
}

impl QuantOverrides {
    /// The first override set, as its command-line option (for messages).
    pub fn first_option(&self) -> Option<&'static str> {
        [
            self.algo.map(|_| "--algo"),
            self.group_size.map(|_| "--group-size"),
            self.symmetric.map(|s| if s { "--symmetric" } else { "--asymmetric" }),
            self.accuracy_level.map(|_| "--accuracy-level"),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

impl Target {
    /// Whether a GGUF base type is quantized to 4 bits, so that AWQ can prepare its weights.
    pub fn gguf_takes_awq(base: BlockFormat) -> bool {
        matches!(base, BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4K)
    }

    /// Whether `--algo` applies to this target (int4 ONNX and 4-bit GGUF targets).
    pub fn takes_algo(&self) -> bool {
        match self.weights {
            Weights::Int4 { .. } => true,
            Weights::Gguf { base, .. } => Target::gguf_takes_awq(base),
            Weights::Float { .. } => false,
        }
    }

    /// The algorithm of the weights (`Rtn` for float targets, which round nothing).
    pub fn algo_of(weights: &Weights) -> Algo {
        match *weights {
            Weights::Int4 { algo, .. } | Weights::Gguf { algo, .. } => algo,
            Weights::Float { .. } => Algo::Rtn,
        }
    }

    /// The weight scheme with `overrides` applied to int4 weights (other weights are returned as
    /// they are); values phiquant cannot write are errors naming the option.
    pub fn weights_with(&self, overrides: &QuantOverrides) -> Result<Weights, crate::Error> {
        let refuse = |reason: String| crate::Error::Target { target: self.name.into(), reason };
        match self.weights {
            Weights::Int4 { algo, block_size, symmetric, accuracy_level } => {
                let algo = overrides.algo.unwrap_or(algo);
                let block_size = overrides.group_size.unwrap_or(block_size);
                if !MATMUL_NBITS_BLOCK_SIZES.contains(&block_size) {
                    return Err(refuse(format!(
                        "--group-size {block_size}: expected one of {MATMUL_NBITS_BLOCK_SIZES:?}"
                    )));
                }
                let accuracy_level = overrides.accuracy_level.unwrap_or(accuracy_level);
                if accuracy_level > 4 {
                    return Err(refuse(format!(
                        "--accuracy-level {accuracy_level}: expected 0 (unset), 1 (fp32), 2 (fp16), \
                         3 (bf16) or 4 (int8)"
                    )));
                }
                Ok(Weights::Int4 {
                    algo,
                    block_size,
                    symmetric: overrides.symmetric.unwrap_or(symmetric),
                    accuracy_level,
                })
            }
            // The 4-bit llama.cpp types take --algo; their blocks and symmetry are the format's.
            Weights::Gguf { base, mixture, .. } if Target::gguf_takes_awq(base) => {
                Ok(Weights::Gguf { base, mixture, algo: overrides.algo.unwrap_or(Algo::Rtn) })
            }
            // Float weights and the other GGUF types have nothing to override: with several
            // targets, the overrides are for the 4-bit ones (see `QuantOverrides::first_option`).
            Weights::Float { .. } | Weights::Gguf { .. } => Ok(self.weights),
        }
    }
}

/// How well a target fits a model's shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetFit {
    /// The target.
    pub target: &'static str,
    /// `exact`, `padded` (int4 blocks padded with zeros) or `fallback` (some tensors stored in
    /// another type, as llama.cpp decides).
    pub status: &'static str,
    /// Matrices affected.
    pub matrices_affected: usize,
    /// Matrices considered.
    pub matrices: usize,
    /// What happens, in words.
    pub detail: String,
}

/// How a `MatMulNBits` group size fits the linear layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupFit {
    /// The block size.
    pub group_size: usize,
    /// Whether every input dimension is a multiple of it.
    pub exact: bool,
    /// Linear weights whose last block is padded.
    pub padded_matrices: usize,
    /// The distinct input dimensions that need padding.
    pub padded_dims: Vec<usize>,
}

/// The row lengths (input features) of the matrices a target would quantize: linear layers and
/// the LM head for ONNX (the embedding only when it is the LM head), every matrix for GGUF.
fn matrix_rows(spec: &DecoderSpec, format: ArtefactFormat) -> Vec<usize> {
    spec.expected_tensors()
        .into_iter()
        .filter(|t| match t.role {
            TensorRole::Weight { .. } | TensorRole::LmHead => true,
            TensorRole::Embedding => format == ArtefactFormat::Gguf || spec.tied_embeddings,
            _ => false,
        })
        .map(|t| t.shape[1])
        .collect()
}

/// The fit of every `MatMulNBits` group size.
pub fn group_fits(spec: &DecoderSpec) -> Vec<GroupFit> {
    let rows = matrix_rows(spec, ArtefactFormat::Onnx);
    MATMUL_NBITS_BLOCK_SIZES
        .iter()
        .map(|&bs| {
            let padded: Vec<usize> = rows.iter().copied().filter(|&k| k % bs != 0).collect();
            let mut dims = padded.clone();
            dims.sort_unstable();
            dims.dedup();
            GroupFit {
                group_size: bs,
                exact: padded.is_empty(),
                padded_matrices: padded.len(),
                padded_dims: dims,
            }
        })
        .collect()
}

/// The fit of `target` to `spec`.
pub fn target_fit(target: &Target, spec: &DecoderSpec) -> TargetFit {
    let rows = matrix_rows(spec, target.format);
    let fit = |status, affected: usize, detail: String| TargetFit {
        target: target.name,
        status,
        matrices_affected: affected,
        matrices: rows.len(),
        detail,
    };
    match target.weights {
        Weights::Float { .. } | Weights::Gguf { base: BlockFormat::F32 | BlockFormat::F16, .. } => {
            fit("exact", 0, "every matrix stored as is".into())
        }
        Weights::Int4 { block_size, .. } => {
            let padded = rows
                .iter()
                .filter(|&&k| BlockLayout::new(k, block_size).is_ok_and(|l| !l.is_exact()))
                .count();
            if padded == 0 {
                fit("exact", 0, format!("every input dimension is a multiple of {block_size}"))
            } else {
                fit(
                    "padded",
                    padded,
                    format!(
                        "{padded} matrices have a last block shorter than {block_size}, zero-padded"
                    ),
                )
            }
        }
        Weights::Gguf { base, mixture, .. } => {
            let misfit = rows.iter().filter(|&&k| !base.fits_row(k)).count();
            let to_f16 = rows.iter().filter(|&&k| !BlockFormat::Q5_0.fits_row(k)).count();
            if misfit == 0 {
                fit("exact", 0, format!("every row length is a multiple of {}", base.block_len()))
            } else if mixture.is_some() {
                fit(
                    "fallback",
                    misfit,
                    format!(
                        "{misfit} matrices have rows that are not a multiple of 256: Q4_K falls back to \
                         Q5_0 and Q6_K to Q8_0 ({to_f16} of them to F16, rows not a multiple of 32)"
                    ),
                )
            } else {
                fit(
                    "fallback",
                    misfit,
                    format!(
                        "{misfit} matrices have rows that are not a multiple of 32 and are stored as F16"
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_unique_and_found() {
        for t in &TARGETS {
            assert_eq!(find_target(t.name), Some(t));
            assert_eq!(TARGETS.iter().filter(|u| u.name == t.name).count(), 1);
        }
        assert!(find_target("cpu-int8").is_none());
        assert!(find_target("dml-int4").unwrap().note.unwrap().contains("deprecated"));
        assert!(find_target("cpu-int4").unwrap().scheme().contains("scale = -m/8"));
        assert!(find_target("hf-bf16").unwrap().scheme().contains("model.safetensors in bf16"));
    }

    #[test]
    fn algo_overrides() {
        let awq = QuantOverrides { algo: Some(Algo::Awq), ..Default::default() };
        let dml = find_target("dml-int4").unwrap();
        assert_eq!(Target::algo_of(&dml.weights_with(&Default::default()).unwrap()), Algo::Awq);
        let rtn = QuantOverrides { algo: Some(Algo::Rtn), ..Default::default() };
        assert_eq!(Target::algo_of(&dml.weights_with(&rtn).unwrap()), Algo::Rtn);
        for name in ["cpu-int4", "gguf-q4_0", "gguf-q4_1", "gguf-q4_k_m"] {
            let t = find_target(name).unwrap();
            assert!(t.takes_algo(), "{name}");
            assert_eq!(Target::algo_of(&t.weights_with(&awq).unwrap()), Algo::Awq, "{name}");
        }
        assert!(
            find_target("gguf-q4_k_m").unwrap().weights_with(&awq).unwrap()
                != find_target("gguf-q4_k_m").unwrap().weights
        );
        for name in ["gguf-q8_0", "gguf-f16", "gguf-f32", "cpu-fp32", "hf-f16"] {
            let t = find_target(name).unwrap();
            assert!(!t.takes_algo(), "{name}");
            assert_eq!(Target::algo_of(&t.weights_with(&awq).unwrap()), Algo::Rtn, "{name}");
        }
        assert!(find_target("gguf-q4_0").unwrap().weights_with(&awq).unwrap().eq(&Weights::Gguf {
            base: BlockFormat::Q4_0,
            mixture: None,
            algo: Algo::Awq
        }));
    }
}
