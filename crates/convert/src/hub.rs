//! Downloads from the Hugging Face Hub into the standard cache that Python's `huggingface_hub`
//! also reads (`models--org--name/{blobs,refs,snapshots}`), through the `hf-hub` crate.
//!
//! hf-hub 0.5 reads only `HF_HOME` and `HF_ENDPOINT` (hf-hub `src/lib.rs`, `src/api/sync.rs`);
//! the rest of huggingface_hub's environment (`HF_HUB_CACHE`, `HF_TOKEN`, `HF_TOKEN_PATH`,
//! `HF_HUB_OFFLINE`) is honoured here, with the same precedence as huggingface_hub's
//! `constants.py`. hf-hub also never checks downloaded bytes, so files whose ETag is a sha256
//! (LFS files: all weights) are hashed after download.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use hf_hub::{Repo, RepoType, api::sync::ApiBuilder};
use phiquant_runtime::{INDEX_FILE, SINGLE_FILE, is_pickle_weight_name, is_plain_file_name};
use sha2::{Digest, Sha256};

use crate::Error;

/// The small files a conversion uses beside the weights, fetched when the repository has them.
pub const AUX_FILES: [&str; 8] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "added_tokens.json",
];

/// How to reach the hub and where its cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// The hub cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Access token (`HF_TOKEN`, else the file `HF_TOKEN_PATH` or `$HF_HOME/token`).
    pub token: Option<String>,
    /// Use only the cache (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Show a progress bar per file (drawn only on a terminal).
    pub progress: bool,
}

impl HubOptions {
    /// Options from the process environment.
    pub fn from_env() -> HubOptions {
        HubOptions::from_vars(|k| std::env::var(k).ok())
    }

    /// Options from the variables `var` returns, following huggingface_hub's rules.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> HubOptions {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let hf_home = set("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| set("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            cache.join("huggingface")
        });
        let cache_dir = set("HF_HUB_CACHE")
            .or_else(|| set("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token =
            set("HF_TOKEN").map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).or_else(|| {
                let path = set("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let truthy = |k: &str| {
            set(k).is_some_and(|v| {
                matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
            })
        };
        HubOptions {
            endpoint: set("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "https://huggingface.co".into()),
            cache_dir,
            token,
            offline: truthy("HF_HUB_OFFLINE"),
            progress: true,
        }
    }
}

/// A revision present in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSnapshot {
    /// `snapshots/<commit>` in the cache.
    pub dir: PathBuf,
    /// The commit.
    pub commit: String,
    /// The files used, relative to `dir`.
    pub files: Vec<String>,
}

/// Whether `s` is a hub id `org/name` (the hub's rules: letters, digits, `-`, `_`, `.`; no `--`
/// or `..`; no leading or trailing `-` or `.`; at most 96 characters a part).
pub fn is_repo_id(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
            && !p.contains("--")
            && !p.contains("..")
    };
    matches!(s.split_once('/'), Some((org, name)) if part(org) && part(name) && !name.contains('/'))
}

/// Refuses revisions that could escape the cache's `refs/` folder.
pub fn check_revision(revision: &str) -> Result<(), Error> {
    let refuse = |reason| Err(Error::Revision { revision: revision.to_string(), reason });
    if revision.is_empty() || revision.len() > 255 {
        return refuse("must have 1 to 255 characters");
    }
    if revision.chars().any(|c| c.is_control() || c == '\\' || c == ' ')
        || revision.starts_with('/')
        || revision.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return refuse("is not a branch, tag or commit name");
    }
    Ok(())
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `models--org--name` inside the cache.
pub fn repo_cache_dir(cache_dir: &Path, repo_id: &str) -> PathBuf {
    cache_dir.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// Makes `repo_id@revision` available in the cache and returns its snapshot folder.
pub fn fetch(repo_id: &str, revision: &str, options: &HubOptions) -> Result<HubSnapshot, Error> {
    check_revision(revision)?;
    if options.offline {
        fetch_cached(repo_id, revision, options)
    } else {
        fetch_online(repo_id, revision, options)
    }
}

fn fetch_cached(repo_id: &str, revision: &str, options: &HubOptions) -> Result<HubSnapshot, Error> {
    let repo_dir = repo_cache_dir(&options.cache_dir, repo_id);
    let not_cached = || Error::NotCached {
        repo: repo_id.to_string(),
        revision: revision.to_string(),
        cache: options.cache_dir.clone(),
    };
    let commit = if is_commit_hash(revision) && repo_dir.join("snapshots").join(revision).is_dir() {
        revision.to_string()
    } else {
        let text = std::fs::read_to_string(repo_dir.join("refs").join(revision))
            .map_err(|_| not_cached())?;
        text.trim().to_string()
    };
    if !is_plain_file_name(&commit) {
        return Err(not_cached());
    }
    let dir = repo_dir.join("snapshots").join(&commit);
    if !dir.join("config.json").is_file() {
        return Err(not_cached());
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|source| Error::Io { op: "listing", path: dir.clone(), source })?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    Ok(HubSnapshot { dir, commit, files })
}

struct Fetcher<'a> {
    repo_id: &'a str,
    revision: &'a str,
    options: &'a HubOptions,
    api: hf_hub::api::sync::ApiRepo,
    snapshot: PathBuf,
    commit: String,
}

