//! A port's connection loop. In server mode virtwire listens on the port's socket and
//! serves one frontend at a time, accepting the next when it goes away (QEMU with
//! `reconnect=N` comes back after a restart). In client mode virtwire connects to the
//! frontend's socket (QEMU `server=on`) and reconnects, with backoff, whenever the
//! connection ends. Either way a lost connection stops the port's rings and every
//! other port keeps running.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use std::os::fd::AsRawFd;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::device::{NetDevice, PortSpec};
use crate::stats::PortStats;
use crate::worker::{Ctl, NewPort, PortId, PortKind, Worker};

/// Who connects to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// virtwire listens; the frontend connects.
    Server,
    /// The frontend listens; virtwire connects.
    Client,
}

impl std::str::FromStr for SocketMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "server" => Ok(SocketMode::Server),
            "client" => Ok(SocketMode::Client),
            _ => Err(format!("unknown socket mode {s:?} (expected server or client)")),
        }
    }
}

/// A running vhost-user port.
pub struct Port {
    /// Its configuration.
    pub spec: Arc<PortSpec>,
    /// Its socket path.
    pub socket: PathBuf,
    /// Server or client.
    pub mode: SocketMode,
    /// Its counters.
    pub stats: Arc<PortStats>,
    /// True while a frontend is connected.
    pub connected: Arc<AtomicBool>,
    id: PortId,
    worker: Arc<Worker>,
    stop: Arc<AtomicBool>,
    /// Wakes the port's thread when `stop` is set.
    wake: EventFd,
    thread: Option<JoinHandle<()>>,
}

fn is_disconnect(e: &VuError) -> bool {
    matches!(
        e,
        VuError::Disconnected | VuError::PartialMessage | VuError::SocketBroken(_) | VuError::SocketError(_)
    )
}

/// Serves one connection until it ends.
fn serve(stream: UnixStream, spec: &Arc<PortSpec>, id: PortId, worker: &Arc<Worker>) {
    let dev = Arc::new(Mutex::new(NetDevice::new(spec.clone(), id, worker.clone())));
    let mut h = BackendReqHandler::from_stream(stream, dev.clone());
    loop {
        match h.handle_request() {
            Ok(()) => {}
            Err(e) if is_disconnect(&e) => break,
            Err(e @ (VuError::InvalidMessage | VuError::OversizedMsg | VuError::IncorrectFds)) => {
                // The header or its file descriptors were unusable: the message
                // boundaries can no longer be trusted, so this connection ends.
                eprintln!(
                    "virtwire: port {}: closing the connection: malformed vhost-user message: {e}",
                    spec.name
                );
                break;
            }
            Err(e) => {
                let fatal = dev.lock().map(|mut d| d.fatal.take()).unwrap_or(None);
                match fatal {
                    Some(why) => {
                        eprintln!("virtwire: port {}: closing the connection: {why}", spec.name);
                        break;
                    }
                    None => eprintln!("virtwire: port {}: vhost-user request failed: {e}", spec.name),
                }
            }
        }
    }
    if let Ok(mut d) = dev.lock() {
        d.stop_all();
    }
    eprintln!("virtwire: port {}: frontend disconnected", spec.name);
}

