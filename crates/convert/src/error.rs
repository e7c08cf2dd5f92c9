//! The error type of the conversion crate.

use std::path::PathBuf;

/// What went wrong while finding, fetching or converting a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or checking the model failed.
    #[error(transparent)]
    Runtime(#[from] phiquant_runtime::Error),
    /// `--model` is neither an existing path nor a hub id.
    #[error("--model `{arg}`: {reason}")]
    ModelArg {
        /// The argument given.
        arg: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A revision that cannot be a hub branch, tag or commit.
    #[error("--revision `{revision}`: {reason}")]
    Revision {
        /// The revision given.
        revision: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The hub answered with an HTTP error.
    #[error("hub {endpoint}: {what} for {repo}@{revision}: HTTP {status}{}", status_hint(*status))]
    HubStatus {
        /// The endpoint contacted.
        endpoint: String,
        /// The repository.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// What phiquant was doing.
        what: String,
        /// The HTTP status.
        status: u16,
    },
    /// The hub could not be reached or the transfer failed.
    #[error(
        "hub {endpoint}: {what} for {repo}@{revision}: {detail} (to use files already in the cache, set HF_HUB_OFFLINE=1)"
    )]
    HubTransfer {
        /// The endpoint contacted.
        endpoint: String,
        /// The repository.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// What phiquant was doing.
        what: String,
        /// The client's report.
        detail: String,
    },
    /// The repository lists a file name that could escape the cache folder.
    #[error(
        "hub repository {repo} lists file `{name}`, which is not a safe relative path; refusing to download it"
    )]
    UnsafeHubFileName {
        /// The repository.
        repo: String,
        /// The offending name.
        name: String,
    },
    /// The repository has no config.json.
    #[error(
        "hub repository {repo}@{revision} has no config.json; is it a transformers checkpoint?"
    )]
    NoConfig {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
    },
    /// A downloaded file does not hash to the hub's ETag.
    #[error("{}: downloaded bytes hash to {actual}, the hub announced {expected}; the corrupt file was removed, run again to download it afresh", path.display())]
    HashMismatch {
        /// The blob.
        path: PathBuf,
        /// The ETag.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The repository changed while it was being downloaded.
    #[error(
        "hub repository {repo}@{revision} moved from commit {expected} to {got} during the download; run again"
    )]
    RevisionMoved {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// The commit first resolved.
        expected: String,
        /// The commit a file came from.
        got: String,
    },
    /// Offline mode and the cache lacks the revision.
    #[error("offline (HF_HUB_OFFLINE is set): {repo}@{revision} is not in the cache {} (download it once online first)", cache.display())]
    NotCached {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// The hub cache folder.
        cache: PathBuf,
    },
    /// Quantizing a tensor failed (non-finite weights, a row that fits no block).
    #[error("tensor `{tensor}`: {source}")]
    Quantize {
        /// The checkpoint tensor.
        tensor: String,
        /// What the quantizer reported.
        source: phiquant_quant::Error,
    },
    /// A target phiquant lists but cannot write yet.
    #[error("--target {target}: {reason}")]
    Target {
        /// The target.
        target: String,
        /// Why it cannot be written.
        reason: String,
    },
    /// Calibration data or an AWQ setting that cannot be used.
    #[error("{option}: {reason}")]
    Calibration {
        /// The option (and value, or file) concerned.
        option: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// An AWQ search setting out of its range.
    #[error("AWQ {setting} {value}: {expected}")]
    AwqSetting {
        /// The setting, as [`crate::awq::AwqOptionsBuilder`] names it (`grid`, `refine`,
        /// `loss_tokens`), so that a caller can name its own option for it.
        setting: &'static str,
        /// The value given.
        value: usize,
        /// The range accepted.
        expected: String,
    },
    /// An artefact on disk that cannot be described (no weights, an unreadable graph).
    #[error("{}: {reason}", path.display())]
    Artefact {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `manifest.json` that cannot be read as this phiquant's manifest.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An invariant of phiquant's own code failed (a bug, not bad input).
    #[error("internal error: {0} (please report this as a phiquant bug)")]
    Internal(String),
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What phiquant was doing.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (access denied: set HF_TOKEN to a token that can read this repository)",
        404 => " (no such repository, revision or file)",
        429 => " (rate limited: try again later)",
        _ => "",
    }
}

/// A mapper from an I/O error to [`Error::Io`] naming what was being done and on which path.
pub(crate) fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}
