//! Hub downloads against a local server that speaks the Hub's routes, and offline runs from the
//! cache it leaves.

use std::path::PathBuf;

use serde_json::Value;

use crate::{
    hub_server::{HubRepo, HubServer},
    util::{Dir, edit_json, fixture},
};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "test-org/tiny-llama";

/// A repository folder made from fixture `name`, plus files a conversion must not fetch.
fn repo_folder(dir: &Dir, name: &str) -> PathBuf {
    let repo = dir.copy_model(&fixture(name), &format!("served-{name}"));
    std::fs::write(repo.join("README.md"), "# model card\n").unwrap();
    std::fs::write(repo.join("pytorch_model.bin"), b"pickle bytes that must never be fetched")
        .unwrap();
    std::fs::create_dir_all(repo.join("onnx")).unwrap();
    std::fs::write(repo.join("onnx/model.onnx"), b"not needed").unwrap();
    repo
}

fn serve(id: &str, dir: PathBuf) -> HubServer {
    HubServer::start(vec![HubRepo { id: id.into(), dir, commit: COMMIT.into() }]).unwrap()
}

fn inspect_json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad JSON {e}: {out}"))
}

fn cache(dir: &Dir) -> PathBuf {
    dir.path().join("hf-home/hub")
}

fn fetched(server: &HubServer) -> Vec<String> {
    server.requests().into_iter().filter(|r| r.contains("/resolve/")).collect()
}

pqtest!(download_then_offline, |dir, cmd| {
    let server = serve(REPO, repo_folder(&dir, "llama"));
    let out = cmd.args(["inspect", REPO, "--json"]).env("HF_ENDPOINT", server.endpoint()).stdout();
    let v = inspect_json(&out);
    assert_eq!(v["architecture"], "LlamaForCausalLM");
    assert_eq!(v["parameters"], 111_936);
    assert_eq!(v["source"]["kind"], "hub");
    assert_eq!(v["source"]["repo"], REPO);
    assert_eq!(v["source"]["revision"], "main");
    assert_eq!(v["source"]["commit"], COMMIT);

    // Only the files a conversion needs were fetched.
    let got = fetched(&server);
    for wanted in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        assert!(
            got.iter().any(|r| r.ends_with(&format!("/{wanted}"))),
            "{wanted} not fetched: {got:?}"
        );
    }
    for unwanted in ["pytorch_model.bin", "README.md", "onnx/model.onnx"] {
        assert!(!got.iter().any(|r| r.ends_with(unwanted)), "{unwanted} fetched: {got:?}");
    }

    // The standard cache layout that Python's huggingface_hub reads.
    let repo_dir = cache(&dir).join("models--test-org--tiny-llama");
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap().trim(), COMMIT);
    let snapshot = repo_dir.join("snapshots").join(COMMIT);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let link = snapshot.join(f);
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink(), "{f} is not a link");
        let blob = std::fs::canonicalize(&link).unwrap();
        assert_eq!(blob.parent().unwrap(), std::fs::canonicalize(repo_dir.join("blobs")).unwrap());
        assert_eq!(std::fs::read(&blob).unwrap(), std::fs::read(fixture("llama").join(f)).unwrap());
    }

    // A second online run uses the cached snapshot: only the listing is asked for.
    let before = server.requests().len();
    dir.command().args(["inspect", REPO, "--json"]).env("HF_ENDPOINT", server.endpoint()).stdout();
    let again: Vec<String> = server.requests()[before..].to_vec();
    assert_eq!(again, vec![format!("GET /api/models/{REPO}/revision/main")]);

    // Offline, with the server gone.
    let endpoint = server.endpoint();
    drop(server);
    let out = dir
        .command()
        .args(["inspect", REPO, "--json"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", &endpoint)
        .stdout();
    let v = inspect_json(&out);
    assert_eq!(v["source"]["commit"], COMMIT);
    assert_eq!(v["parameters"], 111_936);
    // The commit itself is also a revision the cache can serve offline.
    dir.command().args(["inspect", REPO, "--revision", COMMIT]).env("HF_HUB_OFFLINE", "1").stdout();
});

pqtest!(sharded_repository, |dir, cmd| {
    let server = serve("test-org/tiny-mistral", repo_folder(&dir, "mistral"));
    let v = inspect_json(
        &cmd.args(["inspect", "test-org/tiny-mistral", "--json"])
            .env("HF_ENDPOINT", server.endpoint())
            .stdout(),
    );
    assert_eq!(v["architecture"], "MistralForCausalLM");
    assert_eq!(v["files"].as_array().unwrap().len(), 2);
    let got = fetched(&server);
    for f in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(got.iter().any(|r| r.ends_with(f)), "{f} not fetched: {got:?}");
    }
});

