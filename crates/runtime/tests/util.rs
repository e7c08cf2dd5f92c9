//! Locations of the repository's fixtures and the shared models.

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A path written in a golden manifest (`fixtures/...` or `shared/...`), or `None` with a note
/// when `../shared` is absent outside CI (under `CI=true` absence fails).
pub fn source_dir(source: &str) -> Option<PathBuf> {
    let path = match source.strip_prefix("shared/") {
        Some(rest) => root().join("../shared").join(rest),
        None => root().join(source),
    };
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing, and CI=true requires it", path.display());
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {} is not present", path.display());
    None
}
