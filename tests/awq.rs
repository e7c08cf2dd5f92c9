//! AWQ (`--algo awq`): the scaling transform computes the same function on every architecture
//! (the v -> o pair under grouped-query attention and fused Phi-3 layouts included), exports
//! are byte-identical for any thread count, the optional per-channel refinement only lowers
//! each group's loss, bad options fail cleanly, and AWQ beats
//! round-to-nearest on held-out text.

use std::{path::Path, sync::Arc};

use phiquant_convert::{
    awq::{
        AwqOptions, AwqOptionsBuilder, AwqWeights, CalibOrigin, Calibration, GroupOutcome,
        LayerReport, LinearQuantizers, ScaleGroup, awq_transform, fake_quantized_model,
        v_channel_of_o_column,
    },
    onnx::{Ep, IoType, OnnxScheme, OnnxWeights},
};
use phiquant_runtime::{
    Checkpoint, Engine, LayerWeights, Logits, ModelWeights, Tokenizer, WeightSource,
    gguf::GgufModel,
};

use phiquant_verify::compare_token;

use crate::util::{files, fixture, shared_model};

const FIXTURES: [&str; 6] = ["phi3", "phi3-longrope", "phi4-mini", "llama", "mistral", "qwen2"];

/// dml-int4's weights: int4 block 128, asymmetric, f16 scales (blocks shrink to fit K).
fn dml_scheme(block_size: usize, symmetric: bool) -> OnnxScheme {
    OnnxScheme {
        ep: Ep::Dml,
        io: IoType::F16,
        weights: OnnxWeights::Int4 { block_size, symmetric, accuracy_level: 0 },
    }
}

/// `n` windows of `len` ids spread over the vocabulary (a fixed pseudo-random stream).
fn windows(n: usize, len: usize, vocab: usize) -> Calibration {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let w = (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % vocab as u64) as u32
                })
                .collect()
        })
        .collect();
    Calibration::from_windows(w, CalibOrigin::Generated { seed: 0 }).unwrap()
}

fn source(path: &Path) -> Arc<dyn WeightSource + Send + Sync> {
    Arc::new(Checkpoint::open(path).unwrap())
}

fn logits(weights: ModelWeights, spec: &phiquant_runtime::DecoderSpec, ids: &[u32]) -> Vec<f32> {
    let engine = Engine::new(spec.clone(), weights).unwrap();
    engine.session(ids.len()).forward(ids, Logits::All).unwrap().to_vec()
}

/// AWQ's scaling alone: the clipping search off, so the model computes the same function.
fn scaling_only(refine: usize) -> AwqOptions {
    AwqOptionsBuilder::new().clip(false).refine(refine).build().unwrap()
}

/// Runs AWQ on `src` and returns the transformed weights with the layer reports.
fn transform(
    src: &Arc<dyn WeightSource + Send + Sync>,
    calib: &Calibration,
    quantizers: &LinearQuantizers,
    options: &AwqOptions,
    scratch: &Path,
) -> (AwqWeights, Vec<LayerReport>) {
    let mut reports = Vec::new();
    let awq = awq_transform(Arc::clone(src), calib, quantizers, options, scratch, &mut |r| {
        reports.push(r.clone())
    })
    .unwrap();
    assert!(!scratch.exists(), "the scratch file is unlinked once mapped");
    (awq, reports)
}

/// Asserts that `awq` computes the same logits as `src` on a fixed sequence, within 1e-5 of the
/// largest one; returns the largest change relative to it.
fn assert_same_logits(name: &str, src: &dyn WeightSource, awq: &AwqWeights) -> f32 {
    let spec = src.spec();
    let ids: Vec<u32> = (0..40).map(|i| (i * 53 % (spec.vocab_size - 3)) as u32 + 3).collect();
    let want = logits(ModelWeights::load(src).unwrap(), spec, &ids);
    let got = logits(ModelWeights::load(awq).unwrap(), spec, &ids);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-5 * scale, "{name}: logits moved by {worst} (max |logit| {scale})");
    worst / scale
}

