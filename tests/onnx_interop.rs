//! phiquant's ONNX folders against onnxruntime-genai 0.18's model builder, as described in the
//! dumps that `scripts/interop/onnx_reference.py` committed to `fixtures/golden/onnx`: every
//! initializer's type, shape and data hash (MatMulNBits weights, scales and zero points byte for
//! byte), every node with its inputs, outputs and attributes, the graph's inputs and outputs, and
//! `genai_config.json`.
//!
//! Where phiquant deliberately differs from the builder, the difference is spelled out here and
//! checked to be exactly that:
//! - the first norm is a SkipSimplifiedLayerNormalization with an exact zero skip (`x - x`)
//!   instead of SimplifiedLayerNormalization, which `onnx.checker` rejects in the default domain;
//!   layer 0's post-attention norm therefore reads the first norm's sum output (the same values);
//! - a sliding window shorter than the context is applied (`local_window_size`), as transformers
//!   does; the builder 0.18 writes -1 for Phi-3 and Mistral configs without `layer_types`;
//! - heads GroupQueryAttention cannot rotate (stories260K's 8) get RotaryEmbedding nodes and
//!   unpacked q/k/v (the builder's graph for them fails in ONNX Runtime); their q/k/v weights are
//!   then compared with the builder's packed ones by concatenation;
//! - the builder's phi4-mini fixture graph feeds the LM head from layer 0 (a builder bug): the
//!   LM head's input is not compared there.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use phiquant_convert::onnx::proto::{AttributeProto, ModelProto, TensorProto, attribute_type};
use prost::Message;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::util::{Dir, fixture, root, shared_model};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn golden(model: &str, combo: &str) -> Value {
    let path = root().join("fixtures/golden/onnx").join(model).join(format!("{combo}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

fn dtype_name(dt: i32) -> &'static str {
    match dt {
        1 => "FLOAT",
        2 => "UINT8",
        6 => "INT32",
        7 => "INT64",
        9 => "BOOL",
        10 => "FLOAT16",
        16 => "BFLOAT16",
        _ => "?",
    }
}

/// One initializer of phiquant's folder: type, dims and raw bytes.
struct Init {
    dtype: &'static str,
    dims: Vec<i64>,
    bytes: Vec<u8>,
}

fn initializers(model: &ModelProto, dir: &Path) -> HashMap<String, Init> {
    let data = std::fs::read(dir.join("model.onnx.data")).unwrap();
    let graph = model.graph.as_ref().unwrap();
    graph
        .initializer
        .iter()
        .map(|t: &TensorProto| {
            let ext: HashMap<&str, &str> = t
                .external_data
                .iter()
                .map(|e| (e.key.as_deref().unwrap(), e.value.as_deref().unwrap()))
                .collect();
            assert_eq!(ext["location"], "model.onnx.data");
            let offset: usize = ext["offset"].parse().unwrap();
            let length: usize = ext["length"].parse().unwrap();
            let init = Init {
                dtype: dtype_name(t.data_type.unwrap()),
                dims: t.dims.clone(),
                bytes: data[offset..offset + length].to_vec(),
            };
            (t.name.clone().unwrap(), init)
        })
        .collect()
}

fn attr_json(a: &AttributeProto) -> Value {
    match a.r#type.unwrap() {
        attribute_type::INT => json!({"type": "INT", "value": a.i.unwrap()}),
        attribute_type::FLOAT => json!({"type": "FLOAT", "value": a.f.unwrap() as f64}),
        attribute_type::INTS => json!({"type": "INTS", "value": a.ints}),
        attribute_type::STRING => {
            json!({"type": "STRING", "value": String::from_utf8(a.s.clone().unwrap()).unwrap()})
        }
        // Constant tensors and If branches are compared through what they produce (the
        // constant's dims/type below, the caches through ONNX Runtime's logits elsewhere).
        attribute_type::TENSOR => {
            let t = a.t.as_ref().unwrap();
            json!({"type": "TENSOR", "data_type": dtype_name(t.data_type.unwrap()), "dims": t.dims})
        }
        attribute_type::GRAPH => json!({"type": "GRAPH"}),
        other => panic!("attribute type {other}"),
    }
}

fn golden_attr(v: &Value) -> Value {
    match v["type"].as_str().unwrap() {
        "TENSOR" => json!({
            "type": "TENSOR",
            "data_type": v["value"]["data_type"],
            "dims": v["value"]["dims"],
        }),
        "GRAPH" => json!({"type": "GRAPH"}),
        _ => v.clone(),
    }
}

/// Nodes by name: (op_type, domain, inputs, outputs, attributes).
type Nodes = BTreeMap<String, Value>;

fn our_nodes(model: &ModelProto) -> Nodes {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| {
            let attrs: BTreeMap<String, Value> =
                n.attribute.iter().map(|a| (a.name.clone().unwrap(), attr_json(a))).collect();
            let v = json!({
                "op_type": n.op_type, "domain": n.domain.clone().unwrap_or_default(),
                "inputs": n.input, "outputs": n.output, "attributes": attrs,
            });
            (n.name.clone().unwrap(), v)
        })
        .collect()
}

