//! The measurement itself: the corpus in chunks through both models, each scored position
//! compared as it comes (the logits of one chunk are all that is held), and the generation
//! check; the work can be split over processes (one per device) and the parts merged.

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::generation::{DEFAULT_NEW_TOKENS, PromptRun};
use crate::kld::{KldAccumulator, compare_token};
use crate::{Error, Runner};

/// The version of the [`Measurement`] JSON that processes exchange; checked on read.
pub const MEASUREMENT_SCHEMA_VERSION: u32 = 1;

/// The longest chunk accepted (a bound on the memory a hostile `--ctx` could ask for).
pub const MAX_CTX: usize = 1 << 17;

/// The most tokens one prompt may be continued by.
pub const MAX_NEW_TOKENS: usize = 4096;

/// Settings of a verification, checked by [`VerifierBuilder::build`].
#[derive(Debug, Clone)]
pub struct VerifierBuilder {
    ctx: usize,
    chunks: Option<usize>,
    max_new_tokens: usize,
    shard: (usize, usize),
}

impl Default for VerifierBuilder {
    fn default() -> VerifierBuilder {
        VerifierBuilder::new()
    }
}

impl VerifierBuilder {
    /// llama-perplexity's defaults: chunks of 512 tokens, every whole chunk of the corpus; 32
    /// generated tokens per prompt; all of the work in this process.
    pub fn new() -> VerifierBuilder {
        VerifierBuilder {
            ctx: 512,
            chunks: None,
            max_new_tokens: DEFAULT_NEW_TOKENS,
            shard: (0, 1),
        }
    }

    /// Tokens per chunk (the second half of each is scored).
    pub fn ctx(mut self, ctx: usize) -> VerifierBuilder {
        self.ctx = ctx;
        self
    }

    /// Score at most this many chunks (`None`: every whole chunk of the corpus).
    pub fn chunks(mut self, chunks: Option<usize>) -> VerifierBuilder {
        self.chunks = chunks;
        self
    }

    /// Tokens generated per prompt (0 skips the generation check).
    pub fn max_new_tokens(mut self, n: usize) -> VerifierBuilder {
        self.max_new_tokens = n;
        self
    }

    /// Do only part `index` of `count` of the work: chunks and prompts whose number is `index`
    /// modulo `count` (one process per device; [`Measurement::merge`] joins the parts).
    pub fn shard(mut self, index: usize, count: usize) -> VerifierBuilder {
        self.shard = (index, count);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Verifier, Error> {
        let bad = |option, value: usize, expected: &str| Error::InvalidOption {
            option,
            value: value.to_string(),
            expected: expected.into(),
        };
        if !(4..=MAX_CTX).contains(&self.ctx) {
            return Err(bad("--ctx", self.ctx, &format!("from 4 to {MAX_CTX} tokens")));
        }
        if self.chunks == Some(0) {
            return Err(bad("--chunks", 0, "at least 1"));
        }
        if self.max_new_tokens > MAX_NEW_TOKENS {
            return Err(bad(
                "--max-new-tokens",
                self.max_new_tokens,
                &format!("at most {MAX_NEW_TOKENS}"),
            ));
        }
        let (index, count) = self.shard;
        if count == 0 || index >= count {
            return Err(bad("shard", index, &format!("below the number of shards ({count})")));
        }
        Ok(Verifier { settings: self })
    }
}

/// A checked verification setup.
#[derive(Debug, Clone)]
pub struct Verifier {
    settings: VerifierBuilder,
}

/// What the models are run on: the corpus and the prompts, as the baseline's tokenizer gives
/// them.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// The whole corpus.
    pub corpus: &'a [u32],
    /// The id put at the head of every chunk (llama-perplexity's BOS), if any.
    pub bos: Option<u32>,
    /// Each prompt (BOS included where the tokenizer adds it).
    pub prompts: &'a [Vec<u32>],
    /// Ids that end a continuation.
    pub stop: &'a [u32],
}

/// Seconds spent on each part of a verification. Merged measurements add their parts' times
/// (time spent across processes); the command's own wall time is `total_secs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Loading the artefact into its runtime.
    pub artefact_load_secs: f64,
    /// Loading the baseline (f32 weights) into the native engine.
    pub baseline_load_secs: f64,
    /// The artefact's runtime computing the chunks' logits.
    pub artefact_logits_secs: f64,
    /// The baseline computing the chunks' logits.
    pub baseline_logits_secs: f64,
    /// Comparing the two models' distributions at every scored position.
    pub statistics_secs: f64,
    /// The artefact's greedy continuations.
    pub artefact_generation_secs: f64,
    /// The baseline's greedy continuations.
    pub baseline_generation_secs: f64,
    /// The whole verification, from start to report (wall time).
    pub total_secs: f64,
}