fn chosen(r: &LayerReport, group: ScaleGroup) -> Option<f32> {
    let g = r.groups.iter().find(|g| g.group == group).unwrap();
    let GroupOutcome::Searched { alpha, loss_rtn, loss, .. } = g.outcome;
    assert!(loss <= loss_rtn, "{r}");
    alpha
}

pqtest!(awq_scaling_alone_keeps_the_logits, |dir, cmd| {
    // The acceptance test of the transform: with the clipping search off, the transformed model
    // computes the same function, for every architecture.
    let mut vo_searched = false;
    for name in FIXTURES {
        let src = source(&fixture(name));
        let spec = src.spec().clone();
        let q = LinearQuantizers::for_onnx(&spec, &dml_scheme(128, false), "dml-int4").unwrap();
        let calib = windows(4, 48, spec.vocab_size);
        let (awq, reports) = transform(&src, &calib, &q, &scaling_only(0), &dir.path().join(name));
        assert_eq!(reports.len(), spec.num_layers, "{name}");
        // The search chose real scales somewhere, so the test checks something.
        assert!(
            reports
                .iter()
                .all(|r| chosen(r, ScaleGroup::Qkv).is_some()
                    || chosen(r, ScaleGroup::GateUp).is_some()),
            "{name}: {reports:?}"
        );
        let change = assert_same_logits(name, src.as_ref(), &awq);
        crate::util::note(&format!("{name}: max logit change {change:.2e} relative"));

        // Which rows of the stacked q/k/v matrix the v -> o pair may touch: v's only; and
        // under grouped-query attention each v row's scale multiplies the o column of every
        // query head that reads it.
        let v_of = v_channel_of_o_column(&spec);
        for (l, r) in reports.iter().enumerate() {
            let orig = LayerWeights::load(src.as_ref(), l).unwrap();
            let new = LayerWeights::load(&awq, l).unwrap();
            let h = spec.hidden_size;
            // Every weight of q and k is the original times its column's scale, which is the
            // input norm's change: no row of q or k was scaled through o_proj.
            let (qk_rows, v_rows) = (spec.q_dim() + spec.kv_dim(), spec.kv_dim());
            let col_scale: Vec<f32> =
                orig.attn_norm.iter().zip(&new.attn_norm).map(|(a, b)| a / b).collect();
            let matches_columns = |rows: std::ops::Range<usize>| {
                rows.flat_map(|r| (0..h).map(move |c| (r, c))).all(|(r, c)| {
                    let (a, b) = (orig.qkv[r * h + c] * col_scale[c], new.qkv[r * h + c]);
                    (a - b).abs() <= 1e-5 * a.abs().max(1e-6)
                })
            };
            assert!(matches_columns(0..qk_rows), "{name} layer {l}: q/k rows scaled by rows");
            // v rows are row-scaled exactly when the v -> o pair chose scales.
            let v_scaled = chosen(r, ScaleGroup::VO).is_some();
            assert_eq!(
                !matches_columns(qk_rows..qk_rows + v_rows),
                v_scaled,
                "{name} layer {l}: {r}"
            );
            vo_searched |= v_scaled && spec.num_kv_heads < spec.num_heads;
            // v row j was divided by s_j; o column c must be multiplied by s_(v_of[c]).
            let s_v: Vec<f32> = (0..v_rows)
                .map(|j| {
                    let row = (qk_rows + j) * h;
                    let c = (0..h)
                        .max_by(|&a, &b| {
                            orig.qkv[row + a].abs().total_cmp(&orig.qkv[row + b].abs())
                        })
                        .unwrap();
                    orig.qkv[row + c] * col_scale[c] / new.qkv[row + c]
                })
                .collect();
            let qd = spec.q_dim();
            for (i, (a, b)) in orig.o.iter().zip(&new.o).enumerate() {
                let want = a * s_v[v_of[i % qd]];
                assert!(
                    (want - b).abs() <= 1e-4 * want.abs().max(1e-6),
                    "{name} layer {l}: o[{i}]"
                );
            }
        }
    }
    assert!(vo_searched, "no grouped-query fixture chose v -> o scales: {FIXTURES:?}");
    // The Phi-4-mini-like fixture is the fused, grouped-query case: 6 q heads, 2 kv heads.
    let spec = source(&fixture("phi4-mini")).spec().clone();
    assert!(spec.architecture.is_fused() && spec.num_heads == 3 * spec.num_kv_heads);
    let _ = cmd;
});

