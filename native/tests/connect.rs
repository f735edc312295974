//! Connects take no thread: a non-blocking connect on every medium this
//! machine has (TCP and shm on the host, RDMA too in the Soft-RoCE VM) is a
//! state machine its selector moves on, as the JDK's non-blocking connect
//! is the kernel's. Nor does a listener on TCP alone, whose connections
//! wait in the kernel's queue (RDMA's handshakes and shm's short handover
//! queue need an acceptor thread).
//! Alone in its binary: it counts the process's threads, which tests
//! running beside it would change.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdmanio::media::stream::ops;
use rdmanio::nio::poller::{PollMode, Poller};
use rdmanio::nio::socket::{Socket, Spin};
use rdmanio::{Transport, TransportOptions};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));
const CONNECTS: usize = 16;

fn ip() -> IpAddr {
    std::env::var("RDMANIO_TEST_ADDR").map_or(IpAddr::from([127, 0, 0, 1]), |a| a.parse().unwrap())
}

fn transports() -> Vec<Transport> {
    let mut transports = vec![Transport::Tcp, Transport::Shm, Transport::Auto];
    if std::env::var_os("RDMANIO_TEST_DEVICE").is_some() {
        transports.push(Transport::Rdma);
    }
    transports
}

/// The process's threads, as the kernel counts them.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

/// Connects `count` sockets at once through one selector, counting the
/// threads while they are under way; they all connect.
fn connect_at_once(transport: Transport, addr: SocketAddr, count: usize) -> (usize, Vec<Arc<Socket>>) {
    let poller = Poller::new(PollMode::Blocking).unwrap();
    let mut sockets = Vec::new();
    for slot in 0..count {
        let socket = Socket::open(Spin::For(Duration::ZERO)).unwrap();
        poller.register(slot, Arc::clone(&socket)).unwrap();
        socket.start_connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        sockets.push(socket);
    }
    let during = threads();
    let interests = vec![ops::CONNECT as i32; count];
    let mut connected = vec![false; count];
    let mut ready = vec![0i32; 2 * count];
    let deadline = Instant::now() + TIMEOUT.unwrap();
    while connected.contains(&false) && Instant::now() < deadline {
        let n = poller.select(&interests, &mut ready, Some(Duration::from_secs(1))).unwrap();
        for pair in ready[..2 * n].chunks(2) {
            let slot = pair[0] as usize;
            if !connected[slot] {
                connected[slot] = sockets[slot].finish_connect(false).unwrap();
            }
        }
    }
    let missing: Vec<usize> = (0..count).filter(|&slot| !connected[slot]).collect();
    assert!(missing.is_empty(), "{transport:?}: sockets {missing:?} never connected");
    for slot in 0..count {
        poller.deregister(slot);
    }
    (during, sockets)
}

#[test]
fn non_blocking_connects_and_tcp_listeners_start_no_thread() {
    for transport in transports() {
        let options = TransportOptions::default();
        let before_listen = threads();
        let listener = Socket::listen(SocketAddr::new(ip(), 0), transport, options, CONNECTS + 1).unwrap();
        // At most as many: a thread of the last round's listener (shm's
        // backlog thread, which its drop stops) may end meanwhile.
        if transport == Transport::Tcp {
            assert!(threads() <= before_listen, "{transport:?}: the listener took a thread");
        }
        let (addr, _) = listener.addresses().unwrap();
        // The first connection starts what a medium starts once per process
        // (over RDMA, the device's event thread).
        let (_, first) = connect_at_once(transport, addr, 1);
        let before = threads();
        let (during, sockets) = connect_at_once(transport, addr, CONNECTS);
        assert!(
            during <= before,
            "{transport:?}: {CONNECTS} connects under way took threads: {before} -> {during}"
        );
        let accepted = (0..=CONNECTS).filter(|_| listener.accept(true, TIMEOUT).unwrap().is_some()).count();
        assert_eq!(accepted, CONNECTS + 1, "{transport:?}");
        drop((first, sockets));
    }
}
