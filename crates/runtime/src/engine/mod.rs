//! The native CPU decoder engine: phiquant's full-precision reference forward pass, with a KV
//! cache for decoding and a hook that hands out every linear layer's input activations.
//!
//! Numerics follow transformers' eager fp32 implementation of each architecture; matrix products
//! go through the `gemm` crate on the rayon pool. Results do not depend on the thread count.

mod layer;
mod rope;
mod weights;

use phiquant_quant::matmul_xwt;

use self::layer::{LayerCache, LayerContext, Scratch, attention_block, layer_forward, mlp_block};
pub use self::{
    layer::{ActivationHook, LinearInput, rms_norm},
    rope::{RopeCache, RopeTables},
    weights::{LayerWeights, ModelWeights},
};
use crate::{DecoderSpec, Error, WeightSource};

/// Tokens processed per internal step of a long forward call (bounds the scratch memory; the
/// KV cache makes the result independent of it).
const CHUNK: usize = 256;
/// The widest rotary dimension the rotary kernel keeps on its stack.
const MAX_ROTARY_DIM: usize = 512;

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (`[1, vocab]`), for generation.
    Last,
    /// Every token's (`[tokens, vocab]`), for scoring.
    All,
}

/// A loaded model, shared by any number of sessions.
#[derive(Debug, Clone)]
pub struct Engine {
    spec: DecoderSpec,
    weights: ModelWeights,
    rope: RopeTables,
}

impl Engine {
    /// An engine over weights already in memory.
    pub fn new(spec: DecoderSpec, weights: ModelWeights) -> Result<Engine, Error> {
        if spec.rope.rotary_dim > MAX_ROTARY_DIM {
            return Err(Error::Unsupported {
                what: format!("a rotary dimension of {}", spec.rope.rotary_dim),
                limit: format!("the engine supports up to {MAX_ROTARY_DIM}"),
            });
        }
        let rope = RopeTables::new(&spec);
        Ok(Engine { spec, weights, rope })
    }

    /// Loads every weight of `source` as f32.
    pub fn load(source: &dyn WeightSource) -> Result<Engine, Error> {
        Engine::new(source.spec().clone(), ModelWeights::load(source)?)
    }

    /// The model.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// The weights.
    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    /// A session with room for `capacity` positions (prompt and generated tokens together).
    pub fn session(&self, capacity: usize) -> Session<'_> {
        let capacity = capacity.max(1);
        Session {
            engine: self,
            len: 0,
            capacity,
            caches: (0..self.spec.num_layers)
                .map(|_| LayerCache::new(&self.spec, capacity))
                .collect(),
            scratch: Scratch::new(&self.spec, CHUNK.min(capacity), capacity),
            rope: self.rope.cache(capacity),
            x: vec![0.0; CHUNK.min(capacity) * self.spec.hidden_size],
            xn: vec![0.0; CHUNK.min(capacity) * self.spec.hidden_size],
            logits: Vec::new(),
        }
    }
}

/// One sequence being processed: its KV cache and buffers. Decoding allocates nothing per token.
#[derive(Debug)]
pub struct Session<'e> {
    engine: &'e Engine,
    len: usize,
    capacity: usize,
    caches: Vec<LayerCache>,
    scratch: Scratch,
    rope: RopeCache,
    x: Vec<f32>,
    xn: Vec<f32>,
    logits: Vec<f32>,
}

impl Session<'_> {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the sequence (keeps the buffers).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Appends `tokens` to the sequence and returns the requested logits, row-major
    /// `[rows, vocab]`.
    pub fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<&[f32], Error> {
        self.forward_hooked(tokens, which, None)
    }

    /// As [`Session::forward`], handing every linear layer's input to `hook`.
    pub fn forward_hooked<'h>(
        &mut self,
        tokens: &[u32],
        which: Logits,
        mut hook: Option<&mut (dyn ActivationHook + 'h)>,
    ) -> Result<&[f32], Error> {
        let engine = self.engine;
        let spec = &engine.spec;
        let (h, vocab) = (spec.hidden_size, spec.vocab_size);
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::TokenOutOfRange { token, vocab_size: vocab });
        }
        if self.len + tokens.len() > self.capacity {
            return Err(Error::ContextFull {
                needed: self.len + tokens.len(),
                capacity: self.capacity,
            });
        }
        let last_pos = self.len + tokens.len().max(1) - 1;
        let out_rows = match which {
            Logits::Last => tokens.len().min(1),
            Logits::All => tokens.len(),
        };
        self.logits.resize(out_rows * vocab, 0.0);
        let mut written = 0;
        for chunk in tokens.chunks(CHUNK) {
            let rows = chunk.len();
            let x = &mut self.x[..rows * h];
            for (row, &t) in x.chunks_exact_mut(h).zip(chunk) {
                row.copy_from_slice(&engine.weights.embed[t as usize * h..(t as usize + 1) * h]);
            }
            for (l, (w, cache)) in engine.weights.layers.iter().zip(&mut self.caches).enumerate() {
                let cx = LayerContext {
                    spec,
                    rope: &self.rope,
                    layer: l,
                    start: self.len,
                    last_pos,
                    capacity: self.capacity,
                };
                layer_forward(&cx, w, x, rows, cache, &mut self.scratch, hook.as_deref_mut());
            }
            self.len += rows;
            // The LM head on the rows asked for.
            let (first, n) = match which {
                Logits::All => (0, rows),
                Logits::Last if self.len == last_pos + 1 => (rows - 1, 1),
                Logits::Last => continue,
            };
            let xn = &mut self.xn[..n * h];
            rms_norm(
                &x[first * h..(first + n) * h],
                &engine.weights.final_norm,
                spec.rms_norm_eps as f32,
                xn,
            );
            let out = &mut self.logits[written * vocab..(written + n) * vocab];
            matmul_xwt(xn, n, h, engine.weights.head(), vocab, out).expect("sized by the spec");
            written += n;
        }
        Ok(&self.logits[..out_rows * vocab])
    }
}

