//! The fault suite of `phiquant export` (issue 9): a full disk, a read-only output folder,
//! truncated and corrupted inputs of every format read (safetensors, GGUF, config.json, the
//! tokenizer and generation files), NaN and infinite weights, and group sizes that fit nothing.
//! Each case exits 2 with one line that names the file, tensor or option concerned, and leaves
//! nothing in --out: no artefact, no staged `.partial-` or moved-aside `.old-` entry.
//! `bad_input.rs` runs the malformed-input cases of `inspect`; these run `export`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;

use crate::util::{Dir, edit_json, edit_safetensors_header, fixture, offsets, skip_note};

/// Runs `export` of `model` to `targets` (plus `extra` options) into `out`, requires exit 2
/// with one `error: ` line holding every one of `parts`, and that `out` holds nothing after.
fn fails(
    dir: &Dir,
    model: &Path,
    out: &Path,
    targets: &[&str],
    extra: &[&str],
    parts: &[&str],
) -> String {
    let line = dir.command().export(model, out, targets).args(extra).arg("--quiet").error_line();
    for p in parts {
        assert!(line.contains(p), "{targets:?} {extra:?}: {line:?} does not contain {p:?}");
    }
    assert_nothing_left(out, &line);
    crate::util::note(&format!("{targets:?} {extra:?}: {line}"));
    line
}

/// Requires `out` to be absent or empty: in particular no artefact and no `.partial-` or
/// `.old-` entry.
fn assert_nothing_left(out: &Path, line: &str) {
    let Ok(entries) = std::fs::read_dir(out) else { return };
    let names: Vec<String> =
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.is_empty(), "{line}\nleft in {}: {names:?}", out.display());
}

/// The path as the error line prints it.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The total size of the files under `path`.
fn size_of(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path).unwrap().map(|e| size_of(&e.unwrap().path())).sum()
    } else {
        std::fs::metadata(path).unwrap().len()
    }
}

