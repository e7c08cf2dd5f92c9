//! Where a model comes from: a local checkpoint folder, a local GGUF file, or a Hugging Face Hub
//! repository.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, HubOptions, hub};

/// A `--model` argument, checked but not yet fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder on disk.
    Local(PathBuf),
    /// A GGUF file on disk (weights, model description and tokenizer in one file).
    Gguf(PathBuf),
    /// A hub repository at a revision (branch, tag or commit).
    Hub {
        /// `org/name`.
        repo_id: String,
        /// Branch, tag or commit; `main` by default.
        revision: String,
    },
}

/// Where a resolved model came from, recorded for manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A local folder.
    Local {
        /// The folder as given.
        path: PathBuf,
    },
    /// A hub repository.
    Hub {
        /// `org/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The commit it resolved to.
        commit: String,
        /// The endpoint it came from.
        endpoint: String,
    },
}

/// What a resolved model's path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A Hugging Face checkpoint folder: config.json, safetensors weights, tokenizer files.
    Checkpoint,
    /// One GGUF file.
    Gguf,
}

/// A model available locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The folder holding config.json, weights and tokenizer files; for a GGUF model
    /// ([`ModelKind::Gguf`]), the GGUF file itself.
    pub dir: PathBuf,
    /// Whether `dir` is a checkpoint folder or a GGUF file.
    pub kind: ModelKind,
    /// Where it came from.
    pub origin: Origin,
}

/// Whether `path` is a GGUF file: a file named `*.gguf` (any case), or any file that starts with
/// the GGUF magic.
pub fn is_gguf_file(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| magic == phiquant_runtime::gguf::GGUF_MAGIC)
}

impl ModelSource {
    /// Interprets `--model` (and `--revision`): an existing folder is a local checkpoint, an
    /// existing GGUF file a GGUF model; otherwise `org/name` is a hub id.
    pub fn parse(arg: &str, revision: Option<&str>) -> Result<ModelSource, Error> {
        let refuse =
            |reason: &str| Error::ModelArg { arg: arg.to_string(), reason: reason.to_string() };
        let path = Path::new(arg);
        if path.exists() {
            if revision.is_some() {
                return Err(refuse("is a local path; --revision applies only to hub ids"));
            }
            if path.is_file() {
                let name =
                    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if phiquant_runtime::is_pickle_weight_name(&name) {
                    return Err(phiquant_runtime::Error::PickleOnly {
                        path: path.to_path_buf(),
                        files: vec![name],
                    }
                    .into());
                }
                if is_gguf_file(path) {
                    return Ok(ModelSource::Gguf(path.to_path_buf()));
                }
                return Err(refuse(
                    "is a file but not a GGUF file; pass a GGUF file or the checkpoint folder that \
                     holds config.json and the safetensors weights",
                ));
            }
            return Ok(ModelSource::Local(path.to_path_buf()));
        }
        if !hub::is_repo_id(arg) {
            return Err(refuse("no such file or folder, and not a hub id of the form `org/name`"));
        }
        let revision = revision.unwrap_or("main");
        hub::check_revision(revision)?;
        Ok(ModelSource::Hub { repo_id: arg.to_string(), revision: revision.to_string() })
    }

    /// Makes the model available locally: a folder as it is, a hub repository through the cache
    /// (downloading only the files a conversion needs, unless `options.offline`).
    pub fn resolve(&self, options: &HubOptions) -> Result<ResolvedModel, Error> {
        match self {
            ModelSource::Local(path) => Ok(ResolvedModel {
                dir: path.clone(),
                kind: ModelKind::Checkpoint,
                origin: Origin::Local { path: path.clone() },
            }),
            ModelSource::Gguf(path) => Ok(ResolvedModel {
                dir: path.clone(),
                kind: ModelKind::Gguf,
                origin: Origin::Local { path: path.clone() },
            }),
            ModelSource::Hub { repo_id, revision } => {
                let snap = hub::fetch(repo_id, revision, options)?;
                Ok(ResolvedModel {
                    dir: snap.dir,
                    kind: ModelKind::Checkpoint,
                    origin: Origin::Hub {
                        repo: repo_id.clone(),
                        revision: revision.clone(),
                        commit: snap.commit,
                        endpoint: options.endpoint.clone(),
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(ModelSource::parse(d, None).unwrap(), ModelSource::Local(dir.path().into()));
        assert!(
            ModelSource::parse(d, Some("main"))
                .unwrap_err()
                .to_string()
                .contains("--revision applies only")
        );
        assert_eq!(
            ModelSource::parse("microsoft/Phi-3-mini-4k-instruct", None).unwrap(),
            ModelSource::Hub {
                repo_id: "microsoft/Phi-3-mini-4k-instruct".into(),
                revision: "main".into()
            }
        );
        assert!(matches!(
            ModelSource::parse("microsoft/phi-4-mini", Some("refs/pr/3")).unwrap(),
            ModelSource::Hub { revision, .. } if revision == "refs/pr/3"
        ));
        for bad in ["nope", "a/b/c", "../x/y", "org/..", "org/-bad"] {
            let msg = ModelSource::parse(bad, None).unwrap_err().to_string();
            assert!(msg.contains("not a hub id"), "{bad}: {msg}");
        }
        assert!(ModelSource::parse("org/name", Some("../../etc")).is_err());

        let bin = dir.path().join("pytorch_model.bin");
        std::fs::write(&bin, b"x").unwrap();
        let msg = ModelSource::parse(bin.to_str().unwrap(), None).unwrap_err().to_string();
        assert!(msg.contains("arbitrary code"), "{msg}");

        // GGUF files by name or by magic; other files are refused.
        let named = dir.path().join("m.GGUF");
        std::fs::write(&named, b"x").unwrap();
        assert_eq!(
            ModelSource::parse(named.to_str().unwrap(), None).unwrap(),
            ModelSource::Gguf(named)
        );
        let sniffed = dir.path().join("model.bin.part");
        std::fs::write(&sniffed, b"GGUF\x03\0\0\0").unwrap();
        assert!(matches!(
            ModelSource::parse(sniffed.to_str().unwrap(), None).unwrap(),
            ModelSource::Gguf(_)
        ));
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"hello").unwrap();
        let msg = ModelSource::parse(other.to_str().unwrap(), None).unwrap_err().to_string();
        assert!(msg.contains("is a file but not a GGUF file"), "{msg}");
    }
}
