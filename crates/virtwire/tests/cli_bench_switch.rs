//! The traffic commands through the learning switch, as scripts/bench/engine.py uses
//! them: `pingpong --reflector` (one thread drives both ends of a round trip that
//! crosses the switch twice), `loop --swap-macs` (reflectors behind a learning switch),
//! `sink --announce` (a receiver the switch learns before anything is sent to it).
//! Short runs that check what arrives where, not speed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::Daemon;

const PORTS: [&str; 4] = ["p0", "p1", "p2", "p3"];

fn mac(i: usize) -> String {
    format!("02:00:00:00:00:{:02x}", i + 1)
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(mode: &str, sock: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_virtwire"))
        .args(["bench", mode, "--json", "--socket"])
        .arg(sock)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn report(what: &str, out: Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run(mode: &str, sock: &Path, args: &[&str]) -> Value {
    report(mode, spawn(mode, sock, args).wait_with_output().unwrap())
}

/// Waits (up to 10 s) until the switch has learned `mac`.
fn wait_learned(run_dir: &Path, mac: &str) {
    let t = Instant::now();
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_virtwire"))
            .arg("--run-dir")
            .arg(run_dir)
            .args(["fdb", "show", "--json"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(mac) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{mac} never learned");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn round_trips_reflectors_and_announced_sinks_through_the_switch() {
    let dir = std::env::temp_dir().join(format!("vw-bench-switch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let run_dir = dir.join("run");
    let socks: Vec<PathBuf> = PORTS.iter().map(|p| dir.join(format!("{p}.sock"))).collect();
    let mut config = format!("run_dir = \"{}\"\n", run_dir.display());
    for (i, (p, s)) in PORTS.iter().zip(&socks).enumerate() {
        config += &format!(
            "[[port]]\nname = \"{p}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nqueue_pairs = 1\nmac = \"{}\"\n",
            s.display(),
            mac(i)
        );
    }
    let daemon = Daemon::start(&dir, &config, &socks);

    // One thread, two ports: p0 sends, p1 reflects with MACs swapped.
    let (m0, m1) = (mac(0), mac(1));
    let r1 = socks[1].to_str().unwrap();
    let v = run(
        "pingpong",
        &socks[0],
        &["--reflector", r1, "--src-mac", &m0, "--dst-mac", &m1, "--duration", "0.5"],
    );
    let l = &v["latency_us"];
    assert!(l["samples"].as_u64().unwrap() > 10, "{v}");
    assert_eq!(l["lost"], 0, "{v}");
    assert!(v["reflected"].as_u64().unwrap() >= l["samples"].as_u64().unwrap(), "{v}");
    assert_eq!(v["rx_corrupt"], 0, "{v}");

    // Two loop ends that swap MACs keep their frames going through the switch.
    let (m2, m3) = (mac(2), mac(3));
    let a = spawn(
        "loop",
        &socks[2],
        &["--swap-macs", "--wait", "--src-mac", &m2, "--dst-mac", &m3, "--duration", "1"],
    );
    let b = spawn(
        "loop",
        &socks[3],
        &["--swap-macs", "--wait", "--src-mac", &m3, "--dst-mac", &m2, "--duration", "1"],
    );
    for (what, c) in [("loop p2", a), ("loop p3", b)] {
        let v = report(what, c.wait_with_output().unwrap());
        assert!(v["rx_packets"].as_u64().unwrap() > 100, "{what}: {v}");
        assert_eq!(v["rx_foreign"], 0, "{what}: {v}");
    }

    // A sink that announces itself gets a flood aimed at it; a bystander gets at most
    // the announcement.
    let bystander = spawn("sink", &socks[1], &["--wait", "--duration", "3"]);
    std::thread::sleep(Duration::from_millis(300));
    let sink = spawn("sink", &socks[3], &["--wait", "--announce", "--src-mac", &m3, "--duration", "3"]);
    wait_learned(&run_dir, &m3);
    let g = run("gen", &socks[0], &["--src-mac", &m0, "--dst-mac", &m3, "--duration", "0.5"]);
    let s = report("sink", sink.wait_with_output().unwrap());
    let by = report("bystander", bystander.wait_with_output().unwrap());
    assert!(s["rx_packets"].as_u64().unwrap() > 100, "sink {s}, gen {g}");
    assert!(s["rx_packets"].as_u64() <= g["tx_packets"].as_u64(), "sink {s}, gen {g}");
    assert_eq!(s["tx_packets"], 1, "one announcement: {s}");
    assert!(by["rx_packets"].as_u64().unwrap() <= 1, "flooded to a bystander: {by}");
    daemon.stop();
}
