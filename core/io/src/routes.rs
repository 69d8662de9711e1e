//! The kernel side of subnet routes and exit nodes (Linux, a TUN made by veil-io).
//!
//! - [`KernelRoutes`]: the routes the engine uses (`NodeEvent::RoutesChanged`) point at the
//!   TUN, by policy routing as wg-quick does it: table 52110 holds each prefix (a subnet,
//!   or the default route of a chosen exit) on the TUN, a rule sends everything without
//!   Veil's firewall mark there, and a rule before it keeps the main table for everything
//!   but its default route (so the LAN and the overlay's own prefixes stay as they are, and,
//!   through the mark, Veil's own datagrams to relays and peers never enter the tunnel).
//! - [`Forwarding`]: a node that advertises routes or is an exit forwards for the network:
//!   IP forwarding on, and an nftables table `inet veil_nat_<tun>` that masquerades what
//!   leaves from the overlay's prefixes through other interfaces.
//!
//! Both are undone on an orderly exit.
//!
//! Windows has neither yet (no policy routing, and no firewall mark that keeps Veil's own
//! datagrams out of the tunnel): `veil up` refuses the settings that need them, [`KernelRoutes`]
//! there only reports the routes it does not install, and [`Forwarding::enable`] says it
//! cannot.

#[cfg(unix)]
use crate::lockdown::{nft, nft_safe, MARK};
#[cfg(unix)]
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
#[cfg(unix)]
use std::process::{Command, Stdio};
use veil_proto::route::Prefix;

/// Routing table of the exit's default routes, and the priorities of its two rules.
pub const EXIT_TABLE: u32 = 52110;
#[cfg(unix)]
const RULE_SUPPRESS: u32 = 5210;
#[cfg(unix)]
const RULE_EXIT: u32 = 5211;

#[cfg(unix)]
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip ({e}); install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The routes veil-io put in the kernel for the engine's routes.
#[cfg(unix)]
#[derive(Debug)]
pub struct KernelRoutes {
    tun: String,
    /// Prefixes in table [`EXIT_TABLE`], per family (index 0: IPv4, 1: IPv6).
    installed: [BTreeSet<Prefix>; 2],
}

#[cfg(unix)]
impl KernelRoutes {
    /// Nothing installed yet, for the TUN `tun`.
    pub fn new(tun: &str) -> KernelRoutes {
        KernelRoutes {
            tun: tun.to_owned(),
            installed: [BTreeSet::new(), BTreeSet::new()],
        }
    }

