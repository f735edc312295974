//! What several integration test files share (each file is a crate of its own,
//! and uses some of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdmanio::{ByteStream, Error};

/// The address of the RDMA device to test on, when there is one (the
/// Soft-RoCE VM sets RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR).
pub fn test_addr() -> Option<IpAddr> {
    std::env::var("RDMANIO_TEST_DEVICE").ok()?;
    Some(std::env::var("RDMANIO_TEST_ADDR").expect("RDMANIO_TEST_ADDR").parse().expect("an IP address"))
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
