//! Byte streams by RDMA WRITE into rings, over a real verbs device (the
//! Soft-RoCE VM sets RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR). Without a
//! device, the tests check that the stream reports its absence clearly.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::test_addr;
use rdmanio::{ByteStream, Error, Listener, RdmaStream, ReadOutcome, StreamOptions};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
/// A small ring, so that a mebibyte wraps it many times and credit flows constantly.
const SMALL: StreamOptions = StreamOptions { ring_capacity: 16 * 1024, max_record: 4 * 1024 };

fn no_device_here() -> bool {
    if test_addr().is_some() {
        return false;
    }
    match RdmaStream::connect(SocketAddr::from(([127, 0, 0, 1], 9)), SMALL, TIMEOUT) {
        Err(err @ Error::NoDevice(_)) => assert!(err.to_string().starts_with("no RDMA device: ")),
        Err(err) => panic!("expected a no-device error, got: {err}"),
        Ok(_) => panic!("an RDMA device exists: set RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR to test on it"),
    }
    true
}

/// A connected pair: (client, server).
fn pair(client_options: StreamOptions, server_options: StreamOptions) -> (RdmaStream, RdmaStream) {
    let ip = test_addr().unwrap();
    let listener = Listener::bind(SocketAddr::new(ip, 0), 4).expect("bind");
    let addr = listener.local_addr();
    let server = thread::spawn(move || listener.accept_stream(server_options, TIMEOUT).expect("accept"));
    let client = RdmaStream::connect(addr, client_options, TIMEOUT).expect("connect");
    (client, server.join().expect("server thread"))
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8).collect()
}

/// Non-blocking both ways: writes `data` while collecting what arrives, until
/// `expect` bytes came in.
fn exchange(stream: &mut RdmaStream, data: &[u8], expect: usize) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::with_capacity(expect);
    let mut buf = vec![0u8; 20_000];
    let started = std::time::Instant::now();
    while sent < data.len() || got.len() < expect {
        assert!(started.elapsed() < Duration::from_secs(60), "stalled: {sent} sent, {} received", got.len());
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

#[test]
fn a_mebibyte_crosses_in_both_directions_at_once() {
    if no_device_here() {
        return;
    }
    let (mut client, mut server) = pair(SMALL, SMALL);
    let mib = 1 << 20;
    let (up, down) = (pattern(mib, 1), pattern(mib, 2));
    let expected_up = up.clone();
    let server = thread::spawn(move || {
        let got = exchange(&mut server, &down, mib);
        assert!(got == expected_up, "the server received different bytes");
        server
    });
    let got = exchange(&mut client, &up, mib);
    assert!(got == pattern(mib, 2), "the client received different bytes");
    println!("1 MiB each way over {} (client qp {})", client.device_name(), client.qp_num());
    drop(server.join().expect("server thread"));
}

#[test]
fn a_blocked_writer_wakes_when_a_slow_reader_catches_up() {
    if no_device_here() {
        return;
    }
    let (mut client, mut server) = pair(SMALL, SMALL);
    let data = pattern(300_000, 3);
    let expected = data.clone();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1000];
        while got.len() < expected.len() {
            thread::sleep(Duration::from_micros(200)); // slower than the writer: the ring fills
            let n = server.read(&mut buf, TIMEOUT).expect("read");
            assert_ne!(n, 0, "end of stream after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == expected, "the stream differs");
    });
    client.write_all(&data, TIMEOUT).expect("write_all");
    reader.join().expect("reader");
}

#[test]
fn closing_delivers_everything_then_end_of_stream() {
    if no_device_here() {
        return;
    }
    let (mut client, mut server) = pair(SMALL, StreamOptions::default());
    let data = pattern(200_000, 4);
    client.write_all(&data, TIMEOUT).expect("write_all");
    drop(client); // lingers until its writes landed, then disconnects
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = server.read(&mut buf, TIMEOUT).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the stream differs");
}

/// A close that read everything is clean: the peer's first write after it is
/// taken and the later ones fail, as over TCP (all failed: a disconnect was
/// all the peer learned).
#[test]
fn a_clean_close_takes_one_write_more() {
    if no_device_here() {
        return;
    }
    common::assert_a_clean_close_takes_one_write_more(|| pair(SMALL, SMALL));
}

/// A close that leaves bytes unread resets the connection: the peer's reads
/// fail with `ConnectionReset` once it read what came before (they ended).
#[test]
fn a_close_with_bytes_unread_resets() {
    if no_device_here() {
        return;
    }
    common::assert_a_close_that_loses_bytes_resets(|| pair(SMALL, SMALL), false);
}

/// So does an abortive close (`SO_LINGER` 0).
#[test]
fn an_abortive_close_resets() {
    if no_device_here() {
        return;
    }
    common::assert_a_close_that_loses_bytes_resets(|| pair(SMALL, SMALL), true);
}