/// A tmpfs mounted for one test, unmounted when dropped (a panicking test included).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` on `path` (created), or returns `None` with a note where
    /// mounting is not permitted (not root, no CAP_SYS_ADMIN, no `mount`).
    fn mount(path: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let why = match Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
        {
            Ok(o) if o.status.success() => return Some(Tmpfs { path: path.to_path_buf() }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("running mount: {e}"),
        };
        skip_note(&format!("cannot mount a tmpfs (-o {options}) on {}: {why}", path.display()));
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            // Busy (a process of a failed test still inside it): detach it lazily instead.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// The byte offset in `file` (a safetensors file) of element `index` of `tensor`, and the
/// tensor's dtype.
fn element_offset(file: &Path, tensor: &str, index: usize) -> (usize, String) {
    let (mut begin, mut dtype) = (0, String::new());
    // An edit that changes nothing, to read the header.
    edit_safetensors_header(file, |h| {
        begin = offsets(h, tensor).0 as usize;
        dtype = h[tensor]["dtype"].as_str().unwrap().to_string();
    });
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let size = if dtype == "F32" { 4 } else { 2 };
    (8 + n + begin + size * index, dtype)
}

/// Writes `value` into element `index` of `tensor` in `file`, in the tensor's own dtype.
fn poke(file: &Path, tensor: &str, index: usize, value: f32) {
    let (at, dtype) = element_offset(file, tensor, index);
    let encoded: Vec<u8> = match dtype.as_str() {
        "F32" => value.to_le_bytes().to_vec(),
        "F16" => {
            let bits: u16 = if value.is_nan() {
                0x7e00
            } else if value == f32::INFINITY {
                0x7c00
            } else if value == f32::NEG_INFINITY {
                0xfc00
            } else {
                panic!("poke writes only non-finite F16 values")
            };
            bits.to_le_bytes().to_vec()
        }
        "BF16" => ((value.to_bits() >> 16) as u16).to_le_bytes().to_vec(),
        other => panic!("unexpected dtype {other}"),
    };
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at..at + encoded.len()].copy_from_slice(&encoded);
    std::fs::write(file, bytes).unwrap();
}

// Exports fixture `phi3` to each target with a tmpfs smaller than the artefact as --out: the
// write fails for lack of space at several points (from the first bytes to near the end), and
// each time the error names the file and nothing is left.
pqtest!(disk_full, |dir, cmd| {
    let model = fixture("phi3");
    // Whether mounting works at all (else the whole test is skipped with a note).
    if Tmpfs::mount(&dir.path().join("probe"), "size=64k").is_none() {
        return;
    }
    let whole = dir.path().join("whole");
    let targets = ["gguf-f32", "gguf-q4_0", "cpu-fp32", "cpu-int4", "hf-f16"];
    cmd.export(&model, &whole, &targets).arg("--quiet").stdout();
    for target in targets {
        let artefact = match target.starts_with("gguf-") {
            true => whole.join(format!("{target}.gguf")),
            false => whole.join(target),
        };
        let size = size_of(&artefact);
        for fraction in [1, 3, 7] {
            // A multiple of the 4 kB page, less than the artefact.
            let limit = (size * fraction / 8).div_ceil(4096).max(1) * 4096;
            assert!(limit < size, "{target}: {limit} < {size}");
            let out = dir.path().join(format!("full-{target}-{fraction}"));
            let Some(_mount) = Tmpfs::mount(&out, &format!("size={limit}")) else { return };
            crate::util::note(&format!("{target} in {limit} of {size} bytes:"));
            fails(
                &dir,
                &model,
                &out,
                &[target],
                &[],
                &[&shown(&out), target, "No space left on device"],
            );
        }
    }
});

// Two targets, the first fits and the second does not: the first stays, whole, and nothing
// of the second is left.
pqtest!(disk_full_at_the_second_target, |dir, cmd| {
    let model = fixture("phi3");
    let whole = dir.path().join("whole");
    cmd.export(&model, &whole, &["gguf-q4_0"]).arg("--quiet").stdout();
    let first = std::fs::read(whole.join("gguf-q4_0.gguf")).unwrap();
    let out = dir.path().join("full");
    // Room for the first artefact (82 kB) and a third of the second (gguf-f32, 452 kB).
    let Some(_mount) = Tmpfs::mount(&out, "size=256k") else { return };
    let line =
        dir.command().export(&model, &out, &["gguf-q4_0", "gguf-f32"]).arg("--quiet").error_line();
    for part in [shown(&out).as_str(), "gguf-f32.gguf", "No space left on device"] {
        assert!(line.contains(part), "{line:?} lacks {part:?}");
    }
    assert_eq!(std::fs::read(out.join("gguf-q4_0.gguf")).unwrap(), first, "{line}");
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".partial-") && !name.contains(".old-") && !name.contains("gguf-f32"),
            "{line}\nleft: {name}"
        );
    }
});

// An AWQ export whose scratch file (the transformed weights, written into --out) does not fit.
pqtest!(disk_full_during_awq, |dir, cmd| {
    let out = dir.path().join("full");
    let Some(_mount) = Tmpfs::mount(&out, "size=8k") else { return };
    let awq = ["--algo", "awq", "--calib-samples", "2", "--calib-len", "16"];
    let line = fails(&dir, &fixture("phi3"), &out, &["cpu-int4"], &awq, &[&shown(&out)]);
    assert!(line.contains("No space left on device"), "{line}");
    let _ = cmd;
});

// A read-only file system as --out, and a folder to be created inside it as --out (root
// ignores permission bits, so a read-only mount stands in for a read-only folder).
pqtest!(read_only_output_folder, |dir, cmd| {
    let ro = dir.path().join("ro");
    let Some(_mount) = Tmpfs::mount(&ro, "ro,size=1m") else { return };
    let model = fixture("llama");
    for out in [ro.clone(), ro.join("new"), ro.join("new/deeper")] {
        for target in ["gguf-f16", "gguf-q4_0", "cpu-int4", "hf-f16"] {
            fails(&dir, &model, &out, &[target], &[], &[&shown(&out), "Read-only file system"]);
        }
    }
    let _ = cmd;
});

// --out naming a file, or a folder below a file.
pqtest!(output_is_a_file, |dir, cmd| {
    let file = dir.path().join("file");
    std::fs::write(&file, b"mine").unwrap();
    for out in [file.clone(), file.join("below")] {
        let line = dir.command().export(&fixture("llama"), &out, &["gguf-f16"]).error_line();
        assert!(line.contains(&shown(&out)), "{line}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    let _ = cmd;
});

/// One damaged copy of a fixture: its name, the file damaged and how.
type Damage = (&'static str, &'static str, fn(&Path));

fn cut_to(path: &Path, len: usize) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..len]).unwrap();
}

