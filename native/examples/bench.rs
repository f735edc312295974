//! Engine benchmark: ping-pong round trips (p50/p99 at 64 B and 4 KiB) and
//! one-way streaming (MB/s) for each medium, the far side in a thread of this
//! process. Run by tests/bench/run, which puts perftest's figures next to these.
//!
//!   bench [rdma|shm|all] [round-trips]      (rdma needs RDMANIO_TEST_ADDR: the VM)
//!
//! Modes: "spin" polls the non-blocking calls (lowest latency, a busy core per
//! side); "block" uses the blocking calls, which sleep on the completion channel
//! or the shm doorbell.
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use rdmanio::media::ring::RingConfig;
use rdmanio::media::shm::ShmStream;
use rdmanio::{
    connect, ByteStream, Connection, Listener, RdmaStream, ReadOutcome, RingPeers, Stream, StreamListener,
    StreamOptions, Transport, TransportOptions, MAX_MESSAGE_SIZE,
};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));
const STREAM_BYTES: usize = 64 << 20;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("all", String::as_str);
    let rounds: usize = args.get(2).map_or(Ok(4000), |a| a.parse())?;
    println!("{:<34} {:>9} {:>9} {:>11}", "medium / mode / size", "p50 us", "p99 us", "MB/s");
    if which == "rdma" || which == "all" {
        let ip = std::env::var("RDMANIO_TEST_ADDR")?.parse()?;
        for size in [64, 4096] {
            for spin in [true, false] {
                let (a, b) = rdma_pair(ip)?;
                report(&format!("rdma stream {} {size} B", mode(spin)), ping_pong(a, b, size, rounds, spin)?);
            }
            for spin in [true, false] {
                let (a, b) = sends_pair(ip)?;
                report(&format!("rdma sends {} {size} B", mode(spin)), ping_pong(a, b, size, rounds, spin)?);
            }
            let (a, b) = message_pair(ip)?;
            report(&format!("rdma messages busy-poll {size} B"), message_ping_pong(a, b, size, rounds)?);
        }
        let (a, b) = rdma_pair(ip)?;
        report_stream("rdma stream streaming 64 KiB writes", stream(a, b)?);
        let (a, b) = sends_pair(ip)?;
        report_stream("rdma sends streaming 64 KiB writes", stream(a, b)?);
    }
    if which == "shm" || which == "all" {
        for size in [64, 4096] {
            for spin in [true, false] {
                let (a, b) = shm_pair()?;
                report(&format!("shm {} {size} B", mode(spin)), ping_pong(a, b, size, rounds, spin)?);
            }
        }
        let (a, b) = shm_pair()?;
        report_stream("shm streaming 64 KiB writes", stream(a, b)?);
    }
    Ok(())
}

fn mode(spin: bool) -> &'static str {
    if spin {
        "spin"
    } else {
        "block"
    }
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1e6;
    println!("{name:<34} {:>9.1} {:>9.1} {:>11}", at(50), at(99), "");
}

fn report_stream(name: &str, elapsed: Duration) {
    let mb_per_s = STREAM_BYTES as f64 / elapsed.as_secs_f64() / 1e6;
    println!("{name:<34} {:>9} {:>9} {mb_per_s:>11.1}", "", "");
}

fn rdma_pair(ip: std::net::IpAddr) -> Result<(RdmaStream, RdmaStream)> {
    let listener = Listener::bind(SocketAddr::new(ip, 0), 1)?;
    let addr = listener.local_addr();
    let server = thread::spawn(move || listener.accept_stream(StreamOptions::default(), TIMEOUT));
    let client = RdmaStream::connect(addr, StreamOptions::default(), TIMEOUT)?;
    Ok((client, server.join().map_err(|_| "accept thread panicked")??))
}

/// A two-sided pair: the listener grants no ring, so the client falls back to sends.
fn sends_pair(ip: std::net::IpAddr) -> Result<(Stream, Stream)> {
    let options = TransportOptions { ring_peers: RingPeers::Only(Vec::new()), ..Default::default() };
    let listener = StreamListener::bind(SocketAddr::new(ip, 0), Transport::Rdma, options.clone())?;
    let addr = listener.local_addr();
    let server = thread::spawn(move || listener.accept(TIMEOUT).map(|(_, stream)| stream));
    let (_, client) = connect(addr, Transport::Rdma, &options, TIMEOUT)?;
    Ok((client, server.join().map_err(|_| "accept thread panicked")??))
}