fn golden_nodes(g: &Value) -> Nodes {
    g["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let attrs: BTreeMap<String, Value> = n["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), golden_attr(v)))
                .collect();
            let v = json!({
                "op_type": n["op_type"], "domain": n["domain"],
                "inputs": n["inputs"], "outputs": n["outputs"], "attributes": attrs,
            });
            (n["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Which graph inputs/outputs a value list names, with types and shapes.
fn io(values: &[phiquant_convert::onnx::proto::ValueInfoProto]) -> Value {
    values
        .iter()
        .map(|v| {
            let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
            let shape: Vec<Value> = t
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match (&d.dim_value, &d.dim_param) {
                    (Some(v), _) => json!(v),
                    (_, Some(p)) => json!(p),
                    _ => Value::Null,
                })
                .collect();
            json!({"name": v.name, "elem_type": dtype_name(t.elem_type.unwrap()), "shape": shape})
        })
        .collect()
}

/// How phiquant's target and options stand for a builder combo.
fn export_args(combo: &str) -> Vec<&'static str> {
    match combo {
        "int4-cpu" => vec!["--target", "cpu-int4"],
        "int4-cuda" => vec!["--target", "cuda-int4"],
        "int4-dml" => {
            vec!["--target", "dml-int4", "--algo", "rtn", "--group-size", "32", "--symmetric"]
        }
        "fp32-cpu" => vec!["--target", "cpu-fp32"],
        "fp16-cuda" => vec!["--target", "cuda-fp16"],
        other => panic!("combo {other}"),
    }
}

fn target_dir(combo: &str) -> &'static str {
    export_args(combo)[1]
}

/// The differences the module documentation lists, applied to the builder's nodes.
fn expected_nodes(model: &str, g: &Value, ours: &Nodes, rotary_outside: bool) -> Nodes {
    let mut want = golden_nodes(g);
    // The first norm.
    let first = want.remove("/model/layers.0/input_layernorm/LayerNorm").expect("first norm");
    let input = first["inputs"][0].as_str().unwrap().to_string();
    let p = "/model/layers.0/input_layernorm";
    want.insert(
        format!("{p}/Sub"),
        json!({"op_type": "Sub", "domain": "", "inputs": [input, input],
               "outputs": [format!("{p}/Sub/output_0")], "attributes": {}}),
    );
    want.insert(
        format!("{p}/SkipLayerNorm"),
        json!({"op_type": "SkipSimplifiedLayerNormalization", "domain": "com.microsoft",
               "inputs": [input, format!("{p}/Sub/output_0"), first["inputs"][1]],
               "outputs": [format!("{p}/output_0"), "", "", format!("{p}/output_3")],
               "attributes": {"epsilon": first["attributes"]["epsilon"]}}),
    );
    let post = "/model/layers.0/post_attention_layernorm/SkipLayerNorm";
    want.get_mut(post).unwrap()["inputs"][0] = json!(format!("{p}/output_3"));
    // Sliding windows shorter than the context: take phiquant's window, and check it below.
    for (name, node) in want.iter_mut() {
        if name.ends_with("/GroupQueryAttention") {
            let w = &ours[name]["attributes"]["local_window_size"];
            node["attributes"]["local_window_size"] = w.clone();
        }
    }
    if model == "phi4-mini" {
        for name in ["/lm_head/MatMul", "/lm_head/MatMul_Q4"] {
            if let (Some(w), Some(o)) = (want.get_mut(name), ours.get(name)) {
                w["inputs"][0] = o["inputs"][0].clone();
            }
        }
    }
    assert!(!rotary_outside, "structure is only compared for the packed layout");
    want
}

