//! The daemon's TOML configuration: one `[[port]]` table per port.
//!
//! ```toml
//! [[port]]
//! name = "vm1"
//! type = "vhost-user"
//! socket = "/run/virtwire/vm1.sock"
//! mode = "server"          # or "client": connect to the frontend's socket
//! queue_pairs = 1
//! mac = "52:54:00:00:00:01"
//! mtu = 1500
//! diag = "reflect"         # or "sink", "source"
//! diag_frame_size = 64
//! ```
//!
//! Every error names the port and the field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use netproto::ethernet::Mac;
use serde::Deserialize;
use vhost_backend::{DiagMode, PortSpec, SocketMode};

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Ports.
    #[serde(default)]
    pub port: Vec<PortConfig>,
}

/// One `[[port]]` table as written.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name.
    pub name: String,
    /// Port kind: "vhost-user".
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix socket path.
    pub socket: PathBuf,
    /// "server" (default) or "client".
    #[serde(default)]
    pub mode: Option<String>,
    /// Queue pairs (default 1).
    #[serde(default)]
    pub queue_pairs: Option<u16>,
    /// MAC address of the guest's interface (default: derived from the name).
    #[serde(default)]
    pub mac: Option<String>,
    /// MTU reported to the guest (default: none reported).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Diagnostic mode: "reflect", "sink" or "source".
    #[serde(default)]
    pub diag: Option<String>,
    /// Frame size for diag = "source" (default 64).
    #[serde(default)]
    pub diag_frame_size: Option<usize>,
}

/// A validated port.
#[derive(Debug, Clone)]
pub struct Port {
    /// Device parameters.
    pub spec: PortSpec,
    /// Socket path.
    pub socket: PathBuf,
    /// Server or client.
    pub mode: SocketMode,
}

/// A locally administered MAC derived from a port name, stable across runs.
pub fn default_mac(name: &str) -> Mac {
    let mut h: u32 = 0x811c9dc5;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    let b = h.to_be_bytes();
    Mac([0x52, 0x54, b[0], b[1], b[2], b[3]])
}

impl PortConfig {
    /// Checks one port; errors name the port.
    pub fn validate(&self) -> Result<Port> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 32
            || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("port {n:?}: name must be 1-32 characters of letters, digits, '-' or '_'");
        }
        if self.kind != "vhost-user" {
            bail!("port {n}: type {:?} is not supported (expected \"vhost-user\")", self.kind);
        }
        let mode: SocketMode = self
            .mode
            .as_deref()
            .unwrap_or("server")
            .parse()
            .map_err(|e| anyhow::anyhow!("port {n}: mode: {e}"))?;
        let queue_pairs = self.queue_pairs.unwrap_or(1);
        if queue_pairs == 0 || queue_pairs > 64 {
            bail!("port {n}: queue_pairs {queue_pairs} is outside 1..=64");
        }
        let mac = match &self.mac {
            Some(m) => m.parse::<Mac>().map_err(|e| anyhow::anyhow!("port {n}: mac: {e}"))?,
            None => default_mac(n),
        };
        if mac.is_multicast() || mac.is_zero() {
            bail!("port {n}: mac {mac} is not a unicast address");
        }
        let mtu = self.mtu.unwrap_or(0);
        if mtu != 0 && !(68..=65535 - 18).contains(&(mtu as u32)) {
            bail!("port {n}: mtu {mtu} is outside 68..=65517");
        }
        let diag = match &self.diag {
            Some(d) => d.parse::<DiagMode>().map_err(|e| anyhow::anyhow!("port {n}: diag: {e}"))?,
            None => bail!(
                "port {n}: no diag mode: this version serves ports in diagnostic modes only \
                 (diag = \"reflect\", \"sink\" or \"source\")"
            ),
        };
        let diag_frame_size = self.diag_frame_size.unwrap_or(64);
        if !(60..=65535).contains(&diag_frame_size) {
            bail!("port {n}: diag_frame_size {diag_frame_size} is outside 60..=65535");
        }
        if self.socket.as_os_str().is_empty() {
            bail!("port {n}: socket path is empty");
        }
        if self.socket.as_os_str().len() > 107 {
            bail!(
                "port {n}: socket path {} is longer than a unix socket address allows (107)",
                self.socket.display()
            );
        }
        Ok(Port {
            spec: PortSpec {
                name: n.clone(),
                queue_pairs,
                mac,
                mtu,
                diag: Some(diag),
                policy: Default::default(),
                diag_frame_size,
            },
            socket: self.socket.clone(),
            mode,
        })
    }
}