    /// Makes the kernel's routes match `routes`. Every prefix goes into table
    /// [`EXIT_TABLE`], which only packets without Veil's mark consult: Veil's own datagrams
    /// never follow a route into the overlay (a peer's candidate address inside a routed
    /// subnet would otherwise be reached through the tunnel itself). Errors are logged,
    /// never fatal: the overlay does not depend on them.
    pub fn apply(&mut self, routes: &[Prefix]) {
        for (i, fam) in ["-4", "-6"].into_iter().enumerate() {
            let want: BTreeSet<Prefix> = routes
                .iter()
                .filter(|p| p.addr().is_ipv4() == (i == 0))
                .copied()
                .collect();
            if want == self.installed[i] {
                continue;
            }
            if want.is_empty() {
                self.rules(fam, false);
                self.installed[i].clear();
                tracing::info!("routes through the overlay ({fam}) removed");
                continue;
            }
            if self.installed[i].is_empty() && !self.rules(fam, true) {
                continue;
            }
            let table = EXIT_TABLE.to_string();
            for p in self.installed[i]
                .difference(&want)
                .copied()
                .collect::<Vec<_>>()
            {
                let _ = ip(&[
                    fam,
                    "route",
                    "del",
                    &p.to_string(),
                    "dev",
                    &self.tun,
                    "table",
                    &table,
                ]);
                self.installed[i].remove(&p);
            }
            for p in want
                .difference(&self.installed[i])
                .copied()
                .collect::<Vec<_>>()
            {
                let dest = if p.is_default() {
                    "default".to_owned()
                } else {
                    p.to_string()
                };
                match ip(&[
                    fam, "route", "replace", &dest, "dev", &self.tun, "table", &table,
                ]) {
                    Ok(()) => {
                        tracing::info!(route = %p, "route through the overlay");
                        self.installed[i].insert(p);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not add the route {p}"),
                }
            }
        }
    }

    /// The two rules of one family: the main table first for everything but its default
    /// route, then table [`EXIT_TABLE`] for packets without Veil's mark. Returns whether
    /// they are in place (`on`), after removing any left by a crash.
    fn rules(&self, fam: &str, on: bool) -> bool {
        let table = EXIT_TABLE.to_string();
        let mark = format!("{MARK:#x}");
        let (exit_prio, suppress_prio) = (RULE_EXIT.to_string(), RULE_SUPPRESS.to_string());
        let _ = ip(&[fam, "rule", "del", "priority", &exit_prio]);
        let _ = ip(&[fam, "rule", "del", "priority", &suppress_prio]);
        let _ = ip(&[fam, "route", "flush", "table", &table]);
        if !on {
            return false;
        }
        let steps: [&[&str]; 2] = [
            &[
                fam, "rule", "add", "not", "fwmark", &mark, "table", &table, "priority", &exit_prio,
            ],
            &[
                fam,
                "rule",
                "add",
                "table",
                "main",
                "suppress_prefixlength",
                "0",
                "priority",
                &suppress_prio,
            ],
        ];
        for args in steps {
            if let Err(e) = ip(args) {
                tracing::warn!(error = %e, "could not set up routing through the overlay ({fam})");
                return false;
            }
        }
        true
    }

    /// Removes everything installed.
    pub fn clear(&mut self) {
        self.apply(&[]);
    }
}

#[cfg(unix)]
impl Drop for KernelRoutes {
    /// The node loop ended (stopped, or failed): its routes go with it.
    fn drop(&mut self) {
        self.clear();
    }
}

/// IP forwarding and masquerading for a node that routes for the network.
#[cfg(unix)]
#[derive(Debug)]
pub struct Forwarding {
    table: String,
    /// The forwarding sysctls as they were, to restore.
    before: Vec<(&'static str, String)>,
}

#[cfg(unix)]
const FORWARD_V4: &str = "/proc/sys/net/ipv4/ip_forward";
#[cfg(unix)]
const FORWARD_V6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

#[cfg(unix)]
impl Forwarding {
    /// Turns forwarding on and masquerades what leaves the overlay (`pool`, `ula`/48) through
    /// any other interface than `tun`.
    pub fn enable(tun: &str, pool: (Ipv4Addr, u8), ula: Ipv6Addr) -> Result<Forwarding, String> {
        let table = format!("veil_nat_{}", nft_safe(tun));
        let mut before = Vec::new();
        for path in [FORWARD_V4, FORWARD_V6] {
            let old = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {path}: {e}"))?
                .trim()
                .to_owned();
            std::fs::write(path, "1").map_err(|e| format!("writing {path}: {e}"))?;
            before.push((path, old));
        }
        let script = format!(
            r#"table inet {table}
delete table inet {table}
table inet {table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat;
        ip saddr {}/{} oifname != "{tun}" masquerade
        ip6 saddr {ula}/48 oifname != "{tun}" masquerade
    }}
}}
"#,
            pool.0, pool.1
        );
        nft(&script)?;
        Ok(Forwarding { table, before })
    }

    /// Masquerading off, forwarding as it was.
    pub fn disable(self) -> Result<(), String> {
        for (path, old) in &self.before {
            let _ = std::fs::write(path, old);
        }
        nft(&format!("delete table inet {}\n", self.table))
    }
}

/// Windows: the engine's routes are not put in the kernel yet. Each new, non-empty set is
/// logged as a warning, so that a route the engine uses but the host does not is never
/// silent.
#[cfg(windows)]
#[derive(Debug)]
pub struct KernelRoutes {
    reported: Vec<Prefix>,
}

#[cfg(windows)]
impl KernelRoutes {
    /// Nothing reported yet.
    pub fn new(_tun: &str) -> KernelRoutes {
        KernelRoutes {
            reported: Vec::new(),
        }
    }

    /// Warns about `routes` when they changed and are not empty; installs nothing.
    pub fn apply(&mut self, routes: &[Prefix]) {
        if routes == self.reported.as_slice() {
            return;
        }
        self.reported = routes.to_vec();
        if !routes.is_empty() {
            let list: Vec<String> = routes.iter().map(ToString::to_string).collect();
            tracing::warn!(
                "routes through the overlay are not supported on Windows yet; not installed: {}",
                list.join(", ")
            );
        }
    }

    /// Nothing was installed: nothing to remove.
    pub fn clear(&mut self) {
        self.reported.clear();
    }
}

/// Windows: no forwarding with NAT yet.
#[cfg(windows)]
#[derive(Debug)]
pub struct Forwarding;

#[cfg(windows)]
impl Forwarding {
    /// Refuses: routing for the network is not supported on Windows yet.
    pub fn enable(_tun: &str, _pool: (Ipv4Addr, u8), _ula: Ipv6Addr) -> Result<Forwarding, String> {
        Err("routing for the network (advertised routes, an exit) is not supported on Windows yet (see docs/windows.md)".into())
    }

    /// Never enabled: nothing to undo.
    pub fn disable(self) -> Result<(), String> {
        Ok(())
    }
}
