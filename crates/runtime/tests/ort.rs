//! The ONNX Runtime backend end to end.
//!
//! The `toy_` tests always run: they write a small genai folder by hand (`toy_model.rs`) and
//! check logits at every position, the key/value cache, fp16 I/O, `position_ids`, generation,
//! and the errors for unavailable providers, mismatched graphs and bad input.
//!
//! The `folder_` tests run on a real onnxruntime-genai folder, made by phiquant's ONNX export or
//! by the genai model builder, named by `PHIQUANT_ORT_TEST_MODEL` (without it they skip with a
//! note): logits at every position, the cache against one full pass, greedy generation, and, with
//! `PHIQUANT_ORT_TEST_CHECKPOINT` (the Hugging Face folder it was made from), the native engine's
//! logits and greedy tokens. `PHIQUANT_ORT_TEST_TOLERANCE` bounds every logit difference (default
//! 1e-4, right for fp32 graphs; fp16 and int4 graphs need more). Relative paths are taken from the
//! repository root. For example:
//!
//! ```sh
//! phiquant export --model fixtures/models/phi3 --target cpu-fp32 --out /tmp/pq
//! PHIQUANT_ORT_TEST_MODEL=/tmp/pq/cpu-fp32 PHIQUANT_ORT_TEST_CHECKPOINT=fixtures/models/phi3 \
//!     cargo test -p phiquant-runtime --features onnxruntime --test integration ort::folder_ -- --nocapture
//! ```

use std::path::PathBuf;

use phiquant_runtime::{
    Checkpoint, Device, Engine, Error, Logits, OrtModel, Sampling, WeightSource, argmax, generate,
};

use crate::toy_model::{CONTEXT, HEADS, LAYERS, Toy, VOCAB};

/// The largest absolute difference between two equally long slices.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `PHIQUANT_ORT_TEST_TOLERANCE`, default 1e-4 (fp32 graphs).
fn tolerance() -> f32 {
    std::env::var("PHIQUANT_ORT_TEST_TOLERANCE")
        .ok()
        .map_or(1e-4, |t| t.parse().expect("PHIQUANT_ORT_TEST_TOLERANCE: a number"))
}

/// A measurement line for `cargo test -- --nocapture`.
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A path from the environment; a relative one is taken from the repository root (cargo runs the
/// tests in the crate's folder).
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(|v| crate::util::root().join(v))
}

/// The model folder named by `PHIQUANT_ORT_TEST_MODEL`, loaded on the CPU, or `None` with a note.
fn model() -> Option<OrtModel> {
    let Some(dir) = env_path("PHIQUANT_ORT_TEST_MODEL") else {
        note(
            "skipped: set PHIQUANT_ORT_TEST_MODEL to an onnxruntime-genai folder to run this test",
        );
        return None;
    };
    Some(OrtModel::load(&dir, Some(Device::Cpu), 0).unwrap_or_else(|e| panic!("{e}")))
}

/// A deterministic token sequence of `n` ids below `vocab`, BOS first.
fn tokens(n: usize, vocab: usize, bos: u32) -> Vec<u32> {
    let mut out = vec![bos];
    let mut x = 12345u64;
    while out.len() < n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push(((x >> 33) % vocab as u64) as u32);
    }
    out
}

#[test]
fn folder_cache_matches_one_pass() {
    let Some(model) = model() else { return };
    let vocab = model.vocab_size();
    // LongRoPE graphs switch to the long factors for a whole call once its positions pass the
    // original context (as transformers does), so cached decoding equals one pass only below
    // it: 64 positions stay below every original context in use (Phi-3's 4096, the fixtures' 64).
    let n = model.context_length().min(64);
    let ids = tokens(n, vocab, model.config().bos_token_id.unwrap_or(0));
    let full = model.logits(&ids).unwrap();
    assert_eq!(full.len(), n * vocab);
    assert!(full.iter().all(|x| x.is_finite()));

    // Prefill a third, then one token at a time, then the rest in one call.
    let mut session = model.session().unwrap();
    let mut rows = session.forward(&ids[..n / 3]).unwrap().to_vec();
    for &t in &ids[n / 3..2 * n / 3] {
        rows.extend_from_slice(session.forward(&[t]).unwrap());
    }
    rows.extend_from_slice(session.forward(&ids[2 * n / 3..]).unwrap());
    assert_eq!(session.len(), n);
    let diff = max_diff(&rows, &full);
    note(&format!("ort cache vs one pass over {n} tokens: max |diff| {diff:.3e}"));
    // fp16 and int4 graphs take other kernel paths for one token than for many, so their rows
    // differ in the last bits: they need PHIQUANT_ORT_TEST_TOLERANCE too.
    let tolerance = tolerance();
    assert!(diff <= tolerance, "cached logits differ from one pass by {diff} (> {tolerance})");

    // Greedy generation continues with the argmax of each row of one pass.
    let prompt = &ids[..8];
    let generated = model.generate(prompt, 16, &Sampling::GREEDY, &[]).unwrap().token_ids;
    assert_eq!(generated.len(), 16);
    let mut seq = prompt.to_vec();
    seq.extend_from_slice(&generated[..15]);
    let logits = model.logits(&seq).unwrap();
    let expected: Vec<u32> = (prompt.len() - 1..seq.len())
        .map(|i| argmax(&logits[i * vocab..(i + 1) * vocab]))
        .collect();
    assert_eq!(generated, expected);
}

