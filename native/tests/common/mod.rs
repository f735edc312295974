//! What several integration test files share (each file is a crate of its own,
//! and uses some of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rdmanio::{
    ByteStream, Error, Listener, RdmaStream, RingPeers, SendOptions, SendStream, Stream, StreamListener,
    StreamOptions, Transport, TransportOptions,
};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

/// The address of the RDMA device to test on, when there is one (the
/// Soft-RoCE VM sets RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR).
pub fn test_addr() -> Option<IpAddr> {
    std::env::var("RDMANIO_TEST_DEVICE").ok()?;
    Some(std::env::var("RDMANIO_TEST_ADDR").expect("RDMANIO_TEST_ADDR").parse().expect("an IP address"))
}

/// The address the tests' clients connect from: the test address, unless the
/// connections cross the VM's wire (tests/vm/netem sets RDMANIO_TEST_CLIENT_ADDR).
pub fn client_addr() -> Option<IpAddr> {
    match std::env::var("RDMANIO_TEST_CLIENT_ADDR") {
        Ok(addr) => Some(addr.parse().expect("RDMANIO_TEST_CLIENT_ADDR: an IP address")),
        Err(_) => test_addr(),
    }
}

/// Waits until the closer holds no closed RDMA stream (each is kept until its
/// peer confirmed the disconnect, at most a minute when the reply was lost:
/// see `rdmanio::media::closing`).
pub fn await_closes() {
    let deadline = Instant::now() + Duration::from_secs(90);
    while rdmanio::closing_streams() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} closed streams still held after 90 s",
            rdmanio::closing_streams()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The wire's far address, and the script that acts on the wire
/// (tests/vm/wire), in the VM; None on a host without RDMA (said so).
pub fn wire() -> Option<(IpAddr, String)> {
    if test_addr().is_none() {
        println!("no RDMA device here: the wire tests run in the Soft-RoCE VM");
        return None;
    }
    let addr =
        std::env::var("RDMANIO_TEST_WIRE_ADDR").expect("RDMANIO_TEST_WIRE_ADDR (tests/vm/run-in-vm sets it)");
    let script = std::env::var("RDMANIO_TEST_WIRE").expect("RDMANIO_TEST_WIRE");
    Some((addr.parse().expect("an IP address"), script))
}

/// Runs tests/vm/wire with `args` ("down", "impair loss 100%", ...).
pub fn run_wire(script: &str, args: &str) {
    let status = Command::new(script).args(args.split(' ')).status().expect("run tests/vm/wire");
    assert!(status.success(), "{script} {args}: {status}");
}

/// A connected pair over rings with small rings, across the wire: (client, server).
pub fn wire_ring_pair(far: IpAddr) -> (Stream, Stream) {
    const SMALL: StreamOptions = StreamOptions { ring_capacity: 16 * 1024, max_record: 4 * 1024 };
    let listener = Listener::bind(SocketAddr::new(far, 0), 4).expect("bind");
    let addr = listener.local_addr();
    let server = thread::spawn(move || listener.accept_stream(SMALL, TIMEOUT).expect("accept"));
    let client = RdmaStream::connect(addr, SMALL, TIMEOUT).expect("connect");
    (Box::new(client), Box::new(server.join().expect("server thread")))
}

/// A connected pair over two-sided sends, the server's on its listener's
/// shared receive queue, across the wire: (client, server).
pub fn wire_sends_pair(far: IpAddr) -> (Stream, Stream) {
    let options = TransportOptions { ring_peers: RingPeers::Only(Vec::new()), ..Default::default() };
    let listener = StreamListener::bind(SocketAddr::new(far, 0), Transport::Rdma, options).expect("bind");
    let addr = listener.local_addr();
    let client =
        thread::spawn(move || SendStream::connect(addr, SendOptions::default(), TIMEOUT).expect("connect"));
    let (_, server) = listener.accept(TIMEOUT).expect("accept");
    (Box::new(client.join().expect("client thread")), server)
}

