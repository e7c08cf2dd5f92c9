//! `phiquant export` to ONNX targets: folder layout, determinism, options, and failures that
//! leave nothing behind.

use crate::util::{edit_safetensors_header, fixture};

const ONNX_TARGETS: [&str; 5] = ["cpu-int4", "mobile-int4", "cuda-int4", "cuda-fp16", "cpu-fp32"];

pqtest!(onnx_export_writes_genai_folders, |dir, cmd| {
    let out = dir.path().join("out");
    let stdout = cmd.export(&fixture("phi3"), &out, &ONNX_TARGETS).stdout();
    for t in ONNX_TARGETS {
        assert!(stdout.contains(&format!("{t}: ")), "{stdout}");
        let folder = out.join(t);
        for f in ["model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"] {
            assert!(folder.join(f).is_file(), "{t}: {f} missing");
        }
        // model.onnx holds no tensor data: every initializer is external.
        let model = std::fs::metadata(folder.join("model.onnx")).unwrap().len();
        let data = std::fs::metadata(folder.join("model.onnx.data")).unwrap().len();
        assert!(model < 64 << 10 && data > model, "{t}: model.onnx {model} B, data {data} B");
    }
    // Nothing but the artefacts (no partial folders).
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = ONNX_TARGETS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    // The official release serves CPU and mobile with one artefact.
    for f in ["model.onnx", "model.onnx.data"] {
        let cpu = std::fs::read(out.join("cpu-int4").join(f)).unwrap();
        assert!(cpu == std::fs::read(out.join("mobile-int4").join(f)).unwrap(), "{f}");
    }
});

pqtest!(onnx_export_is_deterministic_across_threads, |dir, cmd| {
    let model = fixture("qwen2");
    let run = |threads: &str, name: &str| {
        let out = dir.path().join(name);
        dir.command()
            .env("RAYON_NUM_THREADS", threads)
            .export(&model, &out, &["cpu-int4", "cuda-fp16"])
            .stdout();
        ["cpu-int4", "cuda-fp16"]
            .iter()
            .flat_map(|t| {
                ["model.onnx", "model.onnx.data", "genai_config.json"]
                    .map(|f| std::fs::read(out.join(t).join(f)).unwrap())
            })
            .collect::<Vec<_>>()
    };
    assert!(run("1", "one") == run("2", "two"));
    let _ = cmd;
});

pqtest!(onnx_export_replaces_an_earlier_artefact, |dir, cmd| {
    let out = dir.path().join("out");
    cmd.export(&fixture("llama"), &out, &["cpu-fp32"]).stdout();
    std::fs::write(out.join("cpu-fp32/stale.txt"), b"old").unwrap();
    dir.command().export(&fixture("llama"), &out, &["cpu-fp32"]).stdout();
    assert!(!out.join("cpu-fp32/stale.txt").exists());
    assert!(out.join("cpu-fp32/model.onnx").is_file());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
});

pqtest!(onnx_export_options, |dir, cmd| {
    let out = dir.path().join("out");
    let model = fixture("phi3");
    let run = |extra: &[&str]| {
        let mut c = dir.command();
        c.export(&model, &out, &["cpu-int4"]).args(extra);
        c
    };
    // Overrides change the scheme and are recorded in the graph.
    run(&["--group-size", "64", "--asymmetric", "--accuracy-level", "0"]).stdout();
    let bytes = std::fs::read(out.join("cpu-int4/model.onnx")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("_zero_points"), "asymmetric writes zero points");
    assert!(!text.contains("accuracy_level"), "accuracy_level 0 is omitted");

    for (args, want) in [
        (vec!["--group-size", "48"], "--target cpu-int4: --group-size 48: expected one of"),
        (vec!["--accuracy-level", "7"], "--target cpu-int4: --accuracy-level 7: expected 0"),
        (vec!["--calib-len", "64"], "--calib-len applies to targets quantized with AWQ"),
    ] {
        let line = run(&args).error_line();
        assert!(line.contains(want), "{args:?}: {line}");
    }
    for (target, opt) in [("cpu-fp32", "--group-size"), ("gguf-q4_0", "--symmetric")] {
        let mut c = dir.command();
        c.export(&model, &out, &[target]).arg(opt);
        if opt == "--group-size" {
            c.arg("32");
        }
        let line = c.error_line();
        assert!(line.contains(&format!("{opt} applies to int4 ONNX targets")), "{line}");
    }
    // With several targets, overrides go to the int4 ones.
    dir.command()
        .export(&model, &out, &["cpu-int4", "cpu-fp32"])
        .args(["--group-size", "16"])
        .stdout();
    let line = dir
        .command()
        .export(&model, &out, &["cpu-int4"])
        .args(["--symmetric", "--asymmetric"])
        .error_line();
    assert!(line.contains("cannot be used with"), "{line}");
    let _ = cmd;
});

pqtest!(onnx_export_failure_leaves_nothing, |dir, cmd| {
    // NaN in a float weight: the fp32 artefact would carry it, so the export refuses, naming the
    // tensor, and leaves no folder behind.
    let model = dir.copy_model(&fixture("phi3"), "nan");
    let st = model.join("model.safetensors");
    let mut offset = 0;
    edit_safetensors_header(&st, |h| offset = crate::util::offsets(h, "model.norm.weight").0);
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + n + offset as usize + 4 * 3;
    bytes[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    let out = dir.path().join("out");
    for target in ["cpu-fp32", "cpu-int4"] {
        let line = dir.command().export(&model, &out, &[target]).error_line();
        assert!(line.contains("tensor `model.norm.weight`: row 0, column 3 holds inf"), "{line}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in --out");
    }
    let _ = cmd;
});
