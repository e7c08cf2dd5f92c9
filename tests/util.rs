//! Helpers for the integration tests: a temporary folder, a command builder, and the locations
//! of fixtures and shared models.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A generated fixture checkpoint.
pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/models").join(name)
}

/// A model from `../shared/models`, or `None` (with a note) when the folder is absent outside
/// CI. Under `CI=true` absence is a failure.
pub fn shared_model(name: &str) -> Option<PathBuf> {
    let path = root().join("../shared/models").join(name);
    if path.is_dir() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing, and CI=true requires it", path.display());
    }
    skip_note(&format!("{} is not present (an outside checkout)", path.display()));
    None
}

/// Every architecture fixture and the two stories260K layouts of `../shared/models` (those
/// present): (name, folder).
pub fn architecture_models() -> Vec<(String, PathBuf)> {
    let mut models: Vec<(String, PathBuf)> =
        ["phi3", "phi3-longrope", "phi4-mini", "llama", "mistral", "qwen2"]
            .iter()
            .map(|m| (m.to_string(), fixture(m)))
            .collect();
    for m in ["stories260K-phi3", "stories260K"] {
        if let Some(p) = shared_model(m) {
            models.push((m.to_string(), p));
        }
    }
    models
}

/// Every ONNX target, fp32 reference first.
pub const ONNX_TARGETS: [&str; 5] = ["cpu-fp32", "cpu-int4", "cuda-int4", "cuda-fp16", "dml-int4"];

/// Whether ONNX Runtime's library is there (`scripts/setup.sh` puts it in `.venv`); outside CI a
/// missing one skips the test with a note, under `CI=true` it fails it.
#[allow(dead_code)]
pub fn ort_library() -> bool {
    match phiquant_runtime::find_ort_library() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            skip_note(&e.to_string());
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// A headless Chromium (`CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome` on
/// the PATH; `scripts/setup.sh` installs Debian's `chromium`), or `None` with a note outside CI.
/// Under `CI=true` absence is a failure.
#[allow(dead_code)]
pub fn chromium() -> Option<PathBuf> {
    let from_env = std::env::var_os("CHROMIUM").map(PathBuf::from);
    let on_path = || {
        let path = std::env::var_os("PATH")?;
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
            .find(|p| p.is_file())
    };
    if let Some(found) = from_env.filter(|p| p.is_file()).or_else(on_path) {
        return Some(found);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("no chromium found (CHROMIUM, or chromium on the PATH), and CI=true requires it");
    }
    skip_note("no chromium found (install it with scripts/setup.sh, or set CHROMIUM)");
    None
}

/// A temporary folder for one test, removed at the end.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new(name: &str) -> Dir {
        Dir { tmp: tempfile::Builder::new().prefix(&format!("pq-{name}-")).tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A `phiquant` command run from the repository root, with a hub environment confined to
    /// this folder (no real cache, no token, no endpoint from the caller's environment).
    pub fn command(&self) -> TestCommand {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_phiquant"));
        cmd.current_dir(root());
        for var in [
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "HF_ENDPOINT",
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HF_HOME", self.path().join("hf-home"));
        cmd.env("NO_PROXY", "127.0.0.1,localhost");
        TestCommand { cmd }
    }

    /// Copies a checkpoint folder into this folder, returning the copy's path.
    pub fn copy_model(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        to
    }
}

/// A command builder with assertions on the outcome.
pub struct TestCommand {
    cmd: Command,
}

impl TestCommand {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    /// `export --model MODEL --out OUT --target T ...`.
    pub fn export(&mut self, model: &Path, out: &Path, targets: &[&str]) -> &mut Self {
        self.cmd.arg("export").arg("--model").arg(model).arg("--out").arg(out);
        for t in targets {
            self.cmd.args(["--target", t]);
        }
        self
    }

    pub fn output(&mut self) -> Output {
        self.cmd.output().unwrap()
    }

    /// Starts the command with stdout and stderr piped.
    pub fn spawn(&mut self) -> std::process::Child {
        use std::process::Stdio;
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    /// Runs and requires exit 0, returning stdout.
    pub fn stdout(&mut self) -> String {
        let out = self.output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?} failed ({}):\n{stderr}", self.cmd, out.status);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires exit 2 with exactly one line on stderr and no panic; returns that line.
    pub fn error_line(&mut self) -> String {
        let out = self.output();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{:?}: expected exit 2, stdout:\n{stdout}\nstderr:\n{stderr}",
            self.cmd
        );
        assert!(!stderr.contains("panicked"), "panic: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "expected one line, got:\n{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        stderr.trim_end().to_string()
    }
}

/// Rewrites the JSON header of a safetensors file in place with `edit`, keeping the data bytes.
pub fn edit_safetensors_header(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_string(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

/// The `[begin, end]` data offsets of a tensor in a header map.
pub fn offsets(header: &serde_json::Map<String, serde_json::Value>, tensor: &str) -> (u64, u64) {
    let o = &header[tensor]["data_offsets"];
    (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
}

/// Rewrites a JSON file in place with `edit`.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Tells the person running the tests why a test did nothing.
pub fn skip_note(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// A measurement line for `cargo test -- --nocapture`.
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Every file under `dir`, with its bytes, sorted by name.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            out.extend(files(&e.path()).into_iter().map(|(n, b)| (format!("{name}/{n}"), b)));
        } else {
            out.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}
