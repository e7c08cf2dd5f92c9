//! A Hugging Face `config.json`: parsed as JSON, then read into a [`DecoderSpec`]; a spec that
//! reads is listed (its expected tensors) and written back and read again. Any `Err` is fine; a
//! panic is a bug.
#![no_main]

use std::{hint::black_box, path::Path};

use libfuzzer_sys::fuzz_target;
use phiquant_runtime::DecoderSpec;

fuzz_target!(init: phiquant_fuzz::setup(), |data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let path = Path::new("config.json");
    let Ok(spec) = DecoderSpec::from_config_value(path, &value) else { return };
    black_box(spec.expected_tensors());
    let _ = black_box(DecoderSpec::from_config_value(path, &spec.to_config_value()));
});
