//! llama.cpp's log: silent by default, copied to stderr when `PHIQUANT_LLAMA_LOG` is set, and its
//! error lines kept per thread while a call runs, so that a failed call can say why it failed
//! (llama.cpp itself only returns a null pointer or an error code).

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_void};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use llama_cpp_sys_2::{
    GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_DEBUG, GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_INFO,
    GGML_LOG_LEVEL_NONE, ggml_log_level,
};

/// The environment variable that lets llama.cpp's log through to stderr: `1` (or any value but
/// `0`) for information, warnings and errors, `debug` for everything.
pub(crate) const LOG_ENV: &str = "PHIQUANT_LLAMA_LOG";

/// The most bytes of error text kept for one call; a corrupt file can make llama.cpp repeat itself.
const MAX_CAPTURED: usize = 2000;

/// The lowest level copied to stderr; above every level when the log is off.
static ECHO_FROM: AtomicU32 = AtomicU32::new(u32::MAX);

thread_local! {
    /// Error text llama.cpp logged on this thread since [`capture`] began.
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The level of the last line logged on this thread, which a `CONT` line continues.
    static LAST_LEVEL: Cell<ggml_log_level> = const { Cell::new(GGML_LOG_LEVEL_NONE) };
}

/// Routes llama.cpp's and ggml's log through [`on_log`]. Call it once, before anything else
/// touches llama.cpp.
pub(crate) fn install() {
    let echo_from = match std::env::var(LOG_ENV).as_deref() {
        Err(_) | Ok("" | "0") => u32::MAX,
        Ok(v) if v.eq_ignore_ascii_case("debug") => GGML_LOG_LEVEL_DEBUG,
        Ok(_) => GGML_LOG_LEVEL_INFO,
    };
    ECHO_FROM.store(echo_from, Ordering::Relaxed);
    // SAFETY: `on_log` matches `ggml_log_callback`, lives for the whole program, never unwinds
    // and ignores `user_data`, so a null pointer is fine. llama_log_set only stores the two
    // values (for ggml as well), and this runs before any llama.cpp call that could log.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut()) };
}

/// Runs `f`, returning its result and the error lines llama.cpp logged on this thread meanwhile
/// (joined by "; ", empty when there were none).
pub(crate) fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let outer = CAPTURED.with(|c| c.borrow_mut().replace(String::new()));
    let value = f();
    let captured = CAPTURED.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (value, captured.unwrap_or_default())
}

/// The log callback. It must not panic (a panic cannot unwind into C), so it only uses
/// `try_` accessors and ignores write errors.
unsafe extern "C" fn on_log(level: ggml_log_level, text: *const c_char, _user_data: *mut c_void) {
    if text.is_null() {
        return;
    }
    let cont = level == GGML_LOG_LEVEL_CONT;
    let level = if cont {
        LAST_LEVEL.try_with(Cell::get).unwrap_or(GGML_LOG_LEVEL_NONE)
    } else {
        let _ = LAST_LEVEL.try_with(|last| last.set(level));
        level
    };
    let echo = level >= ECHO_FROM.load(Ordering::Relaxed);
    if !echo && level != GGML_LOG_LEVEL_ERROR {
        return;
    }
    // SAFETY: llama.cpp and ggml pass a NUL-terminated string that lives for the duration of the
    // call, and it was checked for null above.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if echo {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    if level != GGML_LOG_LEVEL_ERROR {
        return;
    }
    let _ = CAPTURED.try_with(|c| {
        let Ok(mut slot) = c.try_borrow_mut() else { return };
        let Some(captured) = slot.as_mut() else { return };
        // A `CONT` piece carries on the line before it; other lines are joined by "; ".
        let line = if cont { text.trim_end() } else { text.trim() };
        if line.is_empty() || captured.len() >= MAX_CAPTURED {
            return;
        }
        if !captured.is_empty() && !cont {
            captured.push_str("; ");
        }
        captured.push_str(line);
    });
}
