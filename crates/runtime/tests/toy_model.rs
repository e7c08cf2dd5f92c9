//! A toy onnxruntime-genai folder, written by hand so that the ONNX Runtime backend's tests need
//! neither Python nor a model download: `model.onnx` (protobuf encoded here, standard ONNX ops
//! only) and `genai_config.json`, with genai's inputs and outputs and a real key/value cache.
//!
//! The toy "model" embeds each token (`E`), stores the embedding scaled per layer as that layer's
//! new key and value, concatenates them after the past, and scores each new position `t` with
//! `W · Σ_caches weight · Σ_{j≤t} cache[j] + 0.25 · t` (the last term only when the graph has
//! `position_ids`), which is `W · (4 · Σ_{j≤t} E[id_j]) + 0.25 · t`. The logits of a position
//! therefore depend on every earlier token through the cache, the order of the cache tensors
//! matters (each has its own scale and weight), and
//! `attention_mask` must be exactly as long as past plus new positions (the graph multiplies the
//! cache by it). Embedding and weight values are multiples of 1/8, exact in fp16.

use std::path::Path;

/// Vocabulary size.
pub const VOCAB: usize = 11;
/// Key/value heads.
pub const HEADS: usize = 2;
/// Head size.
pub const HEAD_SIZE: usize = 3;
/// Layers.
pub const LAYERS: usize = 2;
/// The context length written into genai_config.json.
pub const CONTEXT: usize = 40;
/// The scale of the position term.
const POSITION_SCALE: f32 = 0.25;
/// Key and value scales of each layer: a layer's new key is the embedding times its key scale.
const SCALES: [(f32, f32); LAYERS] = [(1.0, 0.5), (2.0, 0.25)];
/// The weight of each layer's key and value cache in the score. Scales and weights differ per
/// tensor, so a cache handed back in the wrong order changes the logits.
const WEIGHTS: [(f32, f32); LAYERS] = [(1.0, 2.0), (0.5, 4.0)];

/// How to write the toy model.
#[derive(Debug, Clone, Copy)]
pub struct Toy {
    /// fp16 cache and logits (as cuda and dml graphs have) instead of fp32.
    pub fp16: bool,
    /// A `position_ids` input (as dml graphs have).
    pub position_ids: bool,
}

/// The embedding row of `token`: multiples of 1/8 in [-1, 1].
fn embedding(token: usize) -> Vec<f32> {
    (0..HEADS * HEAD_SIZE).map(|i| (((token * 7 + i * 3) % 17) as f32 - 8.0) / 8.0).collect()
}

/// The output weight `[HEADS * HEAD_SIZE, VOCAB]`, row-major.
fn weight() -> Vec<f32> {
    (0..HEADS * HEAD_SIZE * VOCAB).map(|i| ((i * 5 % 13) as f32 - 6.0) / 8.0).collect()
}

impl Toy {
    /// The logits the toy model gives for every position of `ids` (from position 0), computed
    /// directly: `[ids.len(), VOCAB]`.
    pub fn expected_logits(&self, ids: &[u32]) -> Vec<f32> {
        let w = weight();
        let scale: f32 = SCALES.iter().zip(WEIGHTS).map(|((k, v), (wk, wv))| k * wk + v * wv).sum();
        let mut sum = [0f32; HEADS * HEAD_SIZE];
        let mut out = Vec::with_capacity(ids.len() * VOCAB);
        for (t, &id) in ids.iter().enumerate() {
            for (s, e) in sum.iter_mut().zip(embedding(id as usize)) {
                *s += e;
            }
            for v in 0..VOCAB {
                let mut x: f32 =
                    sum.iter().enumerate().map(|(i, s)| scale * s * w[i * VOCAB + v]).sum();
                if self.position_ids {
                    x += POSITION_SCALE * t as f32;
                }
                out.push(x);
            }
        }
        out
    }

