//! IP prefixes that nodes advertise (subnet routes, and the default routes of an exit node),
//! and the sealed announcement that carries them through the relay.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len` (host bits cleared); None when `len` is too long.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Prefix { addr, len })
    }

    /// `0.0.0.0/0`.
    pub const DEFAULT_V4: Prefix = Prefix {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        len: 0,
    };
    /// `::/0`.
    pub const DEFAULT_V6: Prefix = Prefix {
        addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        len: 0,
    };

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is a default route (length 0).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// Whether `a` is inside.
    pub fn contains(&self, a: IpAddr) -> bool {
        Prefix::new(a, self.len).is_some_and(|p| p.addr == self.addr)
    }

    /// Whether the two prefixes share an address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self.addr {
            IpAddr::V4(a) => {
                out.push(4);
                out.push(self.len);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.push(self.len);
                out.extend_from_slice(&a.octets());
            }
        }
    }

    fn decode(c: &mut crate::wire::Cursor<'_>) -> Option<Prefix> {
        let family = c.u8()?;
        let len = c.u8()?;
        let addr = match family {
            4 => IpAddr::V4(Ipv4Addr::from(c.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(c.array::<16>()?)),
            _ => return None,
        };
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{l:?} is not a prefix length"))?;
        Prefix::new(addr, len).ok_or_else(|| format!("/{len} is too long for {addr}"))
    }
}

/// Most prefixes one node advertises.
pub const MAX_PREFIXES: usize = 32;

/// What a node announces to the other members: its routes, and whether it is an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The advertiser's static public key.
    pub public: [u8; 32],
    /// Its overlay IPv4.
    pub ipv4: Option<Ipv4Addr>,
    /// Its DNS name, if any (so `--exit-node NAME` finds it).
    pub name: Option<String>,
    /// It forwards anything to the internet (default routes).
    pub exit: bool,
    /// The subnets it routes to.
    pub routes: Vec<Prefix>,
}

impl Announcement {
    /// The plaintext form (sealed by the node with the network's record key).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![1u8];
        v.extend_from_slice(&self.public);
        v.extend_from_slice(&self.ipv4.map_or([0; 4], |a| a.octets()));
        let name = self.name.as_deref().unwrap_or("");
        v.push(name.len().min(crate::dns::MAX_LABEL) as u8);
        v.extend_from_slice(&name.as_bytes()[..name.len().min(crate::dns::MAX_LABEL)]);
        v.push(u8::from(self.exit));
        let routes = &self.routes[..self.routes.len().min(MAX_PREFIXES)];
        v.push(routes.len() as u8);
        for r in routes {
            r.encode(&mut v);
        }
        v
    }

    /// Reads [`Announcement::encode`]'s form.
    pub fn decode(b: &[u8]) -> Option<Announcement> {
        let mut c = crate::wire::Cursor(b);
        if c.u8()? != 1 {
            return None;
        }
        let public = c.array::<32>()?;
        let v4 = c.array::<4>()?;
        let n = usize::from(c.u8()?);
        let name = std::str::from_utf8(c.take(n)?).ok()?.to_owned();
        let exit = c.u8()? & 1 == 1;
        let count = usize::from(c.u8()?).min(MAX_PREFIXES);
        let routes = (0..count)
            .map(|_| Prefix::decode(&mut c))
            .collect::<Option<Vec<_>>>()?;
        Some(Announcement {
            public,
            ipv4: (v4 != [0; 4]).then(|| Ipv4Addr::from(v4)),
            name: (!name.is_empty()).then_some(name),
            exit,
            routes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_normalize_and_contain() {
        let p: Prefix = "198.18.50.7/24".parse().expect("parse");
        assert_eq!(p.to_string(), "198.18.50.0/24");
        assert!(p.contains("198.18.50.200".parse().expect("ip")));
        assert!(!p.contains("198.18.51.1".parse().expect("ip")));
        assert!(!p.contains("fd00::1".parse().expect("ip")));
        assert!(Prefix::DEFAULT_V4.contains("8.8.8.8".parse().expect("ip")));
        assert!(Prefix::DEFAULT_V6.is_default());
        let v6: Prefix = "fd00:1::5/64".parse().expect("v6");
        assert_eq!(v6.to_string(), "fd00:1::/64");
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
        assert!(p.overlaps(&"198.18.0.0/16".parse().expect("p")));
        assert!(!p.overlaps(&"198.18.51.0/24".parse().expect("p")));
    }

    #[test]
    fn announcements_round_trip() {
        let a = Announcement {
            public: [7; 32],
            ipv4: Some(Ipv4Addr::new(100, 64, 1, 2)),
            name: Some("gw".into()),
            exit: true,
            routes: vec![
                "198.18.50.0/24".parse().expect("p"),
                "fd00:50::/64".parse().expect("p"),
            ],
        };
        assert_eq!(Announcement::decode(&a.encode()), Some(a));
        assert_eq!(Announcement::decode(&[2, 0]), None);
    }
}
