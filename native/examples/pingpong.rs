//! Round-trip times of a message ping-pong between two threads over one RDMA
//! connection, for several busy-poll settings in alternating blocks.
//!
//!   tests/vm/run-in-vm target/release/examples/pingpong [round-trips [bytes [busy-poll-us,...]]]
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use rdmanio::{Connection, Listener, MAX_MESSAGE_SIZE};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));
const BLOCKS: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(Ok(4000), |a| a.parse())?;
    let size: usize = args.get(2).map_or(Ok(64), |a| a.parse())?;
    let spins: Vec<u64> = args
        .get(3)
        .map_or("0,20,100", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let ip = std::env::var("RDMANIO_TEST_ADDR").unwrap_or_else(|_| "192.0.2.1".into()).parse()?;

    let mut clients = Vec::new();
    for &spin in &spins {
        let listener = Listener::bind(SocketAddr::new(ip, 0), 1)?;
        let addr = listener.local_addr();
        let busy_poll = Duration::from_micros(spin);
        thread::spawn(move || {
            let mut conn = listener.accept(TIMEOUT).expect("accept");
            conn.set_busy_poll(busy_poll);
            let mut buf = vec![0u8; MAX_MESSAGE_SIZE];
            while let Some(len) = conn.recv(&mut buf, TIMEOUT).expect("echo receive") {
                conn.send(&buf[..len], TIMEOUT).expect("echo send");
            }
        });
        let mut client = Connection::connect(addr, TIMEOUT)?;
        client.set_busy_poll(busy_poll);
        clients.push(client);
    }

    let message = vec![7u8; size];
    let mut reply = vec![0u8; MAX_MESSAGE_SIZE];
    let mut samples = vec![Vec::with_capacity(rounds); spins.len()];
    for client in &mut clients {
        for _ in 0..rounds / 10 {
            client.send(&message, TIMEOUT)?;
            client.recv(&mut reply, TIMEOUT)?;
        }
    }
    for _ in 0..BLOCKS {
        for (client, samples) in clients.iter_mut().zip(&mut samples) {
            for _ in 0..rounds / BLOCKS {
                let start = Instant::now();
                client.send(&message, TIMEOUT)?;
                let len = client.recv(&mut reply, TIMEOUT)?.ok_or("end of stream")?;
                samples.push(start.elapsed());
                assert_eq!(&reply[..len], &message[..]);
            }
        }
    }
    println!("{size}-byte ping-pong, {rounds} round trips per setting, {BLOCKS} alternating blocks");
    println!("{:>14} {:>9} {:>9}", "busy-poll us", "p50 us", "p99 us");
    for (spin, mut samples) in spins.iter().zip(samples) {
        samples.sort();
        let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1e6;
        println!("{spin:>14} {:>9.1} {:>9.1}", at(50), at(99));
    }
    Ok(())
}
