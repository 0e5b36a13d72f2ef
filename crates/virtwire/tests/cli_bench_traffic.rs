//! `virtwire bench gen|sink|loop|pingpong` against DPDK testpmd's vhost PMD in io
//! forwarding mode (one port: every frame comes back on the queue it was sent on).
//! Short runs: these check that the commands work and report sensibly, not speed.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use support::testpmd::{Testpmd, TestpmdSpec};

/// testpmd busy-polls a core: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Removes a test's directory when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn testpmd(name: &str, queues: u16) -> (Testpmd, std::path::PathBuf, TempDir) {
    let dir = std::env::temp_dir().join(format!("vw-traffic-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vhost.sock");
    let mut spec = TestpmdSpec::new(name, sock.clone());
    spec.forward_mode = "io".into();
    spec.queues = queues;
    let tp = Testpmd::start(spec, Duration::from_secs(60)).unwrap_or_else(|e| {
        panic!("{e:#}\nRun scripts/test.sh, which installs dpdk-testpmd (Debian package dpdk-dev).")
    });
    (tp, sock, TempDir(dir))
}

fn bench(mode: &str, sock: &Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_virtwire"))
        .args(["bench", mode, "--socket"])
        .arg(sock)
        .args(["--json", "--duration", "0.5"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virtwire bench {mode} {extra:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["mode", "pps", "bps", "cpu_seconds", "packets"] {
        assert!(v.get(k).is_some(), "{mode}: no {k} in {v}");
    }
    assert_eq!(v["mode"], mode);
    assert!(v["cpu_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["rx_corrupt"], 0, "{v}");
    assert_eq!(v["rx_foreign"], 0, "{v}");
    v
}

#[test]
fn loop_forwards_and_reports_split_and_packed() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (tp, sock, _dir) = testpmd("loop", 2);
    for layout in ["split", "packed"] {
        for mrg in ["on", "off"] {
            let v = bench("loop", &sock, &["--layout", layout, "--mrg-rxbuf", mrg, "--queues", "2"]);
            assert!(v["packets"].as_u64().unwrap() > 1000, "{layout} {mrg}: {v}");
            assert_eq!(v["layout"], layout);
            assert_eq!(v["queues"], 2);
            let bps = v["bps"].as_f64().unwrap();
            let pps = v["pps"].as_f64().unwrap();
            assert!((bps - pps * 64.0 * 8.0).abs() < 1.0 + bps * 1e-9, "{v}");
        }
    }
    tp.stop(Duration::from_secs(15)).unwrap();
}

#[test]
fn pingpong_reports_latency_percentiles() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (tp, sock, _dir) = testpmd("pingpong", 1);
    for extra in [&["--size", "1514"][..], &["--wait"][..]] {
        let v = bench("pingpong", &sock, extra);
        let l = &v["latency_us"];
        let f = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("no latency_us.{k} in {v}"));
        assert!(l["samples"].as_u64().unwrap() > 10, "{v}");
        assert_eq!(l["samples"].as_u64(), v["packets"].as_u64());
        assert!(
            0.0 < f("p50") && f("p50") <= f("p90") && f("p90") <= f("p99") && f("p99") <= f("max"),
            "{v}"
        );
    }
    tp.stop(Duration::from_secs(15)).unwrap();
}

#[test]
fn gen_transmits_and_sink_receives_nothing_unasked() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (tp, sock, _dir) = testpmd("gensink", 1);
    let v = bench("gen", &sock, &["--size", "128"]);
    let sent = v["packets"].as_u64().unwrap();
    assert!(sent > 1000, "{v}");
    assert_eq!(v["tx_packets"].as_u64(), Some(sent));
    assert_eq!(v["bytes"].as_u64(), Some(sent * 128));
    // testpmd io-forwards nothing on its own, so a sink sees no frames.
    let v = bench("sink", &sock, &[]);
    assert_eq!(v["packets"], 0, "{v}");
    let stats = tp.stop(Duration::from_secs(15)).unwrap();
    assert!(
        stats.rx_packets > 0 && stats.rx_packets <= sent,
        "testpmd received {} of {sent}",
        stats.rx_packets
    );
}
