//! The host's network interfaces as discovery needs them: which ones to join
//! the WS-Discovery groups on (their IPv4 addresses for `IP_ADD_MEMBERSHIP` /
//! `IP_MULTICAST_IF`, their indexes for IPv6), and the subnets datagrams are
//! accepted from (MS-PCCRD is subnet-local).
//!
//! [`list`] reads getifaddrs(3) through `nix`, which wraps it safely and,
//! unlike `if-addrs`, exposes the interface flags (`IFF_UP`,
//! `IFF_MULTICAST`, `IFF_LOOPBACK`) that the default selection needs.
//! [`select`] is pure, so the selection rules are unit-tested on made-up
//! interface lists.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{if_nametoindex, InterfaceFlags};

use crate::proto::pccrd::engine::IpNet;

/// One network interface and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name (`eth0`).
    pub name: String,
    /// Kernel index (IPv6 multicast membership and scope ids); 0 if unknown.
    pub index: u32,
    /// `IFF_UP`.
    pub up: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// `IFF_MULTICAST`.
    pub multicast: bool,
    /// IPv4 addresses with their prefix lengths.
    pub v4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses with their prefix lengths.
    pub v6: Vec<(Ipv6Addr, u8)>,
}

impl Interface {
    /// The subnets this interface is on (the discovery source allow-list).
    pub fn subnets(&self) -> impl Iterator<Item = IpNet> + '_ {
        let v4 = self.v4.iter().map(|(a, p)| IpNet {
            addr: IpAddr::V4(*a),
            prefix: *p,
        });
        let v6 = self.v6.iter().map(|(a, p)| IpNet {
            addr: IpAddr::V6(*a),
            prefix: *p,
        });
        v4.chain(v6)
    }

    /// Usable by default: up, multicast-capable, not loopback, with an address.
    pub fn is_default_candidate(&self) -> bool {
        self.up && self.multicast && !self.loopback && (!self.v4.is_empty() || !self.v6.is_empty())
    }
}

/// Why no interface could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    /// getifaddrs(3) failed.
    #[error("cannot list network interfaces: {0}")]
    List(#[source] io::Error),
    /// A configured interface does not exist.
    #[error("peer.interfaces: no interface named {name:?} (have: {available})")]
    Unknown {
        /// The configured name.
        name: String,
        /// The names that exist, comma-separated.
        available: String,
    },
    /// A configured interface has no IP address to join or send from.
    #[error("peer.interfaces: interface {name:?} has no IP address")]
    NoAddress {
        /// The configured name.
        name: String,
    },
    /// Nothing configured and no interface is up, multicast-capable and
    /// non-loopback with an address.
    #[error("no up, multicast-capable, non-loopback interface with an IP address")]
    NoneSuitable,
}

/// Every interface of the host (one entry per name, addresses merged).
pub fn list() -> Result<Vec<Interface>, InterfaceError> {
    let addrs = getifaddrs().map_err(|e| InterfaceError::List(io::Error::from(e)))?;
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for a in addrs {
        let entry = by_name
            .entry(a.interface_name.clone())
            .or_insert_with(|| Interface {
                index: if_nametoindex(a.interface_name.as_str()).unwrap_or(0),
                name: a.interface_name.clone(),
                up: false,
                loopback: false,
                multicast: false,
                v4: Vec::new(),
                v6: Vec::new(),
            });
        entry.up |= a.flags.contains(InterfaceFlags::IFF_UP);
        entry.loopback |= a.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        entry.multicast |= a.flags.contains(InterfaceFlags::IFF_MULTICAST);
        let Some(addr) = a.address else { continue };
        if let Some(sin) = addr.as_sockaddr_in() {
            let prefix = a
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| prefix_len(u32::from(m.ip()).into(), 32));
            entry.v4.push((sin.ip(), prefix));
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            let prefix = a
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map_or(128, |m| prefix_len(u128::from(m.ip()), 128));
            entry.v6.push((sin6.ip(), prefix));
        }
    }
    Ok(by_name.into_values().collect())
}

/// Leading one bits of a `width`-bit netmask (a non-contiguous mask counts
/// up to its first zero, which errs on the narrow side).
fn prefix_len(mask: u128, width: u32) -> u8 {
    let shifted = mask << (128 - width);
    u8::try_from(shifted.leading_ones().min(width)).unwrap_or(128)
}