/// Starts a `test-peer` process that connects to `addr` in `mode`
/// ("rdma-flood", "sends-flood") and writes until it is killed.
pub fn spawn_flooder(mode: &str, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_test-peer"))
        .args([mode, &addr.ip().to_string(), &addr.port().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test-peer")
}

/// Starts a `test-peer idle` process that connects to `addr` over
/// `transport` ("tcp", "shm", "rdma") and sends nothing until killed; returns
/// once it is connected (over RDMA, someone must be accepting meanwhile).
pub fn spawn_idle_peer(transport: &str, addr: SocketAddr) -> Child {
    let mut peer = Command::new(env!("CARGO_BIN_EXE_test-peer"))
        .args(["idle", transport, &addr.ip().to_string(), &addr.port().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test-peer");
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected", "{transport}");
    peer
}

/// Reads a mebibyte from the flooder's stream, kills the process (SIGKILL,
/// mid-transfer), then reads on: the kernel tears the dead process's connection
/// down, so what it had sent is delivered and the stream ends or fails; it must
/// not hang. Returns how it ended.
pub fn read_through_the_kill(
    stream: &mut impl ByteStream,
    mut flooder: Child,
    timeout: Option<Duration>,
) -> String {
    let mut line = String::new();
    BufReader::new(flooder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "flooding");
    let mut buf = vec![0u8; 65536];
    let mut received = 0;
    while received < 1 << 20 {
        received += stream.read(&mut buf, timeout).expect("read while the peer floods");
    }
    flooder.kill().expect("kill");
    flooder.wait().unwrap();
    let ended = loop {
        match stream.read(&mut buf, timeout) {
            Ok(0) => break "end of stream".to_string(),
            Ok(n) => received += n,
            Err(Error::TimedOut { .. }) => panic!("the stream hangs after its peer was killed"),
            Err(err) => break format!("error: {err}"),
        }
    };
    println!("after {received} bytes the killed peer's stream ended with {ended}");
    ended
}

/// A writer out of credit whose reader goes away fails with `Disconnected`
/// instead of waiting for credit that never comes. Several rounds, each on a
/// fresh pair from `pair`: what the reader's close races with (the writer's
/// wake-up request, its last credit) differs from round to round.
pub fn assert_a_leaving_reader_fails_a_blocked_writer<S: ByteStream + Send + 'static>(
    pair: impl Fn() -> (S, S),
) {
    for round in 0..4 {
        let (mut client, mut server) = pair();
        let writer = thread::spawn(move || client.write_all(&vec![1u8; 4 << 20], TIMEOUT));
        let mut buf = vec![0u8; 4096];
        server.read(&mut buf, TIMEOUT).expect("read");
        drop(server); // leaves while the writer waits for credit
        match writer.join().expect("writer thread") {
            Err(Error::Disconnected) => {}
            other => panic!("round {round}: expected Disconnected, got {other:?}"),
        }
    }
}

/// A close that left nothing unread is clean, as TCP's: the peer reads the
/// last bytes and the end, its first write after that is taken (a TCP peer's
/// reset answers it) and the later ones fail.
pub fn assert_a_clean_close_takes_one_write_more<S: ByteStream>(pair: impl Fn() -> (S, S)) {
    let (mut client, mut server) = pair();
    client.write_all(b"last", TIMEOUT).expect("write");
    drop(client);
    assert_eq!(read_to_end(&mut server), b"last");
    assert_eq!(server.try_write(b"late").expect("the first write after the close"), 4);
    assert!(matches!(server.try_write(b"later"), Err(Error::Disconnected)));
}

/// A close that leaves received bytes unread, or an abortive one (`abort`),
/// resets the connection, as TCP's: the peer reads what came before, then
/// its reads fail with `ConnectionReset`, and its writes fail.
pub fn assert_a_close_that_loses_bytes_resets<S: ByteStream>(pair: impl Fn() -> (S, S), abort: bool) {
    let (mut client, mut server) = pair();
    client.write_all(b"last", TIMEOUT).expect("write");
    let mut last = [0u8; 4];
    if abort {
        server.read_exact(&mut last, TIMEOUT).expect("read");
        client.abort();
    } else {
        server.write_all(b"unread", TIMEOUT).expect("write");
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.available().expect("available") == 0 {
            assert!(Instant::now() < deadline, "the bytes never arrived");
            thread::sleep(Duration::from_millis(1));
        }
        drop(client);
        server.read_exact(&mut last, TIMEOUT).expect("the bytes before the reset");
    }
    assert_eq!(&last, b"last");
    let mut buf = [0u8; 16];
    for read in 0..2 {
        match server.read(&mut buf, TIMEOUT) {
            Err(Error::ConnectionReset) => {}
            other => panic!("read {read} after the reset: expected ConnectionReset, got {other:?}"),
        }
    }
    assert!(matches!(server.try_write(b"late"), Err(Error::Disconnected)));
}

/// Everything `stream` delivers until its end.
fn read_to_end(stream: &mut impl ByteStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf, TIMEOUT).expect("read") {
            0 => return got,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// How many open/transfer/close cycles a churn test runs: 1,000 in CI (about
/// 35 s under emulation); RDMANIO_LEAK_CYCLES=10000 runs the full soak.
pub fn churn_cycles() -> usize {
    std::env::var("RDMANIO_LEAK_CYCLES").map_or(1_000, |v| v.parse().expect("RDMANIO_LEAK_CYCLES: a number"))
}

/// Connection churn leaks nothing: `cycles` times a client from `connect`
/// writes 100 bytes, a server from `accept` (on its own thread) echoes them
/// and both close; after a warm-up, the fds must come back to their count and
/// resident memory must not grow by 16 MiB. Returns the summary it prints.
pub fn assert_churn_leaks_nothing<S, A, C>(cycles: usize, mut accept: A, connect: impl Fn() -> C) -> String
where
    S: ByteStream,
    A: FnMut() -> S + Send + 'static,
    C: ByteStream,
{
    const WARMUP: usize = 20;
    // Lock-step: the server reports each stream closed, so that both footprints
    // are taken with no connection half torn down.
    let (closed, each_closed) = mpsc::channel();
    let server = thread::spawn(move || {
        for _ in 0..WARMUP + cycles {
            let mut stream = accept();
            let mut buf = [0u8; 100];
            let n = stream.read(&mut buf, TIMEOUT).expect("read");
            stream.write_all(&buf[..n], TIMEOUT).expect("echo");
            assert_eq!(stream.read(&mut buf, TIMEOUT).expect("end"), 0);
            drop(stream);
            closed.send(()).unwrap();
        }
        accept // its listener stays open until the footprint is taken again
    });
    let cycle = |i: usize| {
        let mut stream = connect();
        let message: Vec<u8> = (0..100).map(|j| (i * 31 + j) as u8).collect();
        stream.write_all(&message, TIMEOUT).expect("write");
        let mut echo = vec![0u8; message.len()];
        stream.read_exact(&mut echo, TIMEOUT).expect("echo");
        assert!(echo == message, "cycle {i}: the echo differs");
        drop(stream);
        each_closed.recv_timeout(TIMEOUT.unwrap()).expect("the server closed its side");
    };
    (0..WARMUP).for_each(cycle);
    await_closes();
    let (fds_before, rss_before) = (open_fds(), rss_kib());
    let started = Instant::now();
    for i in WARMUP..WARMUP + cycles {
        cycle(i);
        if (i - WARMUP + 1) % 1000 == 0 {
            println!("{} cycles after {:.1} s", i - WARMUP + 1, started.elapsed().as_secs_f64());
        }
    }
    let _listener = server.join().expect("server thread");
    await_closes();
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    let summary = format!(
        "{cycles} open/transfer/close cycles in {:.1} s: fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB",
        started.elapsed().as_secs_f64()
    );
    println!("{summary}");
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert!(rss_after < rss_before + 16 * 1024, "resident memory grew by {} KiB", rss_after - rss_before);
    summary
}

/// What follows a queue pair driven into the error state (`failed`'s, by the
/// caller, as a fatal error of the device would): the stream's next read fails
/// with an error that says so, and so does a write; its peer's stream ends or
/// fails (the failed side disconnects) instead of waiting forever; and
/// `other`, another connection of the same listener, still carries data both
/// ways.
pub fn assert_a_failed_queue_pair_fails_its_stream_alone(
    failed: &mut dyn ByteStream,
    peer: &mut dyn ByteStream,
    other: (&mut dyn ByteStream, &mut dyn ByteStream),
) {
    let mut buf = [0u8; 64];
    let err = failed.read(&mut buf, TIMEOUT).expect_err("a read on a queue pair in the error state");
    assert!(err.to_string().contains("the queue pair entered the error state"), "{err}");
    assert!(failed.write_all(b"late", TIMEOUT).is_err(), "a write on a queue pair in the error state");
    match peer.read(&mut buf, TIMEOUT) {
        Ok(0) => println!("the peer read end of stream"),
        Err(Error::TimedOut { .. }) => panic!("the peer of a failed queue pair was never told"),
        Err(err) => println!("the peer's read failed: {err}"),
        Ok(n) => panic!("the peer read {n} bytes nobody sent"),
    }
    let (client, server) = other;
    client.write_all(b"client: still fine", TIMEOUT).expect("the other connection's write");
    let mut got = [0u8; 18];
    server.read_exact(&mut got, TIMEOUT).expect("the other connection's read");
    assert_eq!(&got, b"client: still fine");
    server.write_all(b"server: still fine", TIMEOUT).expect("the other connection's answer");
    client.read_exact(&mut got, TIMEOUT).expect("the other connection's answer read");
    assert_eq!(&got, b"server: still fine");
}