#[test]
fn a_message_connection_is_not_a_stream() {
    if no_device_here() {
        return;
    }
    let listener = Listener::bind(SocketAddr::new(test_addr().unwrap(), 0), 4).expect("bind");
    let addr = listener.local_addr();
    let server = thread::spawn(move || listener.accept(Some(Duration::from_secs(2))));
    match RdmaStream::connect(addr, SMALL, TIMEOUT) {
        Err(Error::ConnectionRefused(refused)) => assert_eq!(refused, addr),
        Err(err) => panic!("expected a refusal, got {err}"),
        Ok(_) => panic!("a stream connected to a message listener"),
    }
    assert!(matches!(server.join().unwrap(), Err(Error::TimedOut { .. })));
}

#[test]
fn sixty_four_streams_carry_data_at_once() {
    if no_device_here() {
        return;
    }
    const STREAMS: usize = 64;
    const BYTES: usize = 32 * 1024;
    let listener = Listener::bind(SocketAddr::new(test_addr().unwrap(), 0), STREAMS as i32).expect("bind");
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let mut accepted: Vec<RdmaStream> =
            (0..STREAMS).map(|_| listener.accept_stream(SMALL, TIMEOUT).expect("accept")).collect();
        // Every stream receives its own pattern; then every one sends it back
        // (in phases, as the client writes all before it reads any).
        for (i, stream) in accepted.iter_mut().enumerate() {
            assert!(
                read_exactly(stream, BYTES) == pattern(BYTES, i as u32),
                "stream {i} received different bytes"
            );
        }
        for (i, stream) in accepted.iter_mut().enumerate() {
            stream.write_all(&pattern(BYTES, i as u32), TIMEOUT).expect("echo");
        }
        accepted
    });
    let mut clients: Vec<RdmaStream> =
        (0..STREAMS).map(|_| RdmaStream::connect(addr, SMALL, TIMEOUT).expect("connect")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&pattern(BYTES, i as u32), TIMEOUT).expect("write");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(read_exactly(client, BYTES) == pattern(BYTES, i as u32), "stream {i} echoed different bytes");
    }
    let qps: std::collections::HashSet<u32> = clients.iter().map(|client| client.qp_num()).collect();
    assert_eq!(qps.len(), STREAMS, "every stream has its own queue pair");
    drop(server.join().expect("server thread"));
}

fn read_exactly(stream: &mut RdmaStream, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    stream.read_exact(&mut got, TIMEOUT).expect("read");
    got
}

#[test]
fn a_killed_writer_process_ends_the_stream() {
    if no_device_here() {
        return;
    }
    let ip = test_addr().unwrap();
    let listener = Listener::bind(SocketAddr::new(ip, 0), 1).expect("bind");
    let flooder = common::spawn_flooder("rdma-flood", listener.local_addr());
    let mut server = listener.accept_stream(StreamOptions::default(), TIMEOUT).expect("accept");
    common::read_through_the_kill(&mut server, flooder, TIMEOUT);
}

#[test]
fn a_reader_that_leaves_fails_a_blocked_writer() {
    if no_device_here() {
        return;
    }
    common::assert_a_leaving_reader_fails_a_blocked_writer(|| pair(SMALL, SMALL));
}

/// Connection churn leaks no fd, memory region or memory (see `common::churn_cycles`).
#[test]
fn open_transfer_close_cycles_leak_nothing() {
    if no_device_here() {
        return;
    }
    let listener = Listener::bind(SocketAddr::new(test_addr().unwrap(), 0), 16).expect("bind");
    let addr = listener.local_addr();
    common::assert_churn_leaks_nothing(
        common::churn_cycles(),
        move || listener.accept_stream(SMALL, TIMEOUT).expect("accept"),
        || RdmaStream::connect(addr, SMALL, TIMEOUT).expect("connect"),
    );
}

/// A queue pair driven into the error state (as a fatal error of the device
/// would) fails its stream with an error that names it, its peer is told,
/// and the listener's other connection goes on.
#[test]
fn a_queue_pair_in_the_error_state_fails_its_stream_alone() {
    if no_device_here() {
        return;
    }
    let listener = Listener::bind(SocketAddr::new(test_addr().unwrap(), 0), 4).expect("bind");
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let first = listener.accept_stream(SMALL, TIMEOUT).expect("accept");
        (first, listener.accept_stream(SMALL, TIMEOUT).expect("accept"))
    });
    let mut failed = RdmaStream::connect(addr, SMALL, TIMEOUT).expect("connect");
    let mut other = RdmaStream::connect(addr, SMALL, TIMEOUT).expect("connect");
    let (mut peer, mut other_server) = server.join().expect("server thread");
    failed.fail_queue_pair().expect("ibv_modify_qp");
    common::assert_a_failed_queue_pair_fails_its_stream_alone(
        &mut failed,
        &mut peer,
        (&mut other, &mut other_server),
    );
}