#[test]
fn folder_matches_the_engine() {
    let Some(model) = model() else { return };
    let Some(checkpoint) = env_path("PHIQUANT_ORT_TEST_CHECKPOINT") else {
        note("skipped: set PHIQUANT_ORT_TEST_CHECKPOINT to the folder's checkpoint to compare");
        return;
    };
    let tolerance = tolerance();
    let ckpt = Checkpoint::open(&checkpoint).unwrap();
    let engine = Engine::load(&ckpt).unwrap();
    let vocab = model.vocab_size();
    assert_eq!(vocab, ckpt.spec().vocab_size);
    // onnxruntime-genai's builder (0.18) ignores Phi-3's `sliding_window` (it windows only the
    // layers that `layer_types` marks), while transformers and the engine apply it: compare
    // within the window.
    let mut n = model.context_length().min(120);
    if let Some(window) = ckpt.spec().sliding_window {
        n = n.min(window.size);
    }
    let ids = tokens(n, vocab, model.config().bos_token_id.unwrap_or(0));
    let ours = model.logits(&ids).unwrap();
    let mut session = engine.session(n);
    let native = session.forward(&ids, Logits::All).unwrap();
    let diff = max_diff(&ours, native);
    note(&format!("ort vs engine, all {n} positions: max |diff| {diff:.3e}"));
    assert!(diff <= tolerance, "logits differ from the engine's by {diff} (> {tolerance})");

    // The same schedule on both with their caches: a prefill, single tokens, then the rest.
    let mut ort_session = model.session().unwrap();
    let mut engine_session = engine.session(n);
    let (a, b) = (n / 3, 2 * n / 3);
    let mut diff = 0f32;
    for chunk in [&ids[..a]].into_iter().chain(ids[a..b].chunks(1)).chain([&ids[b..]]) {
        let ours = ort_session.forward(chunk).unwrap();
        diff = diff.max(max_diff(ours, engine_session.forward(chunk, Logits::All).unwrap()));
    }
    note(&format!("ort vs engine, cached decoding of {n} positions: max |diff| {diff:.3e}"));
    assert!(diff <= tolerance, "cached logits differ from the engine's by {diff} (> {tolerance})");

    if tolerance > 1e-3 {
        // Quantized graphs need not pick the engine's tokens.
        return;
    }
    let prompt = &ids[..4];
    let max_tokens = 24.min(model.context_length() - prompt.len());
    let ort_greedy = model.generate(prompt, max_tokens, &Sampling::GREEDY, &[]).unwrap().token_ids;
    let engine_greedy = generate(&engine, prompt, max_tokens, &Sampling::GREEDY, &[]).unwrap();
    assert_eq!(ort_greedy, engine_greedy);
}

/// Whether ONNX Runtime's library is there (`scripts/setup.sh` puts it in `.venv`); outside CI a
/// missing one skips the test with a note, under `CI=true` it fails it.
fn ort_library() -> bool {
    match phiquant_runtime::find_ort_library() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            note(&format!("skipped: {e}"));
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// A toy folder in a fresh temporary directory.
fn toy_dir(toy: Toy) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    toy.write(dir.path());
    dir
}

/// Whether `a` and `b` agree within `tol`, relative to the size of the values.
fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * y.abs().max(1.0))
}

