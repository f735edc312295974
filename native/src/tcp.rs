//! The TCP medium: a plain kernel socket behind the same byte-stream face,
//! for peers that no RDMA device or shared memory reaches.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::stream::{ByteStream, Interest, ReadOutcome};
use crate::sys::{self, Deadline};

/// A connected TCP socket as a non-blocking byte stream.
pub struct TcpByteStream {
    socket: TcpStream,
    peer_closed: bool,
}

impl TcpByteStream {
    /// Wraps a connected socket: makes it non-blocking and disables Nagle
    /// (each write goes out at once, as RDMA writes do).
    pub fn new(socket: TcpStream) -> Result<TcpByteStream> {
        let os = |op| move |source| Error::Os { op, source };
        socket.set_nonblocking(true).map_err(os("fcntl(O_NONBLOCK)"))?;
        socket.set_nodelay(true).map_err(os("setsockopt(TCP_NODELAY)"))?;
        Ok(TcpByteStream { socket, peer_closed: false })
    }
}

fn io_error(op: &'static str, source: io::Error) -> Error {
    match source.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Disconnected,
        _ => Error::Os { op, source },
    }
}

impl ByteStream for TcpByteStream {
    fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        loop {
            match self.socket.write(data) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(io_error("send", err)),
            }
        }
    }

    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        if self.peer_closed {
            return Ok(ReadOutcome::EndOfStream);
        }
        loop {
            return match self.socket.read(out) {
                Ok(0) if !out.is_empty() => {
                    self.peer_closed = true;
                    Ok(ReadOutcome::EndOfStream)
                }
                Ok(0) => Ok(ReadOutcome::WouldBlock),
                Ok(n) => Ok(ReadOutcome::Data(n)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => Err(io_error("recv", err)),
            };
        }
    }

    fn wait(&mut self, interest: Interest, deadline: Deadline) -> Result<()> {
        let (op, events) = match interest {
            Interest::Read => ("tcp read", libc::POLLIN),
            Interest::Write => ("tcp write", libc::POLLOUT),
        };
        sys::wait_for(op, [(self.socket.as_raw_fd(), events)], deadline)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

    fn pair() -> (TcpByteStream, TcpByteStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (TcpByteStream::new(client).unwrap(), TcpByteStream::new(server).unwrap())
    }

    #[test]
    fn four_mebibytes_cross_and_the_stream_ends() {
        let (mut client, mut server) = pair();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 >> 3) as u8).collect();
        let expected = data.clone();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                match server.read(&mut buf, TIMEOUT).unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        client.write_all(&data, TIMEOUT).unwrap(); // more than the socket buffers: waits for room
        drop(client);
        assert!(reader.join().unwrap() == expected, "the stream differs");
    }

    #[test]
    fn nothing_to_read_would_block_then_times_out() {
        let (_client, mut server) = pair();
        let mut buf = [0u8; 8];
        assert_eq!(server.try_read(&mut buf).unwrap(), ReadOutcome::WouldBlock);
        let err = server.read(&mut buf, Some(Duration::from_millis(30))).unwrap_err();
        assert!(matches!(err, Error::TimedOut { op: "tcp read", .. }), "{err}");
    }

    #[test]
    fn writing_to_a_closed_peer_fails_as_disconnected() {
        let (mut client, server) = pair();
        drop(server);
        let err = (0..100)
            .find_map(|_| {
                thread::sleep(Duration::from_millis(5));
                client.try_write(&[0; 65536]).err()
            })
            .expect("writes to a closed peer kept succeeding");
        assert!(matches!(err, Error::Disconnected), "{err}");
    }
}
