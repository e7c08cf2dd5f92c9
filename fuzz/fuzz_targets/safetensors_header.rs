//! A safetensors file: its header is parsed and checked, then every tensor's entry and bytes are
//! read through the public API. Any `Err` is fine; a panic is a bug.
#![no_main]

use std::{borrow::Cow, hint::black_box};

use libfuzzer_sys::fuzz_target;
use phiquant_runtime::{Dtype, SafetensorsFile, TensorView};

fuzz_target!(init: phiquant_fuzz::setup(), |data: &[u8]| {
    phiquant_fuzz::with_input_file(data, "model.safetensors", |path| {
        let Ok(file) = SafetensorsFile::open(path) else { return };
        black_box(file.metadata());
        for t in file.tensors() {
            black_box((t.numel(), t.byte_len(), file.info(&t.name)));
            let Some(bytes) = file.data(&t.name) else { continue };
            if matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                let view = TensorView {
                    name: &t.name,
                    dtype: t.dtype,
                    shape: &t.shape,
                    data: Cow::Borrowed(bytes),
                };
                let _ = black_box(view.to_f32());
            }
            file.release(&t.name);
        }
    });
});
