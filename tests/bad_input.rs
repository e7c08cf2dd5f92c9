//! Bad input: each case exits 2 with one line naming the file and the tensor or field, and
//! never panics.

use serde_json::json;

use crate::util::{Dir, edit_json, edit_safetensors_header, fixture, offsets};

/// Copies fixture `name`, lets `damage` break it, runs `phiquant inspect` on it and returns the
/// one-line error.
fn broken(dir: &Dir, name: &str, damage: impl FnOnce(&std::path::Path)) -> String {
    let model = dir.copy_model(&fixture(name), name);
    damage(&model);
    dir.command().arg("inspect").arg(&model).error_line()
}

fn assert_has(line: &str, parts: &[&str]) {
    for p in parts {
        assert!(line.contains(p), "{line:?} does not contain {p:?}");
    }
}

pqtest!(truncated_safetensors, |dir, cmd| {
    let line = broken(&dir, "phi3", |m| {
        let f = m.join("model.safetensors");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert_has(
        &line,
        &["model.safetensors: tensor `", "data_offsets end at byte", "(truncated file?)"],
    );
    let _ = cmd;
});

pqtest!(header_length_beyond_file, |dir, cmd| {
    let line = broken(&dir, "phi3", |m| {
        let f = m.join("model.safetensors");
        let mut bytes = std::fs::read(&f).unwrap();
        let len = bytes.len() as u64;
        bytes[..8].copy_from_slice(&len.to_le_bytes());
        std::fs::write(&f, bytes).unwrap();
    });
    assert_has(
        &line,
        &["model.safetensors: the safetensors header needs", "only", "remain (truncated file?)"],
    );
    let _ = cmd;
});

pqtest!(file_shorter_than_its_length_prefix, |dir, cmd| {
    let line =
        broken(&dir, "llama", |m| std::fs::write(m.join("model.safetensors"), [0u8; 5]).unwrap());
    assert_has(
        &line,
        &["model.safetensors: the safetensors length prefix needs 8 bytes, only 5 remain"],
    );
    let _ = cmd;
});

pqtest!(header_not_json, |dir, cmd| {
    let line = broken(&dir, "llama", |m| {
        let f = m.join("model.safetensors");
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[8] = b'{';
        bytes[9] = b'!';
        std::fs::write(&f, bytes).unwrap();
    });
    assert_has(&line, &["model.safetensors: invalid safetensors header: not a JSON object"]);
    let _ = cmd;
});

pqtest!(overlapping_offsets, |dir, cmd| {
    let line = broken(&dir, "phi3", |m| {
        edit_safetensors_header(&m.join("model.safetensors"), |h| {
            // model.embed_tokens.weight follows lm_head.weight in name order: make it start
            // inside lm_head's bytes.
            let (b, e) = offsets(h, "model.embed_tokens.weight");
            h["model.embed_tokens.weight"]["data_offsets"] = json!([b - 8, e - 8]);
        })
    });
    assert_has(
        &line,
        &[
            "model.safetensors: tensor `model.embed_tokens.weight`",
            "overlap tensor `lm_head.weight`",
        ],
    );
    let _ = cmd;
});

pqtest!(out_of_range_offsets, |dir, cmd| {
    let line = broken(&dir, "phi3", |m| {
        edit_safetensors_header(&m.join("model.safetensors"), |h| {
            let (b, e) = offsets(h, "model.norm.weight");
            h["model.norm.weight"]["data_offsets"] = json!([b + 1000, e + 1000]);
        })
    });
    assert_has(
        &line,
        &["tensor `model.norm.weight`: data_offsets end at byte", "but the data section has only"],
    );
    let _ = cmd;
});

pqtest!(offsets_disagree_with_shape, |dir, cmd| {
    let line = broken(&dir, "phi3", |m| {
        edit_safetensors_header(&m.join("model.safetensors"), |h| {
            h["model.norm.weight"]["shape"] = json!([65]);
        })
    });
    assert_has(
        &line,
        &[
            "tensor `model.norm.weight`: shape [65] of F32 needs 260 bytes but its data_offsets span 256",
        ],
    );
    let _ = cmd;
});

pqtest!(dtype_disagrees, |dir, cmd| {
    let line = broken(&dir, "phi3", |m| {
        edit_safetensors_header(&m.join("model.safetensors"), |h| {
            h["model.layers.0.self_attn.o_proj.weight"]["dtype"] = json!("I32");
        })
    });
    assert_has(
        &line,
        &[
            "model.safetensors: tensor `model.layers.0.self_attn.o_proj.weight`: dtype I32 is not supported (expected F32, F16 or BF16)",
        ],
    );
    let _ = cmd;
});

pqtest!(shape_disagrees_with_config, |dir, cmd| {
    let line = broken(&dir, "phi3", |m| {
        edit_json(&m.join("config.json"), |c| c["intermediate_size"] = json!(100))
    });
    assert_has(
        &line,
        &[
            "model.safetensors: tensor `model.layers.0.mlp.gate_up_proj.weight`: shape [192, 64] does not match [200, 64] implied by config.json",
        ],
    );
    let _ = cmd;
});

pqtest!(missing_tensor, |dir, cmd| {
    let line = broken(&dir, "qwen2", |m| {
        edit_safetensors_header(&m.join("model.safetensors"), |h| {
            let v = h.remove("model.layers.1.self_attn.k_proj.bias").unwrap();
            h.insert("model.layers.1.self_attn.k_proj.bias_renamed".into(), v);
        })
    });
    assert_has(
        &line,
        &[
            "model.safetensors: tensor `model.layers.1.self_attn.k_proj.bias`: missing (config.json implies it)",
        ],
    );
    let _ = cmd;
});

pqtest!(tensor_beyond_the_configured_layers, |dir, cmd| {
    let line = broken(&dir, "llama", |m| {
        edit_json(&m.join("config.json"), |c| c["num_hidden_layers"] = json!(1))
    });
    assert_has(
        &line,
        &["tensor `model.layers.1.", "not part of a LlamaForCausalLM model with 1 layers"],
    );
    let _ = cmd;
});

pqtest!(missing_shard, |dir, cmd| {
    let line = broken(&dir, "mistral", |m| {
        std::fs::remove_file(m.join("model-00002-of-00002.safetensors")).unwrap()
    });
    assert_has(
        &line,
        &[
            "model.safetensors.index.json: shard `model-00002-of-00002.safetensors` (holding `",
            "does not exist",
        ],
    );
    let _ = cmd;
});

pqtest!(index_names_a_path_outside_the_folder, |dir, cmd| {
    let line = broken(&dir, "mistral", |m| {
        edit_json(&m.join("model.safetensors.index.json"), |i| {
            i["weight_map"]["model.norm.weight"] = json!("../../etc/passwd");
        })
    });
    assert_has(
        &line,
        &[
            "model.safetensors.index.json: file name `../../etc/passwd` is not a plain relative path",
        ],
    );
    let _ = cmd;
});

pqtest!(index_and_shard_disagree, |dir, cmd| {
    let line = broken(&dir, "mistral", |m| {
        edit_json(&m.join("model.safetensors.index.json"), |i| {
            i["weight_map"]["model.norm.weight"] = json!("model-00001-of-00002.safetensors");
        })
    });
    assert_has(
        &line,
        &[
            "model-00001-of-00002.safetensors: tensor `model.norm.weight`: listed in the index for this shard, but the shard does not hold it",
        ],
    );
    let _ = cmd;
});

pqtest!(unknown_architecture, |dir, cmd| {
    let line = broken(&dir, "llama", |m| {
        edit_json(&m.join("config.json"), |c| c["architectures"] = json!(["GPTNeoXForCausalLM"]))
    });
    assert_has(
        &line,
        &["config.json: unknown architecture `GPTNeoXForCausalLM`", "Phi3ForCausalLM"],
    );
    let _ = cmd;
});

pqtest!(malformed_config, |dir, cmd| {
    let line = broken(&dir, "llama", |m| {
        let f = m.join("config.json");
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, &text[..text.len() / 2]).unwrap();
    });
    assert_has(&line, &["config.json: malformed JSON: EOF while parsing", "line"]);
    let _ = cmd;
});

pqtest!(config_with_impossible_values, |dir, cmd| {
    let line = broken(&dir, "llama", |m| {
        edit_json(&m.join("config.json"), |c| c["num_attention_heads"] = json!(0))
    });
    assert_has(
        &line,
        &["config.json: `num_attention_heads` is 0, expected an integer from 1 to 4096"],
    );
    let line = broken(&dir, "phi4-mini", |m| {
        edit_json(&m.join("config.json"), |c| c["rope_scaling"]["long_factor"] = json!([1.0, 2.0]))
    });
    assert_has(
        &line,
        &[
            "config.json: `rope_scaling.long_factor` is [1.0,2.0], expected a list of 6 positive numbers (rotary_dim / 2)",
        ],
    );
    let _ = cmd;
});

pqtest!(missing_config, |dir, cmd| {
    let line = broken(&dir, "llama", |m| std::fs::remove_file(m.join("config.json")).unwrap());
    assert_has(&line, &["opening ", "config.json: No such file or directory"]);
    let _ = cmd;
});

pqtest!(malformed_tokenizer, |dir, cmd| {
    let line = broken(&dir, "qwen2", |m| {
        std::fs::write(m.join("tokenizer.json"), "{\"model\": [").unwrap()
    });
    assert_has(&line, &["tokenizer.json: malformed JSON"]);
    let _ = cmd;
});

pqtest!(pickle_checkpoints_are_refused, |dir, cmd| {
    let model = dir.path().join("pickled");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(fixture("llama").join("config.json"), model.join("config.json")).unwrap();
    std::fs::write(model.join("pytorch_model.bin"), b"PK\x03\x04 not really").unwrap();
    let line = cmd.arg("inspect").arg(&model).error_line();
    assert_has(
        &line,
        &["only PyTorch pickle weights found (pytorch_model.bin)", "arbitrary code", "safetensors"],
    );
    let line = dir.command().arg("inspect").arg(model.join("pytorch_model.bin")).error_line();
    assert_has(&line, &["pytorch_model.bin", "arbitrary code"]);
});

pqtest!(shards_without_index, |dir, cmd| {
    let line = broken(&dir, "mistral", |m| {
        std::fs::remove_file(m.join("model.safetensors.index.json")).unwrap()
    });
    assert_has(
        &line,
        &[
            "no model.safetensors or model.safetensors.index.json found (found model-00001-of-00002.safetensors, model-00002-of-00002.safetensors without an index)",
        ],
    );
    let _ = cmd;
});

pqtest!(bad_model_arguments, |dir, cmd| {
    let line = cmd.args(["inspect", "./no/such/folder"]).error_line();
    assert_has(
        &line,
        &[
            "--model `./no/such/folder`: no such file or folder, and not a hub id of the form `org/name`",
        ],
    );
    let line = dir.command().args(["inspect", "org/name", "--revision", "../../x"]).error_line();
    assert_has(&line, &["--revision `../../x`: is not a branch, tag or commit name"]);
    let line =
        dir.command().arg("inspect").arg(fixture("llama")).args(["--revision", "v1"]).error_line();
    assert_has(&line, &["is a local path; --revision applies only to hub ids"]);
    let line = dir.command().args(["inspect", "--no-such-flag"]).error_line();
    assert!(line.contains("unexpected argument '--no-such-flag' found"), "{line}");
    let line = dir.command().args(["inspect"]).error_line();
    assert!(line.contains("required arguments were not provided: <MODEL>"), "{line}");
});
