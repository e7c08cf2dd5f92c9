//! Text generation on the native engine: greedy and sampled decoding with a KV cache.

use serde::Serialize;

use crate::{Engine, Error, Logits};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sampling {
    /// 0 for greedy (the highest logit, the lowest id on ties); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Seed of the sampler's random stream.
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding.
    pub const GREEDY: Sampling = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 };

    /// Checks the parameters.
    pub fn validated(self) -> Result<Sampling, Error> {
        let bad = |field: &str, value: String, expected: &str| Error::InvalidField {
            path: "sampling".into(),
            field: field.into(),
            value,
            expected: expected.into(),
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(bad("temperature", self.temperature.to_string(), "a finite number >= 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad("top_p", self.top_p.to_string(), "a number in (0, 1]"));
        }
        Ok(self)
    }
}

/// splitmix64: a small, fixed random stream, so that a seed always gives the same tokens.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the largest value (the first on ties), as `torch.argmax`.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks a token from `logits` by `sampling`; `order` is a reusable buffer.
fn pick(
    logits: &[f32],
    sampling: &Sampling,
    rng: &mut SplitMix,
    order: &mut Vec<(f32, u32)>,
) -> u32 {
    if sampling.temperature == 0.0 {
        return argmax(logits);
    }
    order.clear();
    order.extend(logits.iter().enumerate().map(|(i, &v)| (v / sampling.temperature, i as u32)));
    // Most likely first; equal logits by id, so the order never depends on the sort.
    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k);
    }
    let max = order[0].0;
    let mut total = 0f64;
    for e in order.iter_mut() {
        e.0 = ((e.0 - max) as f64).exp() as f32;
        total += e.0 as f64;
    }
    if sampling.top_p < 1.0 {
        let mut acc = 0f64;
        let mut keep = order.len();
        for (i, e) in order.iter().enumerate() {
            acc += e.0 as f64 / total;
            if acc >= sampling.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        order.truncate(keep);
        total = order.iter().map(|e| e.0 as f64).sum();
    }
    let mut r = rng.next_f64() * total;
    for e in order.iter() {
        r -= e.0 as f64;
        if r < 0.0 {
            return e.1;
        }
    }
    order.last().map_or(0, |e| e.1)
}

/// Generated tokens and how long each phase took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The generated ids (a stop token included).
    pub token_ids: Vec<u32>,
    /// Seconds spent on the prompt (prefill), including choosing the first token.
    pub prefill_secs: f64,
    /// Seconds spent generating the remaining tokens one at a time.
    pub decode_secs: f64,
}

/// Generates up to `max_tokens` tokens after `prompt`, stopping after any id in `stop`; returns
/// the generated ids (a stop token included).
pub fn generate(
    engine: &Engine,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    stop: &[u32],
) -> Result<Vec<u32>, Error> {
    Ok(generate_timed(engine, prompt, max_tokens, sampling, stop)?.token_ids)
}

/// As [`generate`], also timing the prefill and decode phases.
pub fn generate_timed(
    engine: &Engine,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    stop: &[u32],
) -> Result<Generation, Error> {
    let mut sampler = Sampler::new(sampling, engine.spec().vocab_size)?;
    if prompt.is_empty() {
        return Err(Error::empty_prompt());
    }
    let mut session = engine.session(prompt.len() + max_tokens);
    let mut out = Vec::with_capacity(max_tokens);
    let start = std::time::Instant::now();
    let mut next = sampler.pick(session.forward(prompt, Logits::Last)?);
    let prefill_secs = start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    while out.len() < max_tokens {
        out.push(next);
        if stop.contains(&next) || out.len() == max_tokens {
            break;
        }
        next = sampler.pick(session.forward(&[next], Logits::Last)?);
    }
    Ok(Generation { token_ids: out, prefill_secs, decode_secs: start.elapsed().as_secs_f64() })
}

/// Chooses tokens one after another by a [`Sampling`]: the state one generation carries (its
/// random stream and a sorting buffer), shared by the backends' generation loops.
pub(crate) struct Sampler {
    sampling: Sampling,
    rng: SplitMix,
    order: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for logits rows of `vocab_size`, after checking `sampling`.
    pub(crate) fn new(sampling: &Sampling, vocab_size: usize) -> Result<Sampler, Error> {
        let sampling = sampling.validated()?;
        let order = Vec::with_capacity(if sampling.temperature == 0.0 { 0 } else { vocab_size });
        Ok(Sampler { sampling, rng: SplitMix(sampling.seed), order })
    }

    /// The next token for one row of logits.
    pub(crate) fn pick(&mut self, logits: &[f32]) -> u32 {
        pick(logits, &self.sampling, &mut self.rng, &mut self.order)
    }
}

/// The tokens that end generation: the config's `eos_token_id` plus those of
/// `generation_config.json` in `dir`, when present.
pub fn stop_tokens(dir: &std::path::Path, spec: &crate::DecoderSpec) -> Result<Vec<u32>, Error> {
    let path = dir.join("generation_config.json");
    let config = if path.is_file() { Some(crate::read_json_file(&path, 1 << 20)?) } else { None };
    Ok(merge_stop_tokens(spec, config.as_ref()))
}

/// As [`stop_tokens`], with `generation_config.json` taken from `files` (a folder's own, or the
/// files rebuilt from a GGUF).
pub fn stop_tokens_of(
    files: &crate::AuxFiles,
    spec: &crate::DecoderSpec,
) -> Result<Vec<u32>, Error> {
    Ok(merge_stop_tokens(spec, files.json("generation_config.json")?.as_ref()))
}

/// The config's end-of-sequence ids and those of a generation config, sorted and deduplicated.
fn merge_stop_tokens(
    spec: &crate::DecoderSpec,
    generation: Option<&serde_json::Value>,
) -> Vec<u32> {
    let mut ids = spec.eos_token_ids.clone();
    match generation.and_then(|v| v.get("eos_token_id")) {
        Some(serde_json::Value::Array(a)) => {
            ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
        }
        Some(x) => ids.extend(x.as_u64().map(|x| x as u32)),
        None => {}
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let s = Sampling { temperature: 0.8, top_k: 3, top_p: 1.0, seed: 7 };
        let mut order = Vec::new();
        let draw = |seed| {
            let mut rng = SplitMix(seed);
            let mut o = Vec::new();
            (0..20)
                .map(|_| pick(&logits, &Sampling { seed, ..s }, &mut rng, &mut o))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let mut sorted: Vec<u32> = (0..50).collect();
        sorted.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        for t in draw(7) {
            assert!(sorted[..3].contains(&t));
        }
        let mut rng = SplitMix(1);
        assert_eq!(pick(&logits, &Sampling { top_p: 1e-6, ..s }, &mut rng, &mut order), sorted[0]);
        assert!(Sampling { temperature: -1.0, ..s }.validated().is_err());
    }
}
