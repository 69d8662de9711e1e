//! Subnet routes and exit nodes in the simulated network: a node that advertises a subnet
//! gets the packets other members send there (and they accept its answers from inside the
//! subnet); a node that did not choose an exit, or refuses others' routes, sends nothing
//! outside the overlay; an exit takes everything outside the overlay for the members that
//! chose it by name; routes come and go with their advertiser.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use veil_proto::route::Prefix;
use veil_proto::{NodeConfig, NodeEvent};
use veil_sim::{dst_of, udp4, Sim};

fn gateway(prefix: &str) -> NodeConfig {
    NodeConfig {
        advertise_routes: vec![prefix.parse().unwrap()],
        ..NodeConfig::default()
    }
}

fn delivered_to(sim: &Sim, i: usize, from: usize, dst: Ipv4Addr) -> usize {
    sim.nodes[i].tun[from..]
        .iter()
        .filter(|p| dst_of(p) == Some(IpAddr::V4(dst)))
        .count()
}

#[test]
fn a_subnet_behind_a_node_is_reachable_both_ways() {
    let mut sim = Sim::new(71, 0, NodeConfig::default(), Default::default());
    let gw = sim.add_node(gateway("198.18.50.0/24"));
    let client = sim.add_node(NodeConfig::default());
    let refuser = sim.add_node(NodeConfig {
        accept_routes: false,
        ..NodeConfig::default()
    });
    sim.run_for(Duration::from_secs(3));
    let subnet: Prefix = "198.18.50.0/24".parse().unwrap();
    assert!(sim.nodes[client]
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::RoutesChanged { routes } if routes == &vec![subnet])));
    let c4 = sim.ipv4(client).unwrap();
    let host = Ipv4Addr::new(198, 18, 50, 7);

    let (g0, c0) = (sim.nodes[gw].tun.len(), sim.nodes[client].tun.len());
    for k in 0..5u8 {
        sim.tun_send(client, &udp4(c4, host, &[k; 20]));
        sim.run_for(Duration::from_millis(100));
    }
    assert_eq!(
        delivered_to(&sim, gw, g0, host),
        5,
        "the gateway got the subnet's packets"
    );
    // The subnet host answers through the gateway: accepted, though not from its address.
    for k in 0..5u8 {
        sim.tun_send(gw, &udp4(host, c4, &[k; 20]));
        sim.run_for(Duration::from_millis(100));
    }
    assert_eq!(
        delivered_to(&sim, client, c0, c4),
        5,
        "answers from the subnet arrive"
    );
    assert_eq!(sim.nodes[client].node.counters().dropped_spoofed, 0);
    let status = sim.nodes[client].node.status(sim.now);
    assert_eq!(status.routes.len(), 1, "{:?}", status.routes);
    assert!(status.routes[0].starts_with("198.18.50.0/24 via "));

    // A node that refuses others' routes sends nothing there.
    let r4 = sim.ipv4(refuser).unwrap();
    let before = sim.nodes[refuser].node.counters().dropped_no_route;
    sim.tun_send(refuser, &udp4(r4, host, b"no"));
    assert_eq!(
        sim.nodes[refuser].node.counters().dropped_no_route,
        before + 1
    );
    assert!(sim.nodes[refuser].node.status(sim.now).routes.is_empty());

    // The gateway leaves: the route goes with it.
    sim.remove_node(gw);
    sim.run_for(Duration::from_secs(100));
    assert!(sim.nodes[client].node.status(sim.now).routes.is_empty());
    let before = sim.nodes[client].node.counters().dropped_no_route;
    sim.tun_send(client, &udp4(c4, host, b"gone"));
    assert_eq!(
        sim.nodes[client].node.counters().dropped_no_route,
        before + 1
    );
}

#[test]
fn members_that_chose_the_exit_send_everything_outside_the_overlay_through_it() {
    let mut sim = Sim::new(72, 0, NodeConfig::default(), Default::default());
    let exit = sim.add_node(NodeConfig {
        advertise_exit: true,
        name: Some("out".into()),
        ..NodeConfig::default()
    });
    let user = sim.add_node(NodeConfig {
        exit_node: Some("out".into()),
        ..NodeConfig::default()
    });
    let other = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(3));
    let internet = Ipv4Addr::new(198, 18, 60, 10);
    let u4 = sim.ipv4(user).unwrap();
    let e0 = sim.nodes[exit].tun.len();
    sim.tun_send(user, &udp4(u4, internet, b"to the internet"));
    sim.run_for(Duration::from_millis(300));
    assert_eq!(delivered_to(&sim, exit, e0, internet), 1);
    let u0 = sim.nodes[user].tun.len();
    sim.tun_send(exit, &udp4(internet, u4, b"back"));
    sim.run_for(Duration::from_millis(300));
    assert_eq!(delivered_to(&sim, user, u0, u4), 1);
    // Overlay traffic still goes straight to its member, not through the exit.
    let o4 = sim.ipv4(other).unwrap();
    let o0 = sim.nodes[other].tun.len();
    sim.tun_send(user, &udp4(u4, o4, b"member"));
    sim.run_for(Duration::from_millis(500));
    assert_eq!(delivered_to(&sim, other, o0, o4), 1);
    assert_eq!(delivered_to(&sim, exit, e0, o4), 0);
    // Who did not choose the exit does not use it.
    let before = sim.nodes[other].node.counters().dropped_no_route;
    sim.tun_send(other, &udp4(o4, internet, b"no exit"));
    assert_eq!(
        sim.nodes[other].node.counters().dropped_no_route,
        before + 1
    );
    assert!(sim.nodes[other].node.status(sim.now).routes.is_empty());
    assert_eq!(
        sim.nodes[user].node.status(sim.now).routes.len(),
        2,
        "0.0.0.0/0 and ::/0"
    );
}

#[test]
fn an_exit_that_restarts_is_used_again() {
    let mut sim = Sim::new(73, 0, NodeConfig::default(), Default::default());
    let exit_cfg = NodeConfig {
        advertise_exit: true,
        name: Some("out".into()),
        ..NodeConfig::default()
    };
    let id = veil_proto::Identity::from_secret([9; 32]);
    let exit = sim.add_node_with_identity(exit_cfg.clone(), id.clone());
    let user = sim.add_node(NodeConfig {
        exit_node: Some("out".into()),
        ..NodeConfig::default()
    });
    sim.run_for(Duration::from_secs(3));
    let internet = Ipv4Addr::new(198, 18, 60, 10);
    let u4 = sim.ipv4(user).unwrap();
    sim.tun_send(user, &udp4(u4, internet, b"before"));
    sim.run_for(Duration::from_millis(300));
    // The exit's process dies without a word and starts again with the same key.
    sim.remove_node(exit);
    sim.run_for(Duration::from_secs(2));
    let again = sim.add_node_with_identity(exit_cfg, id);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.nodes[user].node.status(sim.now).routes.len(),
        2,
        "{:?}",
        sim.nodes[user].node.status(sim.now).routes
    );
    let mut got = false;
    for _ in 0..40 {
        let e0 = sim.nodes[again].tun.len();
        sim.tun_send(user, &udp4(u4, internet, b"after"));
        sim.run_for(Duration::from_millis(500));
        if delivered_to(&sim, again, e0, internet) > 0 {
            got = true;
            break;
        }
    }
    assert!(
        got,
        "the user reaches the internet through the restarted exit"
    );
}