impl Timing {
    fn add(&mut self, o: &Timing) {
        self.artefact_load_secs += o.artefact_load_secs;
        self.baseline_load_secs += o.baseline_load_secs;
        self.artefact_logits_secs += o.artefact_logits_secs;
        self.baseline_logits_secs += o.baseline_logits_secs;
        self.statistics_secs += o.statistics_secs;
        self.artefact_generation_secs += o.artefact_generation_secs;
        self.baseline_generation_secs += o.baseline_generation_secs;
        self.total_secs = self.total_secs.max(o.total_secs);
    }
}

/// The raw result of a verification (or of one part of it): the running sums and per-token
/// values of every scored token, the continuations, and the time taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// [`MEASUREMENT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks in the whole verification (over every part).
    pub chunks: usize,
    /// The chunks this measurement covers.
    pub chunks_done: Vec<usize>,
    /// Prompts in the whole verification.
    pub prompts: usize,
    /// Tokens generated per prompt at most.
    pub max_new_tokens: usize,
    /// The comparison of every scored token.
    pub accumulator: KldAccumulator,
    /// The continuations of the prompts this measurement covers.
    pub generations: Vec<PromptRun>,
    /// Time taken.
    pub timing: Timing,
}

/// Checks that a model returned `tokens * vocab` logits.
fn check_logits(model: &'static str, got: usize, tokens: usize, vocab: usize) -> Result<(), Error> {
    let expected = tokens * vocab;
    if got != expected {
        return Err(Error::LogitsShape { model, got, tokens, expected });
    }
    Ok(())
}

impl Verifier {
    /// Runs `work` through `baseline` and `artefact`, chunk after chunk as llama-perplexity
    /// does: each chunk of `ctx` tokens evaluated from an empty context with BOS in its first
    /// place, the positions `ctx/2 .. ctx-1` scored (the logits at `j` predict token `j + 1`).
    /// Only the two models' logits of the current chunk are held.
    pub fn measure(
        &self,
        work: &Workload<'_>,
        baseline: &mut dyn Runner,
        artefact: &mut dyn Runner,
    ) -> Result<Measurement, Error> {
        self.measure_with_progress(work, baseline, artefact, &|_, _| {})
    }