/// Keeps the first half of the file.
fn halve(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    cut_to(path, len / 2);
}

fn cut_by(path: &Path, n: usize) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    cut_to(path, len - n);
}

fn header_len(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

fn set_header_len(path: &Path, n: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Runs each damage on its own copy of `fixture_name` through `export` to each of `targets`,
/// requiring the line to name the damaged file and to hold `want`.
fn damaged_exports(dir: &Dir, fixture_name: &str, targets: &[&str], cases: &[(Damage, &str)]) {
    for ((name, file, damage), want) in cases {
        let model = dir.copy_model(&fixture(fixture_name), name);
        damage(&model.join(file));
        for target in targets {
            let out = dir.path().join(format!("out-{name}-{target}"));
            fails(dir, &model, &out, &[target], &[], &[&shown(&model.join(file)), want]);
        }
    }
}

pqtest!(corrupted_safetensors, |dir, cmd| {
    let f = "model.safetensors";
    let cases: Vec<(Damage, &str)> = vec![
        (("data-cut", f, |p| cut_by(p, 1000)), "(truncated file?)"),
        (("data-cut-one-byte", f, |p| cut_by(p, 1)), "(truncated file?)"),
        (("header-cut", f, |p| cut_to(p, 8 + header_len(p) / 2)), "(truncated file?)"),
        (("prefix-cut", f, |p| cut_to(p, 3)), "length prefix needs 8 bytes, only 3 remain"),
        (("empty", f, |p| cut_to(p, 0)), "length prefix needs 8 bytes, only 0 remain"),
        (("len-short", f, |p| set_header_len(p, header_len(p) as u64 - 10)), "header"),
        (("len-long", f, |p| set_header_len(p, header_len(p) as u64 + 10)), "header"),
        (("len-huge", f, |p| set_header_len(p, u64::MAX)), "header"),
        (
            ("not-utf8", f, |p| {
                let mut bytes = std::fs::read(p).unwrap();
                bytes[20] = 0xff;
                std::fs::write(p, bytes).unwrap();
            }),
            "header",
        ),
        (
            ("not-object", f, |p| {
                let mut bytes = std::fs::read(p).unwrap();
                bytes[8] = b'[';
                std::fs::write(p, bytes).unwrap();
            }),
            "header",
        ),
        (
            ("no-dtype", f, |p| {
                edit_safetensors_header(p, |h| {
                    h["model.norm.weight"].as_object_mut().unwrap().remove("dtype");
                })
            }),
            "model.norm.weight",
        ),
        (
            ("negative-shape", f, |p| {
                edit_safetensors_header(p, |h| h["model.norm.weight"]["shape"] = json!([-64]))
            }),
            "model.norm.weight",
        ),
        (
            ("huge-shape", f, |p| {
                edit_safetensors_header(p, |h| {
                    h["model.norm.weight"]["shape"] = json!([u64::MAX, u64::MAX])
                })
            }),
            "model.norm.weight",
        ),
        (
            ("reversed-offsets", f, |p| {
                edit_safetensors_header(p, |h| {
                    let (b, e) = offsets(h, "model.norm.weight");
                    h["model.norm.weight"]["data_offsets"] = json!([e, b]);
                })
            }),
            "model.norm.weight",
        ),
    ];
    damaged_exports(&dir, "phi3", &["gguf-q4_0", "cpu-int4", "hf-f16"], &cases);
    let _ = cmd;
});

pqtest!(corrupted_shard_index, |dir, cmd| {
    let f = "model.safetensors.index.json";
    let cases: Vec<(Damage, &str)> = vec![
        (("index-cut", f, halve), "malformed JSON"),
        (("index-not-object", f, |p| std::fs::write(p, "[1, 2]").unwrap()), f),
        (
            ("index-no-map", f, |p| {
                edit_json(p, |i| {
                    i.as_object_mut().unwrap().remove("weight_map");
                })
            }),
            "weight_map",
        ),
    ];
    damaged_exports(&dir, "mistral", &["gguf-f16", "cpu-fp32"], &cases);
    let _ = cmd;
});

pqtest!(corrupted_config, |dir, cmd| {
    let f = "config.json";
    let cases: Vec<(Damage, &str)> = vec![
        (("config-cut", f, halve), "malformed JSON"),
        (("config-empty", f, |p| cut_to(p, 0)), "malformed JSON"),
        (("config-not-object", f, |p| std::fs::write(p, "[]").unwrap()), f),
        (
            ("config-not-utf8", f, |p| {
                let mut bytes = std::fs::read(p).unwrap();
                bytes[10] = 0xff;
                std::fs::write(p, bytes).unwrap();
            }),
            f,
        ),
        (
            ("config-wrong-type", f, |p| edit_json(p, |c| c["hidden_size"] = json!("64"))),
            "hidden_size",
        ),
        (("config-huge", f, |p| edit_json(p, |c| c["vocab_size"] = json!(u64::MAX))), "vocab_size"),
    ];
    damaged_exports(&dir, "llama", &["gguf-q4_0", "cpu-int4", "hf-f16"], &cases);
    let _ = cmd;
});

pqtest!(corrupted_tokenizer_files, |dir, cmd| {
    let cases: Vec<(Damage, &str)> = vec![
        (("tok-cut", "tokenizer.json", halve), "malformed JSON"),
        (("tok-empty", "tokenizer.json", |p| cut_to(p, 0)), "malformed JSON"),
        (
            ("tok-not-utf8", "tokenizer.json", |p| {
                let mut bytes = std::fs::read(p).unwrap();
                bytes[1] = 0xff;
                std::fs::write(p, bytes).unwrap();
            }),
            "tokenizer.json",
        ),
        (("tokcfg-cut", "tokenizer_config.json", halve), "malformed JSON"),
        (("gencfg-cut", "generation_config.json", halve), "malformed JSON"),
    ];
    damaged_exports(&dir, "qwen2", &["gguf-f16", "cpu-fp32", "hf-f16"], &cases);
    let _ = cmd;
});

/// The byte offset of the tensor-info entry of `name` (just past its name) in a GGUF file.
fn tensor_info_at(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len()
}

/// Writes a damaged copy of the GGUF `good` as `dir/name.gguf`.
fn damaged_gguf(dir: &Dir, good: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(good).unwrap();
    damage(&mut bytes);
    let path = dir.path().join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    path
}

pqtest!(corrupted_gguf_input, |dir, cmd| {
    let made = dir.path().join("made");
    cmd.export(&fixture("llama"), &made, &["gguf-q8_0"]).arg("--quiet").stdout();
    let good = made.join("gguf-q8_0.gguf");
    let len = std::fs::metadata(&good).unwrap().len() as usize;
    // llama.cpp's writer puts `token_embd.weight` first and `output.weight` last in the data.
    let u32_at =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let u64_at =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let cases: Vec<(PathBuf, &str)> = vec![
        (damaged_gguf(&dir, &good, "cut-data", |b| b.truncate(len - 100)), "(truncated file?)"),
        (damaged_gguf(&dir, &good, "cut-one", |b| b.truncate(len - 1)), "(truncated file?)"),
        (damaged_gguf(&dir, &good, "cut-header", |b| b.truncate(200)), "needs"),
        (damaged_gguf(&dir, &good, "cut-magic", |b| b.truncate(3)), "the GGUF magic"),
        (damaged_gguf(&dir, &good, "magic", |b| b[..4].copy_from_slice(b"GGUX")), "bad magic"),
        (damaged_gguf(&dir, &good, "version", |b| u32_at(b, 4, 1)), "GGUF version 1"),
        (damaged_gguf(&dir, &good, "counts", |b| u64_at(b, 8, u64::MAX)), "exceed the limits"),
        (
            damaged_gguf(&dir, &good, "key-len", |b| u64_at(b, 24, u64::MAX / 2)),
            "a metadata key of 9223372036854775807 bytes exceeds the limit",
        ),
        (
            damaged_gguf(&dir, &good, "value-type", |b| {
                let key = u64::from_le_bytes(b[24..32].try_into().unwrap()) as usize;
                u32_at(b, 32 + key, 99)
            }),
            "unknown value type 99",
        ),
        (
            damaged_gguf(&dir, &good, "rank", |b| {
                let at = tensor_info_at(b, "blk.0.attn_q.weight");
                u32_at(b, at, 9)
            }),
            "tensor `blk.0.attn_q.weight` has 9 dimensions",
        ),
        (
            // A row of 48: no whole Q8_0 block of 32.
            damaged_gguf(&dir, &good, "partial-block", |b| {
                let at = tensor_info_at(b, "blk.0.attn_q.weight");
                u64_at(b, at + 4, 48)
            }),
            "tensor `blk.0.attn_q.weight`",
        ),
        (
            damaged_gguf(&dir, &good, "zero-dim", |b| {
                let at = tensor_info_at(b, "blk.0.attn_q.weight");
                u64_at(b, at + 4 + 8, 0)
            }),
            "tensor `blk.0.attn_q.weight`",
        ),
        (
            damaged_gguf(&dir, &good, "huge-dims", |b| {
                let at = tensor_info_at(b, "blk.0.attn_q.weight");
                u64_at(b, at + 4 + 8, u64::MAX / 2)
            }),
            "tensor `blk.0.attn_q.weight`",
        ),
        (
            damaged_gguf(&dir, &good, "misaligned", |b| {
                let at = tensor_info_at(b, "blk.0.attn_q.weight") + 4 + 2 * 8 + 4;
                let offset = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
                u64_at(b, at, offset + 1)
            }),
            "is not a multiple of the alignment 32",
        ),
        (
            damaged_gguf(&dir, &good, "overlap", |b| {
                let at = tensor_info_at(b, "blk.0.attn_q.weight") + 4 + 2 * 8 + 4;
                let offset = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
                u64_at(b, at, offset + 32)
            }),
            "overlap",
        ),
        (
            damaged_gguf(&dir, &good, "beyond", |b| {
                let at = tensor_info_at(b, "blk.0.attn_q.weight") + 4 + 2 * 8 + 4;
                u64_at(b, at, 1 << 40)
            }),
            "tensor `blk.0.attn_q.weight`",
        ),
    ];
    for (path, want) in &cases {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        for target in ["gguf-q4_0", "cpu-int4", "hf-f16"] {
            let out = dir.path().join(format!("out-{stem}-{target}"));
            fails(&dir, path, &out, &[target], &[], &[&shown(path), want]);
        }
    }
});

// A NaN, +inf or -inf in one weight of a checkpoint of each float dtype: every target that
// would carry or round it refuses, naming the tensor, row and column.
pqtest!(non_finite_weights, |dir, cmd| {
    let tensor = "model.layers.0.self_attn.o_proj.weight";
    // Element 133 of a [64, 64] matrix: row 2, column 5.
    let index = 2 * 64 + 5;
    for fixture_name in ["phi3", "llama", "phi3-longrope"] {
        for (value, shown_as) in
            [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")]
        {
            let name = format!("{fixture_name}-{shown_as}");
            let model = dir.copy_model(&fixture(fixture_name), &name);
            poke(&model.join("model.safetensors"), tensor, index, value);
            for target in ["cpu-int4", "gguf-q4_0", "gguf-f16", "cpu-fp32", "hf-f16"] {
                let out = dir.path().join(format!("out-{name}-{target}"));
                fails(
                    &dir,
                    &model,
                    &out,
                    &[target],
                    &[],
                    &[&format!("tensor `{tensor}`: row 2, column 5 holds {shown_as}")],
                );
            }
        }
    }
    let _ = cmd;
});

// A NaN in a GGUF input's weight (an F32 GGUF, its bytes patched).
pqtest!(non_finite_weights_in_gguf_input, |dir, cmd| {
    let made = dir.path().join("made");
    cmd.export(&fixture("llama"), &made, &["gguf-f32"]).arg("--quiet").stdout();
    let good = made.join("gguf-f32.gguf");
    // Where the tensor's data starts: its bytes found in the file.
    let data = phiquant_runtime::gguf::GgufFile::open(&good)
        .unwrap()
        .data("blk.0.attn_output.weight")
        .unwrap()
        .to_vec();
    let bytes = std::fs::read(&good).unwrap();
    let begin = bytes.windows(data.len()).position(|w| w == data).unwrap();
    let at = begin + 4 * (2 * 64 + 5);
    let bad = damaged_gguf(&dir, &good, "nan", |b| {
        b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    for target in ["cpu-int4", "gguf-q4_0", "gguf-f16", "hf-f16"] {
        let out = dir.path().join(format!("out-{target}"));
        // The tensor is named as the checkpoint would name it (`blk.0.attn_output.weight` in
        // the file).
        fails(
            &dir,
            &bad,
            &out,
            &[target],
            &[],
            &["tensor `model.layers.0.self_attn.o_proj.weight`: row 2, column 5 holds NaN"],
        );
    }
});

// Group sizes MatMulNBits cannot take are refused before anything is written, naming the
// option and the target; shapes that are no multiple of a valid one are padded, not refused.
pqtest!(group_sizes_that_fit_nothing, |dir, cmd| {
    let model = fixture("phi4-mini");
    let out = dir.path().join("out");
    for target in ["cpu-int4", "cuda-int4", "dml-int4", "mobile-int4"] {
        for size in ["0", "1", "8", "24", "48", "96", "512", "4096"] {
            fails(
                &dir,
                &model,
                &out,
                &[target],
                &["--group-size", size, "--algo", "rtn"],
                &[&format!("--target {target}: --group-size {size}: expected one of")],
            );
        }
    }
    for size in ["-1", "x", "18446744073709551616"] {
        let arg = format!("--group-size={size}");
        fails(&dir, &model, &out, &["cpu-int4"], &[&arg], &["for '--group-size <GROUP_SIZE>'"]);
    }
    // phi4-mini's rows of 96 and 160 fit no block of 64 or 256: their last block is padded.
    for size in ["64", "256"] {
        dir.command()
            .export(&model, &out, &["cpu-int4"])
            .args(["--group-size", size, "--quiet"])
            .stdout();
        assert!(out.join("cpu-int4/model.onnx.data").is_file());
    }
    let _ = cmd;
});

/// Whether `line` ends with the same cause twice ("a: b: b", "a: b: c: b: c").
fn repeats_a_cause(line: &str) -> bool {
    let parts: Vec<&str> = line.split(": ").collect();
    (1..=parts.len() / 2)
        .any(|k| parts[parts.len() - k..] == parts[parts.len() - 2 * k..parts.len() - k])
}

/// Each cause appears once in the error line.
#[test]
fn error_lines_name_each_cause_once() {
    assert!(repeats_a_cause("error: writing x: No space (os error 28): No space (os error 28)"));
    assert!(repeats_a_cause(
        "error: t: row 2 holds NaN: must be finite: row 2 holds NaN: must be finite"
    ));
    assert!(!repeats_a_cause(
        "error: tensor `t`: row 2, column 5 holds NaN: weights must be finite"
    ));
    let dir = Dir::new("error_lines_name_each_cause_once");
    let mut lines = Vec::new();
    // An I/O error of the reader (runtime), a JSON error, and an I/O error of the writer.
    let model = dir.copy_model(&fixture("llama"), "no-config");
    std::fs::remove_file(model.join("config.json")).unwrap();
    lines.push(dir.command().arg("inspect").arg(&model).error_line());
    let model = dir.copy_model(&fixture("llama"), "cut-config");
    cut_to(&model.join("config.json"), 10);
    lines.push(dir.command().export(&model, &dir.path().join("o1"), &["gguf-f16"]).error_line());
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("below");
    lines.push(dir.command().export(&fixture("llama"), &out, &["gguf-f16"]).error_line());
    // A quantizer's error.
    let model = dir.copy_model(&fixture("phi3"), "nan");
    poke(&model.join("model.safetensors"), "model.layers.0.self_attn.o_proj.weight", 5, f32::NAN);
    lines.push(dir.command().export(&model, &dir.path().join("o2"), &["cpu-int4"]).error_line());
    for line in &lines {
        assert!(!repeats_a_cause(line), "{line}");
    }
}

/// A tokenizer.json that is JSON but no tokenizer (no `model`, a vocabulary that is not a map):
/// every target that ships the tokenizer refuses it, as the GGUF targets do.
#[test]
fn tokenizers_that_do_not_build_are_refused() {
    let dir = Dir::new("tokenizers_that_do_not_build_are_refused");
    let f = "tokenizer.json";
    let cases: Vec<(Damage, &str)> = vec![
        (
            ("tok-no-model", f, |p| {
                edit_json(p, |t| {
                    t.as_object_mut().unwrap().remove("model");
                })
            }),
            "model",
        ),
        (("tok-vocab", f, |p| edit_json(p, |t| t["model"]["vocab"] = json!(7))), "vocab"),
    ];
    damaged_exports(&dir, "qwen2", &["gguf-f16", "cpu-fp32", "hf-f16"], &cases);
}
