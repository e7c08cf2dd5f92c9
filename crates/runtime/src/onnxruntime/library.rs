//! Finding ONNX Runtime's shared library.
//!
//! phiquant loads ONNX Runtime at run time from the library that the PyPI `onnxruntime` (or
//! `onnxruntime-gpu`) wheel installs, `site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1`.
//! The wheel ships only that versioned file name, and the `ort` crate panics when it has to find
//! the library by itself, so phiquant resolves the full path first, in this order:
//!
//! 1. `ORT_DYLIB_PATH`, when set: the library file itself (an error if it is not a file);
//! 2. `PHIQUANT_VENV`, when set: a Python venv holding the wheel (an error if it does not);
//! 3. `.venv` in the current directory or one of its parents;
//! 4. `.venv` in the executable's directory or one of its parents (`target/release/phiquant`
//!    finds the checkout's `.venv`);
//! 5. `.venv` at the root of the source tree phiquant was built from.
//!
//! The first hit wins. `scripts/setup.sh` creates `.venv` at the root of the checkout.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{Error, OrtLibraryProblem};

/// The variable naming the library file, as the `ort` crate and ONNX Runtime's docs spell it.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The variable naming a Python venv that holds the `onnxruntime` wheel.
pub const PHIQUANT_VENV: &str = "PHIQUANT_VENV";

/// The library's file name, for messages.
#[cfg(target_os = "windows")]
pub const LIBRARY_EXAMPLE: &str = "onnxruntime.dll";
/// The library's file name, for messages.
#[cfg(target_os = "macos")]
pub const LIBRARY_EXAMPLE: &str = "libonnxruntime.1.31.1.dylib";
/// The library's file name, for messages.
#[cfg(not(any(target_os = "windows", target_os = "macos")))]
pub const LIBRARY_EXAMPLE: &str = "libonnxruntime.so.1.31.1";

/// Where the library sits in the project venv, for messages.
#[cfg(target_os = "windows")]
pub const VENV_LIBRARY_PATTERN: &str = r".venv\Lib\site-packages\onnxruntime\capi\onnxruntime.dll";
/// Where the library sits in the project venv, for messages.
#[cfg(target_os = "macos")]
pub const VENV_LIBRARY_PATTERN: &str =
    ".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.1.31.1.dylib";
/// Where the library sits in the project venv, for messages.
#[cfg(not(any(target_os = "windows", target_os = "macos")))]
pub const VENV_LIBRARY_PATTERN: &str =
    ".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1";

/// The most entries read from one directory while searching, so that a huge folder cannot stall
/// the search.
const MAX_DIR_ENTRIES: usize = 4096;

/// Where to look for the library: the environment's answers, gathered first so that the search
/// itself is a pure function of them (and testable).
#[derive(Debug, Clone, Default)]
pub(crate) struct LibrarySearch {
    /// `ORT_DYLIB_PATH`.
    pub(crate) dylib_path: Option<PathBuf>,
    /// `PHIQUANT_VENV`.
    pub(crate) venv: Option<PathBuf>,
    /// Folders whose `.venv`, or whose parents' `.venv`, may hold the wheel, in order.
    pub(crate) roots: Vec<PathBuf>,
}

impl LibrarySearch {
    /// The search this process would run: its environment, current directory and executable.
    pub(crate) fn from_env() -> LibrarySearch {
        let var = |name| std::env::var_os(name).filter(|v: &OsString| !v.is_empty());
        let mut roots = Vec::new();
        roots.extend(std::env::current_dir().ok());
        roots.extend(
            std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)),
        );
        // The checkout this binary was built from: the runtime crate sits in `crates/runtime`.
        roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
        LibrarySearch {
            dylib_path: var(ORT_DYLIB_PATH).map(PathBuf::from),
            venv: var(PHIQUANT_VENV).map(PathBuf::from),
            roots,
        }
    }

    /// The library's path, or why there is none.
    pub(crate) fn find(&self) -> Result<PathBuf, Error> {
        let problem = |var, path: &Path, what| {
            Error::OrtLibrary(OrtLibraryProblem::BadVariable {
                var,
                path: path.to_path_buf(),
                what,
            })
        };
        if let Some(path) = &self.dylib_path {
            if !path.is_file() {
                return Err(problem(ORT_DYLIB_PATH, path, "is not a file"));
            }
            return Ok(absolute(path));
        }
        if let Some(venv) = &self.venv {
            return library_in_venv(venv).ok_or_else(|| {
                problem(PHIQUANT_VENV, venv, "is not a venv with the onnxruntime package")
            });
        }
        for root in &self.roots {
            for dir in absolute(root).ancestors() {
                if let Some(lib) = library_in_venv(&dir.join(".venv")) {
                    return Ok(lib);
                }
            }
        }
        Err(Error::OrtLibrary(OrtLibraryProblem::NotFound {
            searched: self.roots.iter().map(|r| absolute(r)).collect(),
        }))
    }
}

