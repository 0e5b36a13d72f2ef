//! DPDK testpmd with its vhost PMD as a reference vhost-user backend for guest tests
//! (Debian package `dpdk-dev` for `dpdk-testpmd`, plus the PMD plugins `librte-net-vhost23`
//! and `librte-mempool-ring23`).
//!
//! testpmd runs without hugepages (`--no-huge --no-shconf`), keeps running while its stdin
//! is open (we hold the pipe), and is stopped with SIGINT, after which it prints its final
//! forwarding statistics. Its forwarding lcore busy-polls one host core.

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const TESTPMD: &str = "dpdk-testpmd";

#[derive(Clone, Debug)]
pub struct TestpmdSpec {
    /// Short name, used for DPDK's `--file-prefix` and in messages.
    pub name: String,
    /// The vhost-user socket.
    pub socket: PathBuf,
    /// true: testpmd connects to a listening QEMU (`client=1`, it retries until the socket
    /// appears). false: testpmd listens and QEMU connects.
    pub client: bool,
    /// Queue pairs (`queues=` on the vdev and `--rxq/--txq`).
    pub queues: u16,
    /// testpmd `--forward-mode`, e.g. `macswap` (reflect every frame with MACs swapped).
    pub forward_mode: String,
    /// Appended to the `--vdev net_vhost0,...` options, e.g. `tso=1` (no leading comma).
    pub extra_vdev_opts: String,
    /// Use the virtio-user PMD (testpmd plays the guest and connects to a vhost-user
    /// backend at `socket`) instead of the vhost PMD. Needs hugepages: see
    /// [`ensure_hugepages`].
    pub virtio_user: bool,
    /// Send a first burst before forwarding (`--tx-first`), for io forwarding loops.
    pub tx_first: bool,
    /// More ports: each a `--vdev` argument (e.g. a second `net_virtio_user1,path=...`).
    pub extra_vdevs: Vec<String>,
    /// Appended to testpmd's own options (after `--`), e.g. `--cmdline-file=FILE`.
    pub extra_args: Vec<String>,
}