/// The interfaces discovery runs on. `names` empty: every
/// [default candidate](Interface::is_default_candidate). Otherwise exactly
/// the named ones, which must exist and have an address; loopback and
/// interfaces without `IFF_MULTICAST` are accepted when named explicitly
/// (tests, unusual setups) and only logged.
pub fn select(all: Vec<Interface>, names: &[String]) -> Result<Vec<Interface>, InterfaceError> {
    if names.is_empty() {
        let chosen: Vec<Interface> = all
            .into_iter()
            .filter(Interface::is_default_candidate)
            .collect();
        if chosen.is_empty() {
            return Err(InterfaceError::NoneSuitable);
        }
        return Ok(chosen);
    }
    let mut chosen = Vec::with_capacity(names.len());
    for name in names {
        if chosen.iter().any(|i: &Interface| &i.name == name) {
            continue;
        }
        let Some(iface) = all.iter().find(|i| &i.name == name) else {
            return Err(InterfaceError::Unknown {
                name: name.clone(),
                available: all
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if iface.v4.is_empty() && iface.v6.is_empty() {
            return Err(InterfaceError::NoAddress { name: name.clone() });
        }
        if !iface.up || !iface.multicast {
            tracing::warn!(interface = %name, up = iface.up, multicast = iface.multicast, "discovery interface may not carry multicast");
        }
        chosen.push(iface.clone());
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool, lo: bool, mc: bool, v4: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            index: 1,
            up,
            loopback: lo,
            multicast: mc,
            v4: v4.iter().map(|a| (a.parse().unwrap(), 24)).collect(),
            v6: Vec::new(),
        }
    }

    fn host() -> Vec<Interface> {
        vec![
            iface("lo", true, true, false, &["127.0.0.1"]),
            iface("eth0", true, false, true, &["192.0.2.10"]),
            iface("eth1", false, false, true, &["198.51.100.1"]),
            iface("tun0", true, false, false, &["203.0.113.5"]),
            iface("eth2", true, false, true, &[]),
        ]
    }

    fn names(v: &[Interface]) -> Vec<&str> {
        v.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn default_takes_up_multicast_non_loopback_interfaces_with_addresses() {
        let chosen = select(host(), &[]).unwrap();
        assert_eq!(names(&chosen), ["eth0"]);
    }

    #[test]
    fn explicit_names_are_taken_as_given_even_loopback() {
        let chosen = select(host(), &["lo".into(), "eth1".into(), "lo".into()]).unwrap();
        assert_eq!(names(&chosen), ["lo", "eth1"]);
    }

    #[test]
    fn unknown_or_addressless_explicit_interface_is_an_error() {
        let err = select(host(), &["wlan9".into()]).unwrap_err();
        assert!(
            matches!(&err, InterfaceError::Unknown { name, available } if name == "wlan9" && available.contains("eth0")),
            "{err}"
        );
        let err = select(host(), &["eth2".into()]).unwrap_err();
        assert!(matches!(err, InterfaceError::NoAddress { .. }), "{err}");
    }

    #[test]
    fn nothing_suitable_is_reported() {
        let only_lo = vec![iface("lo", true, true, false, &["127.0.0.1"])];
        assert!(matches!(
            select(only_lo, &[]),
            Err(InterfaceError::NoneSuitable)
        ));
    }

    #[test]
    fn netmask_prefix_lengths() {
        assert_eq!(prefix_len(0xFFFF_FF00, 32), 24);
        assert_eq!(prefix_len(0xFFFF_FFFF, 32), 32);
        assert_eq!(prefix_len(0, 32), 0);
        assert_eq!(prefix_len(0xFF00_FF00, 32), 8);
        assert_eq!(prefix_len(u128::MAX << 64, 128), 64);
    }

    #[test]
    fn subnets_cover_both_families() {
        let mut i = iface("eth0", true, false, true, &["192.0.2.10"]);
        i.v6.push(("fe80::1".parse().unwrap(), 64));
        let nets: Vec<IpNet> = i.subnets().collect();
        assert_eq!(nets.len(), 2);
        assert!(nets[0].contains("192.0.2.99".parse().unwrap()));
        assert!(!nets[0].contains("192.0.3.1".parse().unwrap()));
        assert!(nets[1].contains("fe80::abcd".parse().unwrap()));
    }

    #[test]
    fn listing_this_host_works() {
        // Every Linux host (and network namespace) has `lo`.
        let all = list().unwrap();
        assert!(all.iter().any(|i| i.loopback && i.index > 0), "{all:?}");
    }
}
