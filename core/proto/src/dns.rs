//! Overlay DNS messages: a node answers `NAME.<domain>` (default domain `veil`) with the
//! overlay addresses of the member registered under NAME, which it learns from the rendezvous
//! under a blinded name (the relay never sees NAME). This module only reads questions and
//! writes answers (with `simple-dns`); lookups and caching are the node's (`node/dns.rs`).

use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use std::net::{Ipv4Addr, Ipv6Addr};

/// TTL of the answers, in seconds: short, since an address may move to another member.
pub const TTL: u32 = 30;

/// Longest name label (RFC 1035).
pub const MAX_LABEL: usize = 63;

/// Whether `name` can be a node's name: one DNS label, `a-z`, `0-9` and `-`, not starting or
/// ending with `-`, at most 63 characters. Names are case-insensitive; pass them lowercased.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_LABEL).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `domain` can be the network's domain: labels as in [`valid_name`] joined by dots.
pub fn valid_domain(domain: &str) -> bool {
    domain.len() <= 200 && domain.split('.').all(valid_name)
}

/// What a question asks, as far as the overlay is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// `label.<domain>`: the member registered under `label`.
    Member(String),
    /// The domain itself, or a deeper name under it: no such name.
    NoSuchName,
    /// Not under the domain: refused (the system's resolvers answer those).
    Refused,
}

/// Reads the first question of a query. None: not a query that parses (dropped).
pub fn ask(query: &[u8], domain: &str) -> Option<Ask> {
    let p = Packet::parse(query).ok()?;
    if p.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let q = p.questions.first()?;
    let qname = q
        .qname
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let Some(head) = qname.strip_suffix(domain) else {
        return Some(Ask::Refused);
    };
    if head.is_empty() {
        return Some(Ask::NoSuchName);
    }
    let Some(label) = head.strip_suffix('.') else {
        // `xveil` for domain `veil`: not under it.
        return Some(Ask::Refused);
    };
    if label.contains('.') || !valid_name(label) {
        return Some(Ask::NoSuchName);
    }
    Some(Ask::Member(label.to_owned()))
}

/// The outcome of a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The member's addresses (answers for the types asked; none for other types).
    Found(Option<Ipv4Addr>, Ipv6Addr),
    /// No member has the name (NXDOMAIN).
    NoSuchName,
    /// The rendezvous did not answer (SERVFAIL: the resolver may try again).
    Failed,
    /// Not a name of the overlay (REFUSED).
    Refused,
}

/// The answer to `query`. None when the query does not parse.
pub fn answer(query: &[u8], outcome: Outcome) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let question = q.questions.first()?.clone();
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        r.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    *r.rcode_mut() = match outcome {
        Outcome::Found(..) => RCODE::NoError,
        Outcome::NoSuchName => RCODE::NameError,
        Outcome::Failed => RCODE::ServerFailure,
        Outcome::Refused => RCODE::Refused,
    };
    if let Outcome::Found(v4, v6) = outcome {
        let name: Name<'_> = question.qname.clone();
        let (want4, want6) = match question.qtype {
            QTYPE::TYPE(TYPE::A) => (true, false),
            QTYPE::TYPE(TYPE::AAAA) => (false, true),
            QTYPE::ANY => (true, true),
            _ => (false, false),
        };
        if let Some(a) = v4.filter(|_| want4) {
            r.answers.push(ResourceRecord::new(
                name.clone(),
                CLASS::IN,
                TTL,
                RData::A(A::from(a)),
            ));
        }
        if want6 {
            r.answers.push(ResourceRecord::new(
                name,
                CLASS::IN,
                TTL,
                RData::AAAA(AAAA::from(v6)),
            ));
        }
    }
    r.questions.push(Question::new(
        question.qname,
        question.qtype,
        question.qclass,
        false,
    ));
    r.build_bytes_vec_compressed().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, t: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(t),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().expect("query")
    }

    #[test]
    fn names_and_domains() {
        for ok in ["a", "web-1", "x9", &"a".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64), "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_domain("veil") && valid_domain("corp.example"));
        assert!(!valid_domain("") && !valid_domain("a..b") && !valid_domain(".veil"));
    }

    #[test]
    fn questions_are_sorted_into_members_no_such_name_and_refused() {
        let a = |n: &str| ask(&query(n, TYPE::A), "veil");
        assert_eq!(a("Alpha.VEIL."), Some(Ask::Member("alpha".into())));
        assert_eq!(a("alpha.veil"), Some(Ask::Member("alpha".into())));
        assert_eq!(a("veil"), Some(Ask::NoSuchName));
        assert_eq!(a("x.alpha.veil"), Some(Ask::NoSuchName));
        assert_eq!(a("example.com"), Some(Ask::Refused));
        assert_eq!(a("xveil"), Some(Ask::Refused));
        assert_eq!(ask(&[1, 2, 3], "veil"), None);
    }

    #[test]
    fn answers_carry_the_asked_type_and_rcode() {
        let v4 = Ipv4Addr::new(100, 64, 1, 2);
        let v6: Ipv6Addr = "fd00::1".parse().expect("v6");
        let out = answer(&query("a.veil", TYPE::A), Outcome::Found(Some(v4), v6)).expect("a");
        let p = Packet::parse(&out).expect("parse");
        assert_eq!(p.id(), 0x1234);
        assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
        assert_eq!(p.answers.len(), 1);
        assert!(matches!(&p.answers[0].rdata, RData::A(a) if Ipv4Addr::from(a.address) == v4));
        let out = answer(&query("a.veil", TYPE::AAAA), Outcome::Found(Some(v4), v6)).expect("aaaa");
        let p = Packet::parse(&out).expect("parse");
        assert!(matches!(&p.answers[0].rdata, RData::AAAA(a) if Ipv6Addr::from(a.address) == v6));
        let out = answer(&query("a.veil", TYPE::MX), Outcome::Found(Some(v4), v6)).expect("mx");
        let p = Packet::parse(&out).expect("parse");
        assert!(p.answers.is_empty() && p.rcode() == RCODE::NoError);
        for (o, rc) in [
            (Outcome::NoSuchName, RCODE::NameError),
            (Outcome::Failed, RCODE::ServerFailure),
            (Outcome::Refused, RCODE::Refused),
        ] {
            let p = answer(&query("a.veil", TYPE::A), o).expect("answer");
            let p = Packet::parse(&p).expect("parse");
            assert_eq!(p.rcode(), rc);
            assert_eq!(p.questions.len(), 1);
        }
    }
}
