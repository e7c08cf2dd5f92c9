//! Byte determinism of every export target: the same input and options give identical files
//! whatever RAYON_NUM_THREADS is, and run after run.

use serde_json::Value;

use crate::util::{files, fixture};

pqtest!(every_target_is_byte_deterministic, |dir, cmd| {
    // Every target `phiquant targets` lists, so that a new one is covered when it is added.
    let listed: Value = serde_json::from_str(&cmd.args(["targets", "--json"]).stdout()).unwrap();
    let targets: Vec<String> =
        listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().into()).collect();
    assert!(targets.len() >= 14, "{targets:?}");
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    // Phi-4-mini-like: fused qkv and gate_up, GQA, partial rotary, tied embeddings. dml-int4
    // quantizes by its default, AWQ, on calibration text the model writes itself (seeded).
    let model = fixture("phi4-mini");
    let run = |threads: &str, name: &str| {
        let out = dir.path().join(name);
        dir.command()
            .env("RAYON_NUM_THREADS", threads)
            .export(&model, &out, &targets)
            .args(["--calib-samples", "3", "--calib-len", "40"])
            .stdout();
        files(&out)
    };
    let one = run("1", "one");
    for t in &targets {
        assert!(
            one.iter().any(|(n, _)| n == &format!("{t}.gguf") || n.starts_with(&format!("{t}/"))),
            "no artefact for {t}"
        );
    }
    let two = run("2", "two");
    let again = run("2", "again");
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&one), names(&two));
    assert_eq!(names(&two), names(&again));
    for ((name, a), ((_, b), (_, c))) in one.iter().zip(two.iter().zip(&again)) {
        assert!(a == b, "{name}: 1 and 2 threads differ");
        assert!(b == c, "{name}: two runs on 2 threads differ");
    }
});
