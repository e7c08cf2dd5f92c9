//! Artefacts appear whole or not at all: each is written under a hidden temporary name beside
//! its destination, synced, and renamed into place. Every temporary path lives in one registry,
//! so that an interrupted run (SIGINT, SIGTERM) removes them all before it exits
//! ([`remove_partials`]), and a commit never races that removal.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::{Error, error::io};

/// The temporary paths of the artefacts and scratch files being written by this process.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while the list was held leaves it consistent (pushes and removes are single
    // operations), so a poisoned lock is still usable.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The hidden sibling of `dest` named `.<name>.<what>-<pid>`.
fn sibling(dest: &Path, what: &str) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

fn remove(path: &Path) {
    // A writer still running may add a file while the folder is emptied: try again.
    for _ in 0..5 {
        let _ =
            if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        if std::fs::symlink_metadata(path).is_err() {
            return;
        }
    }
}

/// Removes what a killed run (SIGKILL, a power cut: no handler ran) left beside `dest`: the
/// hidden `.<name>.partial-<pid>` and `.<name>.old-<pid>` entries of processes no longer
/// running. Only where the process table can be read (`/proc`); elsewhere they stay.
fn remove_stale(dest: &Path) {
    let proc = Path::new("/proc/self");
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else { return };
    if !proc.exists() {
        return;
    }
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let name = name.to_string_lossy();
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = entry_name.strip_prefix('.').and_then(|r| r.strip_prefix(&*name)) else {
            continue;
        };
        let pid = rest.strip_prefix(".partial-").or_else(|| rest.strip_prefix(".old-"));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            remove(&entry.path());
        }
    }
}

/// A temporary file registered for removal on interruption and removed when dropped (the AWQ
/// scratch weights, for example).
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    /// Registers the hidden sibling `.<name>.partial-<pid>` of `dest` (not created).
    pub fn beside(dest: &Path) -> ScratchFile {
        remove_stale(dest);
        let path = sibling(dest, "partial");
        live().push(path.clone());
        ScratchFile { path }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let mut live = live();
        remove(&self.path);
        live.retain(|p| p != &self.path);
    }
}

/// An artefact being written: a file or a folder under a temporary name beside its
/// destination. [`Staged::commit`] syncs it and renames it into place, replacing an earlier
/// artefact there; dropped without a commit, it is removed.
#[derive(Debug)]
pub struct Staged {
    dest: PathBuf,
    partial: PathBuf,
    dir: bool,
}

impl Staged {
    /// Stages a folder for `dest`: an empty hidden sibling folder (a stale one of this process
    /// is removed first).
    pub fn dir(dest: &Path) -> Result<Staged, Error> {
        let staged = Staged::register(dest, true);
        remove(&staged.partial);
        std::fs::create_dir_all(&staged.partial).map_err(io("creating", &staged.partial))?;
        Ok(staged)
    }

    /// Stages a file for `dest`: a hidden sibling path the caller creates and writes.
    pub fn file(dest: &Path) -> Result<Staged, Error> {
        let staged = Staged::register(dest, false);
        remove(&staged.partial);
        Ok(staged)
    }

    fn register(dest: &Path, dir: bool) -> Staged {
        remove_stale(dest);
        let partial = sibling(dest, "partial");
        live().push(partial.clone());
        Staged { dest: dest.to_path_buf(), partial, dir }
    }

    /// Where the artefact is written until it is committed.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Where it goes.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Syncs the staged file (or every file of the staged folder, then the folder) and renames
    /// it to its destination, replacing what was there (moved aside first, and put back if the
    /// rename fails). The registry is held throughout, so an interruption removes either the
    /// staged artefact or nothing.
    pub fn commit(self) -> Result<PathBuf, Error> {
        let mut live = live();
        sync_tree(&self.partial)?;
        let old = sibling(&self.dest, "old");
        let had_old = self.dest.exists();
        if had_old {
            remove(&old);
            std::fs::rename(&self.dest, &old).map_err(io("moving aside", &self.dest))?;
            live.push(old.clone());
        }
        if let Err(e) = std::fs::rename(&self.partial, &self.dest) {
            if had_old {
                let _ = std::fs::rename(&old, &self.dest);
                live.retain(|p| p != &old);
            }
            return Err(io("renaming into place", &self.dest)(e));
        }
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        live.retain(|p| p != &self.partial);
        if had_old {
            remove(&old);
            live.retain(|p| p != &old);
        }
        drop(live);
        let dest = self.dest.clone();
        // Nothing left to remove: the partial path now names nothing.
        std::mem::forget(self);
        Ok(dest)
    }

    /// Whether this stages a folder.
    pub fn is_dir(&self) -> bool {
        self.dir
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let mut live = live();
        remove(&self.partial);
        live.retain(|p| p != &self.partial);
    }
}

/// Flushes a file, or a folder's files and then the folder, to the disk.
fn sync_tree(path: &Path) -> Result<(), Error> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io("listing", path))? {
            let entry = entry.map_err(io("listing", path))?;
            sync_tree(&entry.path())?;
        }
    }
    sync_path(path)
}

fn sync_path(path: &Path) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(io("opening", path))?;
    file.sync_all().map_err(io("syncing", path))
}

/// Removes every staged artefact and scratch file of this process, and keeps the registry
/// locked so that no commit can follow: for a handler that exits right after (SIGINT,
/// SIGTERM). A commit in progress finishes first, so its artefact is complete.
pub fn remove_partials() {
    let live = live();
    for path in live.iter() {
        remove(path);
    }
    // Held until the process exits.
    std::mem::forget(live);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_stage_leaves_nothing_and_a_commit_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a");
        {
            let s = Staged::dir(&dest).unwrap();
            std::fs::write(s.path().join("x"), b"1").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let s = Staged::dir(&dest).unwrap();
        std::fs::write(s.path().join("x"), b"1").unwrap();
        s.commit().unwrap();
        let s = Staged::dir(&dest).unwrap();
        std::fs::write(s.path().join("y"), b"2").unwrap();
        s.commit().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a"]);
        assert!(dest.join("y").exists() && !dest.join("x").exists());
        let f = Staged::file(&dir.path().join("b.gguf")).unwrap();
        std::fs::write(f.path(), b"gguf").unwrap();
        let partial = f.path().to_path_buf();
        assert_eq!(std::fs::read(f.commit().unwrap()).unwrap(), b"gguf");
        assert!(!live().contains(&partial));
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("cpu-int4");
        // No process has a pid this large (Linux caps pids at 2^22).
        let dead = dir.path().join(".cpu-int4.partial-4294967000");
        let old = dir.path().join(".cpu-int4.old-4294967001");
        let live = dir.path().join(".cpu-int4.partial-1");
        let other = dir.path().join(".cpu-int4-rtn.partial-4294967000");
        for d in [&dead, &old, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        drop(Staged::dir(&dest).unwrap());
        assert!(!dead.exists() && !old.exists());
        assert!(live.exists() && other.exists(), "pid 1 runs; another artefact's name");
    }

    #[test]
    fn a_scratch_file_is_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = ScratchFile::beside(&dir.path().join("awq.safetensors"));
        std::fs::write(s.path(), b"x").unwrap();
        let path = s.path().to_path_buf();
        drop(s);
        assert!(!path.exists());
    }
}