impl Fetcher<'_> {
    fn api_error(&self, what: String, e: hf_hub::api::sync::ApiError) -> Error {
        let endpoint = self.options.endpoint.clone();
        let (repo, revision) = (self.repo_id.to_string(), self.revision.to_string());
        match e {
            hf_hub::api::sync::ApiError::RequestError(inner) => match *inner {
                ureq::Error::StatusCode(status) => {
                    Error::HubStatus { endpoint, repo, revision, what, status }
                }
                other => {
                    Error::HubTransfer { endpoint, repo, revision, what, detail: other.to_string() }
                }
            },
            other => {
                Error::HubTransfer { endpoint, repo, revision, what, detail: other.to_string() }
            }
        }
    }

    /// Puts `name` in the snapshot folder, downloading it unless the cache already has this
    /// commit's copy.
    fn file(&self, name: &str) -> Result<PathBuf, Error> {
        let target = self.snapshot.join(name);
        if target.is_file() {
            return Ok(target);
        }
        let path = self
            .api
            .download(name)
            .map_err(|e| self.api_error(format!("downloading `{name}`"), e))?;
        let got = path
            .parent()
            .and_then(Path::file_name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        if got != self.commit {
            return Err(Error::RevisionMoved {
                repo: self.repo_id.to_string(),
                revision: self.revision.to_string(),
                expected: self.commit.clone(),
                got,
            });
        }
        verify_blob(&path)?;
        Ok(path)
    }
}

fn fetch_online(repo_id: &str, revision: &str, options: &HubOptions) -> Result<HubSnapshot, Error> {
    let api = ApiBuilder::new()
        .with_endpoint(options.endpoint.clone())
        .with_cache_dir(options.cache_dir.clone())
        .with_token(options.token.clone())
        .with_progress(options.progress)
        .build()
        .map_err(|e| Error::HubTransfer {
            endpoint: options.endpoint.clone(),
            repo: repo_id.to_string(),
            revision: revision.to_string(),
            what: "setting up the client".into(),
            detail: e.to_string(),
        })?;
    let api =
        api.repo(Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string()));
    let mut fetcher = Fetcher {
        repo_id,
        revision,
        options,
        api,
        snapshot: PathBuf::new(),
        commit: String::new(),
    };
    let info = fetcher
        .api
        .info()
        .map_err(|e| fetcher.api_error("reading the repository listing".into(), e))?;
    if !is_plain_file_name(&info.sha) {
        return Err(Error::UnsafeHubFileName { repo: repo_id.to_string(), name: info.sha });
    }
    fetcher.snapshot =
        repo_cache_dir(&options.cache_dir, repo_id).join("snapshots").join(&info.sha);
    fetcher.commit = info.sha.clone();
    let siblings: std::collections::BTreeSet<&str> =
        info.siblings.iter().map(|s| s.rfilename.as_str()).collect();

    if !siblings.contains("config.json") {
        return Err(Error::NoConfig { repo: repo_id.to_string(), revision: revision.to_string() });
    }
    let mut files: Vec<String> =
        AUX_FILES.iter().filter(|f| siblings.contains(**f)).map(|f| f.to_string()).collect();
    for f in &files {
        fetcher.file(f)?;
    }

    if siblings.contains(INDEX_FILE) {
        let index_path = fetcher.file(INDEX_FILE)?;
        files.push(INDEX_FILE.to_string());
        for (shard, tensor) in shards_of(&index_path)? {
            if !is_plain_file_name(&shard) {
                return Err(Error::UnsafeHubFileName { repo: repo_id.to_string(), name: shard });
            }
            if !siblings.contains(shard.as_str()) {
                return Err(phiquant_runtime::Error::MissingShard {
                    path: index_path,
                    shard,
                    tensor,
                }
                .into());
            }
            fetcher.file(&shard)?;
            files.push(shard);
        }
    } else if siblings.contains(SINGLE_FILE) {
        fetcher.file(SINGLE_FILE)?;
        files.push(SINGLE_FILE.to_string());
    } else {
        let pickles: Vec<String> = siblings
            .iter()
            .filter(|f| !f.contains('/') && is_pickle_weight_name(f))
            .map(|f| f.to_string())
            .collect();
        let path = PathBuf::from(format!("{repo_id}@{revision}"));
        if !pickles.is_empty() {
            return Err(phiquant_runtime::Error::PickleOnly { path, files: pickles }.into());
        }
        return Err(phiquant_runtime::Error::NoWeights { path, found: vec![] }.into());
    }
    Ok(HubSnapshot { dir: fetcher.snapshot, commit: info.sha, files })
}