    /// Writes `model.onnx` and `genai_config.json` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("model.onnx"), self.model(&[])).unwrap();
        std::fs::write(dir.join("genai_config.json"), self.genai_config().to_string()).unwrap();
    }

    /// A `tokenizer.json` for the toy vocabulary: `<unk> <s> </s> <pad>` then the words `a` to
    /// `g` (ids 4 to 10), split on whitespace.
    pub fn write_tokenizer(dir: &Path) {
        let words = ["<unk>", "<s>", "</s>", "<pad>", "a", "b", "c", "d", "e", "f", "g"];
        assert_eq!(words.len(), VOCAB);
        let vocab: serde_json::Map<String, serde_json::Value> =
            words.iter().enumerate().map(|(i, w)| (w.to_string(), i.into())).collect();
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    }

    /// genai_config.json as the model builder writes it.
    pub fn genai_config(&self) -> serde_json::Value {
        let mut inputs = serde_json::json!({
            "input_ids": "input_ids",
            "attention_mask": "attention_mask",
            "past_key_names": "past_key_values.%d.key",
            "past_value_names": "past_key_values.%d.value"
        });
        if self.position_ids {
            inputs["position_ids"] = "position_ids".into();
        }
        let providers = if self.position_ids {
            serde_json::json!([{"dml": {"enable_graph_capture": "1"}}])
        } else {
            serde_json::json!([])
        };
        serde_json::json!({
            "model": {
                "bos_token_id": 1,
                "context_length": CONTEXT,
                "decoder": {
                    "session_options": {"log_id": "onnxruntime-genai", "provider_options": providers},
                    "filename": "model.onnx",
                    "head_size": HEAD_SIZE,
                    "hidden_size": HEADS * HEAD_SIZE,
                    "inputs": inputs,
                    "outputs": {
                        "logits": "logits",
                        "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"
                    },
                    "num_attention_heads": HEADS,
                    "num_hidden_layers": LAYERS,
                    "num_key_value_heads": HEADS
                },
                "eos_token_id": [2, 3],
                "pad_token_id": 2,
                "type": "toy",
                "vocab_size": VOCAB
            },
            "search": {"max_length": CONTEXT}
        })
    }

    /// The encoded ModelProto; `extra_inputs` are additional float inputs `[1]` the graph
    /// declares but does not use (to test that unknown inputs are refused).
    pub fn model(&self, extra_inputs: &[&str]) -> Vec<u8> {
        let cache_type = if self.fp16 { FLOAT16 } else { FLOAT };
        let mut g = Graph::default();
        let hd = (HEADS * HEAD_SIZE) as i64;
        let e: Vec<f32> = (0..VOCAB).flat_map(embedding).collect();
        g.initializer_f32("E", &[VOCAB as i64, hd], &e);
        g.initializer_f32("W", &[hd, VOCAB as i64], &weight());
        g.initializer_i64("shape_bshd", &[4], &[0, 0, HEADS as i64, HEAD_SIZE as i64]);
        g.initializer_i64("shape_bsx", &[3], &[0, 0, hd]);
        g.initializer_i64("axis2", &[], &[2]);
        g.initializer_i64("axes_1_3", &[2], &[1, 3]);
        g.initializer_i64("axes_2", &[1], &[2]);
        g.initializer_i64("end_max", &[1], &[i64::MAX]);
        g.initializer_f32("pos_scale", &[], &[POSITION_SCALE]);

        g.input("input_ids", INT64, &[Dim::P("batch_size"), Dim::P("sequence_length")]);
        g.input("attention_mask", INT64, &[Dim::P("batch_size"), Dim::P("total_sequence_length")]);
        if self.position_ids {
            g.input("position_ids", INT64, &[Dim::P("batch_size"), Dim::P("sequence_length")]);
        }
        let cache_dims = |positions| {
            [Dim::P("batch_size"), Dim::V(HEADS as i64), Dim::P(positions), Dim::P("kv_cache_dim")]
        };
        g.node("Gather", &["E", "input_ids"], &["x"], &[]);
        g.node("Reshape", &["x", "shape_bshd"], &["x4"], &[]);
        g.node("Transpose", &["x4"], &["xt"], &[Attr::Ints("perm", &[0, 2, 1, 3])]);
        let mut terms = Vec::new();
        for (layer, ((k_scale, v_scale), (k_weight, v_weight))) in
            SCALES.iter().zip(WEIGHTS).enumerate()
        {
            for (kind, scale, weight) in [("key", k_scale, k_weight), ("value", v_scale, v_weight)]
            {
                let past = format!("past_key_values.{layer}.{kind}");
                let present = format!("present.{layer}.{kind}");
                let s = format!("scale_{layer}_{kind}");
                g.initializer_f32(&s, &[], &[*scale]);
                g.input(&past, cache_type, &cache_dims("past_sequence_length"));
                g.output(&present, cache_type, &cache_dims("total_sequence_length"));
                let new = format!("new_{layer}_{kind}");
                g.node("Mul", &["xt", &s], &[&new], &[]);
                let full = format!("full_{layer}_{kind}");
                if self.fp16 {
                    let past32 = format!("past32_{layer}_{kind}");
                    g.node("Cast", &[&past], &[&past32], &[Attr::Int("to", FLOAT as i64)]);
                    let new16 = format!("new16_{layer}_{kind}");
                    g.node("Cast", &[&new], &[&new16], &[Attr::Int("to", FLOAT16 as i64)]);
                    g.node("Concat", &[&past, &new16], &[&present], &[Attr::Int("axis", 2)]);
                    let new32 = format!("new32_{layer}_{kind}");
                    g.node("Cast", &[&new16], &[&new32], &[Attr::Int("to", FLOAT as i64)]);
                    g.node("Concat", &[&past32, &new32], &[&full], &[Attr::Int("axis", 2)]);
                } else {
                    g.node("Concat", &[&past, &new], &[&present], &[Attr::Int("axis", 2)]);
                    g.node("Identity", &[&present], &[&full], &[]);
                }
                let w = format!("weight_{layer}_{kind}");
                g.initializer_f32(&w, &[], &[weight]);
                let term = format!("term_{layer}_{kind}");
                g.node("Mul", &[&full, &w], &[&term], &[]);
                terms.push(term);
            }
        }
        let mut acc = terms[0].clone();
        for (i, term) in terms.iter().enumerate().skip(1) {
            let next = format!("sum_{i}");
            g.node("Add", &[&acc, term], &[&next], &[]);
            acc = next;
        }
        g.node("Cast", &["attention_mask"], &["mask_f"], &[Attr::Int("to", FLOAT as i64)]);
        g.node("Unsqueeze", &["mask_f", "axes_1_3"], &["mask4"], &[]);
        g.node("Mul", &[&acc, "mask4"], &["masked"], &[]);
        g.node("CumSum", &["masked", "axis2"], &["cumsum"], &[]);
        g.node("Shape", &["input_ids"], &["seq"], &[Attr::Int("start", 1), Attr::Int("end", 2)]);
        g.node("Neg", &["seq"], &["neg_seq"], &[]);
        g.node("Slice", &["cumsum", "neg_seq", "end_max", "axes_2"], &["last"], &[]);
        g.node("Transpose", &["last"], &["last_t"], &[Attr::Ints("perm", &[0, 2, 1, 3])]);
        g.node("Reshape", &["last_t", "shape_bsx"], &["flat"], &[]);
        let mut logits = "logits32".to_string();
        g.node("MatMul", &["flat", "W"], &[&logits], &[]);
        if self.position_ids {
            g.node("Cast", &["position_ids"], &["pos_f"], &[Attr::Int("to", FLOAT as i64)]);
            g.node("Unsqueeze", &["pos_f", "axes_2"], &["pos3"], &[]);
            g.node("Mul", &["pos3", "pos_scale"], &["pos_term"], &[]);
            g.node("Add", &[&logits, "pos_term"], &["logits_pos"], &[]);
            logits = "logits_pos".into();
        }
        if self.fp16 {
            g.node("Cast", &[&logits], &["logits"], &[Attr::Int("to", FLOAT16 as i64)]);
        } else {
            g.node("Identity", &[&logits], &["logits"], &[]);
        }
        g.output(
            "logits",
            cache_type,
            &[Dim::P("batch_size"), Dim::P("sequence_length"), Dim::V(VOCAB as i64)],
        );
        for name in extra_inputs {
            g.input(name, FLOAT, &[Dim::V(1)]);
        }
        g.model()
    }
}

