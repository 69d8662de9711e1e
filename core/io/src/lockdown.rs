//! The kill switch (`veil up --lockdown`, Linux): while the node runs, nothing leaves the
//! host outside the tunnel. An nftables table `inet veil_lockdown_<tun>` drops every packet
//! on the output hook except those on loopback, on the node's TUN, from Veil's own sockets
//! (each carries the firewall mark [`MARK`], set by [`MarkingFactory`]: so the relays and
//! the peers' underlay endpoints are reachable, whichever they are, also while the node
//! reconnects), and DHCP and IPv6 neighbour discovery (so the host keeps its address).
//!
//! The table is made before the node sends anything and replaced atomically; an orderly
//! exit (`veil down`, SIGTERM, a fatal error) deletes it; after a crash it stays (traffic
//! stays blocked) until the next `veil up` on the same TUN name, which deletes the leftover
//! first and makes it again only with `--lockdown`. Forwarded traffic (containers, VMs
//! routed by this host) is not covered.
//!
//! Windows has no kill switch yet: [`Lockdown::install`] says so there (`veil up` refuses
//! `lockdown` before it gets that far), and [`MarkingFactory`] makes plain sockets.

use crate::socket::{self, SocketFactory};
use std::io::{self, Write};
#[cfg(unix)]
use std::net::TcpStream;
use std::net::{SocketAddr, UdpSocket};
#[cfg(unix)]
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// The firewall mark of Veil's own sockets under lockdown ("5e11" reads "veil").
pub const MARK: u32 = 0x5e11;

/// Why the kill switch could not be set up or removed.
#[derive(Debug, thiserror::Error)]
#[error("kill switch (nftables table {table}): {detail}")]
pub struct LockdownError {
    /// The table.
    pub table: String,
    /// What failed, and what to check.
    pub detail: String,
}

/// `tun` as part of an nftables identifier (anything but ASCII letters and digits is `_`).
pub fn nft_safe(tun: &str) -> String {
    tun.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The name of the table for the TUN `tun`.
pub fn table_name(tun: &str) -> String {
    format!("veil_lockdown_{}", nft_safe(tun))
}

/// Runs an nftables script (`nft -f -`); the error says what failed.
pub fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft ({e}); install nftables (scripts/setup.sh)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(unix)]
fn nft_table(script: &str, table: &str) -> Result<(), LockdownError> {
    nft(script).map_err(|detail| LockdownError {
        table: table.to_owned(),
        detail,
    })
}

/// The ruleset of the kill switch for `tun`.
pub fn ruleset(tun: &str) -> String {
    let t = table_name(tun);
    format!(
        r#"table inet {t}
delete table inet {t}
table inet {t} {{
    chain output {{
        type filter hook output priority filter; policy drop;
        oif "lo" accept
        oifname "{tun}" accept
        meta mark {MARK:#x} accept
        udp sport 68 udp dport 67 accept comment "DHCPv4"
        udp sport 546 udp dport 547 accept comment "DHCPv6"
        icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept
        counter comment "left outside the tunnel: dropped"
    }}
}}
"#
    )
}

/// The kill switch while it is on; dropping it does not remove it (call [`Lockdown::remove`]
/// on an orderly exit).
#[derive(Debug)]
pub struct Lockdown {
    table: String,
}

impl Lockdown {
    /// Blocks everything but the tunnel, loopback and Veil's own (marked) sockets.
    #[cfg(unix)]
    pub fn install(tun: &str) -> Result<Lockdown, LockdownError> {
        let table = table_name(tun);
        nft_table(&ruleset(tun), &table)?;
        Ok(Lockdown { table })
    }

    /// Windows: no kill switch yet.
    #[cfg(windows)]
    pub fn install(tun: &str) -> Result<Lockdown, LockdownError> {
        Err(LockdownError {
            table: table_name(tun),
            detail: "the kill switch is not supported on Windows yet (see docs/windows.md)".into(),
        })
    }

    /// Deletes the table a crashed node left for `tun`; true when there was one.
    #[cfg(unix)]
    pub fn remove_leftover(tun: &str) -> Result<bool, LockdownError> {
        let table = table_name(tun);
        let exists = Command::new("nft")
            .args(["list", "table", "inet", &table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if exists {
            nft_table(&format!("delete table inet {table}\n"), &table)?;
        }
        Ok(exists)
    }

    /// Windows: no node ever left one.
    #[cfg(windows)]
    pub fn remove_leftover(_tun: &str) -> Result<bool, LockdownError> {
        Ok(false)
    }

    /// Lets traffic out again.
    #[cfg(unix)]
    pub fn remove(self) -> Result<(), LockdownError> {
        nft_table(&format!("delete table inet {}\n", self.table), &self.table)
    }

    /// Windows: never installed, nothing to remove.
    #[cfg(windows)]
    pub fn remove(self) -> Result<(), LockdownError> {
        Ok(())
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// Sockets as [`socket::DefaultSocketFactory`] makes them, carrying [`MARK`] so that the kill
/// switch lets them out.
#[derive(Clone, Copy, Debug)]
pub struct MarkingFactory;

#[cfg(unix)]
fn set_mark(fd: i32) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mark = MARK as libc::c_int;
        // SAFETY: `fd` is a live socket of the caller's; the option value is a c_int whose
        // size is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_MARK,
                std::ptr::from_ref(&mark).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = fd;
    Ok(())
}

#[cfg(unix)]
impl SocketFactory for MarkingFactory {
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let s = socket::bind_udp(addr)?;
        set_mark(s.as_raw_fd())?;
        Ok(s)
    }

    fn tcp_socket(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        let s = socket::tcp_socket(peer)?;
        set_mark(s.as_raw_fd())?;
        Ok(s)
    }
}

/// Windows has no firewall mark (nor a kill switch or routes that would look for one).
#[cfg(windows)]
impl SocketFactory for MarkingFactory {
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        socket::bind_udp(addr)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_nft_identifiers() {
        assert_eq!(table_name("veil0"), "veil_lockdown_veil0");
        assert_eq!(table_name("wg-1.x"), "veil_lockdown_wg_1_x");
    }

    #[test]
    fn ruleset_lets_only_the_tunnel_loopback_and_marked_sockets_out() {
        let r = ruleset("veil0");
        assert!(r.contains("policy drop;"));
        assert!(r.contains(r#"oifname "veil0" accept"#));
        assert!(r.contains("meta mark 0x5e11 accept"));
        // Replaced atomically: create (no-op if present), delete, create.
        assert!(r.starts_with(
            "table inet veil_lockdown_veil0\ndelete table inet veil_lockdown_veil0\n"
        ));
    }

    /// Needs root: the mark is set on real sockets.
    #[test]
    fn marked_sockets_carry_the_mark() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let s = MarkingFactory
            .bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let mut mark: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `mark` and `len` are valid for writes of their sizes.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                std::ptr::from_mut(&mut mark).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(mark as u32, MARK);
    }
}
