//! The control socket, `RUN_DIR/ctl.sock`: newline-delimited JSON requests and
//! responses ([`crate::api`]), a thread per client, and the client side the CLI uses.
//!
//! Whatever a client sends, the daemon answers or hangs up: a line that is not a
//! request gets `{"ok":false,"error":...}`, a line longer than [`MAX_REQUEST`] ends the
//! connection after an error response, and a client silent for [`IDLE_TIMEOUT`] is
//! disconnected. The socket is readable and writable by its owner only.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::api::{Request, Response};
use crate::switch::Switch;

/// Longest request line, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Clients served at once; more are told to come back later.
pub const MAX_CLIENTS: usize = 32;

/// A client that sends nothing for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The control socket's path in a run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("ctl.sock")
}

/// Why the control socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another process answers on it.
    InUse,
    /// Anything else.
    Other(anyhow::Error),
}

/// Binds the control socket with owner-only permissions. A stale socket (nobody
/// answers) is replaced; a live one is left alone ([`BindError::InUse`]).
pub fn bind(path: &Path) -> std::result::Result<UnixListener, BindError> {
    let other = |e: anyhow::Error| BindError::Other(e);
    if path.as_os_str().len() > 107 {
        return Err(other(anyhow::anyhow!(
            "control socket {}: the path is longer than a unix socket address allows (107)",
            path.display()
        )));
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(other(anyhow::anyhow!(
                "control socket {}: exists and is not a socket",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse);
        }
        let _ = std::fs::remove_file(path);
    }
    // Bind inside a directory only we can enter, restrict the socket, then move it into
    // place: nobody can connect before the permissions are set.
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".ctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let r = (|| -> Result<UnixListener> {
        std::fs::DirBuilder::new().mode(0o700).create(&tmp).with_context(|| format!("{}", tmp.display()))?;
        let t = tmp.join("ctl.sock");
        let l = UnixListener::bind(&t).with_context(|| format!("control socket {}", t.display()))?;
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("control socket {}", t.display()))?;
        std::fs::rename(&t, path).with_context(|| format!("control socket {}", path.display()))?;
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    r.map_err(other)
}

/// Serves requests on `listener` from a thread of its own, a thread per client.
pub fn serve(listener: UnixListener, switch: Arc<Switch>) -> Result<()> {
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else {
                    // EMFILE and the like: back off instead of spinning.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::AcqRel);
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = write_response(&mut s, &Response::err("too many control clients; try again"));
                    continue;
                }
                let (sw, n) = (switch.clone(), clients.clone());
                let spawned = std::thread::Builder::new().name("control-client".into()).spawn(move || {
                    client(s, &sw);
                    n.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_err() {
                    clients.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })
        .context("control socket thread")?;
    Ok(())
}

fn write_response(s: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line =
        serde_json::to_vec(r).unwrap_or_else(|_| br#"{"ok":false,"error":"internal error"}"#.to_vec());
    line.push(b'\n');
    s.write_all(&line)
}

/// One request line: Ok(None) at the end of the stream, Err(()) when it is too long.
fn read_request(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<std::result::Result<(), ()>>> {
    buf.clear();
    let n = r.take(MAX_REQUEST as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_REQUEST {
        return Ok(Some(Err(())));
    }
    Ok(Some(Ok(())))
}

/// Answers one request; a panic while handling it becomes an error response.
pub fn answer(switch: &Switch, line: &[u8]) -> Response {
    let req: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return Response::err(format!("malformed request: {e}")),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| switch.handle(req))) {
        Ok(Ok(v)) => Response::ok(v),
        Ok(Err(e)) => Response::err(format!("{e:#}")),
        Err(_) => Response::err("internal error while handling the request"),
    }
}

fn client(mut s: UnixStream, switch: &Switch) {
    let _ = s.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(rd) = s.try_clone() else { return };
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        let resp = match read_request(&mut rd, &mut buf) {
            Ok(None) | Err(_) => return,
            Ok(Some(Err(()))) => {
                let _ = write_response(
                    &mut s,
                    &Response::err(format!("request longer than {MAX_REQUEST} bytes")),
                );
                return;
            }
            Ok(Some(Ok(()))) if buf.iter().all(|b| b.is_ascii_whitespace()) => continue,
            Ok(Some(Ok(()))) => answer(switch, &buf),
        };
        if write_response(&mut s, &resp).is_err() {
            return;
        }
    }
}

/// Sends one request to the daemon of `run_dir` and returns its result.
pub fn request(run_dir: &Path, req: &Request) -> Result<serde_json::Value> {
    let path = socket_path(run_dir);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such socket".to_string(),
            std::io::ErrorKind::ConnectionRefused => "nobody is listening on it".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("cannot reach the switch at {}: {why} (is \"virtwire run\" running?)", path.display())
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line).with_context(|| format!("{}", path.display()))?;
    let mut reply = Vec::new();
    BufReader::new(&s)
        .take(64 << 20)
        .read_until(b'\n', &mut reply)
        .with_context(|| format!("reading the switch's answer on {}", path.display()))?;
    if reply.is_empty() {
        bail!("the switch at {} closed the connection without answering", path.display());
    }
    let r: Response = serde_json::from_slice(&reply)
        .with_context(|| format!("the switch at {} answered something unreadable", path.display()))?;
    if r.ok {
        Ok(r.result.unwrap_or(serde_json::Value::Null))
    } else {
        bail!("{}", r.error.unwrap_or_else(|| "the switch refused the request without a reason".into()))
    }
}
