//! The far side of a shared-memory stream in another process: echoes every
//! byte back until end of stream. Used by the cross-process tests and
//! benchmarks, which pass it the stream's inherited fds:
//!
//!   shm-echo REGION_FD DOORBELL0_FD DOORBELL1_FD
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::Duration;

use rdmanio::shm::{ShmFds, ShmStream};
use rdmanio::ByteStream;

fn main() -> ExitCode {
    let fds: Vec<RawFd> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [region, doorbell0, doorbell1] = fds[..] else {
        eprintln!("usage: shm-echo REGION_FD DOORBELL0_FD DOORBELL1_FD");
        return ExitCode::from(2);
    };
    // SAFETY: the parent handed these fds to this process for it to own.
    let fds = unsafe {
        ShmFds {
            region: OwnedFd::from_raw_fd(region),
            doorbells: [OwnedFd::from_raw_fd(doorbell0), OwnedFd::from_raw_fd(doorbell1)],
        }
    };
    match echo(fds) {
        Ok(bytes) => {
            eprintln!("shm-echo: echoed {bytes} bytes");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("shm-echo: {err}");
            ExitCode::FAILURE
        }
    }
}

fn echo(fds: ShmFds) -> rdmanio::Result<usize> {
    let timeout = Some(Duration::from_secs(60));
    let mut stream = ShmStream::open(fds, 1)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf, timeout)?;
        if n == 0 {
            return Ok(total);
        }
        stream.write_all(&buf[..n], timeout)?;
        total += n;
    }
}
