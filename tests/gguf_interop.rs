//! phiquant's GGUF files against llama.cpp's own (`convert_hf_to_gguf.py` and
//! `llama_model_quantize` from llama-cpp-python 0.3.36), as described in the dumps that
//! `scripts/interop/make_references.py` committed to `fixtures/golden/gguf`: every metadata key
//! and value, and every tensor's name, type, shape and data hash.

use std::path::{Path, PathBuf};

use phiquant_runtime::gguf::{GgufFile, GgufValue};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::{Dir, root, shared_model};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn type_name(id: u32) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        8 => "Q8_0",
        12 => "Q4_K",
        14 => "Q6_K",
        30 => "BF16",
        _ => "?",
    }
}

/// The array payload as GGUF stores it (no header), as the dump hashes it.
fn payload(items: &[GgufValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in items {
        match v {
            GgufValue::String(s) => {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            other => panic!("unexpected array element {other:?}"),
        }
    }
    out
}

fn scalar_json(v: &GgufValue) -> Value {
    match v {
        GgufValue::String(s) => Value::from(s.as_str()),
        GgufValue::Bool(b) => Value::from(*b),
        GgufValue::F32(x) => Value::from(*x as f64),
        GgufValue::F64(x) => Value::from(*x),
        other => Value::from(other.as_u64().expect("integer")),
    }
}

fn compare(ours: &Path, dump: &Path) -> Vec<String> {
    let f = GgufFile::open(ours).unwrap();
    let d: Value = serde_json::from_slice(&std::fs::read(dump).unwrap()).unwrap();
    let mut diffs = Vec::new();
    let refs = d["metadata"].as_object().unwrap();
    let mine: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    for k in refs.keys() {
        if !mine.contains(&k.as_str()) {
            diffs.push(format!("missing key {k}"));
        }
    }
    for (k, v) in f.metadata() {
        let Some(r) = refs.get(k) else {
            diffs.push(format!("extra key {k}"));
            continue;
        };
        let ok = match v {
            GgufValue::Array(elem, items) => {
                let rv = &r["value"];
                if rv.is_array() {
                    rv.as_array().unwrap().iter().zip(items).all(|(a, b)| *a == scalar_json(b))
                        && rv.as_array().unwrap().len() == items.len()
                } else {
                    r["elem_type"] == GgufValue::type_name(*elem)
                        && rv["len"].as_u64() == Some(items.len() as u64)
                        && rv["raw_sha256"].as_str() == Some(sha(&payload(items)).as_str())
                }
            }
            other => {
                r["type"] == GgufValue::type_name(other.type_id())
                    && r["value"] == scalar_json(other)
            }
        };
        if !ok {
            diffs.push(format!("metadata {k} differs"));
        }
    }
    let tensors = d["tensors"].as_array().unwrap();
    if tensors.len() != f.tensors().len() {
        diffs.push(format!("{} tensors vs {}", f.tensors().len(), tensors.len()));
    }
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let Some(info) = f.info(name) else {
            diffs.push(format!("missing tensor {name}"));
            continue;
        };
        let shape: Vec<u64> =
            t["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        if type_name(info.type_id) != t["type"]
            || info.dims != shape
            || sha(f.data(name).unwrap()) != t["sha256"]
        {
            diffs.push(format!(
                "tensor {name}: {} {:?} vs {} {shape:?}",
                type_name(info.type_id),
                info.dims,
                t["type"]
            ));
        }
    }
    diffs
}

/// The llama.cpp references: (dump name, target, `--pure`).
const VARIANTS: [(&str, &str, bool); 5] = [
    ("f32", "gguf-f32", false),
    ("f16", "gguf-f16", false),
    ("q8_0", "gguf-q8_0", false),
    ("q4_0-pure", "gguf-q4_0", true),
    ("q4_k_m", "gguf-q4_k_m", false),
];

/// Exports `src` to `target` (with `--pure`) into `out` and returns the GGUF file.
fn export_variant(dir: &Dir, src: &Path, out: &Path, target: &str, pure: bool) -> PathBuf {
    let mut c = dir.command();
    c.export(src, out, &[target]);
    if pure {
        c.arg("--pure");
    }
    c.stdout();
    out.join(format!("{target}.gguf"))
}

pqtest!(gguf_matches_llama_cpp, |dir, cmd| {
    let mut compared = 0;
    for model in ["stories260K", "stories260K-phi3"] {
        let Some(src) = shared_model(model) else { return };
        for (dump, target, pure) in VARIANTS {
            let out = dir.path().join(format!("{model}-{dump}"));
            let diffs = compare(
                &export_variant(&dir, &src, &out, target, pure),
                &root().join("fixtures/golden/gguf").join(model).join(format!("{dump}.json")),
            );
            assert!(diffs.is_empty(), "{model} {dump}:\n{}", diffs.join("\n"));
            compared += 1;
        }
    }
    assert_eq!(compared, 10);
    let _ = cmd;
});

pqtest!(gguf_matches_llama_cpp_on_smollm2, |dir, cmd| {
    // llama.cpp's references for SmolLM2 were converted from the f32 Hugging Face folder that
    // gguf-py's dequantization of the shared Q4_1 GGUF gives (scripts/golden/smollm2_hf.py,
    // which needs torch). phiquant reads the same GGUF as its input and dequantizes it to the
    // same f32 values, so every tensor must come out byte-identical. The metadata differs, and
    // only where it should: a GGUF input's own general.* and tokenizer.* keys are carried over
    // as they are (llama.cpp rebuilt them from the folder), and its model keys describe what the
    // GGUF says (it has no key_length/value_length, which the converter writes from
    // config.json's head_dim).
    let expected_metadata = [
        "missing key llama.attention.key_length",
        "missing key llama.attention.value_length",
        "missing key tokenizer.ggml.add_eos_token",
        "metadata general.name differs",
        "extra key general.organization",
        "extra key general.finetune",
        "extra key general.basename",
        "extra key general.license",
        "extra key general.languages",
        "extra key tokenizer.ggml.add_space_prefix",
    ];
    let Some(smol) = shared_model("smollm2-135m-instruct") else { return };
    let src = smol.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    for (dump, target, pure) in VARIANTS {
        let ours = export_variant(&dir, &src, &dir.path().join(dump), target, pure);
        let diffs = compare(
            &ours,
            &root().join("fixtures/golden/gguf/smollm2-135m").join(format!("{dump}.json")),
        );
        assert_eq!(diffs, expected_metadata, "SmolLM2 {dump}");
        std::fs::remove_file(&ours).unwrap();
    }
    let _ = cmd;
});
