//! Byte-for-byte comparison with golden vectors written by `scripts/golden/quant.py` from the
//! reference implementations' own packages (ONNX Runtime's `quantize_matmul_{4,8}bits`, PyPI
//! `gguf`, llama.cpp's C reference quantizers). The committed files are compared here without
//! those packages.

use std::{collections::BTreeMap, path::PathBuf};

use phiquant_quant::{
    BlockFormat, Matrix, NBitsScheme, ScaleType, dequantize_matrix, quantize_matrix, quantize_nbits,
};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden/quant")
}

fn read(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn format_named(name: &str) -> BlockFormat {
    *BlockFormat::ALL
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

/// Differing bytes between `ours` and `theirs`, with the first position.
fn diff(ours: &[u8], theirs: &[u8]) -> Option<String> {
    if ours.len() != theirs.len() {
        return Some(format!("length {} vs reference {}", ours.len(), theirs.len()));
    }
    let bad: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != theirs[i]).collect();
    bad.first().map(|&i| {
        format!(
            "{} of {} bytes differ, first at {i}: {} vs {}",
            bad.len(),
            ours.len(),
            ours[i],
            theirs[i]
        )
    })
}

#[test]
fn every_golden_case_is_byte_identical() {
    let manifest: Value = serde_json::from_slice(&read("manifest.json")).expect("manifest parses");
    assert_eq!(manifest["schema_version"], 1);
    let inputs: BTreeMap<String, (Vec<f32>, usize, usize)> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let (rows, cols) =
                (i["rows"].as_u64().unwrap() as usize, i["cols"].as_u64().unwrap() as usize);
            let values = f32s(&read(i["file"].as_str().unwrap()));
            assert_eq!(values.len(), rows * cols);
            (i["name"].as_str().unwrap().to_string(), (values, rows, cols))
        })
        .collect();

    let mut failures = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut bytes_compared = 0usize;
    for case in manifest["cases"].as_array().unwrap() {
        let (values, rows, cols) = &inputs[case["input"].as_str().unwrap()];
        let m = Matrix::from_f32(values, *rows, *cols).unwrap();
        match case["kind"].as_str().unwrap() {
            "matmul_nbits" => {
                let bits = case["bits"].as_u64().unwrap() as u8;
                let bs = case["block_size"].as_u64().unwrap() as usize;
                let sym = case["symmetric"].as_bool().unwrap();
                let io = case["io"].as_str().unwrap();
                let scale = if io == "f16" { ScaleType::F16 } else { ScaleType::F32 };
                let label = format!(
                    "{} b{bits} bs{bs} {} {io}",
                    case["input"],
                    if sym { "sym" } else { "asym" }
                );
                let t =
                    quantize_nbits(&m, &NBitsScheme::new(bits, bs, sym, scale).unwrap()).unwrap();
                let mut parts = vec![
                    ("b", t.b.clone(), read(case["b"].as_str().unwrap())),
                    ("scales", t.scales.clone(), read(case["scales"].as_str().unwrap())),
                ];
                if let Some(zp) = case["zero_points"].as_str() {
                    parts.push((
                        "zero_points",
                        t.zero_points.clone().unwrap_or_default(),
                        read(zp),
                    ));
                }
                for (what, ours, theirs) in parts {
                    bytes_compared += theirs.len();
                    if let Some(d) = diff(&ours, &theirs) {
                        failures.push(format!("{label} {what}: {d}"));
                    }
                }
                *counts.entry(format!("matmul_nbits b{bits}")).or_default() += 1;
            }
            "gguf" => {
                let ty = case["type"].as_str().unwrap();
                let format = format_named(ty);
                let label = format!("{} {ty}", case["input"]);
                let theirs = read(case["data"].as_str().unwrap());
                let ours = quantize_matrix(format, &m).unwrap();
                bytes_compared += theirs.len();
                if let Some(d) = diff(&ours, &theirs) {
                    failures.push(format!("{label} data: {d}"));
                }
                if let Some(dq) = case["dequant"].as_str() {
                    let want = read(dq);
                    let mut got = vec![0f32; rows * cols];
                    dequantize_matrix(format, &theirs, *cols, &mut got).unwrap();
                    let got: Vec<u8> = got.iter().flat_map(|v| v.to_le_bytes()).collect();
                    bytes_compared += want.len();
                    if let Some(d) = diff(&got, &want) {
                        failures.push(format!("{label} dequant: {d}"));
                    }
                }
                *counts.entry(format!("gguf {ty}")).or_default() += 1;
            }
            other => panic!("unknown case kind {other}"),
        }
    }
    assert!(counts.len() >= 10, "too few kinds of cases: {counts:?}");
    assert!(
        failures.is_empty(),
        "{} cases differ ({bytes_compared} bytes compared):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
