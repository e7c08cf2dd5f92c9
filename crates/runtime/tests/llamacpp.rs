//! The llama.cpp backend on the shared SmolLM2-135M-Instruct Q4_1 GGUF: tokenization against
//! phiquant's own tokenizer, logits at every position, greedy generation, and files llama.cpp
//! must refuse without bringing the process down.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use phiquant_runtime::{Error, LlamaCppModel, Tokenizer, argmax};

use crate::util::source_dir;

const MODEL_DIR: &str = "shared/models/smollm2-135m-instruct";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const PROMPT: &str = "The capital of France is";

/// The model folder (tokenizer.json and the GGUF), or `None` when it is absent outside CI.
fn dir() -> Option<PathBuf> {
    source_dir(MODEL_DIR)
}

/// The GGUF, loaded once for all tests.
fn model() -> Option<&'static LlamaCppModel> {
    static MODEL: OnceLock<Option<LlamaCppModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = dir()?.join(GGUF);
            Some(LlamaCppModel::load(&path, 0).unwrap_or_else(|e| panic!("{e}")))
        })
        .as_ref()
}

fn tokenizer(dir: &Path) -> Tokenizer {
    Tokenizer::from_dir(dir, None).unwrap()
}

#[test]
fn llamacpp_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<LlamaCppModel>();
}

#[test]
fn llamacpp_metadata() {
    let Some(model) = model() else { return };
    assert_eq!(model.vocab_size(), 49152);
    let tok = tokenizer(&dir().unwrap());
    assert_eq!(model.bos(), tok.bos());
    assert_eq!(model.add_bos(), tok.adds_bos());
}

#[test]
fn llamacpp_tokenize_matches_tokenizer_json() {
    let (Some(model), Some(dir)) = (model(), dir()) else { return };
    let tok = tokenizer(&dir);
    let texts = [
        PROMPT,
        "",
        " leading space, and\ttabs\n\nnewlines",
        "<|im_start|>user\nHéllo wörld 😀 1234567<|im_end|>\n",
    ];
    for text in texts {
        let ids = model.tokenize(text, false).unwrap();
        assert_eq!(ids, tok.encode_plain(text).unwrap(), "{text:?}");
        assert_eq!(model.detokenize(&ids).unwrap(), tok.decode(&ids).unwrap(), "{text:?}");
        let with_bos = model.tokenize(text, true).unwrap();
        let bos = model.bos().expect("SmolLM2's GGUF names a BOS token");
        assert_eq!(with_bos[0], bos);
        assert_eq!(with_bos[1..], ids[..]);
    }
    assert_eq!(model.detokenize(&model.tokenize(PROMPT, false).unwrap()).unwrap(), PROMPT);
    assert!(matches!(
        model.detokenize(&[49152]),
        Err(Error::TokenOutOfRange { token: 49152, vocab_size: 49152 })
    ));
}

#[test]
fn llamacpp_logits_and_greedy_generation() {
    let Some(model) = model() else { return };
    let vocab = model.vocab_size();
    let prompt = model.tokenize(PROMPT, false).unwrap();
    let n = prompt.len();
    let logits = model.logits(&prompt).unwrap();
    assert_eq!(logits.len(), n * vocab);
    assert!(logits.iter().all(|x| x.is_finite()));
    // Rows differ by position: the model did not return one row n times.
    assert_ne!(logits[..vocab], logits[(n - 1) * vocab..]);
    let last = argmax(&logits[(n - 1) * vocab..]);

    let generated = model.generate_greedy(&prompt, 8, &[]).unwrap();
    assert_eq!(generated.len(), 8);
    assert_eq!(generated[0], last, "the first generated token is the argmax of the last row");
    let text = model.detokenize(&generated).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(model.generate_greedy(&prompt, 8, &[]).unwrap(), generated, "not deterministic");

    // A stop token ends generation and is included.
    assert_eq!(model.generate_greedy(&prompt, 8, &generated[1..2]).unwrap(), generated[..2]);
    assert_eq!(model.generate_greedy(&prompt, 0, &[]).unwrap(), Vec::<u32>::new());

    // A prefix gives (nearly) the same rows: positions start at 0 in each call.
    let prefix = model.logits(&prompt[..2]).unwrap();
    let diff = prefix.iter().zip(&logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-2, "prefix logits differ by {diff}");
}

