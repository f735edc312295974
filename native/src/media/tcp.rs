//! The TCP medium: a plain kernel socket behind the same byte-stream face,
//! for peers that no RDMA device or shared memory reaches.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use crate::error::{Error, Result};
use crate::media::stream::{ops, ByteStream, Interest, ReadOutcome, WaitSource};
use crate::sys::{self, Deadline};

/// A connected TCP socket as a non-blocking byte stream.
///
/// Its readiness is kept as the kernel last reported it, so that a selector's
/// look costs no syscall (the JDK's selector makes one `epoll_wait` per select,
/// not one per socket): reads and writes that find the socket drained or full
/// mark it not ready, and the selector's edge-triggered epoll set reports
/// (`signalled`) when that changes. A not-ready mark is only ever set when the
/// kernel will raise such an edge: after `EAGAIN` or a short read (the receive
/// queue was empty; any arrival signals), after a short write (the kernel
/// marked the socket out of space, so freed space signals), or after a
/// `poll(2)` that found it so (which marks it likewise). Two short reads do
/// not mean drained: one that also took the peer's end of stream (no edge
/// follows it: once the kernel reported the peer's shutdown, the socket stays
/// readable, as reads return data or end of stream from then on), and one
/// that stopped at the mark of the peer's urgent (out-of-band) data with
/// bytes behind it (once urgent data was seen, a short read leaves
/// readability unknown). A read that fills its buffer leaves readability
/// unknown too: more may wait or none, and a selector must not report a key
/// that a read then finds empty, so the next look asks.
///
/// The socket itself is in blocking mode and every call here says
/// `MSG_DONTWAIT`: so a blocking channel's read can sleep in `recv` itself
/// (`kernel_socket`), one syscall where a wait and a read take two, as the
/// JDK's blocking channel does.
pub struct TcpByteStream {
    socket: TcpStream,
    readable: Known,
    writable: Known,
    /// The peer sent urgent data: a short read no longer means drained.
    urgent_seen: bool,
    /// The kernel reported the peer's shutdown (or a failure): reads never
    /// block again, whatever a short one suggests.
    input_ended: bool,
    peer_closed: bool,
    /// The peer reset the connection: every read fails so from now on, as
    /// the JDK's do (the kernel reports `ECONNRESET` once).
    reset: bool,
    /// The peer's address, when `accept` gave it (else `getpeername` tells).
    peer: Option<std::net::SocketAddr>,
}

/// What the kernel last told of one direction of the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Nothing yet: a look asks the kernel (`poll(2)`).
    Unknown,
    /// An operation would not block (or would fail, which it then reports).
    Ready,
    /// An operation would block until the socket signals.
    NotReady,
}

impl TcpByteStream {
    /// Wraps a connected socket: puts it in blocking mode (see the type's
    /// documentation) and disables Nagle (each write goes out at once, as
    /// RDMA writes do).
    pub fn new(socket: TcpStream) -> Result<TcpByteStream> {
        socket.set_nonblocking(false).map_err(|source| Error::Os { op: "fcntl(O_NONBLOCK)", source })?;
        TcpByteStream::in_blocking_mode(socket, None)
    }

    /// Wraps a socket `accept` returned (in blocking mode: it does not
    /// inherit the listener's `O_NONBLOCK`) from `peer`.
    pub(crate) fn accepted(socket: TcpStream, peer: std::net::SocketAddr) -> Result<TcpByteStream> {
        TcpByteStream::in_blocking_mode(socket, Some(unmapped(peer)))
    }

    fn in_blocking_mode(socket: TcpStream, peer: Option<std::net::SocketAddr>) -> Result<TcpByteStream> {
        socket.set_nodelay(true).map_err(|source| Error::Os { op: "setsockopt(TCP_NODELAY)", source })?;
        Ok(TcpByteStream {
            socket,
            readable: Known::Unknown,
            writable: Known::Unknown,
            urgent_seen: false,
            input_ended: false,
            peer_closed: false,
            reset: false,
            peer,
        })
    }

