//! The shared-memory medium between two processes: this test and `test-peer shm-echo`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdmanio::media::ring::RingConfig;
use rdmanio::media::shm::ShmStream;
use rdmanio::{ByteStream, ReadOutcome, ShmListener};

mod common;

/// Makes `fd` survive exec, so the child inherits it.
fn inheritable(fd: &OwnedFd) {
    // SAFETY: clearing FD_CLOEXEC on an fd we own.
    assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }, 0);
}

#[test]
fn another_process_echoes_a_mebibyte_intact() {
    let config = RingConfig::new(256 * 1024, 32 * 1024, 0x5eed).unwrap();
    let (mut stream, peer) = ShmStream::create(config).unwrap();
    for fd in [&peer.region, &peer.doorbells[0], &peer.doorbells[1]] {
        inheritable(fd);
    }
    let child = Command::new(env!("CARGO_BIN_EXE_test-peer"))
        .arg("shm-echo")
        .args([&peer.region, &peer.doorbells[0], &peer.doorbells[1]].map(|fd| fd.as_raw_fd().to_string()))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn test-peer");
    drop(peer); // the child has its copies

    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut echoed = Vec::with_capacity(data.len());
    let mut sent = 0;
    let mut buf = vec![0u8; 100_000];
    let deadline = Instant::now() + Duration::from_secs(60);
    while echoed.len() < data.len() {
        assert!(Instant::now() < deadline, "stalled: {sent} sent, {} echoed", echoed.len());
        if sent < data.len() {
            sent += stream.try_write(&data[sent..]).unwrap();
        }
        match stream.try_read(&mut buf).unwrap() {
            ReadOutcome::Data(n) => echoed.extend_from_slice(&buf[..n]),
            ReadOutcome::WouldBlock => std::hint::spin_loop(),
            ReadOutcome::EndOfStream => panic!("the echo process closed early"),
        }
    }
    assert!(echoed == data, "the echo differs from what was sent");
    drop(stream); // end of stream for the child

    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "test-peer shm-echo failed: {log}");
    assert!(log.contains(&format!("echoed {} bytes", data.len())), "{log}");
}

/// A peer process killed (SIGKILL) while it floods sets no closed flag and rings
/// no doorbell: the reader learns of it from the rendezvous socket it keeps,
/// reads what had arrived, then sees the end, within the timeout.
#[test]
fn a_killed_writer_process_ends_the_stream() {
    let listener = ShmListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let flooder = common::spawn_flooder("shm-flood", listener.local_addr());
    let mut server = listener.accept(Some(Duration::from_secs(30))).unwrap();
    let ended = common::read_through_the_kill(&mut server, flooder, Some(Duration::from_secs(10)));
    assert_eq!(ended, "end of stream");
}

/// An shm listener holds its TCP port: port 0 takes one the kernel picks, a
/// port a TCP socket holds and an address that is not this host's are refused
/// (as a TCP bind refuses them), and a TCP client is refused too.
#[test]
fn a_listener_holds_its_tcp_port() {
    let listener = ShmListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0);
    let taken = std::net::TcpListener::bind(addr).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    let refused = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = ShmListener::bind(tcp.local_addr().unwrap()).err().expect("a port TCP holds");
    assert_eq!(err.errno(), Some(libc::EADDRINUSE), "{err}");
    let err = ShmListener::bind("203.0.113.7:7000".parse().unwrap()).err().expect("a foreign address");
    assert_eq!(err.errno(), Some(libc::EADDRNOTAVAIL), "{err}");

    // The port is free again once the listener goes. (Another test's child,
    // between its spawn and its exec, may hold a copy of the socket a moment.)
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(err) = std::net::TcpListener::bind(addr) {
        assert!(Instant::now() < deadline, "the port stays taken: {err}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
