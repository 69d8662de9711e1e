//! `HOST:PORT` arguments: syntax checks (with an error naming the value) and resolution.

use crate::error::CliError;
use std::net::{SocketAddr, ToSocketAddrs};

/// Checks that `value` is `HOST:PORT` with a numeric port from 1 to 65535; IPv6 hosts in
/// brackets.
pub fn check_host_port(what: &'static str, value: &str) -> Result<(), CliError> {
    let bad = |reason| CliError::HostPort {
        what,
        value: value.to_owned(),
        reason,
    };
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("the port is missing"))?;
    if port.is_empty() {
        return Err(bad("the port is missing"));
    }
    match port.parse::<u16>() {
        Ok(0) => return Err(bad("the port must be from 1 to 65535")),
        Ok(_) => {}
        Err(_) if port.chars().all(|c| c.is_ascii_digit()) => {
            return Err(bad("the port must be from 1 to 65535"))
        }
        Err(_) => return Err(bad("the port is not a number")),
    }
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err(bad("an IPv6 address must be in brackets"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("the host contains spaces or '/'"));
    }
    if value.len() > 255 {
        return Err(bad("it is longer than 255 bytes"));
    }
    Ok(())
}

/// Resolves `HOST:PORT` to its first socket address.
pub fn resolve(what: &'static str, value: &str) -> Result<SocketAddr, CliError> {
    let err = |source| CliError::Resolve {
        what,
        addr: value.to_owned(),
        source,
    };
    value.to_socket_addrs().map_err(err)?.next().ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address found",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        for ok in ["198.18.0.1:7000", "relay.example:443", "[2001:db8::1]:7000"] {
            assert!(check_host_port("--relay", ok).is_ok(), "{ok}");
        }
        for bad in [
            "198.18.0.1",
            "relay:",
            ":7000",
            "relay:http",
            "2001:db8::1:7000",
            "r:0",
            "r:70000",
        ] {
            let e = check_host_port("--relay", bad).err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains(&format!("`{bad}`"))), "{bad}");
        }
    }
}