pqtest!(awq_gguf_and_onnx_quantizers_keep_the_logits_too, |dir, cmd| {
    // Scales searched against llama.cpp's types (the Q4_K_M mixture and its fallbacks) and a
    // symmetric fp32 quantizer fold in as exactly.
    let src = source(&fixture("phi3"));
    let spec = src.spec().clone();
    let calib = windows(3, 40, spec.vocab_size);
    let gguf = phiquant_convert::gguf::GgufScheme {
        base: phiquant_quant::BlockFormat::Q4K,
        q4_k_m: true,
        pure: false,
    };
    let onnx = OnnxScheme { ep: Ep::Cpu, io: IoType::F32, ..dml_scheme(32, true) };
    for (i, q) in [
        LinearQuantizers::for_gguf(&spec, &gguf, "gguf-q4_k_m").unwrap(),
        LinearQuantizers::for_onnx(&spec, &onnx, "cpu-int4").unwrap(),
    ]
    .iter()
    .enumerate()
    {
        let scratch = dir.path().join(format!("s{i}"));
        let (awq, _) = transform(&src, &calib, q, &scaling_only(0), &scratch);
        assert_same_logits(&format!("phi3, quantizer {i}"), src.as_ref(), &awq);
    }
    let _ = cmd;
});

pqtest!(awq_refinement_lowers_each_loss_and_keeps_the_logits, |dir, cmd| {
    // The per-channel refinement (an option of the library) moves scales only where the group's
    // own loss drops, folds in as exactly as the grid's scales, and gives the same weights on 1
    // and 2 threads. With the clipping off and float propagation, every layer's search sees the
    // same inputs with and without it, so the group losses compare one to one. On the
    // Phi-4-mini-like fixture: fused q/k/v and gate/up, grouped-query attention.
    let name = "phi4-mini";
    let src = source(&fixture(name));
    let spec = src.spec().clone();
    let q = LinearQuantizers::for_onnx(&spec, &dml_scheme(128, false), "dml-int4").unwrap();
    let calib = windows(2, 24, spec.vocab_size);
    let run = |sweeps: usize, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let scratch = dir.path().join(format!("{name}-{sweeps}-{threads}"));
        pool.install(|| transform(&src, &calib, &q, &scaling_only(sweeps), &scratch))
    };
    let (_, grid) = run(0, 2);
    let (awq, reports) = run(1, 2);
    let mut refined = 0;
    for (g, r) in grid.iter().zip(&reports) {
        for (a, b) in g.groups.iter().zip(&r.groups) {
            let GroupOutcome::Searched { loss: before, refined: n0, .. } = a.outcome;
            let GroupOutcome::Searched { loss: after, refined: n, .. } = b.outcome;
            assert_eq!(n0, 0, "{g}");
            assert!(after <= before, "{name}: {r} against {g}");
            assert_eq!(n > 0, after < before, "{name}: {r} against {g}");
            refined += n;
        }
    }
    assert!(refined > 0, "the refinement changed no scale");
    assert_same_logits(name, src.as_ref(), &awq);
    let (one, _) = run(1, 1);
    for l in 0..spec.num_layers {
        let (a, b) = (LayerWeights::load(&awq, l).unwrap(), LayerWeights::load(&one, l).unwrap());
        assert!(a == b, "{name} layer {l}: the refined weights depend on the thread count");
    }
    let _ = cmd;
});

