//! `virtwire bench ring --json` runs end to end and prints the documented keys for every
//! row it was asked for. (Speed is not asserted here: benchmarks print numbers, tests
//! check behaviour.)

use std::process::Command;

#[test]
fn bench_ring_json_has_every_row_and_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_virtwire"))
        .args(["bench", "ring", "--json", "--duration-ms", "50", "--repeat", "1"])
        .output()
        .expect("run virtwire");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let rows = rows.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 3 * 2 * 2, "3 layouts x threads 1,2 x batch 1,32");
    for layout in ["split", "packed", "virtio-queue"] {
        for threads in [1, 2] {
            for batch in [1, 32] {
                let row = rows
                    .iter()
                    .find(|r| r["layout"] == layout && r["threads"] == threads && r["batch"] == batch)
                    .unwrap_or_else(|| panic!("missing row {layout} {threads} {batch}"));
                let mops = row["mops"].as_f64().expect("mops is a number");
                assert!(mops > 0.0, "{layout}/{threads}/{batch}: no descriptor moved");
            }
        }
    }
}

#[test]
fn bench_ring_rejects_bad_options() {
    for args in [&["--size", "100"][..], &["--layout", "ring"], &["--threads", "3"], &["--batch", "0"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_virtwire"))
            .args(["bench", "ring"])
            .args(args)
            .output()
            .expect("run virtwire");
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty(), "{args:?}: no reason given");
    }
}