#[test]
fn toy_logits_cache_and_generation() {
    if !ort_library() {
        return;
    }
    for toy in [Toy { fp16: false, position_ids: false }, Toy { fp16: true, position_ids: true }] {
        // fp32 graphs are exact here; fp16 logits round to 11 bits.
        let tol = if toy.fp16 { 1e-3 } else { 1e-6 };
        let dir = toy_dir(toy);
        let model = OrtModel::load(dir.path(), Some(Device::Cpu), 1).unwrap();
        assert_eq!(model.device(), Device::Cpu);
        assert!(matches!(model.tokenizer(), Err(Error::Tokenizer { .. })));
        Toy::write_tokenizer(dir.path());
        let tokenizer = model.tokenizer().unwrap();
        assert_eq!(tokenizer.encode_plain("a b g").unwrap(), [4, 5, 10]);
        assert_eq!(tokenizer.bos(), Some(1), "genai_config.json's bos_token_id");
        assert_eq!((model.vocab_size(), model.context_length()), (VOCAB, CONTEXT));
        assert_eq!(model.eos_token_ids(), &[2, 3]);
        let ids: Vec<u32> = (0..30).map(|i| (i * 7 + 1) % VOCAB as u32).collect();
        let expected = toy.expected_logits(&ids);

        let logits = model.logits(&ids).unwrap();
        assert!(close(&logits, &expected, tol), "{toy:?}: one pass");

        let mut session = model.session().unwrap();
        let mut rows = session.forward(&ids[..7]).unwrap().to_vec();
        for &t in &ids[7..20] {
            rows.extend_from_slice(session.forward(&[t]).unwrap());
        }
        rows.extend_from_slice(session.forward(&ids[20..]).unwrap());
        assert_eq!(session.len(), ids.len());
        assert!(close(&rows, &expected, tol), "{toy:?}: cached");
        session.reset().unwrap();
        assert!(session.is_empty());
        assert!(close(session.forward(&ids[..5]).unwrap(), &expected[..5 * VOCAB], tol));

        // Greedy generation follows the argmax of each row of the toy's own logits.
        let prompt = &ids[..3];
        let g = model.generate(prompt, 12, &Sampling::GREEDY, &[]).unwrap();
        let mut seq = prompt.to_vec();
        for &t in &g.token_ids {
            let rows = toy.expected_logits(&seq);
            assert_eq!(t, argmax(&rows[rows.len() - VOCAB..]), "{toy:?}: greedy after {seq:?}");
            seq.push(t);
        }
        assert_eq!(g.token_ids.len(), 12);
        // A stop token ends generation and is included.
        let stop = [g.token_ids[4]];
        let first = g.token_ids.iter().position(|&t| t == stop[0]).unwrap();
        let stopped = model.generate(prompt, 12, &Sampling::GREEDY, &stop).unwrap().token_ids;
        assert_eq!(stopped, g.token_ids[..=first]);
        // Sampling is seeded.
        let sampling = Sampling { temperature: 0.8, top_k: 5, top_p: 0.9, seed: 3 };
        let a = model.generate(prompt, 10, &sampling, &[]).unwrap().token_ids;
        assert_eq!(a, model.generate(prompt, 10, &sampling, &[]).unwrap().token_ids);
    }
}

#[test]
fn toy_rejects_bad_input() {
    if !ort_library() {
        return;
    }
    let dir = toy_dir(Toy { fp16: false, position_ids: false });
    let model = OrtModel::load(dir.path(), None, 1).unwrap();
    let vocab_size = VOCAB;
    assert!(matches!(
        model.logits(&[1, VOCAB as u32]),
        Err(Error::TokenOutOfRange { token, vocab_size: v }) if token == VOCAB as u32 && v == vocab_size
    ));
    assert!(matches!(
        model.logits(&[1; CONTEXT + 1]),
        Err(Error::ContextFull { needed, capacity: CONTEXT }) if needed == CONTEXT + 1
    ));
    assert!(matches!(
        model.generate(&[1; 30], CONTEXT, &Sampling::GREEDY, &[]),
        Err(Error::ContextFull { .. })
    ));
    assert!(matches!(
        model.generate(&[], 4, &Sampling::GREEDY, &[]),
        Err(Error::InvalidField { .. })
    ));
    assert_eq!(model.logits(&[]).unwrap(), Vec::<f32>::new());
    assert_eq!(
        model.generate(&[1], 0, &Sampling::GREEDY, &[]).unwrap().token_ids,
        Vec::<u32>::new()
    );
    // A session that ran out of context stays usable below it.
    let mut session = model.session().unwrap();
    session.forward(&[1; CONTEXT - 1]).unwrap();
    assert!(matches!(session.forward(&[1, 1]), Err(Error::ContextFull { .. })));
    assert_eq!(session.forward(&[1]).unwrap().len(), VOCAB);
}

