//! Per-port forwarding policy: which VLANs a port carries and how (802.1Q access and
//! trunk ports), and which addresses it may send from and receive for.
//!
//! Internally every frame belongs to one VLAN: 1..=4094 for tagged VLANs, 0 for the
//! default, untagged VLAN of ports configured with neither `vlan` nor `trunks` (like an
//! Open vSwitch port without `tag`/`trunks`).

use netproto::ethernet::Mac;

/// The default VLAN (untagged frames on ports without a VLAN configuration).
pub const DEFAULT_VLAN: u16 = 0;

/// A set of VLAN ids (a 4096-bit map).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet(Box<[u64; 64]>);

impl VlanSet {
    /// The empty set.
    pub fn new() -> VlanSet {
        VlanSet(Box::new([0; 64]))
    }

    /// Adds a VLAN.
    pub fn insert(&mut self, v: u16) {
        let v = (v & 0xfff) as usize;
        self.0[v / 64] |= 1 << (v % 64);
    }

    /// True when `v` is in the set.
    #[inline(always)]
    pub fn contains(&self, v: u16) -> bool {
        let v = (v & 0xfff) as usize;
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    /// The VLANs in the set, ascending.
    pub fn to_vec(&self) -> Vec<u16> {
        (0..4096u16).filter(|v| self.contains(*v)).collect()
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl FromIterator<u16> for VlanSet {
    fn from_iter<I: IntoIterator<Item = u16>>(it: I) -> Self {
        let mut s = VlanSet::new();
        for v in it {
            s.insert(v);
        }
        s
    }
}

/// How a port carries VLANs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VlanMode {
    /// Untagged frames on the default VLAN, tagged frames on their own VLAN, sent out as
    /// they came.
    #[default]
    Any,
    /// An access port: its frames are untagged on the wire and belong to this VLAN;
    /// tagged frames from the port are dropped (priority tags, VLAN 0, are accepted).
    Access(u16),
    /// A trunk port: tagged frames of the allowed VLANs; untagged frames belong to the
    /// native VLAN if there is one (and leave untagged), else are dropped.
    Trunk {
        /// VLANs carried tagged.
        allowed: VlanSet,
        /// The VLAN of untagged frames.
        native: Option<u16>,
    },
}

/// What leaves a port for a frame of some VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The port does not carry that VLAN.
    Drop,
    /// Sent without a tag.
    Untagged,
    /// Sent with an 802.1Q tag for the VLAN.
    Tagged,
}

/// A port's policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortPolicy {
    /// VLAN handling.
    pub vlan: VlanMode,
    /// The port's addresses. When not empty, frames from the port must come from one of
    /// them (anti-spoofing) and the port receives only unicast frames for them, plus
    /// broadcast and multicast, unless `promiscuous`.
    pub macs: Vec<Mac>,
    /// Receive unknown unicast too (flooded frames), even with `macs` set.
    pub promiscuous: bool,
}

impl PortPolicy {
    /// The VLAN of a frame arriving from the port with 802.1Q VLAN id `tag` (None:
    /// untagged), or None when the port does not carry it.
    #[inline]
    pub fn ingress_vlan(&self, tag: Option<u16>) -> Option<u16> {
        // A priority tag (VLAN id 0) counts as untagged (IEEE 802.1Q 9.6).
        let tag = tag.filter(|&v| v != 0);
        match (&self.vlan, tag) {
            (VlanMode::Any, None) => Some(DEFAULT_VLAN),
            (VlanMode::Any, Some(v)) => (v != 0xfff).then_some(v),
            (VlanMode::Access(a), None) => Some(*a),
            (VlanMode::Access(_), Some(_)) => None,
            (VlanMode::Trunk { native, .. }, None) => *native,
            (VlanMode::Trunk { allowed, .. }, Some(v)) => allowed.contains(v).then_some(v),
        }
    }

    /// How a frame of `vlan` leaves this port.
    #[inline]
    pub fn egress(&self, vlan: u16) -> Egress {
        match &self.vlan {
            VlanMode::Any if vlan == DEFAULT_VLAN => Egress::Untagged,
            VlanMode::Any => Egress::Tagged,
            VlanMode::Access(a) if *a == vlan => Egress::Untagged,
            VlanMode::Access(_) => Egress::Drop,
            VlanMode::Trunk { native: Some(n), .. } if *n == vlan => Egress::Untagged,
            VlanMode::Trunk { allowed, .. } if allowed.contains(vlan) => Egress::Tagged,
            VlanMode::Trunk { .. } => Egress::Drop,
        }
    }

    /// True when the port may send from `src`.
    #[inline]
    pub fn source_allowed(&self, src: &Mac) -> bool {
        self.macs.is_empty() || self.macs.contains(src)
    }