    /// Asks the kernel for the directions of `interest` not known yet.
    fn learn(&mut self, interest: u32) -> Result<()> {
        let mut events = 0;
        if interest & ops::READ != 0 && self.readable == Known::Unknown {
            events |= libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP;
        }
        if interest & ops::WRITE != 0 && self.writable == Known::Unknown {
            events |= libc::POLLOUT;
        }
        if events == 0 {
            return Ok(());
        }
        let mut poll_fd = libc::pollfd { fd: self.socket.as_raw_fd(), events, revents: 0 };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        if unsafe { libc::poll(&mut poll_fd, 1, 0) } < 0 {
            return Err(Error::last_os("poll(tcp)"));
        }
        let failed = libc::POLLERR | libc::POLLHUP;
        let known = |ready: bool| if ready { Known::Ready } else { Known::NotReady };
        if events & libc::POLLIN != 0 {
            self.urgent_seen |= poll_fd.revents & libc::POLLPRI != 0;
            self.input_ended |= poll_fd.revents & (libc::POLLRDHUP | failed) != 0;
            self.readable = known(poll_fd.revents & (libc::POLLIN | libc::POLLRDHUP | failed) != 0);
        }
        if events & libc::POLLOUT != 0 {
            self.writable = known(poll_fd.revents & (libc::POLLOUT | failed) != 0);
        }
        Ok(())
    }
}

