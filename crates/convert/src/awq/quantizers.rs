//! The quantizer each linear layer gets in a target, as a function on f32 weights, so that AWQ
//! searches against exactly the rounding the target's writer applies.

use std::collections::BTreeMap;

use phiquant_quant::{BlockFormat, FakeQuant, NBitsScheme, ScaleType};
use phiquant_runtime::{DecoderSpec, Linear};

use crate::{
    Error,
    gguf::{GgufScheme, TensorSource, plan_tensors},
    onnx::{IoType, OnnxScheme, OnnxWeights, decoder::block_for},
};

/// The quantizer of every linear layer of a model in one target.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearQuantizers {
    /// Per layer, per projection in [`Linear::ALL`] order.
    layers: Vec<[FakeQuant; 7]>,
}

fn index(linear: Linear) -> usize {
    Linear::ALL.iter().position(|l| *l == linear).expect("every projection is in ALL")
}

impl LinearQuantizers {
    /// Every projection of every layer quantized by `fq(layer, linear, in_features)`.
    pub fn from_fn(
        spec: &DecoderSpec,
        mut fq: impl FnMut(usize, Linear, usize) -> Result<FakeQuant, Error>,
    ) -> Result<LinearQuantizers, Error> {
        let layers = (0..spec.num_layers)
            .map(|l| {
                let mut out = [FakeQuant::Ggml(BlockFormat::F32); 7];
                for (o, &linear) in out.iter_mut().zip(Linear::ALL.iter()) {
                    *o = fq(l, linear, spec.linear_shape(linear)[1])?;
                }
                Ok(out)
            })
            .collect::<Result<_, Error>>()?;
        Ok(LinearQuantizers { layers })
    }

    /// The int4 `MatMulNBits` quantizers of ONNX scheme `scheme`, named `target` in errors: its
    /// block size (never longer than K, as the writer chooses it), symmetry, and f16 scales with
    /// the f16 cast of the weights for fp16-I/O targets.
    pub fn for_onnx(
        spec: &DecoderSpec,
        scheme: &OnnxScheme,
        target: &str,
    ) -> Result<LinearQuantizers, Error> {
        let OnnxWeights::Int4 { block_size, symmetric, .. } = scheme.weights else {
            return Err(Error::Target {
                target: target.into(),
                reason: "--algo awq applies to int4 weights; this target stores floats".into(),
            });
        };
        let scale_type = match scheme.io {
            IoType::F32 => ScaleType::F32,
            IoType::F16 => ScaleType::F16,
        };
        LinearQuantizers::from_fn(spec, |_, _, k| {
            NBitsScheme::new(4, block_for(k, block_size), symmetric, scale_type)
                .map(FakeQuant::NBits)
                .map_err(|source| Error::Target {
                    target: target.into(),
                    reason: format!("block size for K = {k}: {source}"),
                })
        })
    }

    /// The llama.cpp types GGUF scheme `scheme` gives each linear layer (the Q4_K_M mixture and
    /// the fallbacks for rows that fit no block included), named `target` in errors.
    pub fn for_gguf(
        spec: &DecoderSpec,
        scheme: &GgufScheme,
        target: &str,
    ) -> Result<LinearQuantizers, Error> {
        if !matches!(scheme.base, BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4K) {
            return Err(Error::Target {
                target: target.into(),
                reason: format!(
                    "--algo awq applies to 4-bit types (Q4_0, Q4_1, Q4_K_M); {} has nothing to \
                     search",
                    scheme.base
                ),
            });
        }
        let types: BTreeMap<String, BlockFormat> = plan_tensors(spec, scheme)
            .into_iter()
            .filter_map(|(t, s)| match s {
                TensorSource::Checkpoint(name) | TensorSource::Permuted { tensor: name, .. } => {
                    Some((name, t.format))
                }
                TensorSource::Values(_) => None,
            })
            .collect();
        LinearQuantizers::from_fn(spec, |l, linear, _| {
            let name = spec.weight_location(l, linear).tensor;
            types.get(&name).map(|&f| FakeQuant::Ggml(f)).ok_or_else(|| {
                Error::Internal(format!("the GGUF plan has no type for tensor `{name}`"))
            })
        })
    }

    /// The quantizer of `linear` in `layer`.
    pub fn get(&self, layer: usize, linear: Linear) -> &FakeQuant {
        &self.layers[layer][index(linear)]
    }

    /// Layers covered.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::Ep;

    fn spec(name: &str) -> DecoderSpec {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models");
        DecoderSpec::from_config_file(&dir.join(name).join("config.json")).unwrap()
    }

    #[test]
    fn onnx_blocks_never_exceed_k_and_fp16_targets_cast() {
        let s = spec("phi4-mini");
        let scheme = OnnxScheme {
            ep: Ep::Dml,
            io: IoType::F16,
            weights: OnnxWeights::Int4 { block_size: 128, symmetric: false, accuracy_level: 0 },
        };
        let q = LinearQuantizers::for_onnx(&s, &scheme, "dml-int4").unwrap();
        assert_eq!(q.layers(), 2);
        // hidden 96 < 128: the writer uses block 64 there; intermediate 160 keeps 128.
        let FakeQuant::NBits(n) = q.get(0, Linear::Q) else { panic!() };
        assert_eq!((n.block_size(), n.symmetric(), n.scale_type()), (64, false, ScaleType::F16));
        let FakeQuant::NBits(n) = q.get(1, Linear::Down) else { panic!() };
        assert_eq!(n.block_size(), 128);
        let float = OnnxScheme { weights: OnnxWeights::Float, ..scheme };
        assert!(LinearQuantizers::for_onnx(&s, &float, "cuda-fp16").is_err());
    }

    #[test]
    fn gguf_types_follow_the_plan() {
        let s = spec("llama");
        let q4km = GgufScheme { base: BlockFormat::Q4K, q4_k_m: true, pure: false };
        let q = LinearQuantizers::for_gguf(&s, &q4km, "gguf-q4_k_m").unwrap();
        // Rows of 64 fit no K-quant block: Q5_0, and Q8_0 where the mixture asks for Q6_K (v
        // of the last layer); intermediate 120 fits nothing of 32 either: F16.
        assert_eq!(q.get(0, Linear::Q), &FakeQuant::Ggml(BlockFormat::Q5_0));
        assert_eq!(q.get(0, Linear::V), &FakeQuant::Ggml(BlockFormat::Q5_0));
        assert_eq!(q.get(1, Linear::V), &FakeQuant::Ggml(BlockFormat::Q8_0));
        assert_eq!(q.get(0, Linear::Down), &FakeQuant::Ggml(BlockFormat::F16));
        let q8 = GgufScheme { base: BlockFormat::Q8_0, q4_k_m: false, pure: false };
        let err = LinearQuantizers::for_gguf(&s, &q8, "gguf-q8_0").unwrap_err();
        assert!(err.to_string().contains("--algo awq applies to 4-bit types"), "{err}");
    }
}