pqtest!(awq_export_is_deterministic_across_threads, |dir, cmd| {
    // dml-int4 is AWQ by default; with no --calib the model writes its own calibration text.
    let model = fixture("phi4-mini");
    let run = |threads: &str, name: &str| {
        let out = dir.path().join(name);
        let mut c = dir.command();
        c.env("RAYON_NUM_THREADS", threads)
            .export(&model, &out, &["dml-int4", "gguf-q4_1"])
            .args(["--algo", "awq", "--calib-samples", "3", "--calib-len", "40"]);
        let output = c.output();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A line per layer and target, with the chosen scales.
        assert_eq!(stderr.matches("awq dml-int4: layer ").count(), 2, "{stderr}");
        assert_eq!(stderr.matches("awq gguf-q4_1: layer ").count(), 2, "{stderr}");
        assert!(stderr.contains(", v-o "), "{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("awq)"), "{stdout}");
        files(&out)
    };
    let one = run("1", "one");
    assert_eq!(
        one.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "dml-int4/genai_config.json",
            "dml-int4/manifest.json",
            "dml-int4/model.onnx",
            "dml-int4/model.onnx.data",
            "dml-int4/tokenizer.json",
            "dml-int4/tokenizer_config.json",
            "gguf-q4_1.gguf",
            "gguf-q4_1.gguf.manifest.json"
        ],
        "nothing left over (scratch files included)"
    );
    assert!(one == run("2", "two"), "the bytes depend on the thread count");
    // --quiet prints no progress; --algo rtn gives other weights.
    let out = dir.path().join("rtn");
    let output = dir
        .command()
        .arg("--quiet")
        .export(&model, &out, &["dml-int4"])
        .args(["--algo", "rtn"])
        .output();
    assert!(output.status.success() && output.stderr.is_empty());
    let rtn = files(&out);
    assert!(
        rtn.iter().find(|(n, _)| n.ends_with("model.onnx.data")).unwrap().1
            != one.iter().find(|(n, _)| n == "dml-int4/model.onnx.data").unwrap().1
    );
    let _ = cmd;
});

pqtest!(awq_search_options_reach_the_export, |dir, cmd| {
    // --awq-joint-clip, --awq-refine, --awq-no-refit and --awq-statistic change the search, and
    // the manifest records them (so an artefact made with other settings is not current). The two-sided
    // clipping search is on by default (recorded as such; Q4_0, symmetric, gets the
    // reference's search, which keeps this unoptimized build quick).
    let model = fixture("llama");
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let output = dir
            .command()
            .export(&model, &out, &["gguf-q4_0"])
            .args(["--algo", "awq", "--calib-samples", "3", "--calib-len", "40"])
            .args(extra)
            .output();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("gguf-q4_0.gguf.manifest.json")).unwrap(),
        )
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        // The search settings recorded: two-sided clipping, joint clipping, refinement sweeps,
        // the block scales' refit, the activation statistic.
        let search = &manifest["calibration"]["search"];
        let settings = (
            search["two_sided_clip"].as_bool(),
            search["joint_clip"].as_bool(),
            search["refine"].as_u64(),
            search["refit_scales"].as_bool(),
            search["statistic"].as_str().map(String::from),
        );
        (std::fs::read(out.join("gguf-q4_0.gguf")).unwrap(), settings, stderr)
    };
    let mean = Some("mean_abs".to_string());
    let (plain, settings, stderr) = run("plain", &[]);
    assert_eq!(settings, (Some(true), Some(false), Some(0), Some(true), mean.clone()));
    assert!(stderr.contains("% of rows"), "no layer reports refitted rows: {stderr}");
    let (searched, settings, stderr) = run("searched", &["--awq-joint-clip", "--awq-refine", "1"]);
    assert_eq!(settings, (Some(true), Some(true), Some(1), Some(true), mean.clone()));
    assert!(stderr.contains(" refined)"), "no layer reports refined scales: {stderr}");
    assert!(plain != searched, "the search options changed nothing");
    let (unfitted, settings, stderr) = run("unfitted", &["--awq-no-refit"]);
    assert_eq!(settings, (Some(true), Some(false), Some(0), Some(false), mean));
    assert!(!stderr.contains("% of rows"), "a layer reports refitted rows: {stderr}");
    assert!(plain != unfitted, "--awq-no-refit changed nothing");
    let (rms, settings, _) = run("rms", &["--awq-statistic", "rms"]);
    assert_eq!(settings, (Some(true), Some(false), Some(0), Some(true), Some("rms".into())));
    assert!(plain != rms, "--awq-statistic rms changed nothing");
    let _ = cmd;
});

