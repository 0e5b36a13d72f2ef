//! virtwire as an L2 switch between Linux guests: the `virtwire run` daemon with its own
//! run directory and control socket, the `virtwire` CLI against it, its JSON statistics,
//! network namespaces for tap ports, kernel modules for a guest, and the shell pieces the
//! guest scripts share (ping and iperf3 with their results as console markers).
//!
//! Console protocol of the guest scripts built from [`GUEST_PRELUDE`]:
//! - `VW-PING-<tag> to=A sent=N received=M` after `vw_ping <tag> A N`;
//! - `VW-JSON-BEGIN <tag>`, iperf3's `--json` report, `VW-JSON-END <tag> status=S` after
//!   `vw_iperf_run <tag> ARGS...` and `vw_iperf_print <tag>`;
//! - `VW-WAIT <tag>` when the script stops until the test types a line on the console
//!   ([`Guest::send_console`](super::guest::Guest::send_console));
//! - `VW-DONE` when the script has finished its part; the guest then idles (answering its
//!   peers) until the test kills it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Shell functions every switch test script starts with (busybox sh).
pub const GUEST_PRELUDE: &str = r#"set -u
stty -echo </dev/console 2>/dev/null
vw_now() { read -r vw_up _ </proc/uptime; echo "${vw_up%.*}"; }
# vw_wait_ping ADDR SECONDS: until ADDR answers one echo request.
vw_wait_ping() {
    vw_end=$(( $(vw_now) + $2 ))
    while [ "$(vw_now)" -lt "$vw_end" ]; do
        ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
        usleep 200000
    done
    echo "VW-UNREACHABLE to=$1"
    return 1
}
# vw_ping TAG ADDR COUNT: COUNT echo requests, 0.2 s apart; the answers as a marker.
vw_ping() {
    vw_out=$(ping -c "$3" -i 0.2 -W 2 "$2" 2>&1)
    vw_rcvd=$(echo "$vw_out" | sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p')
    echo "VW-PING-$1 to=$2 sent=$3 received=${vw_rcvd:-0}"
}
# vw_iperf_run TAG ARGS...: one iperf3 client run with --json into /tmp/TAG.json; retried
# while the server is not listening yet. (iperf3 --json exits 0 even when it failed: its
# report then has an "error" member.)
vw_iperf_run() {
    vw_tag=$1
    shift
    vw_n=0
    while :; do
        iperf3 --json "$@" >/tmp/$vw_tag.json 2>&1
        vw_st=$?
        grep -q '"error"' /tmp/$vw_tag.json || break
        grep -qE 'unable to connect|Connection refused' /tmp/$vw_tag.json || break
        vw_n=$((vw_n + 1))
        [ $vw_n -ge 15 ] && break
        sleep 1
    done
    echo $vw_st >/tmp/$vw_tag.status
}
vw_iperf_print() {
    echo "VW-JSON-BEGIN $1"
    cat /tmp/$1.json
    echo
    echo "VW-JSON-END $1 status=$(cat /tmp/$1.status)"
}
vw_iperf() {
    vw_iperf_run "$@"
    vw_iperf_print "$1"
}
# vw_go TAG: wait for the test to type a line on the console.
vw_go() {
    echo "VW-WAIT $1"
    read -r vw_line </dev/console
}
vw_done() {
    echo "VW-DONE"
    while :; do sleep 60; done
}
"#;

/// A TOML `[[port]]` table for a vhost-user port on which virtwire listens at `socket`.
/// `extra` holds more `key = value` lines (e.g. `vlan = 10`).
pub fn vhost_user_port(name: &str, socket: &Path, mac: &str, extra: &str) -> String {
    format!(
        "[[port]]\nname = '{name}'\ntype = 'vhost-user'\nsocket = '{}'\nmode = 'server'\nmac = '{mac}'\n{extra}\n",
        socket.display()
    )
}

/// A TOML `[[port]]` table for a tap port with kernel interface `ifname`.
pub fn tap_port(name: &str, ifname: &str, extra: &str) -> String {
    format!("[[port]]\nname = '{name}'\ntype = 'tap'\nifname = '{ifname}'\n{extra}\n")
}

/// The virtwire binary under test.
pub fn virtwire_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_virtwire"))
}

