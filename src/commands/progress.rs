//! Progress on stderr for the long commands (export, build): bars on a terminal (indicatif),
//! JSON Lines with `--json`, plain note lines otherwise, nothing with `--quiet` but errors.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing (--quiet).
    Quiet,
    /// Note lines on stderr; bars as well when stderr is a terminal.
    Human { bars: bool },
    /// One JSON object per line on stderr (--json).
    Json,
}

/// Where a command's progress goes.
pub struct Progress {
    mode: Mode,
    /// The bar being drawn, through which notes are printed so they do not tear it.
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress {
    /// `--quiet` hides everything but errors; `--json` writes JSON Lines events; otherwise
    /// notes, and bars when stderr is a terminal.
    pub fn new(quiet: bool, json: bool) -> Progress {
        let mode = if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else {
            Mode::Human { bars: std::io::stderr().is_terminal() }
        };
        Progress { mode, bar: Mutex::new(None) }
    }

    /// Whether results go out as JSON.
    pub fn json(&self) -> bool {
        self.mode == Mode::Json
    }

    /// Whether nothing but errors is shown.
    pub fn quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// A line of progress (`event` names it in JSON).
    pub fn note(&self, event: &str, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => self.event(json!({"event": event, "message": line})),
            Mode::Human { .. } => {
                let bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
                match bar.as_ref() {
                    Some(b) => b.println(line),
                    None => {
                        let _ = writeln!(std::io::stderr().lock(), "{line}");
                    }
                }
            }
        }
    }

    /// A JSON Lines event on stderr (only with --json).
    pub fn event(&self, value: Value) {
        if self.mode == Mode::Json {
            let _ = writeln!(std::io::stderr().lock(), "{value}");
        }
    }

    /// Starts a stage of `total` steps (`unit`: what a step is) for `target`.
    pub fn stage(&self, stage: &'static str, target: &str, total: u64, unit: &str) -> Stage<'_> {
        if let Mode::Human { bars: true } = self.mode {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:>12} {msg} [{bar:30}] {pos}/{len} {unit} ({elapsed})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = bar
                .with_style(style.with_key("unit", {
                    let unit = unit.to_string();
                    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&unit);
                    }
                }))
                .with_prefix(stage)
                .with_message(target.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
        }
        self.event(json!({"event": stage, "target": target, "done": 0, "total": total}));
        Stage {
            progress: self,
            stage,
            target: target.to_string(),
            total: AtomicU64::new(total),
            last: AtomicU64::new(0),
        }
    }
}

/// One stage in progress; finished when dropped.
pub struct Stage<'p> {
    progress: &'p Progress,
    stage: &'static str,
    target: String,
    total: AtomicU64,
    last: AtomicU64,
}

impl Stage<'_> {
    /// The stage has `total` steps (when known only once it runs).
    pub fn set_total(&self, total: u64) {
        if self.total.swap(total, Ordering::Relaxed) != total
            && let Some(b) = self.progress.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            b.set_length(total);
        }
    }

    /// `done` steps of the stage's total are complete.
    pub fn set(&self, done: u64) {
        if let Some(b) = self.progress.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.set_position(done);
        }
        // JSON: at most about twenty events a stage, and always the last.
        let total = self.total.load(Ordering::Relaxed);
        let step = total.div_ceil(20).max(1);
        let last = self.last.load(Ordering::Relaxed);
        if done == total || done >= last + step {
            self.last.store(done, Ordering::Relaxed);
            self.progress.event(json!({
                "event": self.stage, "target": self.target, "done": done, "total": total
            }));
        }
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.progress.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}