pqtest!(awq_bad_options_fail_cleanly, |dir, cmd| {
    let model = fixture("llama");
    let out = dir.path().join("out");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "once upon a time").unwrap();
    let cases: [(&[&str], &[&str], String); 14] = [
        (
            &["cpu-int4"],
            &["--algo", "awq", "--calib", "/no/such/file.txt"],
            "reading --calib /no/such/file.txt".into(),
        ),
        (
            &["cpu-int4"],
            &["--algo", "awq", "--calib", empty.to_str().unwrap()],
            format!("--calib {}: the file holds no text", empty.display()),
        ),
        (
            &["cpu-int4"],
            &["--algo", "awq", "--calib", short.to_str().unwrap(), "--calib-len", "64"],
            "too few for --calib-samples 128 x --calib-len 64".into(),
        ),
        (
            &["cpu-int4"],
            &["--algo", "awq", "--calib-samples", "0"],
            "--calib-samples 0: expected 1 to".into(),
        ),
        (&["dml-int4"], &["--calib-len", "1"], "--calib-len 1: expected at least 2".into()),
        (
            &["dml-int4"],
            &["--calib-len", "100000"],
            "--calib-len 100000: expected 2 to 256 tokens".into(),
        ),
        (
            &["cpu-int4"],
            &["--calib-samples", "4"],
            "--calib-samples applies to targets quantized with AWQ".into(),
        ),
        (
            &["dml-int4"],
            &["--awq-refine", "101"],
            "--awq-refine 101: expected 0 to 100 sweeps".into(),
        ),
        (
            &["cpu-int4"],
            &["--awq-joint-clip"],
            "--awq-joint-clip applies to targets quantized with AWQ".into(),
        ),
        (
            &["gguf-q4_k_m"],
            &["--awq-no-refit"],
            "--awq-no-refit applies to targets quantized with AWQ".into(),
        ),
        (
            &["cpu-int4"],
            &["--awq-statistic", "rms"],
            "--awq-statistic applies to targets quantized with AWQ".into(),
        ),
        (
            &["dml-int4"],
            &["--awq-statistic", "median"],
            "invalid value 'median' for '--awq-statistic".into(),
        ),
        (&["gguf-q8_0"], &["--algo", "awq"], "--algo applies to int4 targets".into()),
        (&["cuda-fp16", "gguf-f16"], &["--algo", "awq"], "--algo applies to int4 targets".into()),
    ];
    for (targets, extra, want) in cases {
        let line = dir.command().export(&model, &out, targets).args(extra).error_line();
        assert!(line.contains(&want), "{extra:?}: {line}");
        assert!(!out.exists(), "{extra:?}: --out was created");
    }
    // A failure during the transform (a NaN weight) names the tensor and leaves nothing.
    let nan = dir.copy_model(&fixture("llama"), "nan");
    let st = nan.join("model.safetensors");
    let (mut offset, mut dtype) = (0, String::new());
    crate::util::edit_safetensors_header(&st, |h| {
        let name = "model.layers.1.mlp.up_proj.weight";
        offset = crate::util::offsets(h, name).0 as usize;
        dtype = h[name]["dtype"].as_str().unwrap().to_string();
    });
    let size = if dtype == "F32" { 4 } else { 2 };
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Element 70 of a [120, 64] matrix: row 1, column 6.
    let at = 8 + n + offset + size * 70;
    let bad: &[u8] = match dtype.as_str() {
        "F32" => &[0, 0, 0xc0, 0x7f],
        "F16" => &[0x00, 0x7e],
        _ => &[0xc0, 0x7f],
    };
    bytes[at..at + size].copy_from_slice(bad);
    std::fs::write(&st, bytes).unwrap();
    let line = dir
        .command()
        .export(&nan, &out, &["gguf-q4_0"])
        .args(["--algo", "awq", "--calib-samples", "2", "--calib-len", "16", "--quiet"])
        .error_line();
    assert!(
        line.contains("tensor `model.layers.1.mlp.up_proj.weight`: row 1, column 6 holds NaN"),
        "{line}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in --out");
    let _ = cmd;
});

