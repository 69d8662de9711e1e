//! Overlay DNS in the simulated network: a node's name, registered at the rendezvous under a
//! blinded key, resolves on other members to its overlay addresses; unknown names get
//! NXDOMAIN at once, foreign ones REFUSED; a name already held is not registered (the later
//! node is told); and a query sent into the TUN to the pool's DNS address (phones) is
//! answered with a packet out of the TUN.
#![allow(clippy::unwrap_used)]

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use veil_proto::{NodeConfig, NodeEvent};
use veil_sim::{udp4, Sim};

fn named(name: &str) -> NodeConfig {
    NodeConfig {
        name: Some(name.into()),
        ..NodeConfig::default()
    }
}

fn query(name: &str, t: TYPE) -> Vec<u8> {
    let mut p = Packet::new_query(77);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(t),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().unwrap()
}

/// Asks node `i`; returns the answer and how long it took in simulated time.
fn ask(sim: &mut Sim, i: usize, name: &str, t: TYPE) -> (Vec<u8>, Duration) {
    let q = query(name, t);
    let start = sim.now;
    sim.with_node(i, |n, now| n.handle_dns_query(now, 5, &q));
    for _ in 0..400 {
        if let Some((token, answer)) = sim.with_node(i, |n, _| n.poll_dns_answer()) {
            assert_eq!(token, 5);
            return (answer, sim.now.duration_since(start));
        }
        sim.run_for(Duration::from_millis(5));
    }
    panic!("no answer for {name} within 2 s");
}

fn addresses(answer: &[u8]) -> (RCODE, Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let p = Packet::parse(answer).unwrap();
    assert_eq!(p.id(), 77);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in &p.answers {
        match &a.rdata {
            RData::A(a) => v4.push(Ipv4Addr::from(a.address)),
            RData::AAAA(a) => v6.push(Ipv6Addr::from(a.address)),
            other => panic!("unexpected record {other:?}"),
        }
    }
    (p.rcode(), v4, v6)
}

#[test]
fn names_resolve_to_the_members_addresses() {
    let mut sim = Sim::new(61, 0, NodeConfig::default(), Default::default());
    let alpha = sim.add_node(named("alpha"));
    let beta = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(3));
    let a4 = sim.ipv4(alpha).unwrap();
    let a6 = sim.nodes[alpha].node.overlay_ipv6();

    let (answer, took) = ask(&mut sim, beta, "Alpha.veil.", TYPE::A);
    assert_eq!(addresses(&answer), (RCODE::NoError, vec![a4], vec![]));
    assert!(took < Duration::from_millis(200), "took {took:?}");
    let (answer, _) = ask(&mut sim, beta, "alpha.veil", TYPE::AAAA);
    assert_eq!(addresses(&answer), (RCODE::NoError, vec![], vec![a6]));
    // A node answers its own name without asking anyone.
    let (answer, took) = ask(&mut sim, alpha, "alpha.veil", TYPE::A);
    assert_eq!(addresses(&answer), (RCODE::NoError, vec![a4], vec![]));
    assert_eq!(took, Duration::ZERO);

    let (answer, took) = ask(&mut sim, beta, "nobody.veil", TYPE::A);
    assert_eq!(addresses(&answer).0, RCODE::NameError);
    assert!(took < Duration::from_millis(200), "NXDOMAIN took {took:?}");
    let (answer, took) = ask(&mut sim, beta, "example.com", TYPE::A);
    assert_eq!(addresses(&answer).0, RCODE::Refused);
    assert_eq!(took, Duration::ZERO);

    let status = sim.nodes[alpha].node.status(sim.now);
    assert_eq!(status.name.as_deref(), Some("alpha"));
    assert!(!status.name_taken);
}

#[test]
fn a_name_already_held_is_not_taken_over() {
    let mut sim = Sim::new(62, 0, NodeConfig::default(), Default::default());
    let first = sim.add_node(named("web"));
    sim.run_for(Duration::from_secs(2));
    let second = sim.add_node(named("web"));
    let asker = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(3));
    assert!(sim.nodes[second].node.status(sim.now).name_taken);
    assert!(sim.nodes[second]
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::NameTaken { name } if name == "web")));
    assert!(!sim.nodes[first].node.status(sim.now).name_taken);
    // The second node still registered (without the name) and is reachable.
    assert!(sim.ipv4(second).is_some());
    let (answer, _) = ask(&mut sim, asker, "web.veil", TYPE::A);
    assert_eq!(addresses(&answer).1, vec![sim.ipv4(first).unwrap()]);
}