    /// As [`Verifier::measure`], calling `progress(done, total)` after each chunk and each
    /// prompt of this shard.
    pub fn measure_with_progress(
        &self,
        work: &Workload<'_>,
        baseline: &mut dyn Runner,
        artefact: &mut dyn Runner,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Measurement, Error> {
        let VerifierBuilder { ctx, chunks, max_new_tokens, shard: (index, count) } = self.settings;
        let vocab = baseline.vocab_size();
        if artefact.vocab_size() != vocab {
            return Err(Error::VocabMismatch { artefact: artefact.vocab_size(), baseline: vocab });
        }
        for limit in [baseline.context_length(), artefact.context_length()].into_iter().flatten() {
            if ctx > limit {
                return Err(Error::InvalidOption {
                    option: "--ctx",
                    value: ctx.to_string(),
                    expected: format!("at most the model's context length, {limit}"),
                });
            }
        }
        if let Some(i) = work.prompts.iter().position(Vec::is_empty) {
            return Err(Error::InvalidOption {
                option: "--prompts",
                value: format!("(prompt {})", i + 1),
                expected: "text that gives at least one token".into(),
            });
        }
        let available = work.corpus.len() / ctx;
        if available == 0 {
            return Err(Error::ShortCorpus { tokens: work.corpus.len(), ctx });
        }
        let total_chunks = chunks.map_or(available, |m| m.min(available));
        let prompts_here = match max_new_tokens {
            0 => 0,
            _ => (0..work.prompts.len()).filter(|i| i % count == index).count(),
        };
        let steps = (0..total_chunks).filter(|c| c % count == index).count() + prompts_here;
        let mut done = 0;
        let mut timing = Timing::default();
        let mut acc = KldAccumulator::default();
        let mut chunks_done = Vec::new();
        let (mut base_logits, mut q_logits) = (Vec::new(), Vec::new());
        let mut chunk = vec![0u32; ctx];
        let first = ctx / 2;
        for c in (0..total_chunks).filter(|c| c % count == index) {
            chunk.copy_from_slice(&work.corpus[c * ctx..(c + 1) * ctx]);
            if let Some(bos) = work.bos {
                chunk[0] = bos;
            }
            let start = Instant::now();
            artefact.logits(&chunk, &mut q_logits)?;
            check_logits("artefact", q_logits.len(), ctx, vocab)?;
            let after_artefact = Instant::now();
            baseline.logits(&chunk, &mut base_logits)?;
            check_logits("baseline", base_logits.len(), ctx, vocab)?;
            let after_baseline = Instant::now();
            let compared: Vec<_> = (first..ctx - 1)
                .into_par_iter()
                .map_init(Vec::new, |scratch, j| {
                    let row = j * vocab..(j + 1) * vocab;
                    compare_token(
                        &base_logits[row.clone()],
                        &q_logits[row],
                        chunk[j + 1] as usize,
                        scratch,
                    )
                })
                .collect();
            compared.iter().for_each(|t| acc.push(t));
            chunks_done.push(c);
            timing.artefact_logits_secs += (after_artefact - start).as_secs_f64();
            timing.baseline_logits_secs += (after_baseline - after_artefact).as_secs_f64();
            timing.statistics_secs += after_baseline.elapsed().as_secs_f64();
            done += 1;
            progress(done, steps);
        }
        drop((base_logits, q_logits));

        let mut generations = Vec::new();
        if max_new_tokens > 0 {
            for (i, prompt) in work.prompts.iter().enumerate().filter(|(i, _)| i % count == index) {
                let start = Instant::now();
                let q = artefact.greedy(prompt, max_new_tokens, work.stop)?;
                let mid = Instant::now();
                let base = baseline.greedy(prompt, max_new_tokens, work.stop)?;
                timing.artefact_generation_secs += (mid - start).as_secs_f64();
                timing.baseline_generation_secs += mid.elapsed().as_secs_f64();
                generations.push(PromptRun {
                    index: i,
                    prompt: prompt.clone(),
                    baseline: base,
                    artefact: q,
                });
                done += 1;
                progress(done, steps);
            }
        }
        Ok(Measurement {
            schema_version: MEASUREMENT_SCHEMA_VERSION,
            ctx,
            chunks: total_chunks,
            chunks_done,
            prompts: if max_new_tokens > 0 { work.prompts.len() } else { 0 },
            max_new_tokens,
            accumulator: acc,
            generations,
            timing,
        })
    }
}

impl Measurement {
    /// The measurement as one line of JSON (what a worker process prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("plain data serializes: {e}"))
    }

