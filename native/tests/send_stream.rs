//! The two-sided RDMA path (`SendStream`), over a real verbs device in the
//! Soft-RoCE VM: who gets it, bytes both ways under tight credits, half close,
//! many clients on one listener's shared receive queue, a client process killed
//! mid-transfer and a reader that leaves. On the host the tests check that RDMA
//! is reported absent.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::test_addr;
use rdmanio::{
    connect, Error, Medium, ReadOutcome, RingPeers, SendOptions, SendStream, Stream, StreamListener,
    Transport, TransportOptions,
};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

fn no_device_here() -> bool {
    if test_addr().is_some() {
        return false;
    }
    let bound =
        StreamListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), Transport::Rdma, Default::default());
    assert!(matches!(bound, Err(Error::NoDevice(_))), "expected no RDMA device here");
    true
}

/// Options whose listener grants rings to nobody: every connection is two-sided.
fn sends_only(sends: SendOptions) -> TransportOptions {
    TransportOptions { sends, ring_peers: RingPeers::Only(Vec::new()), ..Default::default() }
}

/// A listener that grants nobody a ring and whose receive pool has room for
/// exactly one connection (4 data + 3 control slots), and its options.
fn one_connection_listener() -> (StreamListener, TransportOptions) {
    let options = sends_only(SendOptions { pool_slots: 7, ..SendOptions::default() });
    let listener =
        StreamListener::bind(SocketAddr::new(test_addr().unwrap(), 0), Transport::Rdma, options.clone())
            .expect("bind");
    (listener, options)
}

/// A connected pair through a fresh listener: (client, server).
fn pair(options: TransportOptions, expected: Medium) -> (Stream, Stream) {
    let listener =
        StreamListener::bind(SocketAddr::new(test_addr().unwrap(), 0), Transport::Rdma, options.clone())
            .expect("bind");
    let addr = listener.local_addr();
    let client = thread::spawn(move || connect(addr, Transport::Rdma, &options, TIMEOUT).expect("connect"));
    let (server_medium, server) = listener.accept(TIMEOUT).expect("accept");
    let (client_medium, client) = client.join().expect("client thread");
    assert_eq!((client_medium, server_medium), (expected, expected));
    (client, server)
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8).collect()
}

/// Non-blocking both ways: writes `data` while collecting what arrives, until
/// `expect` bytes came in.
fn exchange(stream: &mut Stream, data: &[u8], expect: usize) -> Vec<u8> {
    let (mut sent, mut got) = (0, Vec::with_capacity(expect));
    let mut buf = vec![0u8; 5000];
    let started = Instant::now();
    while sent < data.len() || got.len() < expect {
        assert!(started.elapsed() < Duration::from_secs(120), "stalled: {sent} sent, {} received", got.len());
        if sent < data.len() {
            sent += stream.try_write(&data[sent..]).expect("write");
        }
        match stream.try_read(&mut buf).expect("read") {
            ReadOutcome::Data(n) => got.extend_from_slice(&buf[..n]),
            ReadOutcome::WouldBlock => {}
            ReadOutcome::EndOfStream => panic!("end of stream after {} bytes", got.len()),
        }
    }
    got
}

fn both_ways(options: TransportOptions, len: usize) {
    let (mut client, mut server) = pair(options, Medium::RdmaSends);
    let (up, down) = (pattern(len, 1), pattern(len, 2));
    let expected_up = up.clone();
    let server = thread::spawn(move || {
        let got = exchange(&mut server, &down, len);
        assert!(got == expected_up, "the server received different bytes");
    });
    let got = exchange(&mut client, &up, len);
    assert!(got == pattern(len, 2), "the client received different bytes");
    server.join().expect("server");
}

#[test]
fn a_peer_that_is_no_ring_peer_gets_two_sided_sends_and_a_ring_peer_gets_rings() {
    if no_device_here() {
        return;
    }
    let client = common::client_addr().unwrap();
    pair(sends_only(SendOptions::default()), Medium::RdmaSends);
    let replicas = TransportOptions { ring_peers: RingPeers::Only(vec![client]), ..Default::default() };
    pair(replicas, Medium::Rdma);
}

#[test]
fn a_mebibyte_crosses_both_ways_at_once() {
    if no_device_here() {
        return;
    }
    both_ways(sends_only(SendOptions::default()), 1 << 20);
}

#[test]
fn the_tightest_credits_still_carry_everything_both_ways() {
    if no_device_here() {
        return;
    }
    // One data credit of 48 stream bytes: a credit update for nearly every message.
    let tight = SendOptions { slot_len: 64, data_credits: 1, control_credits: 3, pool_slots: 64 };
    both_ways(sends_only(tight), 64 * 1024);
}