    /// True when the port takes flooded unicast (to a destination nobody learned).
    #[inline]
    pub fn takes_unknown_unicast(&self) -> bool {
        self.macs.is_empty() || self.promiscuous
    }

    /// True when the port takes unicast to `dst` found in the table on this port.
    #[inline]
    pub fn takes_unicast(&self, dst: &Mac) -> bool {
        self.takes_unknown_unicast() || self.macs.contains(dst)
    }

    /// Checks VLAN ids; the error names the problem.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |v: u16| (1..=4094).contains(&v);
        match &self.vlan {
            VlanMode::Any => {}
            VlanMode::Access(a) if !ok(*a) => return Err(format!("vlan {a} is outside 1..=4094")),
            VlanMode::Access(_) => {}
            VlanMode::Trunk { allowed, native } => {
                if let Some(v) = allowed.to_vec().into_iter().find(|v| !ok(*v)) {
                    return Err(format!("trunk vlan {v} is outside 1..=4094"));
                }
                if allowed.to_vec().is_empty() {
                    return Err("trunks: at least one VLAN".into());
                }
                if let Some(n) = native {
                    if !ok(*n) {
                        return Err(format!("native_vlan {n} is outside 1..=4094"));
                    }
                }
            }
        }
        if let Some(m) = self.macs.iter().find(|m| m.is_multicast() || m.is_zero()) {
            return Err(format!("macs: {m} is not a unicast address"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(v: &[u16], native: Option<u16>) -> PortPolicy {
        PortPolicy {
            vlan: VlanMode::Trunk { allowed: v.iter().copied().collect(), native },
            ..Default::default()
        }
    }

    #[test]
    fn any_port() {
        let p = PortPolicy::default();
        assert_eq!(p.ingress_vlan(None), Some(0));
        assert_eq!(p.ingress_vlan(Some(0)), Some(0));
        assert_eq!(p.ingress_vlan(Some(5)), Some(5));
        assert_eq!(p.ingress_vlan(Some(0xfff)), None);
        assert_eq!(p.egress(0), Egress::Untagged);
        assert_eq!(p.egress(5), Egress::Tagged);
    }

    #[test]
    fn access_port() {
        let p = PortPolicy { vlan: VlanMode::Access(10), ..Default::default() };
        assert_eq!(p.ingress_vlan(None), Some(10));
        assert_eq!(p.ingress_vlan(Some(0)), Some(10), "priority tag");
        assert_eq!(p.ingress_vlan(Some(10)), None);
        assert_eq!(p.ingress_vlan(Some(20)), None);
        assert_eq!(p.egress(10), Egress::Untagged);
        assert_eq!(p.egress(20), Egress::Drop);
        assert_eq!(p.egress(0), Egress::Drop);
    }

    #[test]
    fn trunk_port() {
        let p = trunk(&[10, 20], None);
        assert_eq!(p.ingress_vlan(Some(10)), Some(10));
        assert_eq!(p.ingress_vlan(Some(30)), None);
        assert_eq!(p.ingress_vlan(None), None);
        assert_eq!(p.egress(20), Egress::Tagged);
        assert_eq!(p.egress(30), Egress::Drop);
        let n = trunk(&[10, 20], Some(10));
        assert_eq!(n.ingress_vlan(None), Some(10));
        assert_eq!(n.egress(10), Egress::Untagged);
        assert_eq!(n.egress(20), Egress::Tagged);
    }

    #[test]
    fn address_filters() {
        let a = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let b = Mac([0x52, 0x54, 0, 0, 0, 2]);
        let open = PortPolicy::default();
        assert!(open.source_allowed(&b) && open.takes_unknown_unicast());
        let pinned = PortPolicy { macs: vec![a], ..Default::default() };
        assert!(pinned.source_allowed(&a));
        assert!(!pinned.source_allowed(&b));
        assert!(!pinned.takes_unknown_unicast());
        assert!(pinned.takes_unicast(&a) && !pinned.takes_unicast(&b));
        let promisc = PortPolicy { promiscuous: true, ..pinned };
        assert!(promisc.takes_unknown_unicast() && !promisc.source_allowed(&b));
    }

    #[test]
    fn validation() {
        assert!(PortPolicy { vlan: VlanMode::Access(4095), ..Default::default() }.validate().is_err());
        assert!(trunk(&[0], None).validate().unwrap_err().contains("trunk vlan 0"));
        assert!(trunk(&[5], Some(5000)).validate().unwrap_err().contains("native_vlan"));
        assert!(PortPolicy { macs: vec![Mac::BROADCAST], ..Default::default() }.validate().is_err());
        assert!(trunk(&[5, 6], Some(5)).validate().is_ok());
    }
}
