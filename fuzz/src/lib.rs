//! What the fuzz targets share: one-thread rayon, and input files. phiquant's readers take paths
//! (they memory-map their input), so each input is written to a file first, and removed once the
//! target is done with it.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// Makes rayon run every parallel loop inline on the fuzzing thread. With the default pool, each
/// dequantization hands its work to worker threads that then spin waiting for more, which costs a
/// fifth of the executions on two cores and makes coverage depend on scheduling.
pub fn setup() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build_global()
        .expect("the global rayon pool is built once, before any parallel loop");
}

/// Runs `f` on a file holding `bytes`, named after this process and `name`, so that parallel
/// fuzzing jobs (`-jobs`, `-fork`) never share one. The file is in `/dev/shm` when that exists
/// (no disk writes per input), else in the system's temporary folder.
pub fn with_input_file(bytes: &[u8], name: &str, f: impl FnOnce(&Path)) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
    });
    let path = dir.join(format!("phiquant-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("writing the fuzz input file");
    f(&path);
    // A crash leaves the file behind: it is one input, and libFuzzer saves it as an artifact.
    let _ = std::fs::remove_file(&path);
}