    /// Reads a measurement written by [`Measurement::to_json`], checking its schema version and
    /// that its parts agree; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Measurement, Error> {
        let fail = |reason: String| Error::Partial { origin: origin.into(), reason };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| fail(format!("not a measurement: {e}")))?;
        match v.get("schema_version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(MEASUREMENT_SCHEMA_VERSION) => {}
            other => {
                return Err(fail(format!(
                    "schema_version {}, expected {MEASUREMENT_SCHEMA_VERSION}",
                    other.map_or("missing".into(), |v| v.to_string())
                )));
            }
        }
        let m: Measurement =
            serde_json::from_value(v).map_err(|e| fail(format!("not a measurement: {e}")))?;
        if !m.accumulator.is_consistent() {
            return Err(fail("its token counts disagree".into()));
        }
        Ok(m)
    }

    /// Joins the parts of one verification, each made with the same settings and a different
    /// [`VerifierBuilder::shard`], into the measurement of the whole.
    pub fn merge(parts: Vec<Measurement>) -> Result<Measurement, Error> {
        let fail =
            |reason: String| Error::Partial { origin: "merging measurements".into(), reason };
        let mut iter = parts.into_iter();
        let Some(mut whole) = iter.next() else { return Err(fail("no parts".into())) };
        for part in iter {
            if (part.ctx, part.chunks, part.prompts, part.max_new_tokens)
                != (whole.ctx, whole.chunks, whole.prompts, whole.max_new_tokens)
            {
                return Err(fail("the parts were made with different settings".into()));
            }
            whole.accumulator.merge(&part.accumulator);
            whole.chunks_done.extend(part.chunks_done);
            whole.generations.extend(part.generations);
            whole.timing.add(&part.timing);
        }
        whole.chunks_done.sort_unstable();
        whole.generations.sort_by_key(|g| g.index);
        if whole.chunks_done != (0..whole.chunks).collect::<Vec<_>>() {
            return Err(fail(format!(
                "the parts cover chunks {:?}, not each of 0..{} once",
                whole.chunks_done, whole.chunks
            )));
        }
        if !whole.generations.iter().map(|g| g.index).eq(0..whole.prompts) {
            return Err(fail("the parts do not cover each prompt once".into()));
        }
        Ok(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose logits are a fixed function of the prefix; `salt` makes another model.
    struct Fake {
        vocab: usize,
        salt: u64,
    }

    impl Fake {
        fn row(&self, prefix: &[u32]) -> Vec<f32> {
            let h = prefix
                .iter()
                .fold(self.salt, |h, &t| h.wrapping_mul(31).wrapping_add(t as u64 + 1));
            (0..self.vocab)
                .map(|i| {
                    let x = (h ^ (i as u64).wrapping_mul(0x9E37_79B9))
                        .wrapping_mul(0x2545_F491_4F6C_DD1D);
                    ((x >> 40) % 1000) as f32 / 100.0
                })
                .collect()
        }
    }

    impl Runner for Fake {
        fn backend(&self) -> &'static str {
            "fake"
        }
        fn vocab_size(&self) -> usize {
            self.vocab
        }
        fn context_length(&self) -> Option<usize> {
            Some(1024)
        }
        fn logits(&mut self, tokens: &[u32], out: &mut Vec<f32>) -> Result<(), Error> {
            out.clear();
            for j in 0..tokens.len() {
                out.extend(self.row(&tokens[..=j]));
            }
            Ok(())
        }
        fn greedy(&mut self, prompt: &[u32], n: usize, stop: &[u32]) -> Result<Vec<u32>, Error> {
            let mut seq = prompt.to_vec();
            let mut out = Vec::new();
            while out.len() < n {
                let next = phiquant_runtime::argmax(&self.row(&seq));
                out.push(next);
                seq.push(next);
                if stop.contains(&next) {
                    break;
                }
            }
            Ok(out)
        }
    }

    fn corpus(n: usize, vocab: u32) -> Vec<u32> {
        (0..n as u32).map(|i| (i * 7 + i / 3) % vocab).collect()
    }

    /// llama-perplexity's perplexity over the same chunks, transcribed directly: for each chunk,
    /// BOS first, the positions `n_ctx/2 .. n_ctx-2` predict the next token, nll += -ln softmax.
    fn llama_ppl(model: &mut Fake, tokens: &[u32], ctx: usize, chunks: usize, bos: u32) -> f64 {
        let (mut nll, mut count) = (0f64, 0usize);
        let mut logits = Vec::new();
        for c in 0..chunks {
            let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
            chunk[0] = bos;
            model.logits(&chunk, &mut logits).unwrap();
            for j in ctx / 2..ctx - 1 {
                let row = &logits[j * model.vocab..(j + 1) * model.vocab];
                let max = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                let p = (row[chunk[j + 1] as usize] as f64 - max).exp() / sum;
                nll -= p.ln();
                count += 1;
            }
        }
        (nll / count as f64).exp()
    }

    #[test]
    fn chunk_scoring_matches_llama_perplexity() {
        let (vocab, ctx) = (40, 32);
        let tokens = corpus(ctx * 5 + 7, vocab as u32);
        let prompts = vec![vec![1, 2, 3], vec![4]];
        let work = Workload { corpus: &tokens, bos: Some(1), prompts: &prompts, stop: &[] };
        let v = VerifierBuilder::new().ctx(ctx).chunks(Some(4)).max_new_tokens(6).build().unwrap();

        // The same model on both sides: nothing differs, and PPL is llama-perplexity's.
        let m =
            v.measure(&work, &mut Fake { vocab, salt: 1 }, &mut Fake { vocab, salt: 1 }).unwrap();
        let s = m.accumulator.summary();
        assert_eq!(m.chunks, 4);
        assert_eq!(s.tokens, 4 * (ctx as u64 - 1 - ctx as u64 / 2));
        let want = llama_ppl(&mut Fake { vocab, salt: 1 }, &tokens, ctx, 4, 1);
        assert!((s.ppl_q.value - want).abs() < 1e-6 * want, "{} vs {want}", s.ppl_q.value);
        assert_eq!(s.ppl_q.value, s.ppl_base.value);
        assert_eq!((s.kld.mean.value, s.same_top.value, s.ppl_ratio.value), (0.0, 1.0, 1.0));
        // And it is what the runtime's perplexity (the `perplexity` command) gives.
        let fake = Fake { vocab, salt: 1 };
        let runtime = phiquant_runtime::perplexity_with(
            vocab,
            &tokens,
            ctx,
            Some(4),
            Some(1),
            phiquant_runtime::Scoring::SecondHalf,
            |c| Ok((0..c.len()).flat_map(|j| fake.row(&c[..=j])).collect()),
            |_, _, _| {},
        )
        .unwrap();
        assert!((runtime.ppl - want).abs() < 1e-9 * want);
        assert_eq!(m.generations.len(), 2);
        assert!(m.generations.iter().all(|g| g.baseline == g.artefact && g.baseline.len() == 6));

        // Another model as the artefact: PPL(Q) and PPL(base) are each llama-perplexity's.
        let m =
            v.measure(&work, &mut Fake { vocab, salt: 1 }, &mut Fake { vocab, salt: 2 }).unwrap();
        let s = m.accumulator.summary();
        let want_q = llama_ppl(&mut Fake { vocab, salt: 2 }, &tokens, ctx, 4, 1);
        assert!((s.ppl_q.value - want_q).abs() < 1e-6 * want_q);
        assert!((s.ppl_base.value - want).abs() < 1e-6 * want);
        assert!(s.kld.mean.value > 0.1 && s.same_top.value < 0.5);

        // Split over three processes and merged: the same statistics.
        let parts: Vec<Measurement> = (0..3)
            .map(|i| {
                let v =
                    VerifierBuilder::new().ctx(ctx).chunks(Some(4)).max_new_tokens(6).shard(i, 3);
                let m = v.build().unwrap();
                let m = m
                    .measure(&work, &mut Fake { vocab, salt: 1 }, &mut Fake { vocab, salt: 2 })
                    .unwrap();
                Measurement::from_json(&m.to_json(), "part").unwrap()
            })
            .collect();
        let merged = Measurement::merge(parts).unwrap();
        let ms = merged.accumulator.summary();
        assert!((ms.kld.mean.value - s.kld.mean.value).abs() < 1e-12);
        assert!((ms.ppl_q.value - s.ppl_q.value).abs() < 1e-9);
        assert_eq!(ms.kld.quantiles, s.kld.quantiles);
        assert_eq!(merged.generations, m.generations);
        assert_eq!(merged.chunks_done, vec![0, 1, 2, 3]);
    }

    #[test]
    fn bad_settings_and_inputs_are_errors() {
        assert!(VerifierBuilder::new().ctx(3).build().unwrap_err().to_string().contains("--ctx 3"));
        assert!(VerifierBuilder::new().ctx(MAX_CTX + 1).build().is_err());
        assert!(VerifierBuilder::new().chunks(Some(0)).build().is_err());
        assert!(VerifierBuilder::new().shard(2, 2).build().is_err());
        assert!(VerifierBuilder::new().max_new_tokens(MAX_NEW_TOKENS + 1).build().is_err());
        let v = VerifierBuilder::new().ctx(16).build().unwrap();
        let tokens = corpus(10, 8);
        let work = Workload { corpus: &tokens, bos: None, prompts: &[], stop: &[] };
        let err =
            v.measure(&work, &mut Fake { vocab: 8, salt: 0 }, &mut Fake { vocab: 8, salt: 0 });
        assert!(matches!(err, Err(Error::ShortCorpus { tokens: 10, ctx: 16 })));
        let err =
            v.measure(&work, &mut Fake { vocab: 8, salt: 0 }, &mut Fake { vocab: 9, salt: 0 });
        assert!(matches!(err, Err(Error::VocabMismatch { artefact: 9, baseline: 8 })));
        let big = VerifierBuilder::new().ctx(2048).build().unwrap();
        let err =
            big.measure(&work, &mut Fake { vocab: 8, salt: 0 }, &mut Fake { vocab: 8, salt: 0 });
        assert!(err.unwrap_err().to_string().contains("context length, 1024"));
        let prompts = vec![vec![]];
        let work = Workload { corpus: &tokens, bos: None, prompts: &prompts, stop: &[] };
        assert!(
            v.measure(&work, &mut Fake { vocab: 8, salt: 0 }, &mut Fake { vocab: 8, salt: 0 })
                .is_err()
        );
        let part = Measurement::from_json("{\"schema_version\": 9}", "w").unwrap_err().to_string();
        assert_eq!(part, "w: schema_version 9, expected 1");
        assert!(Measurement::merge(Vec::new()).is_err());
    }
}
