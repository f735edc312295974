//! What idle connections cost a selector. Measures the round trip of one
//! 64-byte echo driven by a busy-polling selector, first with only that
//! connection registered, then with IDLE more idle two-sided connections
//! registered too (one run, side by side). The poller arms sockets that stay
//! idle and asks them only when they signal, so the two should be close; a
//! poller that asked every socket on every look paid ~1.5 us per idle
//! connection per select under TCG. A benchmark, not a test.
//!
//!   select_cost [idle] [round-trips]      (RDMANIO_TEST_ADDR: the VM's rxe0)
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdmanio::media::stream::ops;
use rdmanio::nio::poller::{PollMode, Poller};
use rdmanio::nio::socket::Socket;
use rdmanio::{RingPeers, Transport, TransportOptions};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let idle: usize = args.get(1).map_or(Ok(1000), |a| a.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(2000), |a| a.parse())?;
    raise_fd_limit(idle);
    let ip = std::env::var("RDMANIO_TEST_ADDR")?.parse()?;
    // Nobody gets a ring: every connection is two-sided, as a replica's clients are.
    let options = TransportOptions { ring_peers: RingPeers::Only(Vec::new()), ..Default::default() };
    let listener = Socket::listen(SocketAddr::new(ip, 0), Transport::Rdma, options.clone(), 128)?;
    let addr = listener.addresses()?.0;
    let connect = || -> Result<(Arc<Socket>, Arc<Socket>)> {
        let client = Socket::connect(addr, Transport::Rdma, options.clone(), TIMEOUT)?;
        client.finish_connect(true)?;
        let server = listener.accept(true, None)?.ok_or("no connection")?;
        Ok((client, server))
    };
    let (client, server) = connect()?;
    let poller = Poller::new(PollMode::Busy)?;
    poller.register(0, Arc::clone(&server))?;
    let mut interests = vec![ops::READ as i32];

    let asks_at_start = poller.asks();
    let alone = echo_round_trips(&poller, &interests, &client, &server, rounds)?;
    let asks_alone = poller.asks() - asks_at_start;
    let mut idle_pairs = Vec::with_capacity(idle);
    for slot in 1..=idle {
        let (idle_client, idle_server) = connect()?;
        poller.register(slot, Arc::clone(&idle_server))?;
        interests.push(ops::READ as i32);
        idle_pairs.push((idle_client, idle_server));
    }
    let asks_before = poller.asks();
    let crowded = echo_round_trips(&poller, &interests, &client, &server, rounds)?;
    let asks_crowded = poller.asks() - asks_before;
    let per_round = |asks: u64| asks as f64 / (rounds + rounds / 10) as f64;
    println!("selector round trip, 64 B echo, busy polling, p50 over {rounds}:");
    println!(
        "  1 registered connection:          {alone:>9.1} us   ({:.1} sockets asked per round trip)",
        per_round(asks_alone)
    );
    println!(
        "  {:>5} registered connections:     {crowded:>9.1} us   ({:.1} sockets asked per round trip)",
        idle + 1,
        per_round(asks_crowded)
    );
    println!("  per idle connection per select:   {:>9.3} us", (crowded - alone) / idle.max(1) as f64);
    Ok(())
}

/// p50 in microseconds of: the client writes, the selector finds the server
/// readable, the server echoes, the client reads.
fn echo_round_trips(
    poller: &Poller,
    interests: &[i32],
    client: &Socket,
    server: &Socket,
    rounds: usize,
) -> Result<f64> {
    let message = [0xa5u8; 64];
    let mut buf = [0u8; 64];
    let mut ready = vec![0i32; 2 * interests.len()];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds + rounds / 10 {
        let start = Instant::now();
        client.write(&message, true)?;
        let mut got = 0;
        while got < message.len() {
            let found = poller.select(interests, &mut ready, TIMEOUT)?;
            if (0..found).any(|i| ready[2 * i] == 0) {
                let n = server.read(&mut buf[got..], false, None)?;
                got += usize::try_from(n).map_err(|_| "end of stream")?;
            }
        }
        server.write(&buf, true)?;
        let mut echoed = 0;
        while echoed < buf.len() {
            let n = client.read(&mut buf[echoed..], true, TIMEOUT)?;
            echoed += usize::try_from(n).map_err(|_| "end of stream")?;
        }
        samples.push(start.elapsed());
    }
    let mut measured = samples.split_off(rounds / 10); // after a tenth as warm-up
    measured.sort();
    Ok(measured[measured.len() / 2].as_secs_f64() * 1e6)
}

/// Room for `connections` pairs: an RDMA endpoint holds five fds (ten a pair:
/// 1,000 pairs ran out of a limit of 8 a pair), never less than the limit was.
fn raise_fd_limit(connections: usize) {
    let want = connections as u64 * 16 + 1024;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit and setrlimit on a valid struct; failing leaves the old limit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_cur.max(want);
        limit.rlim_max = limit.rlim_max.max(want);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}
