//! `manifest.json`: what an artefact was made from and of (DESIGN §8 items 9 and 10): the
//! phiquant version, the source (hub repository and resolved commit, every file read with its
//! sha256), every option of the weight scheme spelled out, the calibration, each file written
//! with its size and sha256, AWQ's chosen scales and the verification summary.
//!
//! The manifest holds no time or thread count, so it is as byte-deterministic as the artefact.
//! Its [`ManifestInputs`] decide the artefact's bytes: a run whose planned inputs equal a
//! manifest's, with the files it lists still there at their sizes, can skip that artefact.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Error, ModelKind, Origin, ResolvedModel, error::io};

/// The file name of a folder artefact's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest schema written; a manifest of another version is never trusted for a skip.
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

/// A file and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the artefact (or, for a source, to the model folder).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// Where the model came from and the exact bytes read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// `folder`, `gguf` or `hub`.
    pub kind: String,
    /// Hub repository id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The revision asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The commit it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Every file of the model that an export reads, in name order.
    pub files: Vec<FileRecord>,
}

impl SourceRecord {
    /// Hashes the files of `model` that an export reads: config.json, the safetensors weights
    /// and their index, the tokenizer and generation files; or the GGUF file.
    pub fn of(model: &ResolvedModel) -> Result<SourceRecord, Error> {
        let (kind, files) = match model.kind {
            ModelKind::Gguf => {
                let name = model
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ("gguf", vec![hash_file(&model.dir, name)?])
            }
            ModelKind::Checkpoint => {
                let mut names: Vec<String> = Vec::new();
                let entries = std::fs::read_dir(&model.dir).map_err(io("listing", &model.dir))?;
                for entry in entries {
                    let entry = entry.map_err(io("listing", &model.dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let read = name == "config.json"
                        || name.ends_with(".safetensors")
                        || name == phiquant_runtime::INDEX_FILE
                        || phiquant_runtime::AUX_FILE_NAMES.contains(&name.as_str());
                    if read && entry.path().is_file() {
                        names.push(name);
                    }
                }
                names.sort();
                let files = names
                    .into_iter()
                    .map(|n| hash_file(&model.dir.join(&n), n))
                    .collect::<Result<_, _>>()?;
                ("folder", files)
            }
        };
        let (kind, repo, revision, commit) = match &model.origin {
            Origin::Local { .. } => (kind.to_string(), None, None, None),
            Origin::Hub { repo, revision, commit, .. } => (
                "hub".to_string(),
                Some(repo.clone()),
                Some(revision.clone()),
                Some(commit.clone()),
            ),
        };
        Ok(SourceRecord { kind, repo, revision, commit, files })
    }
}

/// What decides an artefact's bytes (and its verification): equal inputs give equal files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestInputs {
    /// The phiquant version that wrote it.
    pub phiquant_version: String,
    /// The `--target` name.
    pub target: String,
    /// The source model.
    pub source: SourceRecord,
    /// The weight scheme with every option spelled out (format, block size, symmetry, rounding,
    /// accuracy level, scale type, algorithm, mixture).
    pub scheme: Value,
    /// AWQ's calibration and search settings (AWQ targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Value>,
    /// What verification measured and its gates (verified artefacts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_settings: Option<Value>,
}

/// An artefact's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What the artefact was made from.
    #[serde(flatten)]
    pub inputs: ManifestInputs,
    /// Every file of the artefact but the manifest, in path order.
    pub files: Vec<FileRecord>,
    /// AWQ's chosen scales per layer and scale group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awq: Option<Value>,
    /// The verification summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Value>,
}

impl Manifest {
    /// A manifest of `inputs` and the artefact's `files` (put in path order).
    pub fn new(
        inputs: ManifestInputs,
        mut files: Vec<FileRecord>,
        awq: Option<Value>,
        verify: Option<Value>,
    ) -> Manifest {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { schema_version: MANIFEST_SCHEMA_VERSION, inputs, files, awq, verify }
    }