/// Exports `source` for `combo` and compares with the builder's golden.
fn compare(dir: &Dir, model: &str, source: &Path, combo: &str) {
    let g = golden(model, combo);
    let out = dir.path().join(model);
    let mut cmd = dir.command();
    cmd.arg("export").arg("--model").arg(source).arg("--out").arg(&out);
    cmd.args(export_args(combo));
    cmd.stdout();
    let folder: PathBuf = out.join(target_dir(combo));
    let model_proto = ModelProto::decode(&*std::fs::read(folder.join("model.onnx")).unwrap())
        .expect("model.onnx decodes");
    let ours = initializers(&model_proto, &folder);
    let ctx = format!("{model} {combo}");

    // Initializers: every one of the builder's, byte for byte (the rotary caches, computed with
    // different libm cos/sin, are compared through logits instead).
    let mut compared = 0;
    for t in g["graph"]["initializers"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name == "cos_cache" || name == "sin_cache" {
            continue;
        }
        let dims: Vec<i64> =
            t["dims"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
        let dtype = t["data_type"].as_str().unwrap();
        let (got_dtype, got_dims, bytes) = match ours.get(name) {
            Some(i) => (i.dtype, i.dims.clone(), i.bytes.clone()),
            None => {
                // Unpacked q/k/v standing for the builder's packed qkv_proj.
                assert!(name.contains("qkv_proj"), "{ctx}: no initializer {name}");
                let part = |p: &str| {
                    let n = name.replace("qkv_proj", p);
                    ours.get(&n).unwrap_or_else(|| panic!("{ctx}: no {n} for {name}"))
                };
                let (q, k, v) = (part("q_proj"), part("k_proj"), part("v_proj"));
                let float_weight = name.ends_with(".MatMul.weight");
                let mut dims = q.dims.clone();
                let bytes = if float_weight {
                    // [K, N] float: concatenate along N, row by row.
                    let es = if q.dtype == "FLOAT" { 4 } else { 2 };
                    dims[1] = q.dims[1] + k.dims[1] + v.dims[1];
                    let rows = q.dims[0] as usize;
                    let mut out = Vec::new();
                    for r in 0..rows {
                        for p in [q, k, v] {
                            let w = p.dims[1] as usize * es;
                            out.extend_from_slice(&p.bytes[r * w..(r + 1) * w]);
                        }
                    }
                    out
                } else {
                    // [N, ...] codes, scales or biases: concatenate along N.
                    dims[0] = q.dims[0] + k.dims[0] + v.dims[0];
                    [&q.bytes[..], &k.bytes[..], &v.bytes[..]].concat()
                };
                (q.dtype, dims, bytes)
            }
        };
        assert_eq!(got_dtype, dtype, "{ctx}: {name} type");
        assert_eq!(got_dims, dims, "{ctx}: {name} dims");
        assert_eq!(sha(&bytes), t["sha256"].as_str().unwrap(), "{ctx}: {name} bytes");
        compared += 1;
    }
    assert!(compared > 0, "{ctx}: nothing compared");

    // Structure, for the layout the builder's graph shares.
    let rotary_outside = ours.keys().any(|n| n.contains("q_proj")) && !combo.ends_with("dml");
    if !rotary_outside {
        let got = our_nodes(&model_proto);
        let want = expected_nodes(model, &g, &got, rotary_outside);
        for (name, node) in &want {
            assert_eq!(got.get(name), Some(node), "{ctx}: node {name}");
        }
        assert_eq!(got.len(), want.len(), "{ctx}: node count");
        let graph = model_proto.graph.as_ref().unwrap();
        let strip = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| json!({"name": x["name"], "elem_type": x["elem_type"], "shape": x["shape"]}))
                .collect::<Value>()
        };
        assert_eq!(io(&graph.input), strip(&g["graph"]["inputs"]), "{ctx}: graph inputs");
        assert_eq!(io(&graph.output), strip(&g["graph"]["outputs"]), "{ctx}: graph outputs");
    }

    // genai_config.json: the builder's, with position_ids where phiquant rotates outside
    // attention and the sliding window where it applies one.
    let got: Value =
        serde_json::from_slice(&std::fs::read(folder.join("genai_config.json")).unwrap()).unwrap();
    let mut want = g["folder"]["genai_config.json"].clone();
    if rotary_outside {
        want["model"]["decoder"]["inputs"]["position_ids"] = json!("position_ids");
    }
    if let Some(sw) = got["model"]["decoder"].get("sliding_window") {
        want["model"]["decoder"]["sliding_window"] = sw.clone();
    }
    assert_eq!(got, want, "{ctx}: genai_config.json");
}

const COMBOS: [&str; 5] = ["int4-cpu", "int4-cuda", "int4-dml", "fp32-cpu", "fp16-cuda"];

pqtest!(onnx_matches_builder_on_fixtures, |dir, _cmd| {
    for model in ["phi3", "phi3-longrope", "phi4-mini", "llama", "mistral", "qwen2"] {
        for combo in COMBOS {
            compare(&dir, model, &fixture(model), combo);
        }
    }
});

pqtest!(onnx_matches_builder_on_stories260k, |dir, _cmd| {
    for model in ["stories260K-phi3", "stories260K"] {
        let Some(path) = shared_model(model) else { return };
        for combo in COMBOS {
            compare(&dir, model, &path, combo);
        }
    }
});

pqtest!(onnx_matches_builder_on_smollm2, |dir, cmd| {
    // The builder's input was SmolLM2's HF folder rebuilt from the shared Q4_1 GGUF, loaded in
    // bf16 as its config.json declares; phiquant's hf-bf16 export of the GGUF is that folder.
    let Some(shared) = shared_model("smollm2-135m-instruct") else { return };
    let hf = dir.path().join("hf");
    cmd.export(&shared.join("SmolLM2-135M-Instruct.Q4_1.gguf"), &hf, &["hf-bf16"]).stdout();
    // That folder had no generation_config.json (the one rebuilt from the GGUF adds llama.cpp's
    // end-of-generation token 0 to eos_token_id).
    std::fs::remove_file(hf.join("hf-bf16/generation_config.json")).unwrap();
    for combo in COMBOS {
        compare(&dir, "smollm2-135m-instruct", &hf.join("hf-bf16"), combo);
    }
});
