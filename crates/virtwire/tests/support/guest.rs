//! Boot a small Linux guest under QEMU (TCG) with one virtio-net device on a vhost-user
//! socket, run a shell script in it and collect its serial console.
//!
//! The kernel and initramfs come from `scripts/guest/build.sh` (run once per test process;
//! it caches its outputs in `target/guest`, or `$VIRTWIRE_GUEST_DIR`). The test script is
//! appended to the initramfs as a second cpio archive holding `/test.sh`, so it has no
//! length limit. The guest's `/init` loads the virtio modules, configures `eth0`, prints
//! `VW-READY ...`, runs `/test.sh`, prints `VW-EXIT <status>` and powers off.
//!
//! ```ignore
//! let guest = Guest::boot(GuestSpec {
//!     vhost_user_socket: sock.clone(),
//!     script: "ip -s link show eth0".into(),
//!     ..GuestSpec::new("g1")
//! })?;
//! let out = guest.wait_exit(Duration::from_secs(120))?;
//! assert_eq!(out.status, 0, "{}", out.console);
//! ```
//!
//! QEMU blocks at startup until the vhost-user handshake is done: with
//! `socket_server: false` (QEMU connects, `reconnect=1`) the backend should be listening,
//! or start soon; with `socket_server: true` QEMU listens and the backend connects.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

/// The QEMU binary the harness runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// How the virtio-net device is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `-M microvm` with `virtio-net-device` on virtio-mmio (virtio 1.0). Fastest boot.
    Mmio,
    /// `-M pc` with `virtio-net-pci,vectors=0` (INTx; MSI-X crashes QEMU 7.2's vhost-user
    /// start under TCG).
    Pci,
}

/// What to boot. Start from [`GuestSpec::new`] and override fields.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    /// Short name: hostname in the guest, part of temp-file names and log lines.
    pub name: String,
    /// The vhost-user unix socket.
    pub vhost_user_socket: PathBuf,
    /// true: QEMU listens on the socket (`server=on,wait=off`) and the backend connects.
    /// false: QEMU connects (`reconnect=1`) to a listening backend.
    pub socket_server: bool,
    /// eth0's MAC address, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// eth0's address with prefix length, e.g. `10.0.0.1/24`; empty for none.
    pub ip: String,
    /// Queue pairs (netdev `queues=`; `mq=on` and `ethtool -L eth0 combined N` when > 1).
    pub queues: u16,
    /// Guest vCPUs. Linux uses min(queues, vcpus) queue pairs by default.
    pub vcpus: u16,
    /// Guest memory (shared memfd).
    pub mem_mb: u32,
    /// Shell script run by the guest's init (busybox sh) after eth0 is up.
    pub script: String,
    /// Extra files put into the guest's root file system: (absolute path, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Use the packed virtqueue layout (`packed=on`).
    pub layout_packed: bool,
    /// Appended to the `-device` option, e.g. `"mrg_rxbuf=off,csum=off"` (no leading comma).
    pub extra_device_opts: String,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// Machine and device transport.
    pub transport: Transport,
    /// Keep QEMU's stdin (the serial console's input) open for [`Guest::send_console`];
    /// otherwise it is `/dev/null`.
    pub console_input: bool,
}

impl GuestSpec {
    /// Defaults: QEMU as client, MAC derived from the name, no IP, 1 queue, 1 vCPU, 256 MiB,
    /// split ring, virtio-mmio. `vhost_user_socket` must still be set.
    pub fn new(name: &str) -> GuestSpec {
        GuestSpec {
            name: name.to_string(),
            vhost_user_socket: PathBuf::new(),
            socket_server: false,
            mac: mac_for(name),
            ip: String::new(),
            queues: 1,
            vcpus: 1,
            mem_mb: 256,
            script: String::new(),
            files: Vec::new(),
            layout_packed: false,
            extra_device_opts: String::new(),
            extra_cmdline: String::new(),
            transport: Transport::Mmio,
            console_input: false,
        }
    }
}