    /// Every file in folder `dir` (recursively, the manifest excluded) with its size and
    /// sha256, under its path relative to `dir`.
    pub fn hash_folder(dir: &Path) -> Result<Vec<FileRecord>, Error> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<(PathBuf, String)>) -> Result<(), Error> {
            for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
                let entry = entry.map_err(io("listing", dir))?;
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                if entry.path().is_dir() {
                    walk(&entry.path(), &format!("{name}/"), out)?;
                } else if name != MANIFEST_FILE {
                    out.push((entry.path(), name));
                }
            }
            Ok(())
        }
        let mut found = Vec::new();
        walk(dir, "", &mut found)?;
        found.sort_by(|a, b| a.1.cmp(&b.1));
        found.into_iter().map(|(path, name)| hash_file(&path, name)).collect()
    }

    /// The manifest as written: pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        text.push('\n');
        text
    }

    /// Writes the manifest to `path`.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.to_json()).map_err(io("writing", path))
    }

    /// Reads the manifest at `path`: `Ok(None)` when there is none, an error when it is not a
    /// manifest of this schema version.
    pub fn read(path: &Path) -> Result<Option<Manifest>, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", path)(e)),
        };
        let bad = |reason: String| Error::Manifest { path: path.to_path_buf(), reason };
        let value: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let version = value.get("schema_version").and_then(Value::as_u64);
        if version != Some(u64::from(MANIFEST_SCHEMA_VERSION)) {
            return Err(bad(format!(
                "schema_version {}, expected {MANIFEST_SCHEMA_VERSION}",
                version.map_or("missing".into(), |v| v.to_string())
            )));
        }
        serde_json::from_value(value).map(Some).map_err(|e| bad(e.to_string()))
    }

    /// Whether the artefact rooted at `root` is this manifest's and still whole: every listed
    /// file is there with its size (sizes, not digests: a re-run does not re-read gigabytes).
    pub fn files_present(&self, root: &Path) -> bool {
        self.files.iter().all(|f| {
            std::fs::metadata(root.join(&f.path)).is_ok_and(|m| m.is_file() && m.len() == f.size)
        })
    }
}

/// The size and sha256 of the file at `path`, recorded as `name`.
pub fn hash_file(path: &Path, name: String) -> Result<FileRecord, Error> {
    let mut file = std::fs::File::open(path).map_err(io("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileRecord { path: name, size, sha256: hex(&hasher.finalize()) })
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lowercase hex sha256 of `data`, as manifests record digests.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Where a manifest goes for an artefact at `artefact`: inside a folder, beside a file
/// (`<file>.manifest.json`).
pub fn manifest_path(artefact: &Path) -> PathBuf {
    if artefact.is_dir() {
        artefact.join(MANIFEST_FILE)
    } else {
        let name = artefact.file_name().map(|n| n.to_string_lossy().into_owned());
        artefact.with_file_name(format!("{}.manifest.json", name.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ManifestInputs {
        ManifestInputs {
            phiquant_version: "0.1.0".into(),
            target: "cpu-int4".into(),
            source: SourceRecord {
                kind: "folder".into(),
                repo: None,
                revision: None,
                commit: None,
                files: vec![],
            },
            scheme: serde_json::json!({"block_size": 32}),
            calibration: None,
            verify_settings: None,
        }
    }

    #[test]
    fn round_trips_and_checks_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.bin"), b"abc").unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), b"").unwrap();
        let files = Manifest::hash_folder(dir.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["b.bin", "sub/a.txt"]);
        let m = Manifest::new(inputs(), files, None, None);
        assert_eq!(
            m.files[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let path = dir.path().join(MANIFEST_FILE);
        m.write(&path).unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), Some(m.clone()));
        assert!(m.files_present(dir.path()));
        std::fs::write(dir.path().join("b.bin"), b"abcd").unwrap();
        assert!(!m.files_present(dir.path()));
        assert_eq!(Manifest::read(&dir.path().join("none.json")).unwrap(), None);
    }

    #[test]
    fn another_schema_version_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        std::fs::write(&path, r#"{"schema_version": 9}"#).unwrap();
        let e = Manifest::read(&path).unwrap_err().to_string();
        assert!(e.contains("manifest.json") && e.contains("schema_version 9"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(Manifest::read(&path).unwrap_err().to_string().contains("not JSON"));
    }
}