#[test]
fn llamacpp_logits_span_several_batches() {
    let Some(model) = model() else { return };
    let vocab = model.vocab_size();
    // A passage repeated until it spans more than one batch of 512 tokens: once the model has
    // seen it, it predicts the next token of each repeat, which it can only do if the KV cache
    // carries over from batch to batch.
    let passage = model
        .tokenize(
            "Paris is the capital and largest city of France. It lies on the Seine, in the north \
             of the country, and has been a centre of finance, diplomacy, commerce, fashion and \
             science for centuries.",
            false,
        )
        .unwrap();
    let tokens: Vec<u32> = passage.iter().copied().cycle().take(700).collect();
    let logits = model.logits(&tokens).unwrap();
    assert_eq!(logits.len(), tokens.len() * vocab);
    let hits = (512..tokens.len() - 1)
        .filter(|&i| argmax(&logits[i * vocab..(i + 1) * vocab]) == tokens[i + 1])
        .count();
    let total = tokens.len() - 1 - 512;
    assert!(hits * 10 >= total * 9, "{hits} of {total} repeated tokens predicted");
}

#[test]
fn llamacpp_rejects_bad_input() {
    let Some(model) = model() else { return };
    assert!(matches!(model.logits(&[1, 49152]), Err(Error::TokenOutOfRange { token: 49152, .. })));
    assert!(matches!(model.generate_greedy(&[], 4, &[]), Err(Error::InvalidField { .. })));
    assert!(matches!(model.logits(&vec![1; 1 << 20]), Err(Error::ContextFull { .. })));
    assert_eq!(model.logits(&[]).unwrap(), Vec::<f32>::new());
}

#[test]
fn llamacpp_refuses_broken_files() {
    let Some(dir) = dir() else { return };
    let bytes = std::fs::read(dir.join(GGUF)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Each with a piece of llama.cpp's own explanation, which the error must carry.
    let cases: [(&str, &[u8], &str); 4] = [
        ("half.gguf", &bytes[..bytes.len() / 2], "not within the file bounds"),
        ("header.gguf", &bytes[..100], "failed to read key-value pairs"),
        ("empty.gguf", &[], "failed to read magic"),
        ("text.gguf", b"not a gguf file at all\n", "invalid magic"),
    ];
    for (name, data, why) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, data).unwrap();
        match LlamaCppModel::load(&path, 1) {
            Err(e @ Error::Backend { .. }) => {
                let message = e.to_string();
                assert!(message.starts_with(&path.display().to_string()), "{message}");
                assert!(!message.contains('\n'), "{message:?}");
                assert!(message.contains(why), "{message}");
            }
            other => panic!("{name}: expected a backend error, got {other:?}"),
        }
    }
    let missing = tmp.path().join("missing.gguf");
    assert!(matches!(LlamaCppModel::load(&missing, 1), Err(Error::Io { .. })));
}

#[test]
fn llamacpp_runs_on_several_threads_at_once() {
    let Some(model) = model() else { return };
    let prompt = model.tokenize(PROMPT, false).unwrap();
    let alone = model.generate_greedy(&prompt, 4, &[]).unwrap();
    std::thread::scope(|s| {
        let runs: Vec<_> =
            (0..3).map(|_| s.spawn(|| model.generate_greedy(&prompt, 4, &[]).unwrap())).collect();
        for run in runs {
            assert_eq!(run.join().unwrap(), alone);
        }
    });
}