impl Port {
    /// Starts a port: in server mode binds its socket now (so errors are reported to
    /// the caller), then serves connections on a thread of its own.
    pub fn start(
        spec: PortSpec,
        socket: &Path,
        mode: SocketMode,
        id: PortId,
        worker: Arc<Worker>,
    ) -> std::io::Result<Port> {
        let spec = Arc::new(spec);
        let stats = Arc::new(PortStats::new(spec.queue_pairs as usize));
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let listener = match mode {
            SocketMode::Server => {
                if let Ok(md) = std::fs::symlink_metadata(socket) {
                    use std::os::unix::fs::FileTypeExt;
                    if !md.file_type().is_socket() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{}: exists and is not a socket", socket.display()),
                        ));
                    }
                    // A stale socket from an earlier run: only remove it if nobody answers.
                    if UnixStream::connect(socket).is_ok() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!("{}: another process is listening", socket.display()),
                        ));
                    }
                    let _ = std::fs::remove_file(socket);
                }
                let l = UnixListener::bind(socket)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            SocketMode::Client => None,
        };
        worker.send(Ctl::AddPort(Box::new(NewPort {
            id,
            name: spec.name.clone(),
            kind: PortKind::Vhost,
            diag: spec.diag,
            frame_size: spec.diag_frame_size,
            mac: spec.mac,
            policy: spec.policy.clone(),
            coalesce: spec.coalesce,
            stats: stats.clone(),
        })));
        // A server-mode port's thread sleeps in epoll on its listening socket, the
        // end of the connection it serves and `wake` (shutdown): it uses no CPU while
        // nothing connects.
        let wake = EventFd::new(EFD_NONBLOCK)?;
        let waiter = match &listener {
            Some(l) => Some(Waiter::new(l, &wake)?),
            None => None,
        };
        let thread = {
            let (spec, worker, stop, connected) =
                (spec.clone(), worker.clone(), stop.clone(), connected.clone());
            let path = socket.to_path_buf();
            std::thread::Builder::new().name(format!("port-{}", spec.name)).spawn(move || {
                let mut backoff = Duration::from_millis(50);
                // A connection that came while the previous one was ending.
                let mut next: Option<UnixStream> = None;
                while !stop.load(Ordering::Relaxed) {
                    let stream = match &listener {
                        Some(_) if next.is_some() => next.take(),
                        Some(l) => match l.accept() {
                            Ok((s, _)) => Some(s),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                            Err(e) => {
                                eprintln!("virtwire: port {}: accept: {e}", spec.name);
                                // Out of descriptors, say: the socket stays readable.
                                std::thread::sleep(Duration::from_millis(100));
                                None
                            }
                        },
                        None => UnixStream::connect(&path).ok(),
                    };
                    let Some(s) = stream else {
                        match &waiter {
                            Some(w) => w.wait(),
                            None => {
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(1));
                            }
                        }
                        continue;
                    };
                    backoff = Duration::from_millis(50);
                    let _ = s.set_nonblocking(false);
                    connected.store(true, Ordering::Relaxed);
                    match &listener {
                        // Keep accepting while serving, to refuse a second frontend
                        // at once instead of leaving it waiting for replies.
                        Some(l) => {
                            let (spec2, worker2) = (spec.clone(), worker.clone());
                            let done = Arc::new(AtomicBool::new(false));
                            let done2 = done.clone();
                            let ended = waiter.as_ref().and_then(|w| w.ended.try_clone().ok());
                            let t = std::thread::spawn(move || {
                                serve(s, &spec2, id, &worker2);
                                done2.store(true, Ordering::Relaxed);
                                if let Some(e) = ended {
                                    let _ = e.write(1);
                                }
                            });
                            while !done.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                                match l.accept() {
                                    Ok((extra, _)) if Self::ends_soon(&done) => next = Some(extra),
                                    Ok((extra, _)) => {
                                        eprintln!(
                                            "virtwire: port {}: refusing a second frontend connection (one is being served)",
                                            spec.name
                                        );
                                        drop(extra);
                                    }
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                                }
                                if let Some(w) = &waiter {
                                    w.wait();
                                }
                            }
                            if let Some(w) = &waiter {
                                let _ = w.ended.read();
                            }
                            if done.load(Ordering::Relaxed) {
                                let _ = t.join();
                            }
                        }
                        None => serve(s, &spec, id, &worker),
                    }
                    connected.store(false, Ordering::Relaxed);
                }
            })?
        };
        Ok(Port {
            spec,
            socket: socket.to_path_buf(),
            mode,
            stats,
            connected,
            id,
            worker,
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// A frontend that reconnects may be accepted before the thread serving its old
    /// connection has seen it close: give that thread a moment (up to 200 ms) before
    /// calling the new connection a second frontend.
    fn ends_soon(done: &AtomicBool) -> bool {
        for _ in 0..20 {
            if done.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        done.load(Ordering::Relaxed)
    }

    /// Port id inside its worker.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// Stops accepting, and removes the socket this port created. A connection being
    /// served ends when the frontend closes it or the process exits.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.write(1);
        if self.mode == SocketMode::Server {
            let _ = std::fs::remove_file(&self.socket);
        }
        self.worker.send(Ctl::RemovePort { id: self.id });
        let _ = self.thread.take();
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What a server-mode port's thread sleeps on: a connection to accept, the end of the
/// one being served, or shutdown.
struct Waiter {
    epoll: Epoll,
    /// Written by the serving thread when its connection ends.
    ended: EventFd,
}

impl Waiter {
    fn new(listener: &UnixListener, wake: &EventFd) -> std::io::Result<Waiter> {
        let epoll = Epoll::new()?;
        let ended = EventFd::new(EFD_NONBLOCK)?;
        for (fd, key) in [(listener.as_raw_fd(), 0), (wake.as_raw_fd(), 1), (ended.as_raw_fd(), 2)] {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, key))?;
        }
        Ok(Waiter { epoll, ended })
    }

    /// Sleeps until something is ready (at most a second, as a safety net). The
    /// eventfds are level-triggered: `wake` stays readable after shutdown, `ended` is
    /// drained by the caller.
    fn wait(&self) {
        let mut ev = [EpollEvent::default(); 3];
        let _ = self.epoll.wait(1000, &mut ev);
    }
}