pqtest!(revision_by_commit, |dir, cmd| {
    let server = serve(REPO, repo_folder(&dir, "qwen2"));
    let v = inspect_json(
        &cmd.args(["inspect", REPO, "--revision", COMMIT, "--json"])
            .env("HF_ENDPOINT", server.endpoint())
            .stdout(),
    );
    assert_eq!(v["source"]["revision"], COMMIT);
    assert_eq!(v["source"]["commit"], COMMIT);
    assert!(fetched(&server).iter().all(|r| r.contains(&format!("/resolve/{COMMIT}/"))));
});

pqtest!(token_from_environment_and_file, |dir, cmd| {
    let server = serve(REPO, repo_folder(&dir, "llama")).require_token("hf_secret");
    let line = cmd.args(["inspect", REPO]).env("HF_ENDPOINT", server.endpoint()).error_line();
    assert!(
        line.contains("reading the repository listing for test-org/tiny-llama@main: HTTP 401"),
        "{line}"
    );
    assert!(line.contains("set HF_TOKEN"), "{line}");
    dir.command()
        .args(["inspect", REPO])
        .env("HF_ENDPOINT", server.endpoint())
        .env("HF_TOKEN", "hf_secret")
        .stdout();

    // The token file huggingface_hub writes on login, in a fresh HF_HOME.
    let home = dir.path().join("other-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), "hf_secret\n").unwrap();
    dir.command()
        .args(["inspect", REPO])
        .env("HF_ENDPOINT", server.endpoint())
        .env("HF_HOME", &home)
        .stdout();
    assert!(home.join("hub/models--test-org--tiny-llama/refs/main").is_file());
});

pqtest!(hub_cache_variable, |dir, cmd| {
    let server = serve(REPO, repo_folder(&dir, "llama"));
    let custom = dir.path().join("custom-cache");
    cmd.args(["inspect", REPO])
        .env("HF_ENDPOINT", server.endpoint())
        .env("HF_HUB_CACHE", &custom)
        .stdout();
    assert!(custom.join("models--test-org--tiny-llama/refs/main").is_file());
    assert!(!cache(&dir).exists());
});

pqtest!(pickle_only_repository_is_refused_before_download, |dir, cmd| {
    let repo = repo_folder(&dir, "llama");
    std::fs::remove_file(repo.join("model.safetensors")).unwrap();
    let server = serve(REPO, repo);
    let line = cmd.args(["inspect", REPO]).env("HF_ENDPOINT", server.endpoint()).error_line();
    assert!(
        line.contains(
            "test-org/tiny-llama@main: only PyTorch pickle weights found (pytorch_model.bin)"
        ),
        "{line}"
    );
    assert!(line.contains("arbitrary code"), "{line}");
    assert!(!fetched(&server).iter().any(|r| r.ends_with("pytorch_model.bin")));
});

pqtest!(unsafe_shard_name_on_the_hub, |dir, cmd| {
    let repo = repo_folder(&dir, "mistral");
    edit_json(&repo.join("model.safetensors.index.json"), |i| {
        i["weight_map"]["model.norm.weight"] = serde_json::json!("../../../outside.safetensors");
    });
    let server = serve(REPO, repo);
    let line = cmd.args(["inspect", REPO]).env("HF_ENDPOINT", server.endpoint()).error_line();
    assert!(
        line.contains(
            "lists file `../../../outside.safetensors`, which is not a safe relative path"
        ),
        "{line}"
    );
    assert!(!dir.path().join("hf-home/outside.safetensors").exists());
});

pqtest!(unknown_repository_and_offline_miss, |dir, cmd| {
    let server = serve(REPO, repo_folder(&dir, "llama"));
    let line =
        cmd.args(["inspect", "test-org/absent"]).env("HF_ENDPOINT", server.endpoint()).error_line();
    assert!(
        line.contains("test-org/absent@main: HTTP 404 (no such repository, revision or file)"),
        "{line}"
    );
    let line = dir.command().args(["inspect", REPO]).env("HF_HUB_OFFLINE", "1").error_line();
    assert!(
        line.contains(
            "offline (HF_HUB_OFFLINE is set): test-org/tiny-llama@main is not in the cache"
        ),
        "{line}"
    );
});

pqtest!(unreachable_hub, |dir, cmd| {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let line = cmd
        .args(["inspect", REPO])
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .error_line();
    assert!(line.contains("reading the repository listing for test-org/tiny-llama@main"), "{line}");
    assert!(line.contains("set HF_HUB_OFFLINE=1"), "{line}");
    let _ = dir;
});
