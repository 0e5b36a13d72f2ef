//! `--metrics ADDR`: Prometheus text exposition (format 0.0.4) at `GET /metrics`, served
//! by a minimal HTTP/1.1 server on a thread of its own. Loopback addresses only: the
//! endpoint has no authentication.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::api::StatsReport;
use crate::switch::Switch;

/// Longest request head accepted.
const MAX_HEAD: u64 = 8192;

/// Parses `--metrics`: `127.0.0.1:9090`, `[::1]:9090` or `localhost:9090`; anything that
/// is not a loopback address is refused.
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = match s.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => s
            .to_socket_addrs()
            .with_context(|| format!("metrics address {s:?}: expected HOST:PORT, such as 127.0.0.1:9090"))?
            .collect(),
    };
    let Some(a) = addrs.first() else {
        bail!("metrics address {s:?}: no address found");
    };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "metrics address {s}: {} is not a loopback address; the metrics endpoint has no \
             authentication, so it listens on 127.0.0.1 or ::1 only",
            bad.ip()
        );
    }
    Ok(*a)
}

/// Binds the endpoint and serves it from a thread of its own. Returns the bound address.
pub fn serve(addr: SocketAddr, switch: Arc<Switch>) -> Result<SocketAddr> {
    let l = TcpListener::bind(addr).with_context(|| format!("metrics endpoint {addr}"))?;
    let bound = l.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for s in l.incoming() {
                match s {
                    // One client at a time, each bounded by its timeouts.
                    Ok(s) => {
                        let _ = handle(s, &switch);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .context("metrics thread")?;
    Ok(bound)
}

fn handle(mut s: TcpStream, switch: &Switch) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut rd = BufReader::new(s.try_clone()?).take(MAX_HEAD);
    let mut request_line = String::new();
    rd.read_line(&mut request_line)?;
    // Read (and ignore) the headers up to the blank line.
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&switch.stats()))
        }
        (_, "/metrics") => ("405 Method Not Allowed", "text/plain; charset=utf-8", "GET only\n".to_string()),
        _ => {
            ("404 Not Found", "text/plain; charset=utf-8", "not found; metrics are at /metrics\n".to_string())
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    s.write_all(&out)
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        if l.is_empty() {
            let _ = writeln!(self.out, "{name} {v}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// The exposition text for a stats report.
pub fn render(r: &StatsReport) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    type PortField = fn(&crate::api::PortStats) -> u64;
    let port_counters: [(&str, &str, PortField); 8] = [
        ("virtwire_port_rx_packets_total", "Frames the switch received from the port.", |p| p.rx_packets),
        ("virtwire_port_rx_bytes_total", "Bytes of frames the switch received from the port.", |p| {
            p.rx_bytes
        }),
        ("virtwire_port_tx_packets_total", "Frames the switch sent to the port.", |p| p.tx_packets),
        ("virtwire_port_tx_bytes_total", "Bytes of frames the switch sent to the port.", |p| p.tx_bytes),
        ("virtwire_port_bursts_total", "Bursts of frames taken from the port.", |p| p.bursts),
        ("virtwire_port_kicks_total", "Notifications from the port that woke the datapath.", |p| p.kicks),
        ("virtwire_port_interrupts_total", "Interrupts sent to the port.", |p| p.interrupts),
        (
            "virtwire_port_ring_errors_total",
            "Rings stopped because the guest broke the virtqueue rules.",
            |p| p.ring_errors,
        ),
    ];
    for (name, help, get) in port_counters {
        f.head(name, "counter", help);
        for p in &r.ports {
            f.sample(name, &[("port", &p.name)], get(p));
        }
    }
    f.head("virtwire_port_drops_total", "counter", "Frames dropped, by port and reason.");
    for p in &r.ports {
        for (reason, n) in p.drops.by_reason() {
            f.sample("virtwire_port_drops_total", &[("port", &p.name), ("reason", reason)], n);
        }
    }
    type OffloadField = fn(&crate::api::Offloads) -> u64;
    let offload_counters: [(&str, &str, OffloadField); 6] = [
        ("virtwire_port_gso_passed_total", "Segmentation requests passed whole to the port.", |o| {
            o.gso_passed
        }),
        ("virtwire_port_gso_segmented_total", "Segmentation requests done in software for the port.", |o| {
            o.gso_segmented
        }),
        ("virtwire_port_gso_segments_total", "Segments made in software for the port.", |o| o.gso_segments),
        ("virtwire_port_csum_completed_total", "Checksums completed in software for the port.", |o| {
            o.csum_completed
        }),
        ("virtwire_port_gro_frames_total", "Frames coalesced from TCP segments for the port.", |o| {
            o.gro_frames
        }),
        ("virtwire_port_gro_segments_total", "TCP segments coalesced for the port.", |o| o.gro_segments),
    ];
    for (name, help, get) in offload_counters {
        f.head(name, "counter", help);
        for p in &r.ports {
            f.sample(name, &[("port", &p.name)], get(&p.offloads));
        }
    }
    let bp = "virtwire_port_backpressure_total";
    f.head(bp, "counter", "Times a frame from the port waited in its ring for a full receiver.");
    for p in &r.ports {
        f.sample(bp, &[("port", &p.name)], p.backpressure);
    }
    f.head("virtwire_port_connected", "gauge", "1 while a frontend is attached to the port.");
    for p in &r.ports {
        f.sample("virtwire_port_connected", &[("port", &p.name)], u8::from(p.connected));
    }
    type QueueField = fn(&crate::api::QueueStats) -> u64;
    let queue_counters: [(&str, &str, QueueField); 9] = [
        ("virtwire_queue_rx_packets_total", "Frames the switch received on the queue pair.", |q| {
            q.rx_packets
        }),
        ("virtwire_queue_rx_bytes_total", "Bytes the switch received on the queue pair.", |q| q.rx_bytes),
        ("virtwire_queue_rx_bursts_total", "Bursts taken from the queue pair.", |q| q.rx_bursts),
        ("virtwire_queue_tx_packets_total", "Frames the switch sent on the queue pair.", |q| q.tx_packets),
        ("virtwire_queue_tx_bytes_total", "Bytes the switch sent on the queue pair.", |q| q.tx_bytes),
        ("virtwire_queue_empty_polls_total", "Polls of the transmit ring that found nothing.", |q| {
            q.empty_polls
        }),
        ("virtwire_queue_kicks_total", "Kicks received while the worker slept.", |q| q.kicks),
        ("virtwire_queue_interrupts_total", "Interrupts sent to the guest.", |q| q.interrupts),
        ("virtwire_queue_interrupts_suppressed_total", "Bursts completed without an interrupt.", |q| {
            q.interrupts_suppressed
        }),
    ];
    for (name, help, get) in queue_counters {
        f.head(name, "counter", help);
        for p in &r.ports {
            for q in &p.queues {
                f.sample(name, &[("port", &p.name), ("queue", &q.queue.to_string())], get(q));
            }
        }
    }
    // The burst-size histogram as a Prometheus histogram (cumulative buckets).
    f.head("virtwire_queue_rx_burst_size", "histogram", "Frames per burst taken from the transmit ring.");
    for p in &r.ports {
        for q in &p.queues {
            let qs = q.queue.to_string();
            let mut cum = 0;
            for (i, le) in ["1", "3", "7", "15", "31", "+Inf"].iter().enumerate() {
                cum += q.rx_burst_hist[i];
                f.sample(
                    "virtwire_queue_rx_burst_size_bucket",
                    &[("port", &p.name), ("queue", &qs), ("le", le)],
                    cum,
                );
            }
            f.sample("virtwire_queue_rx_burst_size_count", &[("port", &p.name), ("queue", &qs)], cum);
            f.sample("virtwire_queue_rx_burst_size_sum", &[("port", &p.name), ("queue", &qs)], q.rx_packets);
        }
    }
    type WorkerField = fn(&crate::api::WorkerStats) -> String;
    let worker_counters: [(&str, &str, WorkerField); 6] = [
        ("virtwire_worker_busy_cycles_total", "TSC cycles of datapath rounds that moved frames.", |w| {
            w.busy_cycles.to_string()
        }),
        ("virtwire_worker_idle_cycles_total", "TSC cycles of datapath rounds that found nothing.", |w| {
            w.idle_cycles.to_string()
        }),
        ("virtwire_worker_packets_total", "Frames the datapath worker took in.", |w| w.packets.to_string()),
        ("virtwire_worker_sleeps_total", "Times the datapath worker went to sleep.", |w| {
            w.sleeps.to_string()
        }),
        ("virtwire_worker_cpu_seconds_total", "CPU time of the datapath worker thread.", |w| {
            w.cpu_seconds.to_string()
        }),
        (
            "virtwire_worker_yields_total",
            "Times the worker stopped spinning for a thread waiting for a CPU.",
            |w| w.yields.to_string(),
        ),
    ];
    for (name, help, get) in worker_counters {
        f.head(name, "counter", help);
        for w in &r.workers {
            f.sample(name, &[("worker", &w.name)], get(w));
        }
    }
    f.head("virtwire_worker_poll_window_seconds", "gauge", "The worker's current adaptive polling window.");
    for w in &r.workers {
        f.sample("virtwire_worker_poll_window_seconds", &[("worker", &w.name)], w.poll_window_us / 1e6);
    }
    f.head("virtwire_fdb_entries", "gauge", "Entries in the learning table.");
    f.sample("virtwire_fdb_entries", &[], r.fdb.entries);
    let fdb_counters = [
        ("virtwire_fdb_learned_total", "Addresses learned.", r.fdb.learned),
        ("virtwire_fdb_moves_total", "Stations that moved to another port.", r.fdb.moves),
        ("virtwire_fdb_aged_total", "Entries removed by aging.", r.fdb.aged),
    ];
    for (name, help, v) in fdb_counters {
        f.head(name, "counter", help);
        f.sample(name, &[], v);
    }
    f.head("virtwire_fdb_refused_total", "counter", "Addresses not learned because a cap was reached.");
    f.sample("virtwire_fdb_refused_total", &[("cap", "port")], r.fdb.refused_port_cap);
    f.sample("virtwire_fdb_refused_total", &[("cap", "global")], r.fdb.refused_global_cap);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert_eq!(parse_addr("127.0.0.1:9090").unwrap().port(), 9090);
        assert!(parse_addr("[::1]:9090").is_ok());
        assert!(parse_addr("localhost:9090").is_ok());
        let e = parse_addr("0.0.0.0:9090").unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(parse_addr("10.1.2.3:80").is_err());
        assert!(parse_addr("nonsense").is_err());
    }

    #[test]
    fn exposition() {
        let r = StatsReport {
            ports: vec![crate::api::PortStats {
                name: "vm1".into(),
                kind: "vhost-user".into(),
                rx_packets: 5,
                queues: vec![crate::api::QueueStats { queue: 0, tx_packets: 7, ..Default::default() }],
                ..Default::default()
            }],
            workers: vec![crate::api::WorkerStats {
                name: "virtwire-dp0".into(),
                busy_cycles: 9,
                ..Default::default()
            }],
            fdb: crate::api::FdbStats { entries: 2, ..Default::default() },
        };
        let t = render(&r);
        for line in [
            "# TYPE virtwire_port_rx_packets_total counter",
            "virtwire_port_rx_packets_total{port=\"vm1\"} 5",
            "virtwire_port_drops_total{port=\"vm1\",reason=\"spoofed\"} 0",
            "virtwire_queue_tx_packets_total{port=\"vm1\",queue=\"0\"} 7",
            "virtwire_worker_busy_cycles_total{worker=\"virtwire-dp0\"} 9",
            "# TYPE virtwire_fdb_entries gauge",
            "virtwire_fdb_entries 2",
        ] {
            assert!(t.lines().any(|l| l == line), "no {line:?} in\n{t}");
        }
        // Every sample's family has HELP and TYPE.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| t.contains(&format!("# TYPE {b} histogram"))))
                .unwrap_or(name);
            assert!(t.contains(&format!("# TYPE {family} ")), "{name}");
        }
    }
}
