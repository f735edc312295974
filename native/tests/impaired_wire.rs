//! Closes and peer deaths across the Soft-RoCE VM's wire (tests/vm/wire)
//! while netem drops every packet for a while. A close must deliver every byte
//! written before it, then the end of stream, however long the wire takes to
//! carry them, and must not itself wait for the wire (as a TCP close without
//! `SO_LINGER`). A peer that dies while its disconnect request is lost must
//! still be noticed (keepalive probes), and probes must not disturb a live
//! connection. On the host (no device) the tests check nothing and say so.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdmanio::media::stream::ops;
use rdmanio::nio::poller::{PollMode, Poller};
use rdmanio::nio::socket::{status, Socket};
use rdmanio::{ByteStream, RingPeers, Stream, Transport, TransportOptions};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
/// How long the wire drops everything: longer than a close ever waited for its
/// writes (2 s), shorter than the transport's retries last (7 retries of
/// rdma_cm's ACK timeout, about 1 s each on RoCE).
const OUTAGE: Duration = Duration::from_millis(2500);
/// A close returns well before the outage ends.
const CLOSE_RETURNS_WITHIN: Duration = Duration::from_millis(1500);

/// netem on both ends of the wire until dropped, whatever the test's outcome.
struct Impaired<'a>(&'a str);

impl<'a> Impaired<'a> {
    fn new(script: &'a str, netem: &str) -> Self {
        common::run_wire(script, &format!("impair {netem}"));
        Impaired(script)
    }
}

impl Drop for Impaired<'_> {
    fn drop(&mut self) {
        common::run_wire(self.0, "clear");
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

/// Reads to the end of the stream.
fn read_to_end(stream: &mut Stream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match stream.read(&mut buf, TIMEOUT) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) => panic!("read after {} bytes: {err}", got.len()),
        }
    }
}

/// The client writes `len` bytes while the wire drops everything and closes;
/// the wire comes back after `OUTAGE`; the server must read them all, then the end.
fn assert_a_close_outlasts_an_outage(what: &str, (mut client, mut server): (Stream, Stream), len: usize) {
    let Some((_, script)) = common::wire() else { return };
    let data = pattern(len);
    let reader = thread::spawn(move || read_to_end(&mut server));
    let outage = Impaired::new(&script, "loss 100%");
    let started = Instant::now();
    client.write_all(&data, TIMEOUT).expect("write");
    drop(client); // the close: its writes are still to be retransmitted
    let closed_in = started.elapsed();
    thread::sleep(OUTAGE.saturating_sub(started.elapsed()));
    drop(outage);
    let got = reader.join().expect("reader");
    println!("{what}: the close returned in {closed_in:?}; the server read {} of {len} bytes", got.len());
    assert_eq!(got.len(), len, "{what}: bytes lost at close");
    assert!(got == data, "{what}: the stream differs");
    assert!(closed_in < CLOSE_RETURNS_WITHIN, "{what}: the close waited {closed_in:?} for the wire");
}

#[test]
fn a_ring_close_delivers_what_a_long_outage_held_up() {
    let Some((far, _)) = common::wire() else { return };
    // Fits the server's ring: the writes are posted at once.
    assert_a_close_outlasts_an_outage("rings", common::wire_ring_pair(far), 12 * 1024);
}

#[test]
fn a_sends_close_delivers_what_a_long_outage_held_up() {
    let Some((far, _)) = common::wire() else { return };
    // Within the client's credits (4 slots of 2 KiB): the sends are posted at once.
    assert_a_close_outlasts_an_outage("sends", common::wire_sends_pair(far), 6 * 1024);
}

