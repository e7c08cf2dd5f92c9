//! Rotary position embedding as transformers computes it (`modeling_rope_utils.py`): the inverse
//! frequencies of each scaling scheme, rotate-half application to the first `rotary_dim`
//! dimensions of each head, and an attention factor on cos and sin.

use crate::{DecoderSpec, RopeScaling};

/// Inverse frequencies and cos/sin scale of one factor set.
#[derive(Debug, Clone, PartialEq)]
struct FactorSet {
    inv_freq: Vec<f32>,
    scale: f32,
}

/// The rotary tables of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTables {
    rotary_dim: usize,
    short: FactorSet,
    /// LongRoPE's long factors, used for a whole forward call once its last position reaches the
    /// original context (transformers' `longrope_frequency_update`).
    long: Option<(usize, FactorSet)>,
}

fn base_inv_freq(theta: f64, dim: usize) -> Vec<f32> {
    let base = theta as f32;
    (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32)).collect()
}

impl RopeTables {
    /// The tables for `spec`.
    pub fn new(spec: &DecoderSpec) -> RopeTables {
        let dim = spec.rope.rotary_dim;
        let base = base_inv_freq(spec.rope.theta, dim);
        let plain = |inv_freq| FactorSet { inv_freq, scale: 1.0 };
        match &spec.rope.scaling {
            RopeScaling::None => RopeTables { rotary_dim: dim, short: plain(base), long: None },
            RopeScaling::Linear { factor } => {
                let f = *factor as f32;
                RopeTables {
                    rotary_dim: dim,
                    short: plain(base.iter().map(|v| v / f).collect()),
                    long: None,
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) =
                    (*factor as f32, *low_freq_factor as f32, *high_freq_factor as f32);
                let old = *original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                let inv_freq = base
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                        if medium {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect();
                RopeTables { rotary_dim: dim, short: plain(inv_freq), long: None }
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                short_mscale,
                long_mscale,
                ..
            } => {
                let orig = *original_max_position_embeddings;
                let default = spec.longrope_attention_factor().expect("a LongRoPE spec");
                let set = |factors: &[f64], mscale: Option<f64>| FactorSet {
                    inv_freq: (0..dim / 2)
                        .map(|i| {
                            let exponent = (2 * i) as f32 / dim as f32;
                            1.0 / (factors[i] as f32 * (spec.rope.theta as f32).powf(exponent))
                        })
                        .collect(),
                    scale: mscale.unwrap_or(default) as f32,
                };
                RopeTables {
                    rotary_dim: dim,
                    short: set(short_factor, *short_mscale),
                    long: Some((orig, set(long_factor, *long_mscale))),
                }
            }
        }
    }

    /// Half the rotary dimension: the width of one row of [`RopeTables::cos_sin`].
    pub fn half(&self) -> usize {
        self.rotary_dim / 2
    }

    /// Whether there is a second (LongRoPE long) factor set, and from which context length on it
    /// applies.
    pub fn long_from(&self) -> Option<usize> {
        self.long.as_ref().map(|(orig, _)| *orig)
    }

    /// cos and sin tables `[len][rotary_dim / 2]` (row-major, scale applied) for positions
    /// `0..len`, of the long factor set when `long` (LongRoPE only) and the short one otherwise;
    /// the layout of onnxruntime's `cos_cache`/`sin_cache`.
    pub fn cos_sin(&self, long: bool, len: usize) -> (Vec<f32>, Vec<f32>) {
        let set = match (&self.long, long) {
            (Some((_, set)), true) => set,
            _ => &self.short,
        };
        let mut cos = Vec::with_capacity(len * set.inv_freq.len());
        let mut sin = Vec::with_capacity(len * set.inv_freq.len());
        for pos in 0..len {
            let p = pos as f32;
            for &f in &set.inv_freq {
                let angle = f * p;
                cos.push(angle.cos() * set.scale);
                sin.push(angle.sin() * set.scale);
            }
        }
        (cos, sin)
    }

    /// Precomputed cos and sin for positions `0..capacity` (each factor set).
    pub fn cache(&self, capacity: usize) -> RopeCache {
        let half = self.rotary_dim / 2;
        let table = |set: &FactorSet| {
            let mut t = Vec::with_capacity(capacity * half * 2);
            for pos in 0..capacity {
                let p = pos as f32;
                for &f in &set.inv_freq {
                    let angle = f * p;
                    t.push(angle.cos() * set.scale);
                    t.push(angle.sin() * set.scale);
                }
            }
            t
        };
        RopeCache {
            half,
            short: table(&self.short),
            long: self.long.as_ref().map(|(orig, set)| (*orig, table(set))),
        }
    }
}

/// cos and sin of every position a session can reach, `[position][i][cos, sin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeCache {
    half: usize,
    short: Vec<f32>,
    long: Option<(usize, Vec<f32>)>,
}

impl RopeCache {
    /// Rotates the first `rotary_dim` dimensions of each `head_dim`-wide head of `x` (one token's
    /// heads, concatenated) for position `pos`; `last_pos` is the last position of the forward
    /// call, which selects LongRoPE's factor set as transformers does (per call).
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize, last_pos: usize) {
        let table = match &self.long {
            Some((orig, long)) if last_pos + 1 > *orig => long,
            _ => &self.short,
        };
        let half = self.half;
        let cs = &table[pos * half * 2..(pos + 1) * half * 2];
        for head in x.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (cos, sin) = (cs[2 * i], cs[2 * i + 1]);
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * cos - x2 * sin;
                head[i + half] = x2 * cos + x1 * sin;
            }
        }
    }
}
