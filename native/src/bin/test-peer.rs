//! The far side of the cross-process tests and benchmarks, in a process of its own:
//!
//!   test-peer shm-echo REGION_FD DOORBELL0_FD DOORBELL1_FD
//!       opens side 1 of a shared-memory stream from inherited fds and echoes
//!       every byte back until end of stream;
//!   test-peer rdma-flood IP PORT, test-peer sends-flood IP PORT
//!       connects an RDMA stream (rings, or two-sided sends) and writes without
//!       end (until killed), after printing "flooding" once connected;
//!   test-peer shm-flood IP PORT
//!       the same over shared memory, through the listener's rendezvous;
//!   test-peer idle TRANSPORT IP PORT
//!       connects over TRANSPORT (tcp, shm, rdma, auto), prints "connected"
//!       and waits, sending nothing, until killed;
//!   test-peer sends-clients IP PORT COUNT
//!       connects COUNT two-sided clients one after the other, each sending its
//!       number (8 bytes) and expecting it back; then sends "again" on every
//!       97th and expects it back; prints "clients done" and keeps them all
//!       open until its stdin closes.
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::Duration;

use rdmanio::media::shm::{ShmFds, ShmStream};
use rdmanio::{ByteStream, RdmaStream, SendOptions, SendStream, StreamOptions, Transport, TransportOptions};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["shm-echo", region, doorbell0, doorbell1] => shm_echo(region, doorbell0, doorbell1),
        ["rdma-flood", ip, port] => address(ip, port)
            .and_then(|addr| Ok(RdmaStream::connect(addr, StreamOptions::default(), TIMEOUT)?))
            .and_then(flood),
        ["sends-flood", ip, port] => address(ip, port)
            .and_then(|addr| Ok(SendStream::connect(addr, SendOptions::default(), TIMEOUT)?))
            .and_then(flood),
        ["shm-flood", ip, port] => {
            let rings = TransportOptions::default().shm;
            address(ip, port)
                .and_then(|addr| Ok(ShmStream::connect(addr, None, rings, TIMEOUT)?))
                .and_then(flood)
        }
        ["idle", transport, ip, port] => idle(transport, ip, port),
        ["sends-clients", ip, port, count] => sends_clients(ip, port, count),
        _ => {
            eprintln!(
                "usage: test-peer shm-echo REGION_FD DOORBELL0_FD DOORBELL1_FD | rdma-flood IP PORT \
                 | sends-flood IP PORT | shm-flood IP PORT | idle TRANSPORT IP PORT | sends-clients IP PORT COUNT"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("test-peer: {err}");
            ExitCode::FAILURE
        }
    }
}

fn fd(arg: &str) -> Result<OwnedFd, Box<dyn std::error::Error>> {
    let fd: RawFd = arg.parse()?;
    // SAFETY: the parent handed this fd to this process for it to own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn shm_echo(region: &str, doorbell0: &str, doorbell1: &str) -> Result<(), Box<dyn std::error::Error>> {
    let fds = ShmFds { region: fd(region)?, doorbells: [fd(doorbell0)?, fd(doorbell1)?] };
    let mut stream = ShmStream::open(fds, 1)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf, TIMEOUT)?;
        if n == 0 {
            eprintln!("shm-echo: echoed {total} bytes");
            return Ok(());
        }
        stream.write_all(&buf[..n], TIMEOUT)?;
        total += n;
    }
}

fn address(ip: &str, port: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    Ok(SocketAddr::new(ip.parse()?, port.parse()?))
}

fn flood(mut stream: impl ByteStream) -> Result<(), Box<dyn std::error::Error>> {
    println!("flooding");
    let chunk = vec![0x5au8; 64 * 1024];
    loop {
        stream.write_all(&chunk, TIMEOUT)?;
    }
}

fn idle(transport: &str, ip: &str, port: &str) -> Result<(), Box<dyn std::error::Error>> {
    let transport: Transport = transport.parse()?;
    let (_medium, _stream) =
        rdmanio::connect(address(ip, port)?, transport, &TransportOptions::default(), TIMEOUT)?;
    println!("connected");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn sends_clients(ip: &str, port: &str, count: &str) -> Result<(), Box<dyn std::error::Error>> {
    let addr = address(ip, port)?;
    let count: u64 = count.parse()?;
    let mut clients = Vec::with_capacity(count as usize);
    for i in 0..count {
        let mut client = SendStream::connect(addr, SendOptions::default(), TIMEOUT)
            .map_err(|err| format!("client {i}: {err}"))?;
        client.write_all(&i.to_le_bytes(), TIMEOUT)?;
        let mut echo = [0u8; 8];
        client.read_exact(&mut echo, TIMEOUT)?;
        if u64::from_le_bytes(echo) != i {
            return Err(format!("client {i} got another's echo").into());
        }
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate().step_by(97) {
        client.write_all(b"again", TIMEOUT)?;
        let mut again = [0u8; 5];
        client.read_exact(&mut again, TIMEOUT).map_err(|err| format!("client {i} again: {err}"))?;
        if &again != b"again" {
            return Err(format!("client {i} got {again:?} back").into());
        }
    }
    println!("clients done");
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?; // until the parent lets go
    Ok(())
}