/// An IPv4 peer of a dual-stack socket as IPv4 (`::ffff:127.0.0.1` is
/// `127.0.0.1`), as the JDK reports it.
fn unmapped(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => {
            v6.to_ipv4_mapped().map_or(addr, |v4| std::net::SocketAddr::new(v4.into(), addr.port()))
        }
        _ => addr,
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
            match sys::send(self.socket.as_raw_fd(), data, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    // Short: the kernel ran out of send space and signals when it frees some.
                    self.writable = if n < data.len() { Known::NotReady } else { Known::Ready };
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = Known::NotReady;
                    return Ok(0);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.writable = Known::Ready; // the next write reports it too
                    return Err(io_error("send", err));
                }
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
            match sys::recv(self.socket.as_raw_fd(), out, libc::MSG_DONTWAIT) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                received => return self.kernel_read_done(received, out.len()),
            }
        }
    }

    fn kernel_socket(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn kernel_read_done(&mut self, received: io::Result<usize>, asked: usize) -> Result<ReadOutcome> {
        match received {
            Ok(0) if asked > 0 => {
                self.peer_closed = true;
                Ok(ReadOutcome::EndOfStream)
            }
            Ok(0) => Ok(ReadOutcome::WouldBlock),
            Ok(n) => {
                // Short: the receive queue is drained, and any arrival
                // signals; unless the read stopped at an urgent mark.
                // Full: more may wait or none; the next look asks (a
                // selector reports no key that a read finds empty).
                self.readable = match n < asked {
                    true if !self.urgent_seen => Known::NotReady,
                    _ => Known::Unknown,
                };
                Ok(ReadOutcome::Data(n))
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.readable = Known::NotReady;
                Ok(ReadOutcome::WouldBlock)
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(ReadOutcome::WouldBlock),
            Err(err) => {
                let err = io_error("recv", err);
                self.reset = matches!(err, Error::ConnectionReset);
                Err(err)
            }
        }
    }

    fn available(&mut self) -> Result<usize> {
        sys::bytes_readable(self.socket.as_raw_fd())
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
        self.writable = Known::Ready; // writes fail from now on
        match self.socket.shutdown(std::net::Shutdown::Write) {
            Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(io_error("shutdown(SHUT_WR)", err)),
            _ => Ok(()),
        }
    }

    /// Ends the connection as a TCP close does: with a reset when received
    /// bytes are left unread (the peer learns they were lost), else with a
    /// FIN after what was written.
    fn close(&mut self) {
        // A read that met the end of stream took every byte there was.
        if !self.peer_closed && self.available().is_ok_and(|unread| unread > 0) {
            self.abort();
            return;
        }
        // Not connected any more: the peer went first, nothing to tell it.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// A FIN after what was written; the file's close when the stream goes
    /// resets the connection if bytes are left unread then, as the kernel's
    /// close of the JDK's file does.
    fn close_while_held(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }

    /// Resets the connection now (the fd stays open until the stream drops,
    /// as a selector may still watch it): the peer's next read fails.
    fn abort(&mut self) {
        if let Err(err) = sys::reset_tcp(self.socket.as_raw_fd()) {
            log::debug!("tcp abort: {err}; closing instead");
            let _ = self.socket.shutdown(std::net::Shutdown::Both);
        }
    }

    fn try_send_urgent(&mut self, byte: u8) -> Result<bool> {
        loop {
            match sys::send(self.socket.as_raw_fd(), &[byte], libc::MSG_OOB | libc::MSG_DONTWAIT) {
                Ok(sent) => return Ok(sent == 1),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = Known::NotReady;
                    return Ok(false);
                }
                Err(err) => return Err(io_error("send(MSG_OOB)", err)),
            }
        }
    }

    fn set_urgent_inline(&mut self, inline: bool) -> Result<()> {
        let on = libc::c_int::from(inline);
        sys::set_int_option(
            self.socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_OOBINLINE,
            on,
            "setsockopt(SO_OOBINLINE)",
        )
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket.local_addr().ok().map(unmapped)
    }

    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer.or_else(|| self.socket.peer_addr().ok().map(unmapped))
    }

    /// What the kernel last reported (see the type's documentation): no
    /// syscall, except once for a direction not known yet.
    fn ready(&mut self, interest: u32) -> Result<u32> {
        self.learn(interest)?;
        self.known_ready(interest)
    }

    fn known_ready(&mut self, interest: u32) -> Result<u32> {
        let mut ready = 0;
        if self.readable == Known::Ready || self.input_ended || self.peer_closed || self.reset {
            ready |= ops::READ;
        }
        if self.writable == Known::Ready {
            ready |= ops::WRITE;
        }
        Ok(ready & interest)
    }

    fn arm(&mut self, _interest: u32) -> Result<()> {
        Ok(()) // the kernel socket signals by itself
    }

    fn signals_by_itself(&self) -> bool {
        true
    }

    fn signalled(&mut self, fd: RawFd, events: u32) {
        if fd != self.socket.as_raw_fd() {
            return;
        }
        let failed = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        self.urgent_seen |= events & libc::EPOLLPRI as u32 != 0;
        self.input_ended |= events & (libc::EPOLLRDHUP as u32 | failed) != 0;
        if events & (libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32 | failed) != 0 {
            self.readable = Known::Ready;
        }
        if events & (libc::EPOLLOUT as u32 | failed) != 0 {
            self.writable = Known::Ready;
        }
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

    /// A look costs no syscall: it reports what the kernel last said (an
    /// operation's outcome, a poll for what was never said, a selector's
    /// signal), so data that arrives unsignalled is not seen by a look.
    #[test]
    fn a_look_reports_what_the_kernel_last_said() {
        let (mut client, mut server) = pair();
        let fd = server.socket.as_raw_fd();
        assert_eq!(server.ready(ops::READ | ops::WRITE).unwrap(), ops::WRITE, "asked once: writable, empty");
        assert_eq!(client.try_write(b"ping").unwrap(), 4);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(server.ready(ops::READ).unwrap(), 0, "no signal yet: the look asked the kernel again");
        server.signalled(fd + 1000, libc::EPOLLIN as u32);
        assert_eq!(server.ready(ops::READ).unwrap(), 0, "another fd's signal");
        server.signalled(fd, libc::EPOLLIN as u32);
        assert_eq!(server.ready(ops::READ).unwrap(), ops::READ);
        let mut buf = [0u8; 16];
        assert_eq!(server.try_read(&mut buf).unwrap(), ReadOutcome::Data(4));
        assert_eq!(server.ready(ops::READ).unwrap(), 0, "a short read drained the socket");

        let chunk = vec![1u8; 1 << 20];
        while client.try_write(&chunk).unwrap() == chunk.len() {}
        assert_eq!(client.ready(ops::WRITE).unwrap(), 0, "a short write filled the socket");
        client.signalled(client.socket.as_raw_fd(), libc::EPOLLOUT as u32);
        assert_eq!(client.ready(ops::WRITE).unwrap(), ops::WRITE);
    }

    /// OpenJDK's SelectAfterRead: a read that took exactly what was there
    /// leaves nothing a selector may report (it reported the key again).
    #[test]
    fn a_read_that_fills_its_buffer_leaves_readiness_to_the_kernel() {
        let (mut client, mut server) = pair();
        assert_eq!(client.try_write(b"pingpong").unwrap(), 8);
        thread::sleep(Duration::from_millis(20));
        server.signalled(server.socket.as_raw_fd(), libc::EPOLLIN as u32);
        let mut half = [0u8; 4];
        assert_eq!(server.try_read(&mut half).unwrap(), ReadOutcome::Data(4));
        assert_eq!(server.ready(ops::READ).unwrap(), ops::READ, "four bytes wait");
        assert_eq!(server.try_read(&mut half).unwrap(), ReadOutcome::Data(4));
        assert_eq!(server.ready(ops::READ).unwrap(), 0, "nothing waits");
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