/// ONNX Runtime's shared library (`libonnxruntime.so.1.31.1` from the PyPI `onnxruntime` or
/// `onnxruntime-gpu` wheel), looked for in this order, the first hit winning:
///
/// 1. `ORT_DYLIB_PATH`, when set: the library file itself (an error if it is not a file);
/// 2. `PHIQUANT_VENV`, when set: a Python venv holding the wheel (an error if it does not);
/// 3. `.venv` in the current directory or one of its parents;
/// 4. `.venv` in the executable's directory or one of its parents;
/// 5. `.venv` at the root of the source tree phiquant was built from.
///
/// Inside a venv the library is `lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*`
/// (`Lib/site-packages/...` on Windows); with several, the highest version.
pub fn find_ort_library() -> Result<PathBuf, Error> {
    LibrarySearch::from_env().find()
}

/// `path` made absolute (against the current directory) and without `..` steps where the file
/// system can resolve them.
fn absolute(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The ONNX Runtime library inside the venv at `venv`: the highest version among the
/// `onnxruntime/capi` folders of its `site-packages` (`lib/python3*/` on Unix, `Lib/` on
/// Windows).
pub(crate) fn library_in_venv(venv: &Path) -> Option<PathBuf> {
    let mut site_packages = vec![venv.join("Lib/site-packages")];
    for lib in ["lib", "lib64"] {
        for entry in read_dir_names(&venv.join(lib)) {
            if entry.starts_with("python3") {
                site_packages.push(venv.join(lib).join(entry).join("site-packages"));
            }
        }
    }
    site_packages
        .iter()
        .flat_map(|sp| {
            let capi = sp.join("onnxruntime/capi");
            read_dir_names(&capi)
                .into_iter()
                .filter_map(|name| library_version(&name).map(|v| (v, name)))
                .map(move |(v, name)| (v, capi.join(name)))
        })
        .filter(|(_, path)| path.is_file())
        .max()
        .map(|(_, path)| absolute(&path))
}

/// The names in `dir` (none when it cannot be read), at most [`MAX_DIR_ENTRIES`].
fn read_dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.take(MAX_DIR_ENTRIES).filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
}