#[test]
fn a_query_into_the_tun_is_answered_out_of_it() {
    let phone = NodeConfig {
        dns_intercept: true,
        ..NodeConfig::default()
    };
    let mut sim = Sim::new(63, 0, NodeConfig::default(), Default::default());
    let server = sim.add_node(named("files"));
    let p = sim.add_node(phone);
    sim.run_for(Duration::from_secs(3));
    let dns = sim.nodes[p].node.dns_address().unwrap();
    assert_eq!(dns, Ipv4Addr::new(100, 127, 255, 254));
    assert_eq!(
        sim.nodes[server].node.dns_address(),
        None,
        "off unless configured"
    );
    let me = sim.ipv4(p).unwrap();
    let mut packet = udp4(me, dns, &query("files.veil", TYPE::A));
    // From port 40000 to 53: the answer must go back to the asker's port.
    packet[20..22].copy_from_slice(&40000u16.to_be_bytes());
    packet[22..24].copy_from_slice(&53u16.to_be_bytes());
    let before = sim.nodes[p].tun.len();
    sim.tun_send(p, &packet);
    sim.run_for(Duration::from_millis(300));
    let out = &sim.nodes[p].tun[before..];
    assert_eq!(out.len(), 1, "one answer packet");
    let reply = etherparse::SlicedPacket::from_ip(&out[0]).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = reply.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().source_addr(), dns);
    assert_eq!(ip.header().destination_addr(), me);
    let Some(etherparse::TransportSlice::Udp(udp)) = reply.transport else {
        panic!("not UDP")
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (53, 40000));
    let (rcode, v4, _) = addresses(udp.payload());
    assert_eq!(
        (rcode, v4),
        (RCODE::NoError, vec![sim.ipv4(server).unwrap()])
    );
}

/// The name `veil peers` shows for peer `of` at node `at` (None: not a peer; Some(None):
/// a peer without a confirmed name).
fn name_at(sim: &Sim, at: usize, of: usize) -> Option<Option<String>> {
    let id = sim.nodes[of].node.status(sim.now).id;
    sim.nodes[at]
        .node
        .peers(sim.now)
        .into_iter()
        .find(|p| p.id == id)
        .map(|p| p.name)
}

#[test]
fn peers_are_named_once_the_rendezvous_confirms_the_name() {
    let mut sim = Sim::new(63, 0, NodeConfig::default(), Default::default());
    let web = sim.add_node(named("web"));
    let db = sim.add_node(named("db"));
    let plain = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(3));
    let (iw, id, ip) = (
        sim.ipv4(web).unwrap(),
        sim.ipv4(db).unwrap(),
        sim.ipv4(plain).unwrap(),
    );
    // One way only: the sender looks the receiver up by address, the receiver verifies the
    // sender's address; both learn the other's record, and each name is then looked up.
    sim.tun_send(plain, &udp4(ip, iw, b"to web"));
    sim.tun_send(db, &udp4(id, iw, b"to web"));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(name_at(&sim, plain, web), Some(Some("web".into())));
    assert_eq!(name_at(&sim, web, db), Some(Some("db".into())));
    assert_eq!(name_at(&sim, db, web), Some(Some("web".into())));
    assert_eq!(
        name_at(&sim, web, plain),
        Some(None),
        "a peer without a name"
    );

    // The name moves: web leaves, its lease ends, another member takes "web". Once plain
    // reaches the new holder, no other peer of plain's is named web.
    sim.remove_node(web);
    sim.run_for(Duration::from_secs(120));
    let web2 = sim.add_node(named("web"));
    sim.run_for(Duration::from_secs(3));
    assert!(!sim.nodes[web2].node.status(sim.now).name_taken);
    let iw2 = sim.ipv4(web2).unwrap();
    sim.tun_send(plain, &udp4(ip, iw2, b"to the new web"));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(name_at(&sim, plain, web2), Some(Some("web".into())));
    let named_web = sim.nodes[plain]
        .node
        .peers(sim.now)
        .into_iter()
        .filter(|p| p.name.as_deref() == Some("web"))
        .count();
    assert_eq!(named_web, 1, "one peer named web");
    // The old holder is still plain's peer (not yet forgotten), now without the name.
    assert_eq!(name_at(&sim, plain, web), Some(None));
}