/// Full-precision logits of every position of each chunk.
fn reference(fp: &Engine, chunks: &[Vec<u32>]) -> Vec<Vec<f32>> {
    chunks.iter().map(|c| fp.session(c.len()).forward(c, Logits::All).unwrap().to_vec()).collect()
}

/// Mean negative log-likelihood (every position of each chunk) of `q`, and its mean KL
/// divergence from the reference logits `p`, each position compared as `phiquant verify` does.
fn quality(p: &[Vec<f32>], q: &Engine, chunks: &[Vec<u32>]) -> (f64, f64) {
    let vocab = q.spec().vocab_size;
    let mut scratch = Vec::new();
    let (mut nll, mut kld, mut n) = (0f64, 0f64, 0usize);
    for (c, p) in chunks.iter().zip(p) {
        let mut session = q.session(c.len());
        let lq = session.forward(c, Logits::All).unwrap();
        for j in 0..c.len() - 1 {
            let row = j * vocab..(j + 1) * vocab;
            let t = compare_token(&p[row.clone()], &lq[row], c[j + 1] as usize, &mut scratch);
            nll += t.nll_q;
            kld += t.kld;
            n += 1;
        }
    }
    (nll / n as f64, kld / n as f64)
}

pqtest!(awq_beats_rtn_on_stories260k, |dir, cmd| {
    // stories260K with group 32 (its ffn of 172 gets a short last block of 12): calibration on
    // the first half of tinystories-val, scored on the second half, with the native engine on
    // fake-quantized weights (every linear layer as the writer stores it). Small enough for an
    // unoptimized build; BENCHMARKS.md has the figures at full size.
    let Some(model) = shared_model("stories260K") else { return };
    let text = std::fs::read_to_string(model.join("../../corpora/tinystories-val.txt")).unwrap();
    let src = source(&model);
    let spec = src.spec().clone();
    let tokenizer = Tokenizer::from_dir(&model, spec.bos_token_id).unwrap();
    let cut = text.floor_char_boundary(text.len() / 2);
    let calib = Calibration::from_text(&text[..cut], "first half", &tokenizer, 8, 128).unwrap();
    let held = tokenizer.encode_prompt(&text[cut..]).unwrap();
    let chunks: Vec<Vec<u32>> = held.chunks_exact(256).take(8).map(|c| c.to_vec()).collect();
    let fp = Engine::load(src.as_ref()).unwrap();
    let p = reference(&fp, &chunks);
    let options = AwqOptionsBuilder::new().loss_tokens(512).build().unwrap();
    for symmetric in [false, true] {
        let scheme = OnnxScheme { ep: Ep::Cpu, io: IoType::F32, ..dml_scheme(32, symmetric) };
        let q = LinearQuantizers::for_onnx(&spec, &scheme, "cpu-int4").unwrap();
        let rtn =
            Engine::new(spec.clone(), fake_quantized_model(src.as_ref(), &q).unwrap()).unwrap();
        let scratch = dir.path().join(format!("{symmetric}"));
        let awq =
            awq_transform(Arc::clone(&src), &calib, &q, &options, &scratch, &mut |_| {}).unwrap();
        let awq = Engine::new(spec.clone(), fake_quantized_model(&awq, &q).unwrap()).unwrap();
        let (nll_fp, _) = quality(&p, &fp, &chunks);
        let (nll_rtn, kld_rtn) = quality(&p, &rtn, &chunks);
        let (nll_awq, kld_awq) = quality(&p, &awq, &chunks);
        crate::util::note(&format!(
            "stories260K g32 symmetric={symmetric}: ppl fp {:.4}, rtn {:.4} (kld {kld_rtn:.5}), \
             awq {:.4} (kld {kld_awq:.5})",
            nll_fp.exp(),
            nll_rtn.exp(),
            nll_awq.exp()
        ));
        assert!(kld_awq < 0.9 * kld_rtn, "symmetric={symmetric}: AWQ's KL divergence is not lower");
        // Symmetric codes: AWQ lowers the KL divergence by a fifth but not this tiny model's
        // perplexity, which RTN's symmetric rounding happens to favour (its perplexity is
        // lower than asymmetric RTN's while its KL divergence is higher): asserted for the
        // asymmetric codes only. See BENCHMARKS.md.
        if !symmetric {
            assert!(nll_awq < nll_rtn, "AWQ's perplexity is not lower");
        }
    }
    let _ = cmd;
});