/// The same for the two-sided message connection (`Connection`, behind the C
/// API and `RdmaConnection`): the message in flight at the close is delivered,
/// then the end of stream.
#[test]
fn a_message_connection_close_delivers_what_a_long_outage_held_up() {
    let Some((far, script)) = common::wire() else { return };
    let listener = rdmanio::Listener::bind(SocketAddr::new(far, 0), 4).expect("bind");
    let addr = listener.local_addr();
    let accepted = thread::spawn(move || listener.accept(TIMEOUT).expect("accept"));
    let mut client = rdmanio::Connection::connect(addr, TIMEOUT).expect("connect");
    let mut server = accepted.join().expect("accept thread");
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; rdmanio::MAX_MESSAGE_SIZE];
        while let Some(n) = server.recv(&mut buf, TIMEOUT).map_err(|err| format!("after {got:?}: {err}"))? {
            got.push(buf[..n].to_vec());
        }
        Ok::<_, String>(got)
    });
    let message = pattern(3000);
    let outage = Impaired::new(&script, "loss 100%");
    let started = Instant::now();
    client.send(&message, TIMEOUT).expect("send");
    drop(client); // the close: the message is still to be retransmitted
    let closed_in = started.elapsed();
    thread::sleep(OUTAGE.saturating_sub(started.elapsed()));
    drop(outage);
    let got = reader.join().expect("reader");
    println!(
        "messages: the close returned in {closed_in:?}; the server received {got:?}",
        got = got.as_ref().map(Vec::len)
    );
    assert_eq!(got, Ok(vec![message]), "messages: the message in flight at the close");
    assert!(closed_in < CLOSE_RETURNS_WITHIN, "messages: the close waited {closed_in:?} for the wire");
}

/// The server closes while the wire drops everything, with nothing of its own
/// in flight: its disconnect request is lost and must be sent again, or the
/// client, idle in a read, never learns of the close.
fn assert_a_lost_disconnect_request_is_sent_again(what: &str, (mut client, mut server): (Stream, Stream)) {
    let Some((_, script)) = common::wire() else { return };
    client.write_all(b"ping", TIMEOUT).expect("write");
    let mut got = [0u8; 4];
    server.read_exact(&mut got, TIMEOUT).expect("read");
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 16];
        let outcome = client.read(&mut buf, TIMEOUT);
        (outcome.map_err(|err| err.to_string()), Instant::now())
    });
    let outage = Impaired::new(&script, "loss 100%");
    drop(server);
    thread::sleep(Duration::from_millis(500));
    drop(outage);
    let back = Instant::now();
    let (outcome, at) = reader.join().expect("reader");
    println!("{what}: the client's read: {outcome:?}, {:?} after the wire came back", at - back);
    assert_eq!(outcome, Ok(0), "{what}: expected the end of stream");
}

#[test]
fn a_ring_close_survives_a_lost_disconnect_request() {
    let Some((far, _)) = common::wire() else { return };
    assert_a_lost_disconnect_request_is_sent_again("rings", common::wire_ring_pair(far));
}

#[test]
fn a_sends_close_survives_a_lost_disconnect_request() {
    let Some((far, _)) = common::wire() else { return };
    assert_a_lost_disconnect_request_is_sent_again("sends", common::wire_sends_pair(far));
}

/// The listener options that make an RDMA connection use rings, or two-sided sends.
fn rdma_options(rings: bool) -> TransportOptions {
    let ring_peers = if rings { RingPeers::All } else { RingPeers::Only(Vec::new()) };
    TransportOptions { ring_peers, ..Default::default() }
}