/// Parses and validates a configuration text.
pub fn parse(text: &str) -> Result<Vec<Port>> {
    let f: ConfigFile = toml::from_str(text).context("configuration")?;
    let mut names = HashSet::new();
    let mut sockets = HashSet::new();
    let mut out = Vec::new();
    for p in &f.port {
        let v = p.validate()?;
        if !names.insert(v.spec.name.clone()) {
            bail!("port {}: a port with this name already exists", v.spec.name);
        }
        if !sockets.insert(v.socket.clone()) {
            bail!("port {}: socket {} is used by another port", v.spec.name, v.socket.display());
        }
        out.push(v);
    }
    Ok(out)
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Vec<Port>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn a_full_port() {
        let p = parse(
            r#"
            [[port]]
            name = "vm1"
            type = "vhost-user"
            socket = "/tmp/vm1.sock"
            mode = "client"
            queue_pairs = 4
            mac = "52:54:00:00:00:01"
            mtu = 1500
            diag = "source"
            diag_frame_size = 1518
            "#,
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].mode, SocketMode::Client);
        assert_eq!(p[0].spec.queue_pairs, 4);
        assert_eq!(p[0].spec.mac.to_string(), "52:54:00:00:00:01");
        assert_eq!(p[0].spec.diag, Some(DiagMode::Source));
        assert_eq!(p[0].spec.diag_frame_size, 1518);
    }

    #[test]
    fn defaults() {
        let p = parse("[[port]]\nname='a'\ntype='vhost-user'\nsocket='/tmp/a'\ndiag='sink'\n").unwrap();
        assert_eq!(p[0].mode, SocketMode::Server);
        assert_eq!(p[0].spec.queue_pairs, 1);
        assert_eq!(p[0].spec.mac, default_mac("a"));
        assert_eq!(p[0].spec.diag_frame_size, 64);
    }

    #[test]
    fn errors_name_the_port_and_field() {
        let base = "type='vhost-user'\nsocket='/tmp/x'\ndiag='sink'\n";
        assert!(err(&format!("[[port]]\nname='p1'\n{base}mac='01:00:00:00:00:01'")).contains("port p1: mac"));
        assert!(err(&format!("[[port]]\nname='p1'\n{base}queue_pairs=0")).contains("port p1: queue_pairs"));
        assert!(err("[[port]]\nname='p2'\ntype='tap'\nsocket='/x'\ndiag='sink'").contains("port p2: type"));
        assert!(err("[[port]]\nname='p3'\ntype='vhost-user'\nsocket='/x'\ndiag='mirror'")
            .contains("port p3: diag"));
        assert!(err("[[port]]\nname='p4'\ntype='vhost-user'\nsocket='/x'\nmode='peer'\ndiag='sink'")
            .contains("port p4: mode"));
        assert!(err("[[port]]\nname='p5'\ntype='vhost-user'\nsocket='/x'").contains("port p5: no diag"));
        let dup = format!(
            "[[port]]\nname='a'\n{base}[[port]]\nname='a'\ntype='vhost-user'\nsocket='/y'\ndiag='sink'"
        );
        assert!(err(&dup).contains("already exists"));
        let dups = format!("[[port]]\nname='a'\n{base}[[port]]\nname='b'\n{base}");
        assert!(err(&dups).contains("used by another port"));
        assert!(err("[[port]]\nname='a'\ntype='vhost-user'\nsocket='/x'\ndiag='sink'\ncolour='red'")
            .contains("unknown field"));
    }
}