pqtest!(awq_gguf_export_beats_rtn_through_the_writer, |dir, cmd| {
    // The Q4_1 file written by llama.cpp's quantizer from AWQ's weights, read back and run:
    // closer to the full-precision model than the plain Q4_1 file.
    let Some(model) = shared_model("stories260K") else { return };
    let text = std::fs::read_to_string(model.join("../../corpora/tinystories-val.txt")).unwrap();
    let cut = text.floor_char_boundary(text.len() / 2);
    let calib = dir.path().join("calib.txt");
    std::fs::write(&calib, &text[..cut]).unwrap();
    let out = dir.path().join("out");
    let rtn_out = dir.path().join("rtn");
    cmd.export(&model, &out, &["gguf-q4_1"])
        .arg("--calib")
        .arg(&calib)
        .args(["--algo", "awq", "--calib-samples", "8", "--calib-len", "128"])
        .stdout();
    dir.command().export(&model, &rtn_out, &["gguf-q4_1"]).stdout();
    let src = source(&model);
    let tokenizer = Tokenizer::from_dir(&model, src.spec().bos_token_id).unwrap();
    let held = tokenizer.encode_prompt(&text[cut..]).unwrap();
    let chunks: Vec<Vec<u32>> = held.chunks_exact(256).take(8).map(|c| c.to_vec()).collect();
    let p = reference(&Engine::load(src.as_ref()).unwrap(), &chunks);
    let run = |path: &Path| {
        let g = GgufModel::open(path).unwrap();
        quality(&p, &Engine::load(&g).unwrap(), &chunks)
    };
    let (nll_awq, kld_awq) = run(&out.join("gguf-q4_1.gguf"));
    let (nll_rtn, kld_rtn) = run(&rtn_out.join("gguf-q4_1.gguf"));
    crate::util::note(&format!(
        "stories260K gguf-q4_1: ppl rtn {:.4} (kld {kld_rtn:.5}), awq {:.4} (kld {kld_awq:.5})",
        nll_rtn.exp(),
        nll_awq.exp()
    ));
    assert!(nll_awq < nll_rtn && kld_awq < kld_rtn);
});
