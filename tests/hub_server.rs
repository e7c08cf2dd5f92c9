//! A minimal, local stand-in for the Hugging Face Hub, for integration tests.
//!
//! The tests have no network access to the real Hub, yet the download code goes
//! through `hf-hub` 0.5 (`hf_hub::api::sync`, ureq backend). This module serves
//! a few local folders over plain HTTP on `127.0.0.1` with the subset of the
//! Hub's HTTP API that `hf-hub` 0.5 uses, so the real client code (cache
//! layout, refs, snapshots, ETags, tokens) can be exercised end to end by
//! pointing `ApiBuilder::with_endpoint` at [`HubServer::endpoint`].
//!
//! Routes (anything else is answered `404`):
//!
//! * `GET|HEAD /{org}/{name}/resolve/{rev}/{path...}`: the file `path` (URL
//!   decoded; may be in subfolders) of the repository, where `rev` is `main`
//!   or the repository's commit sha. Headers: `ETag` (quoted sha256 hex of the
//!   content), `X-Repo-Commit`, `Content-Length`, `Accept-Ranges: bytes`.
//!   A single `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` is answered `206`
//!   with `Content-Range: bytes a-b/total` (hf-hub 0.5 first sends
//!   `Range: bytes=0-0` to read the metadata, then `Range: bytes=0-` to
//!   download). Unsatisfiable ranges get `416`. An empty file is answered
//!   `200` with `Content-Range: bytes */0` so that hf-hub can still read its
//!   size. Errors are `404` with `X-Error-Code: RepositoryNotFound`,
//!   `RevisionNotFound` or `EntryNotFound`, like the real Hub.
//! * `GET|HEAD /api/models/{org}/{name}` and
//!   `/api/models/{org}/{name}/revision/{rev}`: JSON
//!   `{"id", "modelId", "sha", "siblings": [{"rfilename"}...]}` with a sorted,
//!   recursive listing of the repository folder (symlinked directories are
//!   not followed).
//!
//! Paths with a `..` segment are refused with `400`; methods other than GET
//! and HEAD get `405`. With [`HubServer::require_token`], every request
//! without `Authorization: Bearer <token>` gets `401`.
//!
//! Every connection carries exactly one request (`Connection: close`) and is
//! served on its own thread with read and write timeouts. The accept loop polls
//! a non-blocking listener, so dropping the server always stops it promptly:
//! `Drop` sets a flag, the loop exits, live connections are shut down and all
//! threads are joined. [`HubServer::requests`] returns `"METHOD /target"` (the
//! request target exactly as sent) of every request received, in order.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// How long a connection may stay silent (or refuse to read) before it is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Sleep between two polls of the non-blocking listener.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// One repository served by [`HubServer`].
#[derive(Clone, Debug)]
pub struct HubRepo {
    /// Repository id, `"org/name"`.
    pub id: String,
    /// Folder whose files are the repository's files.
    pub dir: PathBuf,
    /// The (only) commit of the repository, 40 hex digits; `main` points to it.
    pub commit: String,
}

type EtagEntry = (u64, Option<SystemTime>, String);

/// State shared between the test, the accept loop and the connection threads.
struct Shared {
    repos: Vec<HubRepo>,
    token: Mutex<Option<String>>,
    log: Mutex<Vec<String>>,
    /// path -> (len, mtime, sha256 hex), so large files are hashed once.
    etags: Mutex<HashMap<PathBuf, EtagEntry>>,
}

/// A local HTTP server that mimics the parts of the Hugging Face Hub used by
/// `hf-hub` 0.5. Stops when dropped.
pub struct HubServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HubServer {
    /// Binds `127.0.0.1:0` and starts serving `repos` on a background thread.
    pub fn start(repos: Vec<HubRepo>) -> io::Result<HubServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            repos,
            token: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            etags: Mutex::new(HashMap::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("hub-server".into())
                .spawn(move || accept_loop(listener, shared, stop))?
        };
        Ok(HubServer { addr, shared, stop, thread: Some(thread) })
    }

    /// From now on, requests without `Authorization: Bearer <token>` get `401`.
    pub fn require_token(self, token: &str) -> Self {
        *lock(&self.shared.token) = Some(token.to_string());
        self
    }

    /// `"http://127.0.0.1:PORT"`, to pass to `ApiBuilder::with_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `"METHOD /target"` of every request received so far, in arrival order
    /// (rejected ones included). The target is the raw one, still URL-encoded.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking connection thread must not