#[test]
fn toy_unavailable_devices_say_so() {
    if !ort_library() {
        return;
    }
    // The CPU build of ONNX Runtime that the project venv holds has neither CUDA nor DirectML.
    let dir = toy_dir(Toy { fp16: false, position_ids: false });
    let err = OrtModel::load(dir.path(), Some(Device::Cuda), 1).unwrap_err();
    assert!(matches!(err, Error::DeviceUnavailable { device: Device::Cuda, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&dir.path().join("model.onnx").display().to_string()), "{msg}");
    assert!(msg.contains("the CUDA execution provider is not available"), "{msg}");
    assert!(msg.contains("onnxruntime-gpu"), "{msg}");
    assert!(
        msg.ends_with("run with --device cpu to check the graph's numbers on the CPU provider")
    );

    // A DirectML graph goes to DirectML unless told otherwise.
    let dml = toy_dir(Toy { fp16: true, position_ids: true });
    let err = OrtModel::load(dml.path(), None, 1).unwrap_err();
    assert!(matches!(err, Error::DeviceUnavailable { device: Device::DirectMl, .. }), "{err:?}");
    if !cfg!(windows) {
        assert!(err.to_string().contains("DirectML exists only on Windows"), "{err}");
    }
    assert!(err.to_string().contains("--device cpu"), "{err}");
    assert_eq!(OrtModel::load(dml.path(), Some(Device::Cpu), 1).unwrap().device(), Device::Cpu);
}

#[test]
fn toy_graphs_that_disagree_with_their_config() {
    if !ort_library() {
        return;
    }
    let toy = Toy { fp16: false, position_ids: false };
    let load_err = |model: &[u8], config: &serde_json::Value| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), model).unwrap();
        std::fs::write(dir.path().join("genai_config.json"), config.to_string()).unwrap();
        let err = OrtModel::load(dir.path(), Some(Device::Cpu), 1).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg:?}");
        (err, msg)
    };
    let config = toy.genai_config();

    let (err, msg) = load_err(&toy.model(&["surprise"]), &config);
    assert!(matches!(err, Error::Backend { backend: "ONNX Runtime", .. }), "{err:?}");
    assert!(msg.contains("model.onnx: ONNX Runtime: input `surprise` is none of those"), "{msg}");

    let mut more_layers = config.clone();
    more_layers["model"]["decoder"]["num_hidden_layers"] = (LAYERS + 1).into();
    let (_, msg) = load_err(&toy.model(&[]), &more_layers);
    assert!(msg.contains(&format!("no input `past_key_values.{LAYERS}.key`")), "{msg}");

    let mut fewer_heads = config.clone();
    fewer_heads["model"]["decoder"]["num_key_value_heads"] = 1.into();
    let (_, msg) = load_err(&toy.model(&[]), &fewer_heads);
    assert!(msg.contains(&format!("expected [batch, 1, positions, {}]", 3)), "{msg}");
    assert!(msg.contains(&format!("{HEADS}")), "{msg}");

    let mut renamed = config.clone();
    renamed["model"]["decoder"]["outputs"]["logits"] = "scores".into();
    let (_, msg) = load_err(&toy.model(&[]), &renamed);
    assert!(msg.contains("the graph has no output `scores`"), "{msg}");

    let (err, msg) = load_err(b"not an onnx model", &config);
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(msg.contains("model.onnx: ONNX Runtime: cannot create a session"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("genai_config.json"), config.to_string()).unwrap();
    let err = OrtModel::load(dir.path(), Some(Device::Cpu), 1).unwrap_err();
    assert!(matches!(err, Error::Io { op: "opening", .. }), "{err:?}");
    let err = OrtModel::load(&dir.path().join("nothing"), Some(Device::Cpu), 1).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn toy_runs_on_several_threads_at_once() {
    if !ort_library() {
        return;
    }
    fn check<T: Send + Sync>() {}
    check::<OrtModel>();
    let toy = Toy { fp16: false, position_ids: false };
    let dir = toy_dir(toy);
    let model = OrtModel::load(dir.path(), None, 2).unwrap();
    let ids: Vec<u32> = (0..25).map(|i| (i * 3 + 2) % VOCAB as u32).collect();
    let alone = model.logits(&ids).unwrap();
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..3).map(|_| s.spawn(|| model.logits(&ids).unwrap())).collect();
        for run in runs {
            assert_eq!(run.join().unwrap(), alone);
        }
    });
}
