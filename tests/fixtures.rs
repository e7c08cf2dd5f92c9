//! The committed fixtures are exactly what `fixtures/generate.py` makes.

use std::path::Path;

use crate::util::root;

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            out.extend(files_under(&path).into_iter().map(|f| format!("{name}/{f}")));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

pqtest!(fixtures_match_their_generator, |dir, cmd| {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = dir.path().join("models");
    let status = std::process::Command::new(&python)
        .arg(root().join("fixtures/generate.py"))
        .arg("--out")
        .arg(&out)
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            crate::util::skip_note(&format!("cannot run {python}: {e}"));
            return;
        }
        Err(e) => panic!("cannot run {python}: {e}"),
    };
    assert!(status.success());
    let committed = root().join("fixtures/models");
    let names = files_under(&committed);
    assert_eq!(files_under(&out), names);
    assert!(names.len() >= 6 * 5, "{names:?}");
    for name in names {
        let a = std::fs::read(committed.join(&name)).unwrap();
        let b = std::fs::read(out.join(&name)).unwrap();
        assert!(
            a == b,
            "fixtures/models/{name} differs from the generator's output; regenerate and commit"
        );
    }
    let _ = cmd;
});