/// break the server for the rest of the test).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Live = Arc<Mutex<HashMap<u64, TcpStream>>>;

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let live: Live = Arc::new(Mutex::new(HashMap::new()));
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                next_id += 1;
                let id = next_id;
                // Accepted sockets may inherit non-blocking mode on some platforms.
                let setup = stream
                    .set_nonblocking(false)
                    .and_then(|_| stream.set_read_timeout(Some(IO_TIMEOUT)))
                    .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)));
                if setup.is_err() {
                    continue;
                }
                if let Ok(clone) = stream.try_clone() {
                    lock(&live).insert(id, clone);
                }
                let shared = Arc::clone(&shared);
                let live2 = Arc::clone(&live);
                let spawned =
                    std::thread::Builder::new().name("hub-conn".into()).spawn(move || {
                        handle_connection(stream, &shared);
                        lock(&live2).remove(&id);
                    });
                match spawned {
                    Ok(handle) => workers.push(handle),
                    Err(_) => {
                        if let Some(s) = lock(&live).remove(&id) {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                    }
                }
                workers.retain(|w| !w.is_finished());
            }
            Err(ref e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(ref e) if e.kind() == io::ErrorKind::Interrupted => {}
            // E.g. too many open files: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    drop(listener);
    // Unblock every connection still being read from or written to, then wait.
    for (_, s) in lock(&live).drain() {
        let _ = s.shutdown(Shutdown::Both);
    }
    for w in workers {
        let _ = w.join();
    }
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A response; `body` is written only for non-HEAD requests.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `start`.
    File {
        file: File,
        start: u64,
        len: u64,
    },
}

impl Response {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Bytes(body.into()),
        }
    }

    fn text(status: u16, msg: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", msg.as_bytes().to_vec())
    }

    fn hub_error(status: u16, code: &str, msg: &str) -> Self {
        let body = format!("{{\"error\":{}}}", json_str(msg));
        Self::new(status, "application/json", body).with("X-Error-Code", code)
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

fn handle_connection(mut stream: TcpStream, shared: &Shared) {
    let response = match read_head(&mut stream) {
        Ok(Some(req)) => {
            lock(&shared.log).push(format!("{} {}", req.method, req.target));
            let head_only = req.method == "HEAD";
            (route(&req, shared), head_only)
        }
        Ok(None) => (Response::text(400, "bad request\n"), false),
        // Timeout, reset or shutdown by Drop: nothing to answer.
        Err(_) => return,
    };
    let (resp, head_only) = response;
    let _ = write_response(&mut stream, resp, head_only);
    let _ = stream.flush();
    // Half-close, then drain what the client may still send (bounded), so the
    // kernel does not reset the connection before the client read everything.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < MAX_HEAD {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Reads the request line and headers. `Ok(None)`: malformed request.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = match std::str::from_utf8(&buf[..end]) {
        Ok(h) => h,
        Err(_) => return Ok(None),
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && t.starts_with('/') => (m, t, v),
        _ => return Ok(None),
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(None);
    }
    let mut headers = Vec::new();
    for line in lines {
        match line.split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim().to_string())),
            None => return Ok(None),
        }
    }
    Ok(Some(Request { method: method.to_string(), target: target.to_string(), headers }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "Internal Server Error",
    }
}

fn write_response(stream: &mut TcpStream, resp: Response, head_only: bool) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    write!(out, "HTTP/1.1 {} {}\r\n", resp.status, status_text(resp.status))?;
    for (k, v) in &resp.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(out, "Content-Length: {}\r\nConnection: close\r\n\r\n", resp.body_len())?;
    if !head_only {
        match resp.body {
            Body::Bytes(b) => out.write_all(&b)?,
            Body::File { mut file, start, len } => {
                file.seek(SeekFrom::Start(start))?;
                let copied = io::copy(&mut (&mut file).take(len), &mut out)?;
                if copied != len {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
    out.flush()
}

/// Percent-decodes one path segment; `None` if malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn route(req: &Request, shared: &Shared) -> Response {
    if let Some(token) = lock(&shared.token).clone() {
        let ok = req
            .header("Authorization")
            .and_then(|v| v.split_once(' '))
            .map(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && t.trim() == token)
            .unwrap_or(false);
        if !ok {
            return Response::text(401, "Invalid credentials in Authorization header\n")
                .with("X-Error-Message", "Invalid credentials in Authorization header")
                .with("WWW-Authenticate", "Bearer");
        }
    }

    let path = req.target.split(['?', '#']).next().unwrap_or("");
    let mut segs = Vec::new();
    for raw in path.split('/').skip(1) {
        match percent_decode(raw) {
            Some(s) => segs.push(s),
            None => return Response::text(400, "malformed path\n"),
        }
    }
    if segs.iter().any(|s| s == "..") {
        return Response::text(400, "path traversal refused\n");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "method not allowed\n").with("Allow", "GET, HEAD");
    }

    let find_repo = |id_segs: &[String]| {
        let id = id_segs.join("/");
        shared.repos.iter().find(|r| r.id == id)
    };
    let rev_ok = |repo: &HubRepo, rev: &str| rev == "main" || rev == repo.commit;

    // /api/models/{id...}[/revision/{rev}]
    if segs.len() >= 3 && segs[0] == "api" && segs[1] == "models" {
        let rest = &segs[2..];
        let (id_segs, rev) = match rest.iter().position(|s| s == "revision") {
            Some(p) if p + 2 == rest.len() => (&rest[..p], rest[p + 1].as_str()),
            Some(_) => return Response::text(404, "not found\n"),
            None => (rest, "main"),
        };
        let Some(repo) = find_repo(id_segs) else {
            return Response::hub_error(404, "RepositoryNotFound", "Repository not found");
        };
        if !rev_ok(repo, rev) {
            return Response::hub_error(404, "RevisionNotFound", "Invalid rev id");
        }
        return repo_info(repo);
    }

    // /{id...}/resolve/{rev}/{path...}
    if let Some(p) = segs.iter().position(|s| s == "resolve")
        && p >= 1
        && segs.len() >= p + 3
    {
        let Some(repo) = find_repo(&segs[..p]) else {
            return Response::hub_error(404, "RepositoryNotFound", "Repository not found");
        };
        if !rev_ok(repo, &segs[p + 1]) {
            return Response::hub_error(404, "RevisionNotFound", "Invalid rev id");
        }
        return resolve_file(repo, &segs[p + 2..], req, shared);
    }

    Response::text(404, "not found\n")
}

fn repo_info(repo: &HubRepo) -> Response {
    let mut files = Vec::new();
    list_files(&repo.dir, "", &mut files);
    files.sort();
    let siblings: Vec<String> =
        files.iter().map(|f| format!("{{\"rfilename\":{}}}", json_str(f))).collect();
    let body = format!(
        "{{\"id\":{id},\"modelId\":{id},\"sha\":{sha},\"private\":false,\"siblings\":[{}]}}",
        siblings.join(","),
        id = json_str(&repo.id),
        sha = json_str(&repo.commit),
    );
    Response::new(200, "application/json; charset=utf-8", body)
}

/// Recursive listing with `/` separators; symlinked directories are not followed.
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            list_files(&entry.path(), &rel, out);
        } else if std::fs::metadata(entry.path()).map(|m| m.is_file()).unwrap_or(false) {
            out.push(rel);
        }
    }
}