/// A locally administered unicast MAC derived from `name` (stable across runs).
pub fn mac_for(name: &str) -> String {
    // FNV-1a, 32 bits.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// A fresh, empty directory under the system temp dir, unique to this process and call,
/// removed on drop (kept when `$VIRTWIRE_KEEP_GUEST_TMP` is set). Short enough for unix
/// socket paths (`dir/x.sock` stays well under 108 bytes). Derefs to `Path`.
pub fn scratch_dir(tag: &str) -> ScratchDir {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(24).collect();
    let dir = std::env::temp_dir().join(format!("vw-{tag}-{}-{n}-{nanos:x}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    ScratchDir(dir)
}

/// See [`scratch_dir`].
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os("VIRTWIRE_KEEP_GUEST_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Kernel and initramfs built by `scripts/guest/build.sh`.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// Builds (or finds in the cache) the guest image; runs the build script once per process.
pub fn guest_image() -> Result<GuestImage> {
    static IMAGE: OnceLock<std::result::Result<GuestImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let root = repo_root();
            let dir = match std::env::var_os("VIRTWIRE_GUEST_DIR") {
                Some(d) => PathBuf::from(d),
                None => root.join("target/guest"),
            };
            let out = Command::new("bash")
                .arg(root.join("scripts/guest/build.sh"))
                .env("VIRTWIRE_GUEST_DIR", &dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("run scripts/guest/build.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/guest/build.sh failed ({}):\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let image = GuestImage { vmlinux: dir.join("vmlinux"), initramfs: dir.join("initramfs.cpio") };
            for p in [&image.vmlinux, &image.initramfs] {
                if !p.is_file() {
                    return Err(format!("scripts/guest/build.sh did not produce {}", p.display()));
                }
            }
            Ok(image)
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The host's TSC frequency in kHz, for the guest's `tsc_early_khz=` (under TCG the guest
/// TSC runs at the host's rate). `$VIRTWIRE_GUEST_TSC_KHZ` overrides; else measured once.
pub fn host_tsc_khz() -> u64 {
    static KHZ: OnceLock<u64> = OnceLock::new();
    *KHZ.get_or_init(|| {
        if let Some(k) = std::env::var("VIRTWIRE_GUEST_TSC_KHZ").ok().and_then(|v| v.parse().ok()) {
            return k;
        }
        measure_tsc_khz()
    })
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter; every x86_64 CPU has it.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    // Median of three 50 ms windows, so one disturbed window does not matter.
    let mut khz: Vec<u64> = (0..3)
        .map(|_| {
            let (t0, c0) = (Instant::now(), tsc());
            std::thread::sleep(Duration::from_millis(50));
            let (c1, t1) = (tsc(), Instant::now());
            let ns = t1.duration_since(t0).as_nanos().max(1) as u64;
            c1.wrapping_sub(c0).saturating_mul(1_000_000) / ns
        })
        .collect();
    khz.sort_unstable();
    khz[1]
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> u64 {
    0
}

/// What a guest left behind.
#[derive(Clone, Debug)]
pub struct GuestOutput {
    /// The test script's exit status (from `VW-EXIT <status>`).
    pub status: i32,
    /// Everything the guest printed on its serial console.
    pub console: String,
    /// QEMU's own stderr.
    pub qemu_stderr: String,
    /// From spawning QEMU to `VW-READY` (eth0 configured, script about to start).
    pub boot_time: Option<Duration>,
    /// From spawning QEMU to QEMU's exit.
    pub total_time: Duration,
}

impl GuestOutput {
    /// Err with the console unless the script exited 0.
    pub fn ensure_success(&self) -> Result<()> {
        if self.status != 0 {
            bail!("guest script exited {}; console:\n{}", self.status, self.console);
        }
        Ok(())
    }

    /// The value of every `KEY=value` token on the console lines that start with `marker`
    /// (later lines override earlier ones).
    pub fn marker_fields(&self, marker: &str) -> std::collections::BTreeMap<String, String> {
        marker_fields(&self.console, marker)
    }
}

/// See [`GuestOutput::marker_fields`].
pub fn marker_fields(console: &str, marker: &str) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(marker) {
            if !(rest.is_empty() || rest.starts_with(' ')) {
                continue;
            }
            for tok in rest.split_whitespace() {
                if let Some((k, v)) = tok.split_once('=') {
                    map.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    map
}

#[derive(Default)]
struct Console {
    bytes: Vec<u8>,
    ready_at: Option<Instant>,
}

type Shared = Arc<(Mutex<Console>, Condvar)>;

/// A running guest. Dropping it kills QEMU and removes its temp files (kept when
/// `$VIRTWIRE_KEEP_GUEST_TMP` is set); when dropped during a panic it prints the console.
/// Fields drop in declaration order: QEMU is killed before its directory goes.
pub struct Guest {
    pub name: String,
    child: Option<Child>,
    console: Shared,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    _dir: ScratchDir,
    command_line: String,
    reported: bool,
    console_in: Option<std::process::ChildStdin>,
}

impl Guest {
    /// Starts QEMU. Returns as soon as QEMU runs; see [`Guest::wait_exit`].
    pub fn boot(spec: GuestSpec) -> Result<Guest> {
        if spec.vhost_user_socket.as_os_str().is_empty() {
            bail!("GuestSpec.vhost_user_socket is not set");
        }
        let image = guest_image()?;
        let dir = scratch_dir(&format!("guest-{}", spec.name));

        // Per-VM initrd: the shared image followed by a cpio archive with /test.sh.
        let initrd = dir.join("initrd.cpio");
        let mut extra = Vec::new();
        let mut files = spec.files.clone();
        files.push(("/test.sh".into(), spec.script.clone().into_bytes(), 0o755));
        write_newc(&mut extra, &files)?;
        {
            let mut f = fs::File::create(&initrd).context("create initrd")?;
            let mut base = fs::File::open(&image.initramfs).context("open initramfs")?;
            std::io::copy(&mut base, &mut f).context("copy initramfs")?;
            f.write_all(&extra)?;
        }

        let args = qemu_args(&spec, &image, &initrd);
        let command_line =
            format!("{QEMU} {}", args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
        fs::write(dir.join("qemu-cmdline.txt"), &command_line)?;

        let started = Instant::now();
        let mut child = Command::new(QEMU)
            .args(&args)
            .stdin(if spec.console_input { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {QEMU} (install qemu-system-x86)"))?;

        let console_in = child.stdin.take();
        let console: Shared = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        {
            let mut out = child.stdout.take().expect("stdout piped");
            let console = console.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match out.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let (lock, cv) = &*console;
                            let mut c = lock.lock().unwrap();
                            let from = c.bytes.len().saturating_sub(32);
                            c.bytes.extend_from_slice(&buf[..n]);
                            if c.ready_at.is_none() && find(&c.bytes[from..], b"VW-READY").is_some() {
                                c.ready_at = Some(Instant::now());
                            }
                            cv.notify_all();
                        }
                    }
                }
                console.1.notify_all();
            }));
        }
        {
            let mut err = child.stderr.take().expect("stderr piped");
            let stderr = stderr.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => stderr.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            }));
        }

        Ok(Guest {
            name: spec.name,
            child: Some(child),
            console,
            stderr,
            readers,
            started,
            _dir: dir,
            command_line,
            reported: false,
            console_in,
        })
    }

    /// The QEMU command line used (shell-quoted).
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// QEMU's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Types `line` and a newline on the guest's serial console (needs
    /// `GuestSpec::console_input`). A guest script reads it with `read -r l </dev/console`.
    pub fn send_console(&mut self, line: &str) -> Result<()> {
        let name = &self.name;
        let input = self.console_in.as_mut().with_context(|| format!("guest {name}: no console input"))?;
        input.write_all(format!("{line}\n").as_bytes())?;
        input.flush()?;
        Ok(())
    }

    /// The console output so far.
    pub fn console_so_far(&self) -> String {
        String::from_utf8_lossy(&self.console.0.lock().unwrap().bytes).into_owned()
    }

    fn qemu_stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until the console contains `needle` (or QEMU exits, or the timeout passes).
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.console;
        let mut c = lock.lock().unwrap();
        loop {
            if find(&c.bytes, needle.as_bytes()).is_some() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let exited = match self.child.as_mut() {
                Some(ch) => ch.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if exited && self.readers.iter().all(|r| r.is_finished()) {
                break;
            }
            c = cv.wait_timeout(c, (deadline - now).min(Duration::from_millis(200))).unwrap().0;
        }
        drop(c);
        bail!(
            "guest {}: {:?} not seen within {timeout:?}; console:\n{}\nqemu stderr:\n{}",
            self.name,
            needle,
            self.console_so_far(),
            self.qemu_stderr()
        )
    }

    /// Waits for the guest to power off and returns its output. On timeout QEMU is killed
    /// and an error carrying the console is returned; likewise when no `VW-EXIT` was printed.
    pub fn wait_exit(mut self, timeout: Duration) -> Result<GuestOutput> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            let child = self.child.as_mut().expect("child present until drop");
            if let Some(st) = child.try_wait().context("wait for qemu")? {
                break Some(st);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let total_time = self.started.elapsed();
        let timed_out = status.is_none();
        if timed_out {
            self.kill();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let console = self.console_so_far();
        let qemu_stderr = self.qemu_stderr();
        let ready_at = self.console.0.lock().unwrap().ready_at;
        self.reported = true;
        if timed_out {
            bail!(
                "guest {} did not exit within {timeout:?}; console:\n{console}\nqemu stderr:\n{qemu_stderr}\n\
                 qemu command: {}",
                self.name,
                self.command_line
            );
        }
        let exit_status = match parse_exit(&console) {
            Some(s) => s,
            None => bail!(
                "guest {}: QEMU exited ({}) without a VW-EXIT line; console:\n{console}\nqemu stderr:\n\
                 {qemu_stderr}\nqemu command: {}",
                self.name,
                status.map(|s: ExitStatus| s.to_string()).unwrap_or_default(),
                self.command_line
            ),
        };
        Ok(GuestOutput {
            status: exit_status,
            console,
            qemu_stderr,
            boot_time: ready_at.map(|t| t.duration_since(self.started)),
            total_time,
        })
    }

    /// Kills QEMU now (idempotent).
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "---- guest {} console ----\n{}\n---- qemu stderr ----\n{}\n---- qemu command ----\n{}",
                self.name,
                self.console_so_far(),
                self.qemu_stderr(),
                self.command_line
            );
        }
    }
}

/// The status from the last `VW-EXIT <n>` line.
pub fn parse_exit(console: &str) -> Option<i32> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("VW-EXIT "))
        .filter_map(|s| s.trim().parse().ok())
        .next_back()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_=,./:@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The QEMU arguments for `spec` (without the program name).
pub fn qemu_args(spec: &GuestSpec, image: &GuestImage, initrd: &Path) -> Vec<String> {
    let mem = spec.mem_mb;
    let sock = spec.vhost_user_socket.display();
    let chardev = if spec.socket_server {
        format!("socket,id=c0,path={sock},server=on,wait=off")
    } else {
        format!("socket,id=c0,path={sock},reconnect=1")
    };
    let mut device = match spec.transport {
        Transport::Mmio => "virtio-net-device".to_string(),
        Transport::Pci => "virtio-net-pci,vectors=0".to_string(),
    };
    device.push_str(&format!(",netdev=n0,mac={}", spec.mac));
    if spec.queues > 1 {
        device.push_str(",mq=on");
    }
    if spec.layout_packed {
        device.push_str(",packed=on");
    }
    if !spec.extra_device_opts.is_empty() {
        device.push(',');
        device.push_str(spec.extra_device_opts.trim_start_matches(','));
    }
    let machine = match spec.transport {
        Transport::Mmio => "microvm,pit=on,memory-backend=mem",
        Transport::Pci => "pc,memory-backend=mem",
    };
    let mut cmdline = vec![
        "console=ttyS0".to_string(),
        "panic=-1".into(),
        "oops=panic".into(),
        "loglevel=4".into(),
        format!("tsc_early_khz={}", host_tsc_khz()),
        "tsc=reliable".into(),
        format!("vw.name={}", spec.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")),
    ];
    if !spec.ip.is_empty() {
        cmdline.push(format!("vw.ip={}", spec.ip));
    }
    if spec.queues > 1 {
        cmdline.push(format!("vw.queues={}", spec.queues));
    }
    if !spec.extra_cmdline.is_empty() {
        cmdline.push(spec.extra_cmdline.clone());
    }
    let mut args: Vec<String> = vec![
        "-accel".into(),
        "tcg".into(),
        "-M".into(),
        machine.into(),
        "-m".into(),
        format!("{mem}M"),
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        "-smp".into(),
        spec.vcpus.max(1).to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-no-reboot".into(),
    ];
    if spec.transport == Transport::Mmio {
        args.extend(["-global".into(), "virtio-mmio.force-legacy=false".into()]);
    }
    args.extend([
        "-chardev".into(),
        chardev,
        "-netdev".into(),
        format!("vhost-user,id=n0,chardev=c0,queues={}", spec.queues.max(1)),
        "-device".into(),
        device,
        "-kernel".into(),
        image.vmlinux.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        cmdline.join(" "),
    ]);
    args
}

/// Writes a newc ("070701") cpio archive holding `files` (parent directories are created
/// as needed) and a trailer, padded to 512 bytes so further archives can follow.
pub fn write_newc(out: &mut Vec<u8>, files: &[(String, Vec<u8>, u32)]) -> Result<()> {
    // Zero-pads `buf` to a multiple of `align` bytes.
    fn pad(buf: &mut Vec<u8>, align: usize) {
        let rem = buf.len() % align;
        if rem > 0 {
            buf.resize(buf.len() + align - rem, 0);
        }
    }
    let mut buf = Vec::new();
    let mut ino = 0x7000_0000u32;
    let mut entry = |buf: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| {
        ino += 1;
        let namesize = name.len() + 1;
        let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, namesize as u32, 0];
        buf.extend_from_slice(b"070701");
        for f in fields {
            buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        pad(buf, 4);
        buf.extend_from_slice(data);
        pad(buf, 4);
    };
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data, mode) in files {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            bail!("bad guest file path {path:?}");
        }
        let comps: Vec<&str> = rel.split('/').collect();
        let mut prefix = String::new();
        for c in &comps[..comps.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            if dirs.insert(prefix.clone()) {
                entry(&mut buf, &prefix, 0o040755, &[]);
            }
        }
        entry(&mut buf, rel, 0o100000 | (mode & 0o7777), data);
    }
    entry(&mut buf, "TRAILER!!!", 0, &[]);
    pad(&mut buf, 512);
    out.extend_from_slice(&buf);
    Ok(())
}