impl TestpmdSpec {
    pub fn new(name: &str, socket: PathBuf) -> TestpmdSpec {
        TestpmdSpec {
            name: name.to_string(),
            socket,
            client: false,
            queues: 1,
            forward_mode: "macswap".into(),
            extra_vdev_opts: String::new(),
            virtio_user: false,
            tx_first: false,
            extra_vdevs: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

/// testpmd's totals after it stopped.
#[derive(Clone, Debug, Default)]
pub struct TestpmdStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
    /// Everything testpmd printed.
    pub log: String,
}

pub struct Testpmd {
    pub name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    stopped: bool,
    /// DPDK's --file-prefix: names its runtime dir, removed when testpmd is gone.
    prefix: String,
}

impl Testpmd {
    /// Starts testpmd and waits (up to `timeout`) until it is forwarding (`Press enter to
    /// exit`); in server mode the socket then exists.
    pub fn start(spec: TestpmdSpec, timeout: Duration) -> Result<Testpmd> {
        let q = spec.queues.max(1);
        let mut vdev = if spec.virtio_user {
            ensure_hugepages()?;
            format!("net_virtio_user0,path={},queues={q}", spec.socket.display())
        } else {
            format!("net_vhost0,iface={},client={},queues={q}", spec.socket.display(), u8::from(spec.client))
        };
        if !spec.extra_vdev_opts.is_empty() {
            vdev.push(',');
            vdev.push_str(spec.extra_vdev_opts.trim_start_matches(','));
        }
        let prefix: String = format!("vw-{}-{}", spec.name, std::process::id())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
            .collect();
        // Two lcores (main + one forwarding lcore, which busy-polls), both free to run on any
        // host CPU: pinning the poller would starve whatever else is scheduled on that CPU.
        let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpus = if ncpu > 1 { format!("(0-{})", ncpu - 1) } else { "0".to_string() };
        // virtio-user shares its memory with the backend, so it needs file-backed
        // (hugepage) memory in few segments; the vhost PMD works without hugepages.
        let memory: Vec<String> = if spec.virtio_user {
            vec!["--single-file-segments".into(), "--in-memory".into(), "-m".into(), "512".into()]
        } else {
            vec!["--no-huge".into(), "-m".into(), "512".into(), "--no-shconf".into()]
        };
        let mut args: Vec<String> = vec![format!("--lcores=0@{cpus},1@{cpus}")];
        args.extend(memory);
        args.extend([
            "--no-pci".to_string(),
            format!("--file-prefix={prefix}"),
            "--log-level=lib.eal:notice".into(),
            "--vdev".into(),
            vdev,
        ]);
        for v in &spec.extra_vdevs {
            args.extend(["--vdev".to_string(), v.clone()]);
        }
        args.extend([
            "--".to_string(),
            format!("--forward-mode={}", spec.forward_mode),
            "--auto-start".into(),
            "--disable-link-check".into(),
            "--total-num-mbufs=16384".into(),
            format!("--rxq={q}"),
            format!("--txq={q}"),
        ]);
        if spec.tx_first {
            args.push("--tx-first".into());
        }
        args.extend(spec.extra_args.iter().cloned());
        // stdout is a pipe: line-buffer it so "Press enter to exit" arrives when printed.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "-eL", TESTPMD])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {TESTPMD} (install dpdk-dev)"))?;
        let stdin = child.stdin.take();
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let pipes: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("stdout piped")),
            Box::new(child.stderr.take().expect("stderr piped")),
        ];
        for mut pipe in pipes {
            let out = out.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            }));
        }
        let mut pmd =
            Testpmd { name: spec.name, child: Some(child), stdin, out, readers, stopped: false, prefix };
        let deadline = Instant::now() + timeout;
        loop {
            if pmd.output_so_far().contains("Press enter to exit") {
                break;
            }
            if let Some(st) = pmd.child.as_mut().unwrap().try_wait()? {
                bail!("{TESTPMD} exited early ({st}):\n{}\nargs: {args:?}", pmd.output_so_far());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{TESTPMD} not forwarding within {timeout:?}:\n{}\nargs: {args:?}",
                    pmd.output_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !spec.client && !spec.socket.exists() {
            bail!(
                "{TESTPMD} is forwarding but {} does not exist:\n{}",
                spec.socket.display(),
                pmd.output_so_far()
            );
        }
        Ok(pmd)
    }

    pub fn output_so_far(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// SIGINT, wait for exit (SIGKILL after `timeout`), and parse the final statistics.
    pub fn stop(mut self, timeout: Duration) -> Result<TestpmdStats> {
        let clean = self.terminate(timeout);
        let log = self.output_so_far();
        self.stopped = true;
        if !clean {
            bail!("{TESTPMD} did not exit within {timeout:?} of SIGINT:\n{log}");
        }
        parse_stats(&log)
    }

    /// Returns whether it exited by itself after SIGINT.
    fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else { return true };
        let mut clean = true;
        if child.try_wait().ok().flatten().is_none() {
            // SIGINT makes testpmd print its final statistics; the standard library only
            // sends SIGKILL, so use kill(1).
            let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
            let deadline = Instant::now() + timeout;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    clean = false;
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.wait();
        self.stdin.take();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.child = None;
        // DPDK leaves its runtime dir (<runtime>/dpdk/<file-prefix>) behind even with
        // --no-shconf; remove ours.
        // (/var/run for root, $XDG_RUNTIME_DIR otherwise: try both.)
        let mut runtimes = vec![PathBuf::from("/var/run")];
        runtimes.extend(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from));
        for runtime in runtimes {
            let _ = fs::remove_dir_all(runtime.join("dpdk").join(&self.prefix));
        }
        clean
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
        if std::thread::panicking() && !self.stopped {
            eprintln!("---- testpmd {} output ----\n{}", self.name, self.output_so_far());
        }
    }
}

/// The accumulated totals from testpmd's final statistics (the last block it printed).
pub fn parse_stats(log: &str) -> Result<TestpmdStats> {
    let Some(at) = log.rfind("Accumulated forward statistics for all ports") else {
        bail!("no final statistics in testpmd output:\n{log}");
    };
    let block = &log[at..];
    let field = |name: &str| -> Result<u64> {
        let i = block.find(name).with_context(|| format!("{name} missing in testpmd stats:\n{block}"))?;
        let rest = block[i + name.len()..].trim_start();
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().with_context(|| format!("{name} not a number in testpmd stats"))
    };
    Ok(TestpmdStats {
        rx_packets: field("RX-packets:")?,
        rx_dropped: field("RX-dropped:")?,
        tx_packets: field("TX-packets:")?,
        tx_dropped: field("TX-dropped:")?,
        log: log.to_string(),
    })
}

/// Reserves 2 MiB hugepages (at least 2 GiB worth) and mounts hugetlbfs at
/// /dev/hugepages when needed, for DPDK's virtio-user PMD.
pub fn ensure_hugepages() -> Result<()> {
    let path = "/proc/sys/vm/nr_hugepages";
    let have: u64 = fs::read_to_string(path)?.trim().parse().unwrap_or(0);
    if have < 1024 {
        fs::write(path, "1024").context("reserve hugepages (needs root)")?;
    }
    let mounts = fs::read_to_string("/proc/mounts")?;
    if !mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")) {
        fs::create_dir_all("/dev/hugepages")?;
        let st = Command::new("mount").args(["-t", "hugetlbfs", "nodev", "/dev/hugepages"]).status()?;
        if !st.success() {
            bail!("mounting hugetlbfs at /dev/hugepages failed");
        }
    }
    Ok(())
}

/// Removes a stale socket file (e.g. left by a killed run) before a server binds it.
pub fn remove_stale_socket(path: &std::path::Path) {
    let _ = fs::remove_file(path);
}