// ONNX element types (onnx.proto `TensorProto.DataType`).
const FLOAT: i32 = 1;
const INT64: i32 = 7;
const FLOAT16: i32 = 10;

/// A dimension: a fixed size or a named symbol.
enum Dim<'a> {
    V(i64),
    P(&'a str),
}

/// A node attribute.
enum Attr<'a> {
    Int(&'a str, i64),
    Ints(&'a str, &'a [i64]),
}

/// Protobuf wire encoding, the few field kinds onnx.proto needs.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn int(&mut self, field: u32, v: i64) -> &mut Msg {
        self.varint(u64::from(field) << 3);
        self.varint(v as u64);
        self
    }

    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Msg {
        self.varint(u64::from(field) << 3 | 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    fn str(&mut self, field: u32, s: &str) -> &mut Msg {
        self.bytes(field, s.as_bytes())
    }

    fn msg(&mut self, field: u32, m: &Msg) -> &mut Msg {
        self.bytes(field, &m.0)
    }
}

/// A GraphProto under construction.
#[derive(Default)]
struct Graph {
    graph: Msg,
    nodes: usize,
}

impl Graph {
    fn initializer(&mut self, name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) {
        let mut t = Msg::default();
        for &d in dims {
            t.int(1, d);
        }
        t.int(2, i64::from(data_type)).str(8, name).bytes(9, &raw);
        self.graph.msg(5, &t);
    }

    fn initializer_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        self.initializer(name, dims, FLOAT, data.iter().flat_map(|v| v.to_le_bytes()).collect());
    }

    fn initializer_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        self.initializer(name, dims, INT64, data.iter().flat_map(|v| v.to_le_bytes()).collect());
    }

    fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> Msg {
        let mut shape = Msg::default();
        for d in dims {
            let mut dim = Msg::default();
            match d {
                Dim::V(v) => dim.int(1, *v),
                Dim::P(p) => dim.str(2, p),
            };
            shape.msg(1, &dim);
        }
        let mut tensor = Msg::default();
        tensor.int(1, i64::from(elem_type)).msg(2, &shape);
        let mut ty = Msg::default();
        ty.msg(1, &tensor);
        let mut vi = Msg::default();
        vi.str(1, name).msg(2, &ty);
        vi
    }

    fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph.msg(11, &Graph::value_info(name, elem_type, dims));
    }

    fn output(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph.msg(12, &Graph::value_info(name, elem_type, dims));
    }

    fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Attr]) {
        let mut n = Msg::default();
        for i in inputs {
            n.str(1, i);
        }
        for o in outputs {
            n.str(2, o);
        }
        n.str(3, &format!("{op}_{}", self.nodes)).str(4, op);
        self.nodes += 1;
        for attr in attrs {
            let mut a = Msg::default();
            match attr {
                // AttributeProto: name 1, i 3, ints 8, type 20 (INT = 2, INTS = 7).
                Attr::Int(name, v) => a.str(1, name).int(3, *v).int(20, 2),
                Attr::Ints(name, vs) => {
                    a.str(1, name);
                    for v in vs.iter() {
                        a.int(8, *v);
                    }
                    a.int(20, 7)
                }
            };
            n.msg(5, &a);
        }
        self.graph.msg(1, &n);
    }

    /// The ModelProto: IR version 8, opset 17.
    fn model(mut self) -> Vec<u8> {
        self.graph.str(2, "toy");
        let mut opset = Msg::default();
        opset.str(1, "").int(2, 17);
        let mut m = Msg::default();
        m.int(1, 8).str(2, "phiquant-tests").msg(8, &opset).msg(7, &self.graph);
        m.0
    }
}
