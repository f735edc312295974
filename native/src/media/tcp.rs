//! The TCP medium: a plain kernel socket behind the same byte-stream face,
//! for peers that no RDMA device or shared memory reaches.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::media::stream::{ops, ByteStream, Interest, ReadOutcome, WaitSource};
use crate::sys::{self, Deadline};

/// A connected TCP socket as a non-blocking byte stream.
pub struct TcpByteStream {
    socket: TcpStream,
    peer_closed: bool,
    /// The peer reset the connection: every read fails so from now on, as
    /// the JDK's do (the kernel reports `ECONNRESET` once).
    reset: bool,
}

impl TcpByteStream {
    /// Wraps a connected socket: makes it non-blocking and disables Nagle
    /// (each write goes out at once, as RDMA writes do).
    pub fn new(socket: TcpStream) -> Result<TcpByteStream> {
        let os = |op| move |source| Error::Os { op, source };
        socket.set_nonblocking(true).map_err(os("fcntl(O_NONBLOCK)"))?;
        socket.set_nodelay(true).map_err(os("setsockopt(TCP_NODELAY)"))?;
        Ok(TcpByteStream { socket, peer_closed: false, reset: false })
    }
}

fn io_error(op: &'static str, source: io::Error) -> Error {
    match source.kind() {
        io::ErrorKind::BrokenPipe => Error::Disconnected,
        io::ErrorKind::ConnectionReset => Error::ConnectionReset,
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
        if self.reset {
            return Err(Error::ConnectionReset);
        }
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
                Err(err) => {
                    let err = io_error("recv", err);
                    self.reset = matches!(err, Error::ConnectionReset);
                    Err(err)
                }
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

    fn shutdown_output(&mut self) -> Result<()> {
        match self.socket.shutdown(std::net::Shutdown::Write) {
            Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(io_error("shutdown(SHUT_WR)", err)),
            _ => Ok(()),
        }
    }

    fn close(&mut self) {
        // Not connected any more: the peer went first, nothing to tell it.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Resets the connection now (the fd stays open until the stream drops,
    /// as a selector may still watch it): the peer's next read fails.
    fn abort(&mut self) {
        if let Err(err) = sys::reset_tcp(self.socket.as_raw_fd()) {
            log::debug!("tcp abort: {err}; closing instead");
            self.close();
        }
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket.local_addr().ok()
    }

    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket.peer_addr().ok()
    }

    fn ready(&mut self, interest: u32) -> Result<u32> {
        let [(fd, events), _] = self.sources(interest);
        let mut poll_fd = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        if unsafe { libc::poll(&mut poll_fd, 1, 0) } < 0 {
            return Err(Error::last_os("poll(tcp)"));
        }
        let failed = libc::POLLERR | libc::POLLHUP;
        let mut ready = 0;
        if poll_fd.revents & (libc::POLLIN | libc::POLLRDHUP | failed) != 0 || self.peer_closed {
            ready |= ops::READ;
        }
        if poll_fd.revents & (libc::POLLOUT | failed) != 0 {
            ready |= ops::WRITE;
        }
        Ok(ready & interest)
    }

    fn arm(&mut self, _interest: u32) -> Result<()> {
        Ok(()) // the kernel socket signals by itself
    }

    fn disarm(&mut self) -> Result<()> {
        Ok(())
    }

    fn sources(&self, interest: u32) -> [WaitSource; 2] {
        let mut events = 0;
        if interest & ops::READ != 0 {
            events |= libc::POLLIN | libc::POLLRDHUP;
        }
        if interest & ops::WRITE != 0 {
            events |= libc::POLLOUT;
        }
        [(self.socket.as_raw_fd(), events), (-1, 0)]
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
        let data: Vec<u8> = (0..4u32 << 20).map(|i| ((i * 7) >> 3) as u8).collect();
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