/// The version numbers in the file name of an ONNX Runtime library for this platform
/// (`libonnxruntime.so.1.31.1` on Linux, `libonnxruntime.1.31.1.dylib` on macOS,
/// `onnxruntime.dll` on Windows; an unversioned name has no numbers), or `None` for any other
/// file (`libonnxruntime_providers_shared.so` among them).
fn library_version(name: &str) -> Option<Vec<u32>> {
    let version = if cfg!(target_os = "windows") {
        (name.eq_ignore_ascii_case("onnxruntime.dll")).then_some("")?
    } else if cfg!(target_os = "macos") {
        let stem = name.strip_prefix("libonnxruntime")?.strip_suffix(".dylib")?;
        if stem.is_empty() { stem } else { stem.strip_prefix('.')? }
    } else {
        let rest = name.strip_prefix("libonnxruntime.so")?;
        if rest.is_empty() { rest } else { rest.strip_prefix('.')? }
    };
    if version.is_empty() {
        return Some(Vec::new());
    }
    version.split('.').map(|part| part.parse::<u32>().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake venv under `root` with an ONNX Runtime "library" of `version` for this platform.
    fn fake_venv(root: &Path, version: &str) -> PathBuf {
        let venv = root.join(".venv");
        let (capi, name) = if cfg!(target_os = "windows") {
            (venv.join("Lib/site-packages/onnxruntime/capi"), "onnxruntime.dll".to_string())
        } else {
            let capi = venv.join("lib/python3.11/site-packages/onnxruntime/capi");
            let name = if cfg!(target_os = "macos") {
                format!("libonnxruntime.{version}.dylib")
            } else {
                format!("libonnxruntime.so.{version}")
            };
            (capi, name)
        };
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join(&name), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        capi.join(name)
    }

    #[test]
    fn library_names() {
        if cfg!(any(target_os = "windows", target_os = "macos")) {
            return;
        }
        assert_eq!(library_version("libonnxruntime.so.1.31.1"), Some(vec![1, 31, 1]));
        assert_eq!(library_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(library_version("libonnxruntime_providers_shared.so"), None);
        assert_eq!(library_version("libonnxruntime_providers_cuda.so"), None);
        assert_eq!(library_version("libonnxruntime.so.1.31.1.bak"), None);
        assert_eq!(library_version("libonnxruntime.sox"), None);
    }

    #[test]
    fn finds_the_venv_of_a_parent_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = fake_venv(tmp.path(), "1.31.1");
        let nested = tmp.path().join("crates/runtime");
        std::fs::create_dir_all(&nested).unwrap();
        let search = LibrarySearch { roots: vec![nested], ..LibrarySearch::default() };
        assert_eq!(search.find().unwrap(), lib.canonicalize().unwrap());
    }

    #[test]
    fn ort_dylib_path_comes_first_and_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        fake_venv(tmp.path(), "1.31.1");
        let other = tmp.path().join("libonnxruntime.so.1.31.1");
        std::fs::write(&other, b"").unwrap();
        let mut search = LibrarySearch {
            dylib_path: Some(other.clone()),
            roots: vec![tmp.path().to_path_buf()],
            ..LibrarySearch::default()
        };
        assert_eq!(search.find().unwrap(), other.canonicalize().unwrap());

        search.dylib_path = Some(tmp.path().join("missing.so"));
        let msg = search.find().unwrap_err().to_string();
        assert!(msg.starts_with("ORT_DYLIB_PATH is `"), "{msg}");
        assert!(msg.contains("missing.so`, which is not a file"), "{msg}");
        assert!(msg.contains(VENV_LIBRARY_PATTERN), "{msg}");
    }

    #[test]
    fn phiquant_venv_names_the_venv() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = fake_venv(tmp.path(), "1.31.1");
        let search = LibrarySearch {
            venv: Some(tmp.path().join(".venv")),
            roots: vec![],
            ..LibrarySearch::default()
        };
        assert_eq!(search.find().unwrap(), lib.canonicalize().unwrap());
        let empty = tempfile::tempdir().unwrap();
        let search = LibrarySearch { venv: Some(empty.path().to_path_buf()), ..search };
        let msg = search.find().unwrap_err().to_string();
        assert!(msg.starts_with("PHIQUANT_VENV is `"), "{msg}");
        assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
    }

    #[test]
    fn the_highest_version_wins() {
        if cfg!(target_os = "windows") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        fake_venv(tmp.path(), "1.9.0");
        let newer = fake_venv(tmp.path(), "1.31.1");
        assert_eq!(library_in_venv(&tmp.path().join(".venv")), Some(newer.canonicalize().unwrap()));
    }

    #[test]
    fn missing_library_names_both_ways_to_provide_it() {
        let tmp = tempfile::tempdir().unwrap();
        let search = LibrarySearch { roots: vec![tmp.path().to_path_buf()], ..Default::default() };
        let err = search.find().unwrap_err();
        assert!(matches!(err, Error::OrtLibrary(OrtLibraryProblem::NotFound { .. })));
        let msg = err.to_string();
        assert!(msg.contains("set ORT_DYLIB_PATH to the full path of"), "{msg}");
        assert!(msg.contains(VENV_LIBRARY_PATTERN), "{msg}");
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
        assert!(msg.contains(&tmp.path().canonicalize().unwrap().display().to_string()), "{msg}");
    }
}