/// The distinct shards an index names, each with one tensor it holds, in name order.
fn shards_of(index_path: &Path) -> Result<Vec<(String, String)>, Error> {
    let text = std::fs::read(index_path).map_err(|source| Error::Io {
        op: "reading",
        path: index_path.into(),
        source,
    })?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_slice(&text)
        .map_err(|source| phiquant_runtime::Error::Json { path: index_path.into(), source })?;
    let mut shards = std::collections::BTreeMap::new();
    for (tensor, shard) in index.weight_map {
        shards.entry(shard).or_insert(tensor);
    }
    Ok(shards.into_iter().collect())
}

/// Checks a freshly downloaded file against its blob name when that is a sha256 (the hub's ETag
/// for LFS files); removes the blob and the snapshot link when they differ.
fn verify_blob(link: &Path) -> Result<(), Error> {
    let blob = std::fs::canonicalize(link).map_err(|source| Error::Io {
        op: "resolving",
        path: link.into(),
        source,
    })?;
    let expected = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let io = |source| Error::Io { op: "hashing", path: blob.clone(), source };
    let mut file = std::fs::File::open(&blob).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = crate::manifest::hex(&hasher.finalize());
    if actual != expected.to_ascii_lowercase() {
        let _ = std::fs::remove_file(&blob);
        let _ = std::fs::remove_file(link);
        return Err(Error::HashMismatch { path: blob, expected, actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn opts(vars: &[(&str, &str)]) -> HubOptions {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubOptions::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn environment_precedence() {
        let o = opts(&[("HOME", "/home/u")]);
        assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, "https://huggingface.co");
        assert!(!o.offline);
        let o = opts(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
        ]);
        assert_eq!(o.cache_dir, PathBuf::from("/hf/hub"));
        assert_eq!(o.endpoint, "http://127.0.0.1:9");
        let o = opts(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/cache"),
            ("HF_TOKEN", " hf_x \n"),
            ("HF_HUB_OFFLINE", "true"),
        ]);
        assert_eq!(o.cache_dir, PathBuf::from("/cache"));
        assert_eq!(o.token.as_deref(), Some("hf_x"));
        assert!(o.offline);
        assert!(!opts(&[("HF_HUB_OFFLINE", "0")]).offline);
    }

    #[test]
    fn token_file_under_hf_home() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let o = opts(&[("HF_HOME", dir.path().to_str().unwrap())]);
        assert_eq!(o.token.as_deref(), Some("hf_file"));
    }

    #[test]
    fn repo_ids_and_revisions() {
        for ok in ["microsoft/Phi-3-mini-4k-instruct", "Qwen/Qwen2.5-0.5B", "a/b", "org_1/x.y"] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in
            ["", "a", "a/", "/b", "a/b/c", "a/..", "a/.b", "a/b-", "a--b/c", "a b/c", "a/b\\c"]
        {
            assert!(!is_repo_id(bad), "{bad}");
        }
        for ok in ["main", "v1.0", "refs/pr/12", "0123456789abcdef0123456789abcdef01234567"] {
            assert!(check_revision(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../x", "a/../b", "/abs", "a//b", "a\\b", "a b"] {
            assert!(check_revision(bad).is_err(), "{bad}");
        }
    }
}
