//! Choosing the medium by configuration. On the host: TCP and shared memory,
//! and `auto` taking shm for a local peer and TCP for a plain TCP server. In the
//! Soft-RoCE VM also RDMA, through the same listener that serves the others.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use rdmanio::{connect, Error, Medium, RingPeers, StreamListener, Transport, TransportOptions};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

/// The test address: rxe0's in the VM, loopback on the host.
fn ip() -> IpAddr {
    std::env::var("RDMANIO_TEST_ADDR").map_or(IpAddr::from([127, 0, 0, 1]), |a| a.parse().unwrap())
}

/// Accepts one connection, checks its medium, and echoes one 64 KiB message.
fn echo_once(listener: StreamListener, expected: Medium) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let (medium, mut stream) = listener.accept(TIMEOUT).expect("accept");
        assert_eq!(medium, expected, "the listener accepted on the wrong medium");
        let mut buf = vec![0u8; 65536];
        stream.read_exact(&mut buf, TIMEOUT).expect("read");
        stream.write_all(&buf, TIMEOUT).expect("echo");
        let mut end = [0u8; 1];
        assert_eq!(stream.read(&mut end, TIMEOUT).expect("end"), 0);
    })
}

fn round_trip(addr: SocketAddr, transport: Transport, expected: Medium) {
    let (medium, mut stream) =
        connect(addr, transport, &TransportOptions::default(), TIMEOUT).expect("connect");
    assert_eq!(medium, expected, "{transport:?} to {addr} chose {medium}");
    let message: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&message, TIMEOUT).expect("write");
    let mut echo = vec![0u8; message.len()];
    stream.read_exact(&mut echo, TIMEOUT).expect("read");
    assert!(echo == message, "the echo differs over {medium}");
}

#[test]
fn transports_are_named_as_in_the_configuration() {
    assert_eq!("rdma".parse::<Transport>().unwrap(), Transport::Rdma);
    assert_eq!("shm".parse::<Transport>().unwrap(), Transport::Shm);
    assert_eq!("tcp".parse::<Transport>().unwrap(), Transport::Tcp);
    assert_eq!("auto".parse::<Transport>().unwrap(), Transport::Auto);
    let err = "udp".parse::<Transport>().unwrap_err();
    assert_eq!(err.to_string(), "invalid argument: unknown transport 'udp': use rdma, shm, tcp or auto");
}

#[test]
fn ring_peers_are_all_none_or_a_list_of_addresses() {
    assert_eq!("all".parse::<RingPeers>().unwrap(), RingPeers::All);
    assert_eq!("none".parse::<RingPeers>().unwrap(), RingPeers::Only(vec![]));
    let replicas: RingPeers = "192.0.2.1, 192.0.2.2".parse().unwrap();
    assert_eq!(replicas, RingPeers::Only(vec![[192, 0, 2, 1].into(), [192, 0, 2, 2].into()]));
    let err = "192.0.2.1,replica-2".parse::<RingPeers>().unwrap_err().to_string();
    assert!(err.contains("'replica-2' is not an IP address"), "{err}");
}

#[test]
fn tcp_carries_a_stream() {
    let listener =
        StreamListener::bind(SocketAddr::new(ip(), 0), Transport::Tcp, Default::default()).unwrap();
    assert_eq!(listener.media(), [Medium::Tcp]);
    let addr = listener.local_addr();
    let server = echo_once(listener, Medium::Tcp);
    round_trip(addr, Transport::Tcp, Medium::Tcp);
    server.join().unwrap();
}

#[test]
fn auto_takes_shared_memory_for_a_peer_on_this_host() {
    let listener =
        StreamListener::bind(SocketAddr::new(ip(), 0), Transport::Auto, Default::default()).unwrap();
    let media = listener.media();
    assert!(media.contains(&Medium::Shm) && media.contains(&Medium::Tcp), "{media:?}");
    let addr = listener.local_addr();
    let server = echo_once(listener, Medium::Shm);
    round_trip(addr, Transport::Auto, Medium::Shm);
    server.join().unwrap();
}

#[test]
fn auto_falls_back_to_tcp_for_a_plain_tcp_server() {
    let plain = TcpListener::bind(SocketAddr::new(ip(), 0)).unwrap();
    let addr = plain.local_addr().unwrap();
    let server = thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = plain.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        socket.read_exact(&mut buf).unwrap();
        socket.write_all(&buf).unwrap();
    });
    round_trip(addr, Transport::Auto, Medium::Tcp);
    server.join().unwrap();
}

#[test]
fn shm_is_refused_for_a_peer_elsewhere() {
    let remote = SocketAddr::from(([198, 51, 100, 7], 7000)); // TEST-NET-2: never this host
    match connect(remote, Transport::Shm, &TransportOptions::default(), TIMEOUT) {
        Err(err @ Error::NotLocal(addr)) => {
            assert_eq!(addr, remote);
            assert!(err.to_string().contains("this host only"), "{err}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(medium, _)| medium)),
    }
}

#[test]
fn rdma_goes_through_the_same_listener_when_a_device_has_the_address() {
    if std::env::var("RDMANIO_TEST_DEVICE").is_err() {
        // On a host without RDMA, an rdma listener says so; an auto one goes without.
        match StreamListener::bind(SocketAddr::new(ip(), 0), Transport::Rdma, Default::default()) {
            Err(err @ Error::NoDevice(_)) => assert!(err.to_string().starts_with("no RDMA device: ")),
            other => panic!("expected no device, got {:?}", other.map(|l| l.media())),
        }
        let auto =
            StreamListener::bind(SocketAddr::new(ip(), 0), Transport::Auto, Default::default()).unwrap();
        assert!(!auto.media().contains(&Medium::Rdma));
        return;
    }
    let listener =
        StreamListener::bind(SocketAddr::new(ip(), 0), Transport::Auto, Default::default()).unwrap();
    assert_eq!(listener.media(), [Medium::Rdma, Medium::Shm, Medium::Tcp]);
    let addr = listener.local_addr();
    let server = echo_once(listener, Medium::Rdma);
    round_trip(addr, Transport::Rdma, Medium::Rdma);
    server.join().unwrap();
}
