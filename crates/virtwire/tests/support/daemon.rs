//! The real `virtwire run` process, started from a configuration text, with its stderr
//! captured to a file. Killed (SIGTERM, then SIGKILL) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `virtwire run --config` with `config` written into `dir`, and waits until
    /// every path in `wait_for` exists (server-mode sockets).
    pub fn start(dir: &Path, config: &str, wait_for: &[PathBuf]) -> Daemon {
        let cfg = dir.join("virtwire.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("virtwire.log");
        let child = Command::new(env!("CARGO_BIN_EXE_virtwire"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start virtwire");
        let d = Daemon { child: Some(child), log };
        let t = Instant::now();
        for p in wait_for {
            while !p.exists() {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "virtwire did not create {}:\n{}",
                    p.display(),
                    d.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 5 s) until the daemon's log contains `needle`.
    pub fn expect_log(&self, needle: &str) {
        let t = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(t.elapsed() < Duration::from_secs(5), "log lacks {needle:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM and returns its whole log (which ends with the
    /// per-port counters).
    pub fn stop(mut self) -> String {
        if let Some(mut c) = self.child.take() {
            // The standard library only sends SIGKILL; SIGTERM goes through kill(1).
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log_text()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads a counter from the daemon's final per-port line, e.g.
/// `port vm: from guest 20 packets in ...` -> counter("vm", "from guest") = 20.
pub fn final_counter(log: &str, port: &str, what: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(&format!("port {port}: from guest")))?;
    let i = line.find(what)? + what.len();
    line[i..].split_whitespace().next()?.parse().ok()
}