fn resolve_file(repo: &HubRepo, file_segs: &[String], req: &Request, shared: &Shared) -> Response {
    let not_found = || Response::hub_error(404, "EntryNotFound", "Entry not found");
    let mut path = repo.dir.clone();
    for s in file_segs {
        if s.is_empty() || s == "." || s.contains(['/', '\\', '\0']) {
            return not_found();
        }
        path.push(s);
    }
    let Ok(mut file) = File::open(&path) else {
        return not_found();
    };
    let Ok(meta) = file.metadata() else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    let total = meta.len();
    let etag = match etag_of(&path, &mut file, total, meta.modified().ok(), shared) {
        Ok(e) => e,
        Err(_) => return Response::text(500, "cannot read file\n"),
    };

    let base = |status: u16, start: u64, len: u64, file: File| Response {
        status,
        headers: vec![
            ("Content-Type".into(), "application/octet-stream".into()),
            ("ETag".into(), format!("\"{etag}\"")),
            ("X-Repo-Commit".into(), repo.commit.clone()),
            ("Accept-Ranges".into(), "bytes".into()),
        ],
        body: Body::File { file, start, len },
    };

    let Some(range) = req.header("Range") else {
        return base(200, 0, total, file);
    };
    if total == 0 {
        // No satisfiable range exists; hf-hub still needs a Content-Range for the size.
        return base(200, 0, 0, file).with("Content-Range", "bytes */0");
    }
    match parse_range(range, total) {
        RangeSpec::Ignore => base(200, 0, total, file),
        RangeSpec::Unsatisfiable => Response::text(416, "range not satisfiable\n")
            .with("Content-Range", format!("bytes */{total}")),
        RangeSpec::Bytes(start, end) => base(206, start, end - start + 1, file)
            .with("Content-Range", format!("bytes {start}-{end}/{total}")),
    }
}

enum RangeSpec {
    /// Malformed or multi-range: serve the whole file (RFC 9110 allows ignoring Range).
    Ignore,
    Unsatisfiable,
    /// Inclusive byte range.
    Bytes(u64, u64),
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` against a non-empty file.
fn parse_range(value: &str, total: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(0) => RangeSpec::Unsatisfiable,
            Ok(n) => RangeSpec::Bytes(total.saturating_sub(n), total - 1),
            Err(_) => RangeSpec::Ignore,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Ignore;
    };
    let end = if b.is_empty() {
        total - 1
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(total - 1),
            _ => return RangeSpec::Ignore,
        }
    };
    if start >= total { RangeSpec::Unsatisfiable } else { RangeSpec::Bytes(start, end) }
}

/// sha256 hex of the file, cached by (path, len, mtime).
fn etag_of(
    path: &Path,
    file: &mut File,
    len: u64,
    mtime: Option<SystemTime>,
    shared: &Shared,
) -> io::Result<String> {
    if let Some((l, m, tag)) = lock(&shared.etags).get(path)
        && *l == len
        && *m == mtime
        && mtime.is_some()
    {
        return Ok(tag.clone());
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let tag: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    lock(&shared.etags).insert(path.to_path_buf(), (len, mtime, tag.clone()));
    Ok(tag)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