#[test]
fn half_close_delivers_everything_then_end_of_stream() {
    if no_device_here() {
        return;
    }
    let (mut client, mut server) = pair(sends_only(SendOptions::default()), Medium::RdmaSends);
    let data = pattern(100_000, 3);
    let writer = thread::spawn(move || {
        client.write_all(&data, TIMEOUT).expect("write");
        client.shutdown_output().expect("shutdown");
        client
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match server.read(&mut buf, TIMEOUT).expect("read") {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(got == pattern(100_000, 3), "{} bytes arrived", got.len());
    server.write_all(b"bye", TIMEOUT).expect("the other direction stays open");
    let mut client = writer.join().expect("writer");
    let mut bye = [0u8; 3];
    client.read_exact(&mut bye, TIMEOUT).expect("bye");
    assert_eq!(&bye, b"bye");
}

/// Lets this process hold the fds of many connections (see the figure the
/// test prints).
fn raise_fd_limit(connections: usize) {
    let want = (connections as u64 * 8 + 1024).max(4096);
    let mut limit = libc::rlimit { rlim_cur: want, rlim_max: want };
    // SAFETY: plain setrlimit/getrlimit on a valid struct.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            // Not root: as far as the hard limit goes.
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The listener in this process, its clients in another (`test-peer
/// sends-clients`), so that what the listener pays per client is measured alone.
#[test]
fn many_clients_share_one_receive_pool() {
    if no_device_here() {
        return;
    }
    let clients: usize = std::env::var("RDMANIO_CLIENTS").map_or(1000, |n| n.parse().unwrap());
    raise_fd_limit(clients);
    let options = sends_only(SendOptions::default());
    let ip = test_addr().unwrap();
    let listener =
        StreamListener::bind(SocketAddr::new(ip, 0), Transport::Rdma, options.clone()).expect("bind");
    let (rss_before, fds_before) = (common::rss_kib(), common::open_fds());
    let started = Instant::now();
    let mut peer = Command::new(env!("CARGO_BIN_EXE_test-peer"))
        .args([
            "sends-clients",
            &ip.to_string(),
            &listener.local_addr().port().to_string(),
            &clients.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test-peer");
    let mut accepted = Vec::with_capacity(clients);
    for i in 0..clients {
        let (medium, mut stream) = listener.accept(TIMEOUT).unwrap_or_else(|err| panic!("accept {i}: {err}"));
        assert_eq!(medium, Medium::RdmaSends);
        let mut hello = [0u8; 8];
        stream.read_exact(&mut hello, TIMEOUT).expect("a client's number");
        stream.write_all(&hello, TIMEOUT).expect("echo");
        accepted.push(stream);
    }
    // Every connection still works with all of them open.
    for stream in accepted.iter_mut().step_by(97) {
        let mut again = [0u8; 5];
        stream.read_exact(&mut again, TIMEOUT).expect("again");
        stream.write_all(&again, TIMEOUT).expect("echo again");
    }
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap()).read_line(&mut line).expect("the clients' report");
    assert_eq!(line.trim(), "clients done");
    let took = started.elapsed();
    let grown = common::rss_kib().saturating_sub(rss_before);
    let fds = common::open_fds() - fds_before;
    drop(peer.stdin.take()); // the clients may go
    assert!(peer.wait().expect("test-peer").success(), "test-peer failed");
    let pool = options.sends.pool_slots * options.sends.slot_len / 1024;
    eprintln!(
        "{clients} two-sided clients on one listener in {took:.1?}: the listener's RSS grew {grown} KiB, \
         its receive pool ({pool} KiB, for all) and {} KiB per client; its fds grew by {fds} ({} per client)",
        grown.saturating_sub(pool as u64) / clients as u64,
        fds / clients
    );
}

#[test]
fn a_spent_pool_refuses_connections_until_one_closes() {
    if no_device_here() {
        return;
    }
    let (listener, options) = one_connection_listener();
    let addr = listener.local_addr();
    let connect_one = |options: &TransportOptions| {
        let options = options.clone();
        thread::spawn(move || connect(addr, Transport::Rdma, &options, Some(Duration::from_secs(10))))
    };
    let first = connect_one(&options);
    let (_, mut server) = listener.accept(TIMEOUT).expect("the first fits");
    let mut first = first.join().unwrap().expect("first connect").1;

    let second = connect_one(&options);
    // The listener refuses the second, and says why.
    match listener.accept(TIMEOUT) {
        Err(err) => assert!(err.to_string().contains("receive pool is spent"), "{err}"),
        Ok(_) => panic!("a spent pool accepted a second connection"),
    }
    match second.join().unwrap() {
        Err(Error::ConnectionRefused(_)) => {}
        Err(other) => panic!("the second connect failed otherwise: {other}"),
        Ok(_) => panic!("a spent pool accepted a second connection"),
    }

    first.write_all(b"ping", TIMEOUT).expect("the first still works");
    let mut ping = [0u8; 4];
    server.read_exact(&mut ping, TIMEOUT).expect("ping");
    drop(first);
    drop(server); // gives its slots back
    let third = connect_one(&options);
    let (_, mut server) = listener.accept(TIMEOUT).expect("room again");
    let mut third = third.join().unwrap().expect("third connect").1;
    third.write_all(b"pong", TIMEOUT).expect("write");
    server.read_exact(&mut ping, TIMEOUT).expect("pong");
    assert_eq!(&ping, b"pong");
}

/// A two-sided client process killed while it floods: the server reads what
/// arrived, then its stream ends (or fails) instead of hanging, and the
/// connection's receive slots go back to the pool. The pool has room for one
/// connection, so the next client is accepted only if they did.
#[test]
fn a_killed_client_process_ends_its_stream_and_gives_its_slots_back() {
    if no_device_here() {
        return;
    }
    let (listener, options) = one_connection_listener();
    let addr = listener.local_addr();
    let flooder = common::spawn_flooder("sends-flood", addr);
    let (medium, mut server) = listener.accept(TIMEOUT).expect("accept");
    assert_eq!(medium, Medium::RdmaSends);
    common::read_through_the_kill(&mut server, flooder, TIMEOUT);
    drop(server);

    let next = thread::spawn(move || connect(addr, Transport::Rdma, &options, TIMEOUT));
    let (_, mut server) = listener.accept(TIMEOUT).expect("the killed client's slots came back");
    let mut next = next.join().unwrap().expect("connect after the kill").1;
    next.write_all(b"ping", TIMEOUT).expect("write");
    let mut ping = [0u8; 4];
    server.read_exact(&mut ping, TIMEOUT).expect("read");
    assert_eq!(&ping, b"ping");
}

/// A writer out of credit whose reader goes away fails with `Disconnected`
/// instead of waiting for credit that never comes.
#[test]
fn a_reader_that_leaves_fails_a_blocked_writer() {
    if no_device_here() {
        return;
    }
    common::assert_a_leaving_reader_fails_a_blocked_writer(|| {
        pair(sends_only(SendOptions::default()), Medium::RdmaSends)
    });
}

/// A clean close, a close with bytes unread and an abortive one end the
/// peer's stream as TCP's do (see `rdma_stream`'s tests of the same).
#[test]
fn a_close_tells_the_peer_whether_it_is_clean_or_a_reset() {
    if no_device_here() {
        return;
    }
    let pair = || pair(sends_only(SendOptions::default()), Medium::RdmaSends);
    common::assert_a_clean_close_takes_one_write_more(pair);
    common::assert_a_close_that_loses_bytes_resets(pair, false);
    common::assert_a_close_that_loses_bytes_resets(pair, true);
}

/// Two-sided connection churn leaks no fd, queue pair, memory or receive slot:
/// the listener's pool has room for one connection only, so a cycle whose
/// slots did not come back would refuse the next client.
#[test]
fn open_transfer_close_cycles_leak_nothing() {
    if no_device_here() {
        return;
    }
    let (listener, options) = one_connection_listener();
    let addr = listener.local_addr();
    common::assert_churn_leaks_nothing(
        common::churn_cycles(),
        move || listener.accept(TIMEOUT).expect("accept").1,
        || connect(addr, Transport::Rdma, &options, TIMEOUT).expect("connect").1,
    );
}

/// A two-sided client's queue pair driven into the error state (as a fatal
/// error of the device would) fails its stream with an error that names it,
/// the listener's side is told, and the listener's other client goes on.
#[test]
fn a_queue_pair_in_the_error_state_fails_its_stream_alone() {
    if no_device_here() {
        return;
    }
    let options = sends_only(SendOptions::default());
    let listener = StreamListener::bind(SocketAddr::new(test_addr().unwrap(), 0), Transport::Rdma, options)
        .expect("bind");
    let addr = listener.local_addr();
    let clients = thread::spawn(move || {
        let failed = SendStream::connect(addr, SendOptions::default(), TIMEOUT).expect("connect");
        (failed, SendStream::connect(addr, SendOptions::default(), TIMEOUT).expect("connect"))
    });
    let (_, mut peer) = listener.accept(TIMEOUT).expect("accept");
    let (_, mut other_server) = listener.accept(TIMEOUT).expect("accept");
    let (mut failed, mut other) = clients.join().expect("client thread");
    failed.fail_queue_pair().expect("ibv_modify_qp");
    common::assert_a_failed_queue_pair_fails_its_stream_alone(
        &mut failed,
        &mut *peer,
        (&mut other, &mut *other_server),
    );
}