/// Runs one decoder layer at a time over one sequence, for callers that hold a single layer's
/// weights in memory (AWQ calibration loads layer `l` with [`LayerWeights::load`], runs every
/// sample through it, and drops it before loading layer `l + 1`).
#[derive(Debug, Clone)]
pub struct LayerRunner {
    spec: DecoderSpec,
    rope: RopeCache,
    cache: LayerCache,
    scratch: Scratch,
    tokens: usize,
}

impl LayerRunner {
    /// A runner for sequences of up to `tokens` tokens (positions `0..tokens`).
    pub fn new(spec: &DecoderSpec, tokens: usize) -> Result<LayerRunner, Error> {
        let tokens = tokens.max(1);
        let rope = Engine::new(spec.clone(), ModelWeights::empty())?.rope.cache(tokens);
        Ok(LayerRunner {
            spec: spec.clone(),
            rope,
            cache: LayerCache::new(spec, tokens),
            scratch: Scratch::new(spec, tokens, tokens),
            tokens,
        })
    }

    /// The residual stream entering layer 0: the embedding rows of `ids` (`ids.len() x hidden`).
    pub fn embed(embedding: &[f32], hidden: usize, ids: &[u32]) -> Vec<f32> {
        ids.iter()
            .flat_map(|&t| {
                embedding[t as usize * hidden..(t as usize + 1) * hidden].iter().copied()
            })
            .collect()
    }

    /// Runs layer `layer` with weights `w` over `hidden` (`rows x hidden_size`, positions
    /// `0..rows`), in place, handing each linear layer's input to `hook`.
    pub fn run<'h>(
        &mut self,
        layer: usize,
        w: &LayerWeights,
        hidden: &mut [f32],
        rows: usize,
        hook: Option<&mut (dyn ActivationHook + 'h)>,
    ) -> Result<(), Error> {
        if rows > self.tokens || hidden.len() != rows * self.spec.hidden_size {
            return Err(Error::ContextFull { needed: rows, capacity: self.tokens });
        }
        let cx = LayerContext {
            spec: &self.spec,
            rope: &self.rope,
            layer,
            start: 0,
            last_pos: rows.max(1) - 1,
            capacity: self.tokens,
        };
        layer_forward(&cx, w, hidden, rows, &mut self.cache, &mut self.scratch, hook);
        Ok(())
    }

    fn check_rows(&self, rows: usize, input: &[f32], out: &[f32]) -> Result<(), Error> {
        let need = rows * self.spec.hidden_size;
        if rows > self.tokens || input.len() != need || out.len() != need {
            return Err(Error::ContextFull { needed: rows, capacity: self.tokens });
        }
        Ok(())
    }

    /// Runs only the attention block of layer `layer` with weights `w`: q/k/v projections,
    /// rotary embedding, attention and output projection, without the norm before it or the
    /// residual after it. `xn` is the normalized input (`rows x hidden_size`, positions
    /// `0..rows`); the block's output goes into `out` (`rows x hidden_size`). AWQ measures the
    /// error of quantized q/k/v weights on this output.
    pub fn attention<'h>(
        &mut self,
        layer: usize,
        w: &LayerWeights,
        xn: &[f32],
        rows: usize,
        out: &mut [f32],
        mut hook: Option<&mut (dyn ActivationHook + 'h)>,
    ) -> Result<(), Error> {
        self.check_rows(rows, xn, out)?;
        let cx = LayerContext {
            spec: &self.spec,
            rope: &self.rope,
            layer,
            start: 0,
            last_pos: rows.max(1) - 1,
            capacity: self.tokens,
        };
        self.scratch.xn_mut(rows).copy_from_slice(xn);
        attention_block(&cx, w, rows, &mut self.cache, &mut self.scratch, &mut hook);
        out.copy_from_slice(self.scratch.proj(rows));
        Ok(())
    }

    /// Runs only the MLP block of layer `layer` with weights `w` (gate and up projections, SiLU
    /// gating, down projection, no norm or residual) over `rows` tokens of normalized input
    /// `xn`, into `out` (both `rows x hidden_size`). The MLP treats every token on its own, so
    /// the rows need not be a sequence.
    pub fn mlp<'h>(
        &mut self,
        layer: usize,
        w: &LayerWeights,
        xn: &[f32],
        rows: usize,
        out: &mut [f32],
        mut hook: Option<&mut (dyn ActivationHook + 'h)>,
    ) -> Result<(), Error> {
        self.check_rows(rows, xn, out)?;
        self.scratch.xn_mut(rows).copy_from_slice(xn);
        mlp_block(&self.spec, layer, w, rows, &mut self.scratch, &mut hook);
        out.copy_from_slice(self.scratch.proj(rows));
        Ok(())
    }

    /// The final RMSNorm and LM head over `hidden`, giving `[rows, vocab]` logits.
    pub fn logits(
        &self,
        weights_norm: &[f32],
        head: &[f32],
        hidden: &[f32],
        rows: usize,
    ) -> Vec<f32> {
        let (h, vocab) = (self.spec.hidden_size, self.spec.vocab_size);
        let mut xn = vec![0f32; rows * h];
        rms_norm(hidden, weights_norm, self.spec.rms_norm_eps as f32, &mut xn);
        let mut out = vec![0f32; rows * vocab];
        matmul_xwt(&xn, rows, h, head, vocab, &mut out).expect("sized by the spec");
        out
    }
}
