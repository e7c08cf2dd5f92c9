//! A GGUF file: its header, metadata and tensor table are read and checked, every tensor is
//! dequantized, and the model and tokenizer that its metadata describes are rebuilt (as
//! `phiquant export --model x.gguf` does) and the tokenizer is loaded and run once. Any `Err` is
//! fine; a panic is a bug.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use phiquant_runtime::{
    AuxFiles, DecoderSpec, Tokenizer, TokenizerSummary, WeightSource,
    gguf::{GgufFile, GgufModel},
};

fuzz_target!(init: phiquant_fuzz::setup(), |data: &[u8]| {
    phiquant_fuzz::with_input_file(data, "model.gguf", |path| {
        let Ok(file) = GgufFile::open(path) else { return };
        black_box((file.version(), file.alignment()));
        for (key, value) in file.metadata() {
            black_box((file.get(key), value.type_id(), value.as_u64(), value.as_f64()));
        }
        for t in file.tensors() {
            black_box((t.numel(), t.ggml_type(), file.info(&t.name), file.data(&t.name)));
            let _ = black_box(file.read_f32(&t.name));
            file.release(&t.name);
        }
        if let Ok(spec) = DecoderSpec::from_gguf(&file)
            && let Ok(files) = AuxFiles::from_gguf(&file, &spec)
        {
            let _ = black_box(TokenizerSummary::from_files(&files));
            // A `Split` pre-tokenizer (Qwen2's and Llama 3's regexes, constants of phiquant)
            // is compiled anew for each tokenizer, ~10 ms under ASan: building those would take
            // this target from thousands of executions a second to under a hundred.
            let json = files.get("tokenizer.json").unwrap_or_default();
            let split = json.windows(7).any(|w| w == b"\"Split\"");
            if !split && let Ok(tokenizer) = Tokenizer::from_files(&files, spec.bos_token_id) {
                let _ = black_box(tokenizer.encode_prompt("Hello, world! 123"));
            }
        }
        let Ok(model) = GgufModel::from_file(file) else { return };
        let names: Vec<String> = model.tensor_infos().iter().map(|i| i.name.clone()).collect();
        for name in names {
            let _ = black_box(model.tensor(&name));
            model.release(&name);
        }
    });
});