/// Peer processes (tests' `test-peer idle`) are killed while the wire drops
/// everything: the kernel of each destroys its identifier, which sends one
/// disconnect request and never again. The server, idle, must still learn of
/// each death once the wire is back, in a blocking read and in a selector, as
/// a TCP connection learns of it from the dead peer's kernel, which keeps
/// sending its FIN.
fn assert_peers_killed_during_an_outage_are_noticed(what: &str, rings: bool) {
    let Some((far, script)) = common::wire() else { return };
    let listener =
        Socket::listen(SocketAddr::new(far, 0), Transport::Rdma, rdma_options(rings), 8).expect("listen");
    let (addr, _) = listener.addresses().expect("addresses");
    let mut peers: Vec<Child> = (0..2).map(|_| common::spawn_idle_peer("rdma", addr)).collect();
    let blocked = listener.accept(true, None).expect("accept").expect("a connection");
    let selected = listener.accept(true, None).expect("accept").expect("a connection");
    let poller = Poller::new(PollMode::Blocking).expect("poller");
    poller.register(0, Arc::clone(&selected)).expect("register");
    let interests = [ops::READ as i32];
    let mut ready = [0i32; 4];
    assert_eq!(poller.select(&interests, &mut ready, Some(Duration::ZERO)).expect("select"), 0, "{what}");
    // Longer than a dead peer may take to be noticed (see the bound below).
    const WAIT: Duration = Duration::from_secs(60);
    let reader = thread::spawn(move || {
        let outcome = blocked.read(&mut [0u8; 16], true, Some(WAIT));
        (outcome.map_err(|err| err.to_string()), Instant::now())
    });
    let outage = Impaired::new(&script, "loss 100%");
    for peer in &mut peers {
        peer.kill().expect("kill");
        peer.wait().expect("reap");
    }
    thread::sleep(Duration::from_millis(1000)); // the disconnect requests are long lost
    drop(outage);
    let back = Instant::now();
    let selected_ready = poller.select(&interests, &mut ready, Some(WAIT)).expect("select");
    let selected_at = Instant::now();
    assert_eq!(selected_ready, 1, "{what}: the selector timed out");
    let selected_read = selected.read(&mut [0u8; 16], false, None).map_err(|err| err.to_string());
    let (blocked_read, blocked_at) = reader.join().expect("reader");
    for (wait, outcome, at) in
        [("blocking read", blocked_read, blocked_at), ("selector", selected_read, selected_at)]
    {
        let noticed_in = at - back;
        println!("{what}, {wait}: {outcome:?}, {noticed_in:?} after the wire came back");
        match &outcome {
            Ok(n) if *n == status::EOF => {}
            Err(err) if err.contains("stopped answering") => {}
            _ => panic!("{what}, {wait}: expected the end of stream or an unanswered peer, got {outcome:?}"),
        }
        // Two keepalive periods (5 s) and the transport's retries (about 10 s in the VM).
        assert!(noticed_in < Duration::from_secs(30), "{what}, {wait}: noticed only after {noticed_in:?}");
    }
}

#[test]
fn ring_peers_killed_while_their_disconnects_are_lost_are_noticed() {
    assert_peers_killed_during_an_outage_are_noticed("rings", true);
}

#[test]
fn sends_peers_killed_while_their_disconnects_are_lost_are_noticed() {
    assert_peers_killed_during_an_outage_are_noticed("sends", false);
}

/// A connection left idle for longer than two keepalive periods is probed
/// (a zero-length RDMA WRITE to no memory of the peer's), and carries data
/// both ways afterwards: the probes are harmless to a live peer.
fn assert_an_idle_connection_outlives_its_probes(what: &str, (mut client, mut server): (Stream, Stream)) {
    thread::sleep(Duration::from_secs(12));
    let mut got = [0u8; 5];
    client.write_all(b"hello", TIMEOUT).expect("client write after the idle time");
    server.read_exact(&mut got, TIMEOUT).expect("server read");
    assert_eq!(&got, b"hello", "{what}");
    server.write_all(b"again", TIMEOUT).expect("server write after the idle time");
    client.read_exact(&mut got, TIMEOUT).expect("client read");
    assert_eq!(&got, b"again", "{what}");
}

#[test]
fn an_idle_ring_connection_outlives_its_keepalive_probes() {
    let Some((far, _)) = common::wire() else { return };
    assert_an_idle_connection_outlives_its_probes("rings", common::wire_ring_pair(far));
}

#[test]
fn an_idle_sends_connection_outlives_its_keepalive_probes() {
    let Some((far, _)) = common::wire() else { return };
    assert_an_idle_connection_outlives_its_probes("sends", common::wire_sends_pair(far));
}