fn shm_pair() -> Result<(ShmStream, ShmStream)> {
    let (a, fds) = ShmStream::create(RingConfig::new(1 << 20, 64 * 1024, 1)?)?;
    Ok((a, ShmStream::open(fds, 1)?))
}

fn message_pair(ip: std::net::IpAddr) -> Result<(Connection, Connection)> {
    let listener = Listener::bind(SocketAddr::new(ip, 0), 1)?;
    let addr = listener.local_addr();
    let server = thread::spawn(move || listener.accept(TIMEOUT));
    let mut client = Connection::connect(addr, TIMEOUT)?;
    let mut server = server.join().map_err(|_| "accept thread panicked")??;
    client.set_busy_poll(Duration::from_millis(1));
    server.set_busy_poll(Duration::from_millis(1));
    Ok((client, server))
}

/// Reads exactly `buf.len()` bytes, spinning on `try_read` or blocking in `read`.
fn fill(stream: &mut impl ByteStream, buf: &mut [u8], spin: bool) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = if spin {
            match stream.try_read(&mut buf[done..])? {
                ReadOutcome::Data(n) => n,
                ReadOutcome::WouldBlock => 0,
                ReadOutcome::EndOfStream => return Err("end of stream".into()),
            }
        } else {
            stream.read(&mut buf[done..], TIMEOUT)?
        };
        if n == 0 && !spin {
            return Err("end of stream".into());
        }
        done += n;
    }
    Ok(())
}

fn send(stream: &mut impl ByteStream, data: &[u8], spin: bool) -> Result<()> {
    if !spin {
        return Ok(stream.write_all(data, TIMEOUT)?);
    }
    let mut done = 0;
    while done < data.len() {
        done += stream.try_write(&data[done..])?;
    }
    Ok(())
}

/// Round trips of `size`-byte messages; the far side echoes in a thread.
fn ping_pong<S: ByteStream + Send + 'static>(
    mut near: S,
    mut far: S,
    size: usize,
    rounds: usize,
    spin: bool,
) -> Result<Vec<Duration>> {
    let total = rounds + rounds / 10;
    let echo = thread::spawn(move || -> Result<S> {
        let mut buf = vec![0u8; size];
        for _ in 0..total {
            fill(&mut far, &mut buf, spin)?;
            send(&mut far, &buf, spin)?;
        }
        Ok(far)
    });
    let message = vec![0xa5u8; size];
    let mut reply = vec![0u8; size];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..total {
        let start = Instant::now();
        send(&mut near, &message, spin)?;
        fill(&mut near, &mut reply, spin)?;
        if i >= rounds / 10 {
            samples.push(start.elapsed()); // after a tenth as warm-up
        }
    }
    assert!(reply == message);
    drop(echo.join().map_err(|_| "echo thread panicked")??);
    Ok(samples)
}

fn message_ping_pong(
    mut near: Connection,
    mut far: Connection,
    size: usize,
    rounds: usize,
) -> Result<Vec<Duration>> {
    let size = size.min(MAX_MESSAGE_SIZE);
    let total = rounds + rounds / 10;
    let echo = thread::spawn(move || -> Result<()> {
        let mut buf = vec![0u8; MAX_MESSAGE_SIZE];
        for _ in 0..total {
            let n = far.recv(&mut buf, TIMEOUT)?.ok_or("end of stream")?;
            far.send(&buf[..n], TIMEOUT)?;
        }
        Ok(())
    });
    let message = vec![0xa5u8; size];
    let mut reply = vec![0u8; MAX_MESSAGE_SIZE];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..total {
        let start = Instant::now();
        near.send(&message, TIMEOUT)?;
        near.recv(&mut reply, TIMEOUT)?.ok_or("end of stream")?;
        if i >= rounds / 10 {
            samples.push(start.elapsed());
        }
    }
    echo.join().map_err(|_| "echo thread panicked")??;
    Ok(samples)
}

/// Time to move STREAM_BYTES one way in 64 KiB writes, blocking calls.
fn stream<S: ByteStream + Send + 'static>(mut writer: S, mut reader: S) -> Result<Duration> {
    let sink = thread::spawn(move || -> Result<S> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < STREAM_BYTES {
            got += reader.read(&mut buf, TIMEOUT)?;
        }
        Ok(reader)
    });
    let chunk = vec![0x3cu8; 64 * 1024];
    let start = Instant::now();
    for _ in 0..STREAM_BYTES / chunk.len() {
        writer.write_all(&chunk, TIMEOUT)?;
    }
    let reader = sink.join().map_err(|_| "sink thread panicked")??;
    let elapsed = start.elapsed();
    drop((writer, reader));
    Ok(elapsed)
}
