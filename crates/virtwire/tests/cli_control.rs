//! The control plane end to end: the real `virtwire run` daemon in a temporary run
//! directory, driven by the real CLI (`port`, `fdb`, `stats`), raw requests on its
//! control socket, and its Prometheus endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_virtwire")
}

/// Waits (up to 10 s) until `p` exists.
fn wait_for(p: &Path, log: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} did not appear; log:\n{}",
            p.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to 5 s) until `p` is gone.
fn wait_gone(p: &Path) -> bool {
    let t = Instant::now();
    while p.exists() {
        if t.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A `virtwire run` process with run directory DIR/run; killed and its directory
/// removed when dropped.
struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vw-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn start(tag: &str, extra: &[&str]) -> Daemon {
        Self::start_with(Self::dir(tag), extra, |_| {})
    }

    fn start_with(dir: PathBuf, extra: &[&str], tweak: impl FnOnce(&mut Command)) -> Daemon {
        let run_dir = dir.join("run");
        let log = dir.join("virtwire.log");
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--run-dir")
            .arg(&run_dir)
            .args(extra)
            .env_remove("VIRTWIRE_RUN_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        tweak(&mut cmd);
        let child = cmd.spawn().expect("start virtwire run");
        let d = Daemon { child: Some(child), dir, run_dir, log };
        wait_for(&d.run_dir.join("ctl.sock"), &d.log);
        // The socket is bound before the configured ports start: wait for the end of
        // start-up.
        let t = Instant::now();
        while !d.log_text().contains("virtwire: running with") {
            assert!(t.elapsed() < Duration::from_secs(10), "no start-up line; log:\n{}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(args)
            .env_remove("VIRTWIRE_RUN_DIR")
            .output()
            .expect("run the CLI")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "virtwire {args:?} failed:\n{}{}\nlog:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log_text()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("virtwire {args:?}: not JSON ({e}):\n{out}"))
    }

    /// Runs a command that must fail; returns its one line of stderr.
    fn err(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert_eq!(o.status.code(), Some(1), "virtwire {args:?} did not fail with status 1: {o:?}");
        let e = String::from_utf8(o.stderr).unwrap();
        assert_eq!(e.lines().count(), 1, "virtwire {args:?}: not one line: {e:?}");
        e.trim_end().to_string()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM; returns the exit status and the whole log.
    fn stop(mut self) -> (Option<i32>, String) {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let t = Instant::now();
        let mut code = None;
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = c.try_wait() {
                code = s.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        (code, self.log_text())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("---- virtwire log ----\n{}", self.log_text());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tap interface name unique to this test process.
fn tap_name(tag: &str) -> String {
    format!("vw{tag}{}", std::process::id() % 100_000)
}

fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn ports_are_added_listed_shown_and_removed() {
    let d = Daemon::start("ports", &[]);
    let sockets = d.run_dir.join("sockets");
    assert!(sockets.is_dir());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.run_dir), 0o755);

    // A vhost-user port without --socket gets RUN_DIR/sockets/NAME.sock.
    let out =
        d.ok(&["port", "add", "vm1", "--type", "vhost-user", "--mac", "52:54:00:00:00:01", "--vlan", "10"]);
    let vm1_sock = sockets.join("vm1.sock");
    assert!(out.contains(&vm1_sock.display().to_string()), "{out}");
    assert!(vm1_sock.exists());
    let own = d.dir.join("vm2.sock");
    d.ok(&[
        "port",
        "add",
        "vm2",
        "--type",
        "vhost-user",
        "--socket",
        own.to_str().unwrap(),
        "--queue-pairs",
        "2",
    ]);
    d.ok(&["port", "add", "vm3", "--type", "vhost-user", "--trunks", "10,20", "--native-vlan", "10"]);
    d.ok(&["port", "add", "vm4", "--type", "vhost-user", "--macs", "52:54:00:00:00:04", "--promiscuous"]);
    let tap = tap_name("c");
    d.ok(&["port", "add", "t1", "--type", "tap", "--ifname", &tap, "--vlan", "20"]);
    assert!(interface_exists(&tap), "tap {tap} was not created");

    let list = d.json(&["port", "list", "--json"]);
    let list = list.as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vm1", "vm2", "vm3", "vm4", "t1"]);
    let p = |n: &str| list.iter().find(|p| p["name"] == n).unwrap().clone();
    assert_eq!(p("vm1")["type"], "vhost-user");
    assert_eq!(p("vm1")["socket"], vm1_sock.to_str().unwrap());
    assert_eq!(p("vm1")["connected"], false);
    assert_eq!(p("vm1")["vlan"], 10);
    assert_eq!(p("vm1")["mac"], "52:54:00:00:00:01");
    assert_eq!(p("vm2")["socket"], own.to_str().unwrap());
    assert_eq!(p("vm2")["queue_pairs"], 2);
    assert_eq!(p("vm2")["vlan"], Value::Null);
    assert_eq!(p("vm3")["trunks"], serde_json::json!([10, 20]));
    assert_eq!(p("vm3")["native_vlan"], 10);
    assert_eq!(p("vm4")["macs"], serde_json::json!(["52:54:00:00:00:04"]));
    assert_eq!(p("vm4")["promiscuous"], true);
    assert_eq!(p("t1")["type"], "tap");
    assert_eq!(p("t1")["ifname"], tap.as_str());
    assert_eq!(p("t1")["socket"], Value::Null);
    assert_eq!(p("t1")["vlan"], 20);

    let show = d.json(&["port", "show", "vm2", "--json"]);
    assert_eq!(show["name"], "vm2");
    assert_eq!(show["stats"]["queues"].as_array().unwrap().len(), 2);
    let human = d.ok(&["port", "list"]);
    assert!(human.lines().next().unwrap().starts_with("NAME"), "{human}");
    assert!(human.lines().any(|l| l.starts_with("t1 ") && l.contains(&tap)), "{human}");
    let human = d.ok(&["port", "show", "vm3"]);
    assert!(human.contains("trunk 10,20 native 10"), "{human}");

    // Duplicates and bad values are refused with one line naming the port and field.
    assert_eq!(
        d.err(&["port", "add", "vm1", "--type", "vhost-user"]),
        "virtwire: port vm1: a port with this name already exists"
    );
    assert_eq!(
        d.err(&["port", "add", "vm9", "--type", "vhost-user", "--socket", vm1_sock.to_str().unwrap()]),
        format!("virtwire: port vm9: socket {} is used by port vm1", vm1_sock.display())
    );
    assert_eq!(
        d.err(&["port", "add", "t2", "--type", "tap", "--ifname", &tap]),
        format!("virtwire: port t2: ifname {tap} is used by port t1")
    );
    assert_eq!(
        d.err(&["port", "add", "t3", "--type", "tap", "--ifname", "lo"]),
        "virtwire: port t3: ifname lo: an interface with this name already exists"
    );
    assert!(d
        .err(&["port", "add", "vm9", "--type", "vhost-user", "--vlan", "5000"])
        .contains("port vm9: vlan 5000"));
    assert!(d
        .err(&["port", "add", "vm9", "--type", "vhost-user", "--mac", "zz"])
        .starts_with("virtwire: port vm9: mac"));
    assert!(d
        .err(&["port", "add", "t9", "--type", "tap", "--queue-pairs", "2"])
        .contains("port t9: queue_pairs"));
    assert_eq!(d.err(&["port", "show", "nope"]), "virtwire: port nope: no such port");
    assert_eq!(d.err(&["port", "del", "nope"]), "virtwire: port nope: no such port");

    // Removal takes the socket and the interface away.
    d.ok(&["port", "del", "vm1"]);
    assert!(!vm1_sock.exists());
    d.ok(&["port", "del", "t1"]);
    assert!(wait_gone(&Path::new("/sys/class/net").join(&tap)), "tap {tap} still exists");
    let names: Vec<String> = d
        .json(&["port", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["vm2", "vm3", "vm4"]);

    // The name is free again.
    d.ok(&["port", "add", "vm1", "--type", "vhost-user"]);
    assert!(vm1_sock.exists());

    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    for n in ["vm1", "vm2", "vm3", "vm4"] {
        assert!(
            log.contains(&format!("port {n}: from guest 0 packets in 0 bursts, to guest 0 packets")),
            "{log}"
        );
    }
    assert!(!vm1_sock.exists() && !own.exists(), "sockets left behind");
}

#[test]
fn socket_errors_name_the_socket_and_the_reason() {
    // An unprivileged daemon, so that a directory it may not write to exists.
    let dir = Daemon::dir("perm");
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_with(dir, &[], |c| {
        c.uid(65534).gid(65534);
    });
    let s = locked.join("vm3.sock");
    assert_eq!(
        d.err(&["port", "add", "vm3", "--type", "vhost-user", "--socket", s.to_str().unwrap()]),
        format!("virtwire: port vm3: socket {}: permission denied", s.display())
    );
    let s = d.dir.join("missing/vm3.sock");
    assert_eq!(
        d.err(&["port", "add", "vm3", "--type", "vhost-user", "--socket", s.to_str().unwrap()]),
        format!("virtwire: port vm3: socket {}: no such file or directory", s.display())
    );
    // A file in the way is reported, never removed.
    let f = d.run_dir.join("precious");
    std::fs::write(&f, "data").unwrap();
    assert_eq!(
        d.err(&["port", "add", "vm3", "--type", "vhost-user", "--socket", f.to_str().unwrap()]),
        format!("virtwire: port vm3: socket {}: exists and is not a socket", f.display())
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "data");
    // Nothing was half-added.
    assert_eq!(d.json(&["port", "list", "--json"]), serde_json::json!([]));
    d.ok(&["port", "add", "vm3", "--type", "vhost-user"]);
}

#[test]
fn fdb_shows_learned_addresses_and_flushes_them() {
    let d = Daemon::start("fdb", &[]);
    d.ok(&["port", "add", "vm1", "--type", "vhost-user"]);
    d.ok(&["port", "add", "vm2", "--type", "vhost-user"]);
    assert_eq!(d.json(&["fdb", "show", "--json"]), serde_json::json!([]));
    // Play vm1's guest for a moment: frames from 52:54:00:00:00:11.
    let gen = Command::new(bin())
        .args(["bench", "gen", "--duration", "0.3", "--src-mac", "52:54:00:00:00:11"])
        .args(["--dst-mac", "52:54:00:00:00:22", "--socket"])
        .arg(d.run_dir.join("sockets/vm1.sock"))
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let fdb = d.json(&["fdb", "show", "--json"]);
    let e = fdb.as_array().unwrap();
    assert_eq!(e.len(), 1, "{fdb}");
    assert_eq!(e[0]["vlan"], 0);
    assert_eq!(e[0]["mac"], "52:54:00:00:00:11");
    assert_eq!(e[0]["port"], "vm1");
    assert!(e[0]["age_seconds"].as_u64().unwrap() < 60);
    let human = d.ok(&["fdb", "show"]);
    assert!(human.lines().any(|l| l.starts_with("vm1") && l.contains("52:54:00:00:00:11")), "{human}");
    let stats = d.json(&["stats", "vm1", "--json"]);
    assert!(stats["rx_packets"].as_u64().unwrap() > 0, "{stats}");

    d.ok(&["fdb", "flush", "--port", "vm2"]);
    assert_eq!(d.json(&["fdb", "show", "--json"]).as_array().unwrap().len(), 1);
    assert_eq!(d.err(&["fdb", "flush", "--port", "vm9"]), "virtwire: port vm9: no such port");
    d.ok(&["fdb", "flush", "--port", "vm1"]);
    let t = Instant::now();
    while !d.json(&["fdb", "show", "--json"]).as_array().unwrap().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5), "fdb flush --port vm1 left entries");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.ok(&["fdb", "flush"]);
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> =
        v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(|k| k.as_str()).collect();
    k.sort();
    k
}

fn sorted<'a>(k: &[&'a str]) -> Vec<&'a str> {
    let mut k = k.to_vec();
    k.sort();
    k
}

#[test]
fn stats_json_has_the_documented_shape() {
    let d = Daemon::start("stats", &[]);
    d.ok(&["port", "add", "vm1", "--type", "vhost-user", "--queue-pairs", "2"]);
    let tap = tap_name("s");
    d.ok(&["port", "add", "t1", "--type", "tap", "--ifname", &tap]);
    let s = d.json(&["stats", "--json"]);
    assert_eq!(keys(&s), ["fdb", "ports", "workers"]);
    let ports = s["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2);
    let port_keys = sorted(&[
        "name",
        "type",
        "connected",
        "rx_packets",
        "rx_bytes",
        "tx_packets",
        "tx_bytes",
        "bursts",
        "backpressure",
        "drops",
        "offloads",
        "kicks",
        "interrupts",
        "ring_errors",
        "queues",
    ]);
    for p in ports {
        assert_eq!(keys(p), port_keys);
        assert_eq!(
            keys(&p["drops"]),
            sorted(&[
                "no_rx_buffer",
                "rx_buffer_small",
                "bad_frame",
                "spoofed",
                "vlan",
                "tap_write",
                "bad_header"
            ])
        );
        for (i, q) in p["queues"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                keys(q),
                sorted(&[
                    "queue",
                    "rx_packets",
                    "rx_bytes",
                    "tx_packets",
                    "tx_bytes",
                    "rx_bursts",
                    "rx_burst_hist",
                    "empty_polls",
                    "kicks",
                    "interrupts",
                    "interrupts_suppressed"
                ])
            );
            assert_eq!(q["queue"], i);
        }
    }
    assert_eq!(ports[0]["name"], "vm1");
    assert_eq!(ports[0]["type"], "vhost-user");
    assert_eq!(ports[0]["queues"].as_array().unwrap().len(), 2);
    assert_eq!(ports[1]["type"], "tap");
    let w = &s["workers"][0];
    for k in [
        "name",
        "busy_cycles",
        "idle_cycles",
        "packets",
        "busy_cycles_per_packet",
        "cpu_seconds",
        "mode",
        "poll_window_us",
        "yields",
    ] {
        assert!(w.get(k).is_some(), "worker without {k}: {w}");
    }
    assert_eq!(w["name"], "virtwire-dp0");
    assert!(w["busy_cycles_per_packet"].is_f64() && w["cpu_seconds"].is_f64(), "{w}");
    assert_eq!(
        keys(&s["fdb"]),
        sorted(&["entries", "learned", "moves", "aged", "refused_port_cap", "refused_global_cap"])
    );
    // One port: the same object as its element of "ports".
    let one = d.json(&["stats", "vm1", "--json"]);
    assert_eq!(keys(&one), port_keys);
    assert_eq!(one["name"], "vm1");
    assert_eq!(w["mode"], "adaptive");
    assert_eq!(d.err(&["stats", "vm9"]), "virtwire: port vm9: no such port");
    // The live view: two screens of rates, every port's queues and the worker.
    let watch = d.ok(&["stats", "--watch", "0.2", "--count", "2"]);
    assert_eq!(watch.matches("virtwire stats, every 0.2 s").count(), 2, "{watch}");
    assert!(watch.contains("virtwire-dp0  adaptive"), "{watch}");
    assert_eq!(
        watch.lines().filter(|l| l.starts_with("vm1 ")).count(),
        4,
        "two queues, two screens:\n{watch}"
    );
    let human = d.ok(&["stats"]);
    assert!(human.contains("virtwire-dp0") && human.lines().any(|l| l.starts_with("vm1 ")), "{human}");
}

/// `GET path` on the metrics endpoint: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end: {resp:?}"));
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let d = Daemon::start("metrics", &["--metrics", "127.0.0.1:0"]);
    d.ok(&["port", "add", "vm1", "--type", "vhost-user"]);
    let log = d.log_text();
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("virtwire: metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string();
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for line in [
        "# TYPE virtwire_port_rx_packets_total counter",
        "virtwire_port_rx_packets_total{port=\"vm1\"} 0",
        "virtwire_port_rx_bytes_total{port=\"vm1\"} 0",
        "virtwire_port_tx_packets_total{port=\"vm1\"} 0",
        "virtwire_port_tx_bytes_total{port=\"vm1\"} 0",
        "virtwire_port_drops_total{port=\"vm1\",reason=\"spoofed\"} 0",
        "virtwire_queue_rx_packets_total{port=\"vm1\",queue=\"0\"} 0",
        "virtwire_queue_tx_packets_total{port=\"vm1\",queue=\"0\"} 0",
        "# TYPE virtwire_fdb_entries gauge",
        "virtwire_fdb_entries 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }
    assert!(body
        .lines()
        .any(|l| l.starts_with("virtwire_worker_busy_cycles_total{worker=\"virtwire-dp0\"} ")));
    assert!(body.contains("# HELP virtwire_port_rx_packets_total "));
    let (status, _) = http_get(&addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http_get(&addr, "/metricsx");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // Garbage does not stop the endpoint.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&[0xff; 20000]).unwrap_or(());
    drop(s);
    assert_eq!(http_get(&addr, "/metrics").0, "HTTP/1.1 200 OK");
}

#[test]
fn non_loopback_metrics_address_is_refused() {
    let dir = Daemon::dir("metrics-refused");
    let run = dir.join("run");
    let o = Command::new(bin())
        .args(["run", "--metrics", "0.0.0.0:9090", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.starts_with("virtwire: ") && e.contains("not a loopback address"), "{e}");
    assert!(!run.join("ctl.sock").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `line` on a new control connection and reads one response.
fn raw(ctl: &Path, line: &[u8]) -> Value {
    let mut s = UnixStream::connect(ctl).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(line).unwrap();
    let mut resp = String::new();
    BufReader::new(&s).read_line(&mut resp).unwrap();
    serde_json::from_str(&resp).unwrap_or_else(|e| panic!("response {resp:?} is not JSON: {e}"))
}

#[test]
fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start("malformed", &[]);
    let ctl = d.run_dir.join("ctl.sock");
    for bad in [
        &b"not json\n"[..],
        b"{}\n",
        b"[1,2,3]\n",
        b"{\"cmd\":\"reboot\"}\n",
        b"{\"cmd\":\"port-add\"}\n",
        b"{\"cmd\":\"port-add\",\"port\":{\"name\":\"x\"}}\n",
        b"{\"cmd\":\"port-add\",\"port\":{\"name\":\"x\",\"type\":\"vhost-user\",\"queue_pairs\":99999}}\n",
        b"{\"cmd\":\"port-add\",\"port\":{\"name\":\"../../etc\",\"type\":\"vhost-user\"}}\n",
        b"{\"cmd\":\"port-del\",\"name\":7}\n",
        b"\xff\xfe\x00\x01\n",
        b"{\"cmd\":\"stats\",\"port\":\"\\u0000\"}\n",
    ] {
        let r = raw(&ctl, bad);
        assert_eq!(r["ok"], false, "{:?} -> {r}", String::from_utf8_lossy(bad));
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    }
    // Nesting deeper than the parser goes.
    let deep = format!("{}\n", "[".repeat(50_000));
    let r = raw(&ctl, deep.as_bytes());
    assert_eq!(r["ok"], false);
    // Longer than a request may be: an error, then the connection closes.
    let mut s = UnixStream::connect(&ctl).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&vec![b'x'; 200_000]);
    let mut resp = String::new();
    let mut rd = BufReader::new(&s);
    rd.read_line(&mut resp).unwrap();
    assert!(resp.contains("\"ok\":false") && resp.contains("longer than"), "{resp}");
    // Several requests on one connection, blank lines ignored.
    let mut s = UnixStream::connect(&ctl).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\n{\"cmd\":\"port-list\"}\n{\"cmd\":\"stats\"}\n").unwrap();
    let mut rd = BufReader::new(&s);
    for _ in 0..2 {
        let mut line = String::new();
        rd.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }
    // A client that connects and says nothing holds no one up.
    let _idle = UnixStream::connect(&ctl).unwrap();
    assert!(d.alive(), "{}", d.log_text());
    let r = raw(&ctl, b"{\"cmd\":\"port-add\",\"port\":{\"name\":\"vm1\",\"type\":\"vhost-user\"}}\n");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["name"], "vm1");
    assert_eq!(d.json(&["port", "list", "--json"]).as_array().unwrap().len(), 1);
}

#[test]
fn cli_without_a_daemon_says_so() {
    let dir = Daemon::dir("nodaemon");
    let o = Command::new(bin()).args(["port", "list", "--run-dir"]).arg(&dir).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "virtwire: cannot reach the switch at {}: no such socket (is \"virtwire run\" running?)\n",
            dir.join("ctl.sock").display()
        )
    );
    // The environment variable names the run directory too.
    let o = Command::new(bin()).args(["stats"]).env("VIRTWIRE_RUN_DIR", &dir).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains(&dir.join("ctl.sock").display().to_string()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_ports_and_run_directory() {
    let dir = Daemon::dir("config");
    let tap = tap_name("f");
    let cfg = dir.join("virtwire.toml");
    std::fs::write(
        &cfg,
        format!(
            "[fdb]\nmax_entries = 64\nmax_per_port = 8\naging_seconds = 30\n\
             [[port]]\nname = 'vm1'\ntype = 'vhost-user'\nvlan = 10\n\
             [[port]]\nname = 'refl'\ntype = 'vhost-user'\ndiag = 'reflect'\n\
             [[port]]\nname = 't1'\ntype = 'tap'\nifname = '{tap}'\ntrunks = [10, 20]\n"
        ),
    )
    .unwrap();
    let d = Daemon::start_with(dir, &["--config", cfg.to_str().unwrap()], |_| {});
    let log = d.log_text();
    assert!(
        log.contains(&format!("virtwire: control socket {}", d.run_dir.join("ctl.sock").display())),
        "{log}"
    );
    assert!(log.contains("virtwire: running with 3 port(s)"), "{log}");
    let list = d.json(&["port", "list", "--json"]);
    assert_eq!(list[0]["socket"], d.run_dir.join("sockets/vm1.sock").to_str().unwrap());
    assert_eq!(list[1]["diag"], "reflect");
    assert_eq!(list[2]["trunks"], serde_json::json!([10, 20]));
    assert!(interface_exists(&tap));
    let ctl = d.run_dir.join("ctl.sock");
    let vm1 = d.run_dir.join("sockets/vm1.sock");
    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("virtwire: port t1: from guest"), "{log}");
    assert!(!ctl.exists() && !vm1.exists(), "sockets left behind:\n{log}");
    assert!(wait_gone(&Path::new("/sys/class/net").join(&tap)), "tap {tap} outlived the daemon");
}

#[test]
fn run_without_arguments_serves_the_default_run_directory() {
    // The default run directory for root is /run/virtwire. The test runs in a mount
    // namespace of its own with a fresh /run, so no other switch on this machine is
    // touched or in the way.
    let script = format!(
        r#"set -e
mount -t tmpfs tmpfs /run
{bin} run 2>/run/log &
pid=$!
i=0
while [ ! -S /run/virtwire/ctl.sock ]; do
  i=$((i+1)); [ $i -lt 500 ] || {{ echo "no control socket"; cat /run/log; exit 1; }}
  sleep 0.02
done
{bin} port add dflt --type vhost-user
[ -S /run/virtwire/sockets/dflt.sock ] || {{ echo "no port socket"; exit 1; }}
kill -TERM $pid
wait $pid
code=$?
[ ! -e /run/virtwire/ctl.sock ] || {{ echo "ctl.sock left behind"; exit 1; }}
[ ! -e /run/virtwire/sockets/dflt.sock ] || {{ echo "port socket left behind"; exit 1; }}
cat /run/log
exit $code
"#,
        bin = bin()
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("VIRTWIRE_RUN_DIR")
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}");
    assert!(out.contains("virtwire: control socket /run/virtwire/ctl.sock"), "{out}");
    assert!(out.contains("virtwire: port dflt: from guest 0 packets"), "{out}");
}

#[test]
fn demo_moves_frames_and_prints_mpps() {
    let o = Command::new(bin()).args(["demo", "--seconds", "1"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("MPPS") && out.contains("Mpps"), "{out}");
    assert!(out.contains("vm1 -> vm2") && out.contains("vm2 -> vm1"), "{out}");
    assert!(out.contains("busy cycles per packet"), "{out}");
    assert!(out.contains("-netdev vhost-user") && out.contains("<interface type='vhostuser'>"), "{out}");
}