/// What a CLI command printed.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A running `virtwire run --config FILE --run-dir DIR`, killed when dropped.
pub struct Switch {
    child: Option<Child>,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub log: PathBuf,
}

impl Switch {
    /// Writes `config` into `dir`, starts the daemon with run directory `dir/run` and waits
    /// until its control socket and every path in `wait_for` exist.
    pub fn start(dir: &Path, config: &str, wait_for: &[PathBuf]) -> Switch {
        let cfg = dir.join("virtwire.toml");
        std::fs::write(&cfg, config).expect("write config");
        let run_dir = dir.join("run");
        let log = dir.join("virtwire.log");
        let child = Command::new(virtwire_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--run-dir")
            .arg(&run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create log"))
            .spawn()
            .expect("start virtwire");
        let mut sw = Switch { child: Some(child), config: cfg, run_dir, log };
        let ctl = sw.run_dir.join("ctl.sock");
        let t = Instant::now();
        for p in std::iter::once(&ctl).chain(wait_for) {
            while !p.exists() {
                if !sw.alive() {
                    panic!("virtwire exited before creating {}:\n{}", p.display(), sw.log_text());
                }
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "virtwire did not create {}:\n{}",
                    p.display(),
                    sw.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        sw
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the daemon runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Runs `virtwire ARGS... --run-dir RUN_DIR` (a CLI command against this daemon).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out: Output = Command::new(virtwire_bin())
            .args(args)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .env_remove("VIRTWIRE_RUN_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run the virtwire CLI");
        CliOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Like [`Switch::cli`]; panics (with the daemon's log) unless the command succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.success,
            "virtwire {} failed ({:?}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr,
            self.log_text()
        );
        out.stdout
    }

    /// Runs a CLI command that prints JSON and parses it.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let text = self.cli_ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("virtwire {} printed no JSON ({e}):\n{text}", args.join(" ")))
    }

    /// `virtwire stats --json`.
    pub fn stats(&self) -> Stats {
        Stats(self.cli_json(&["stats", "--json"]))
    }

    /// `virtwire stats PORT --json`.
    pub fn port_stats(&self, port: &str) -> PortStats {
        let v = self.cli_json(&["stats", port, "--json"]);
        assert_eq!(v.get("name").and_then(Value::as_str), Some(port), "stats {port} --json printed {v}");
        PortStats(v)
    }

    /// Stops the daemon with SIGTERM and returns its whole log.
    pub fn stop(mut self) -> String {
        if let Some(mut c) = self.child.take() {
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
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("---- virtwire log ----\n{}", self.log_text());
            }
        }
    }
}

/// `virtwire stats --json`.
#[derive(Clone, Debug)]
pub struct Stats(pub Value);

impl Stats {
    /// The object of port `name`.
    pub fn port(&self, name: &str) -> PortStats {
        let ports =
            self.0.get("ports").and_then(Value::as_array).unwrap_or_else(|| panic!("no ports: {}", self.0));
        let p = ports
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no port {name} in {}", self.0));
        PortStats(p.clone())
    }
}

/// One port's object of `virtwire stats --json`.
#[derive(Clone, Debug)]
pub struct PortStats(pub Value);

impl PortStats {
    /// The unsigned number at JSON pointer `ptr` (e.g. `/drops/spoofed`); panics when absent.
    pub fn num(&self, ptr: &str) -> u64 {
        self.0
            .pointer(ptr)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no number at {ptr} in {}", self.0))
    }

    pub fn rx_packets(&self) -> u64 {
        self.num("/rx_packets")
    }

    pub fn tx_packets(&self) -> u64 {
        self.num("/tx_packets")
    }

    pub fn rx_bytes(&self) -> u64 {
        self.num("/rx_bytes")
    }

    pub fn tx_bytes(&self) -> u64 {
        self.num("/tx_bytes")
    }

    pub fn connected(&self) -> bool {
        self.0.get("connected").and_then(Value::as_bool).unwrap_or(false)
    }

    /// Per queue pair: (rx_packets, tx_packets).
    pub fn queues(&self) -> Vec<(u64, u64)> {
        let qs = self
            .0
            .get("queues")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("no queues in {}", self.0));
        qs.iter()
            .map(|q| {
                let n = |k: &str| {
                    q.get(k).and_then(Value::as_u64).unwrap_or_else(|| panic!("queue without {k}: {q}"))
                };
                (n("rx_packets"), n("tx_packets"))
            })
            .collect()
    }
}

impl std::fmt::Display for PortStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Runs a command; Err with its output unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Waits until the kernel network interface `ifname` exists in this namespace.
pub fn wait_for_interface(ifname: &str, timeout: Duration) -> Result<()> {
    let path = Path::new("/sys/class/net").join(ifname);
    let t = Instant::now();
    while !path.exists() {
        if t.elapsed() > timeout {
            bail!("interface {ifname} did not appear within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates namespace `name` (replacing a stale one of that name) with `lo` up.
    pub fn create(name: &str) -> Result<NetNs> {
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = NetNs { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Moves `ifname` from this process's namespace into this one, gives it `addr`
    /// (`a.b.c.d/len`) and sets it up.
    pub fn adopt(&self, ifname: &str, addr: &str) -> Result<()> {
        run(Command::new("ip").args(["link", "set", ifname, "netns", &self.name]))?;
        self.ip(&["addr", "add", addr, "dev", ifname])?;
        self.ip(&["link", "set", ifname, "up"])?;
        Ok(())
    }

    /// A command run inside the namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `PROGRAM ARGS...` inside the namespace and returns its output, whatever its
    /// exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("ip netns exec {} {program}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// The number in ping's summary `N packets transmitted, M packets received, ...` (M).
pub fn ping_received(output: &str) -> Option<u64> {
    output
        .lines()
        .flat_map(|l| l.split(','))
        .find(|part| part.contains("received"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The text between `VW-JSON-BEGIN tag` and `VW-JSON-END tag status=S` on a guest console,
/// parsed, with S.
pub fn console_json(console: &str, tag: &str) -> Result<(i32, Value)> {
    let begin = format!("VW-JSON-BEGIN {tag}");
    let end = format!("VW-JSON-END {tag} ");
    let mut body = String::new();
    let mut inside = false;
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if !inside {
            inside = line == begin;
            continue;
        }
        if let Some(rest) = line.strip_prefix(&end) {
            let status = rest.trim().strip_prefix("status=").and_then(|s| s.parse().ok()).unwrap_or(-1);
            let v = serde_json::from_str(&body)
                .with_context(|| format!("iperf3 report {tag} is not JSON:\n{body}"))?;
            return Ok((status, v));
        }
        body.push_str(line);
        body.push('\n');
    }
    bail!("no complete iperf3 report {tag} on the console")
}

/// The parts of an iperf3 client's `--json` report the tests check.
#[derive(Clone, Debug)]
pub struct IperfReport {
    /// `end.sum_sent.bytes`.
    pub sent_bytes: u64,
    /// `end.sum_received.bytes`.
    pub received_bytes: u64,
    /// `intervals[i].sum.bytes`, in order.
    pub interval_bytes: Vec<u64>,
    /// `end.sum_received.bits_per_second`.
    pub received_bps: f64,
}

/// Reads the iperf3 report `tag` from a guest console; Err on a failed run.
pub fn iperf_report(console: &str, tag: &str) -> Result<IperfReport> {
    let (status, v) = console_json(console, tag)?;
    iperf_report_from(&v, status).with_context(|| format!("iperf3 run {tag}"))
}

/// The checked parts of an iperf3 `--json` report `v` of a run that exited with `status`.
pub fn iperf_report_from(v: &Value, status: i32) -> Result<IperfReport> {
    if let Some(e) = v.get("error") {
        bail!("iperf3 failed (status {status}): {e}");
    }
    if status != 0 {
        bail!("iperf3 exited {status}: {v}");
    }
    let u = |p: &str| v.pointer(p).and_then(Value::as_u64).ok_or_else(|| anyhow!("no {p} in the report"));
    let interval_bytes = v
        .get("intervals")
        .and_then(Value::as_array)
        .context("no intervals in the report")?
        .iter()
        .map(|i| i.pointer("/sum/bytes").and_then(Value::as_u64).context("interval without sum.bytes"))
        .collect::<Result<Vec<u64>>>()?;
    Ok(IperfReport {
        sent_bytes: u("/end/sum_sent/bytes")?,
        received_bytes: u("/end/sum_received/bytes")?,
        interval_bytes,
        received_bps: v.pointer("/end/sum_received/bits_per_second").and_then(Value::as_f64).unwrap_or(0.0),
    })
}

/// The guest kernel's release (`etc/vw-kernel` inside the guest image's initramfs).
pub fn guest_kernel_release() -> Result<String> {
    let image = super::guest::guest_image()?;
    let data = std::fs::read(&image.initramfs).context("read the guest initramfs")?;
    let file = newc_file(&data, "etc/vw-kernel")?.context("no etc/vw-kernel in the guest initramfs")?;
    Ok(String::from_utf8_lossy(file).trim().to_string())
}

/// The contents of `name` in a newc cpio archive.
fn newc_file<'a>(data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    let align4 = |n: usize| (n + 3) & !3;
    let mut off = 0;
    while off + 110 <= data.len() {
        if &data[off..off + 6] != b"070701" {
            bail!("bad cpio header at offset {off}");
        }
        let field = |i: usize| -> Result<usize> {
            let s = std::str::from_utf8(&data[off + 6 + 8 * i..off + 14 + 8 * i])?;
            Ok(usize::from_str_radix(s, 16)?)
        };
        let (filesize, namesize) = (field(6)?, field(11)?);
        let name_at = off + 110;
        let entry = data.get(name_at..name_at + namesize.saturating_sub(1)).context("truncated cpio")?;
        let data_at = align4(name_at + namesize);
        if entry == b"TRAILER!!!" {
            break;
        }
        if entry == name.as_bytes() {
            return Ok(Some(data.get(data_at..data_at + filesize).context("truncated cpio")?));
        }
        off = align4(data_at + filesize);
    }
    Ok(None)
}

/// A file for [`GuestSpec::files`](super::guest::GuestSpec): path, contents, mode.
pub type GuestFile = (String, Vec<u8>, u32);

/// Kernel modules of the guest's kernel: `modules` and everything they depend on,
/// uncompressed, under `/lib/modules/extra/`. Returns the files and the `insmod` lines
/// loading them in dependency order.
pub fn guest_modules(modules: &[&str]) -> Result<(Vec<GuestFile>, String)> {
    let kver = guest_kernel_release()?;
    let moddir = PathBuf::from("/lib/modules").join(&kver);
    let dep = std::fs::read_to_string(moddir.join("modules.dep"))
        .with_context(|| format!("read {}/modules.dep", moddir.display()))?;
    let deps_of = |rel: &str| -> Vec<String> {
        dep.lines()
            .find_map(|l| l.strip_prefix(rel).and_then(|r| r.strip_prefix(':')))
            .map(|r| r.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let find = |name: &str| -> Option<String> {
        let alt = name.replace('_', "-");
        dep.lines().map(|l| l.split(':').next().unwrap_or("")).find_map(|rel| {
            let base = rel.rsplit('/').next()?;
            let stem = base.split(".ko").next()?;
            (stem == name || stem == alt).then(|| rel.to_string())
        })
    };
    fn visit(rel: &str, deps_of: &dyn Fn(&str) -> Vec<String>, order: &mut Vec<String>) {
        if order.iter().any(|r| r == rel) {
            return;
        }
        for d in deps_of(rel) {
            visit(&d, deps_of, order);
        }
        order.push(rel.to_string());
    }
    let mut order = Vec::new();
    for m in modules {
        let rel = find(m).with_context(|| format!("module {m} not found for kernel {kver}"))?;
        visit(&rel, &deps_of, &mut order);
    }
    let mut files = Vec::new();
    let mut script = String::new();
    for rel in order {
        let path = moddir.join(&rel);
        let base = rel.rsplit('/').next().unwrap_or(&rel);
        let stem = base.split(".ko").next().unwrap_or(base);
        let data = if base.ends_with(".ko") {
            std::fs::read(&path).with_context(|| format!("read {}", path.display()))?
        } else {
            let tool = match base.rsplit('.').next() {
                Some("xz") => "xz",
                Some("zst") => "zstd",
                Some("gz") => "gzip",
                _ => bail!("unknown module compression: {rel}"),
            };
            run(Command::new(tool).arg("-dc").arg(&path))?.stdout
        };
        let target = format!("/lib/modules/extra/{stem}.ko");
        script.push_str(&format!("insmod {target} || echo \"VW-ERROR insmod {stem}\"\n"));
        files.push((target, data, 0o644));
    }
    Ok((files, script))
}

/// Boot plus script of the slowest guest, on a busy machine.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes an iperf3 run of a few seconds must move at the least, whatever its direction
/// (TCG guests move tens of MB/s and more through the switch).
pub const MIN_IPERF_BYTES: u64 = 20_000_000;

/// Boots a guest; a failure names it.
pub fn boot(spec: crate::support::guest::GuestSpec) -> crate::support::guest::Guest {
    let name = spec.name.clone();
    crate::support::guest::Guest::boot(spec).unwrap_or_else(|e| panic!("boot {name}: {e:#}"))
}

/// Waits for `needle` on a guest's console.
pub fn wait(guest: &mut crate::support::guest::Guest, needle: &str) {
    if let Err(e) = guest.wait_for_console(needle, GUEST_TIMEOUT) {
        panic!("{e:#}");
    }
}

/// The iperf3 report `tag` of a console, which must have moved at least
/// [`MIN_IPERF_BYTES`] each way.
pub fn report(console: &str, tag: &str) -> IperfReport {
    let r = iperf_report(console, tag).unwrap_or_else(|e| panic!("{e:#}; console:\n{console}"));
    check_report(tag, &r);
    r
}

/// Prints an iperf3 report and checks it moved at least [`MIN_IPERF_BYTES`].
pub fn check_report(tag: &str, r: &IperfReport) {
    eprintln!(
        "iperf3 {tag}: sent {} B, received {} B, {:.1} Mbit/s, intervals {:?}",
        r.sent_bytes,
        r.received_bytes,
        r.received_bps / 1e6,
        r.interval_bytes
    );
    assert!(
        r.sent_bytes >= MIN_IPERF_BYTES && r.received_bytes >= MIN_IPERF_BYTES,
        "iperf3 {tag} moved too little (sent {} received {}, want >= {MIN_IPERF_BYTES})",
        r.sent_bytes,
        r.received_bytes
    );
}

/// A connected port without ring errors or malformed frames.
pub fn assert_port_clean(sw: &Switch, port: &str) -> PortStats {
    let p = sw.port_stats(port);
    assert!(p.connected(), "port {port} not connected: {p}");
    assert_eq!(p.num("/ring_errors"), 0, "ring errors on {port}: {p}");
    assert_eq!(p.num("/drops/bad_frame"), 0, "bad frames on {port}: {p}");
    p
}

/// Stops the switch and prints how long the case took and the switch's log.
pub fn done(name: &str, t0: Instant, sw: Switch) {
    let log = sw.stop();
    eprintln!("{name}: passed in {:.1} s; virtwire log:\n{log}", t0.elapsed().as_secs_f64());
}
