//! `virtwire demo`: the switch with two vhost-user ports, run in this process in a
//! temporary run directory, and two virtio-user endpoints (what a VM's virtio-net driver
//! does, without a VM) sending frames to each other through it. Prints what flowed and
//! what it cost, then how to attach a real VM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use virtio_user::{frame, Config, QueuePair, VirtioUser};

use crate::config::{self, PortConfig};
use crate::switch::Switch;

/// The two endpoints' addresses (distinct unicast, so the switch learns both).
const MACS: [[u8; 6]; 2] = [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]];
const NAMES: [&str; 2] = ["vm1", "vm2"];

/// After the senders stop, how long the receivers keep draining frames in flight.
const DRAIN: Duration = Duration::from_millis(200);

const BURST: usize = 32;

/// Removes the temporary run directory however the demo ends.
struct TempRunDir(PathBuf);

impl Drop for TempRunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one endpoint counted.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    sent: u64,
    received: u64,
    bad: u64,
}

fn mac_str(m: [u8; 6]) -> String {
    netproto::ethernet::Mac(m).to_string()
}

/// Frames one endpoint keeps in flight towards the other (the receive ring's size): a
/// sender that outruns its receiver only fills the switch's drop counters.
const WINDOW: u64 = 256;

/// Drives both endpoints from one thread (so that the demo needs two cores, one for it
/// and one for the switch): each sends `size`-byte test frames to the other until `stop`,
/// never more than [`WINDOW`] ahead of what the other has received, and receives all the
/// while; then both only receive, for [`DRAIN`].
fn drive(qps: [&mut QueuePair; 2], size: usize, stop: Instant) -> Result<[Counts; 2]> {
    let mut c = [Counts::default(); 2];
    let mut frames: Vec<Vec<Vec<u8>>> = (0..2)
        .map(|me| {
            (0..BURST)
                .map(|_| {
                    let mut f = vec![0u8; size];
                    frame::build(&mut f, MACS[1 - me], MACS[me], 0);
                    f
                })
                .collect()
        })
        .collect();
    let mut scratch = vec![0u8; 65536];
    let end = stop + DRAIN;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut moved = 0;
        for me in 0..2 {
            let from = MACS[1 - me];
            let mut bad = 0;
            let n = qps[me].rx_burst_with(BURST, &mut scratch, |f, _| {
                if frame::check(f).is_err() || f[6..12] != from {
                    bad += 1;
                }
            })?;
            c[me].received += n as u64;
            c[me].bad += bad;
            moved += n;
        }
        if now < stop {
            for me in 0..2 {
                let room = WINDOW.saturating_sub(c[me].sent - c[1 - me].received) as usize;
                if room == 0 {
                    continue;
                }
                let k = room.min(BURST);
                let seq = c[me].sent;
                for (i, f) in frames[me][..k].iter_mut().enumerate() {
                    frame::stamp(f, seq + i as u64, 0);
                }
                let n = qps[me].tx_burst(&frames[me][..k])?;
                c[me].sent += n as u64;
                moved += n;
            }
        }
        if moved == 0 {
            std::hint::spin_loop();
        }
    }
    Ok(c)
}

/// Runs the demo. `run_dir` is where `virtwire run` would put its sockets (for the
/// instructions printed at the end).
pub fn run(seconds: f64, size: usize, run_dir: &Path) -> Result<()> {
    anyhow::ensure!(seconds > 0.0 && seconds <= 3600.0, "--seconds must be between 0 and 3600");
    anyhow::ensure!(
        (frame::MIN_LEN..=9216).contains(&size),
        "--size must be between {} and 9216 bytes",
        frame::MIN_LEN
    );
    let dir = TempRunDir(std::env::temp_dir().join(format!("virtwire-demo-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    crate::daemon::ensure_dir(&dir.0.join("sockets"))?;
    let sw = Switch::new(&dir.0, Default::default())?;
    let mut socks = Vec::new();
    for (name, mac) in NAMES.iter().zip(MACS) {
        let info = sw.add(&PortConfig {
            name: name.to_string(),
            kind: "vhost-user".into(),
            mac: Some(mac_str(mac)),
            ..Default::default()
        })?;
        socks.push(PathBuf::from(info.socket.unwrap_or_default()));
    }
    let cfg = Config { tx_buf_len: (size as u32 + 12).max(2048), ..Config::default() };
    let mut devs = Vec::new();
    for (name, s) in NAMES.iter().zip(&socks) {
        devs.push(VirtioUser::connect(s, &cfg).with_context(|| format!("virtio-user endpoint of {name}"))?);
    }
    println!(
        "virtwire demo: a switch with two vhost-user ports, {} and {}, each driven by a virtio-user",
        NAMES[0], NAMES[1]
    );
    println!("endpoint in this process (a VM's virtio-net driver without the VM); {size}-byte frames");
    println!("both ways for {seconds} s.\n");

    let worker = sw.workers()[0].clone();
    let w0 = worker.stats().snapshot();
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs_f64(seconds);
    let (a, b) = devs.split_at_mut(1);
    let r = drive([&mut a[0].queue_pairs_mut()[0], &mut b[0].queue_pairs_mut()[0]], size, stop);
    let elapsed = stop.saturating_duration_since(t0).as_secs_f64();
    let w1 = worker.stats().snapshot();
    // The worker's time includes the drain after the senders stopped.
    let worker_wall = t0.elapsed().as_secs_f64();
    let [ca, cb] = r?;
    for d in &mut devs {
        let _ = d.shutdown();
    }
    let fdb = sw.fdb_show();
    let stats = sw.stats();
    sw.shutdown_all();

    // What vm1 sent arrives at vm2, and the other way round.
    let dirs = [(NAMES[0], NAMES[1], ca.sent, cb.received), (NAMES[1], NAMES[0], cb.sent, ca.received)];
    let rows: Vec<Vec<String>> = dirs
        .iter()
        .map(|(from, to, sent, recv)| {
            vec![
                format!("{from} -> {to}"),
                sent.to_string(),
                recv.to_string(),
                format!("{:.3}", *recv as f64 / elapsed / 1e6),
                format!("{:.3}", *recv as f64 * size as f64 * 8.0 / elapsed / 1e9),
                sent.saturating_sub(*recv).to_string(),
            ]
        })
        .collect();
    crate::cli::table(&["DIRECTION", "SENT", "RECEIVED", "MPPS", "GBIT/S", "LOST"], &rows);
    let total = (cb.received + ca.received) as f64 / elapsed / 1e6;
    println!("\nforwarded {total:.3} Mpps in all, each endpoint keeping up to {WINDOW} frames in flight");

    let drops: Vec<String> = stats
        .ports
        .iter()
        .flat_map(|p| {
            p.drops
                .by_reason()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(move |(r, n)| format!("{} {r} {n}", p.name))
        })
        .collect();
    let learned: Vec<String> = fdb.iter().map(|e| format!("{} on {}", e.mac, e.port)).collect();
    println!(
        "\nswitch: learned {} address(es){}; drops: {}",
        fdb.len(),
        if learned.is_empty() { String::new() } else { format!(" ({})", learned.join(", ")) },
        if drops.is_empty() { "none".into() } else { drops.join(", ") }
    );
    if ca.bad + cb.bad > 0 {
        println!(
            "endpoints: {} frame(s) received that were not the peer's intact test frames",
            ca.bad + cb.bad
        );
    }
    let cpu = w1.cpu_seconds - w0.cpu_seconds;
    let (busy, pkts) = (w1.busy_cycles - w0.busy_cycles, w1.packets - w0.packets);
    println!(
        "cost: the datapath worker used {cpu:.2} s of CPU in {worker_wall:.2} s ({:.0}% of one core), {} busy \
         cycles per packet",
        cpu / worker_wall * 100.0,
        if pkts == 0 { "-".to_string() } else { format!("{:.0}", busy as f64 / pkts as f64) }
    );
    println!(
        "(both endpoints run on one more polling thread: with fewer than two idle cores it competes with \
         the worker, and the numbers drop)"
    );
    print_attach(run_dir);
    if cb.received + ca.received == 0 {
        bail!("demo: no frame crossed the switch ({} and {} sent)", ca.sent, cb.sent);
    }
    Ok(())
}

/// How to attach a QEMU VM (directly, or with libvirt) to `virtwire run`.
fn print_attach(run_dir: &Path) {
    let sock = run_dir.join("sockets").join("vm1.sock");
    let sock = sock.display();
    let default = config::default_run_dir();
    let run = if run_dir == default {
        "virtwire run".to_string()
    } else {
        format!("virtwire run --run-dir {}", run_dir.display())
    };
    let cli = if run_dir == default {
        "virtwire".to_string()
    } else {
        format!("virtwire --run-dir {}", run_dir.display())
    };
    print!(
        "
To attach a QEMU VM, start the switch and give the VM a port:

  {run} &
  {cli} port add vm1 --type vhost-user --mac 52:54:00:12:34:01

then start QEMU with guest memory the switch can share, and the port's socket:

  qemu-system-x86_64 -enable-kvm -m 1G \\
    -object memory-backend-memfd,id=mem0,size=1G,share=on \\
    -machine q35,memory-backend=mem0 \\
    -chardev socket,id=vw0,path={sock},reconnect=1 \\
    -netdev vhost-user,id=net0,chardev=vw0 \\
    -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:01 \\
    ...                                  # disk, console and the rest as usual

With libvirt, in the domain XML (libvirt runs QEMU as its own user: that user needs
write access to the socket):

  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <devices>
    <interface type='vhostuser'>
      <mac address='52:54:00:12:34:01'/>
      <source type='unix' path='{sock}' mode='client'>
        <reconnect enabled='yes' timeout='1'/>
      </source>
      <model type='virtio'/>
    </interface>
  </devices>

Then `{cli} port list`, `{cli} stats` and `{cli} fdb show` show the port, its
counters and the addresses it learned.
"
    );
}
