//! A kernel pipe behind the byte-stream face, for the provider's
//! `java.nio.channels.Pipe`: each end is a stream that only reads (the
//! source) or only writes (the sink), so its channels share the sockets'
//! machinery (blocking waits, selectors) as in the JDK, where pipes and
//! sockets are selectable alike.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{check, Error, Result};
use crate::media::stream::{ops, ByteStream, Interest, ReadOutcome, WaitSource};
use crate::sys::{self, Deadline};

/// One end of a pipe. Its readiness is kept as the kernel last reported it,
/// as the tcp medium's is (see `TcpByteStream`): a short or refused read or
/// write marks it not ready, and the selector's edge-triggered epoll set
/// (`signalled`) or a `poll(2)` for what was never learned says when it is.
pub struct PipeEnd {
    fd: OwnedFd,
    /// The source: reads; else the sink: writes.
    reads: bool,
    /// What the kernel last said of the one direction: `None` not known yet.
    ready: Option<bool>,
    /// The other end is closed (the source reads end of stream, the sink's
    /// writes fail): ready for good.
    other_end_closed: bool,
}

impl PipeEnd {
    /// A new pipe: (source, sink).
    pub fn pair() -> Result<(PipeEnd, PipeEnd)> {
        let mut fds = [-1; 2];
        // SAFETY: fds has room for the two fds pipe2 returns.
        check("pipe2", unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY: both fds are new and ours.
        let [source, sink] = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        let end = |fd, reads| PipeEnd { fd, reads, ready: None, other_end_closed: false };
        Ok((end(source, true), end(sink, false)))
    }

    fn interest(&self) -> u32 {
        if self.reads {
            ops::READ
        } else {
            ops::WRITE
        }
    }

    fn poll_events(&self) -> libc::c_short {
        if self.reads {
            libc::POLLIN
        } else {
            libc::POLLOUT
        }
    }
}

impl ByteStream for PipeEnd {
    fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        if self.reads {
            return Err(Error::InvalidArgument("a pipe's source does not write".into()));
        }
        loop {
            // SAFETY: a live fd and a buffer of data.len() bytes.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n >= 0 {
                // Short: the pipe is full, and freed room signals.
                self.ready = Some(n as usize == data.len());
                return Ok(n as usize);
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    self.ready = Some(false);
                    return Ok(0);
                }
                Some(libc::EPIPE) => {
                    self.other_end_closed = true;
                    return Err(Error::Disconnected);
                }
                _ => return Err(Error::last_os("write(pipe)")),
            }
        }
    }

    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        if !self.reads {
            return Err(Error::InvalidArgument("a pipe's sink does not read".into()));
        }
        loop {
            // SAFETY: a live fd and room for out.len() bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), out.as_mut_ptr().cast(), out.len()) };
            match n {
                0 if !out.is_empty() => {
                    self.other_end_closed = true;
                    return Ok(ReadOutcome::EndOfStream);
                }
                0 => return Ok(ReadOutcome::WouldBlock),
                n if n > 0 => {
                    // Short: drained, and any write signals. Full: the next look asks.
                    self.ready = if (n as usize) < out.len() { Some(false) } else { None };
                    return Ok(ReadOutcome::Data(n as usize));
                }
                _ => match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        self.ready = Some(false);
                        return Ok(ReadOutcome::WouldBlock);
                    }
                    _ => return Err(Error::last_os("read(pipe)")),
                },
            }
        }
    }

    fn available(&mut self) -> Result<usize> {
        sys::bytes_readable(self.fd.as_raw_fd())
    }

    fn wait(&mut self, _interest: Interest, deadline: Deadline) -> Result<()> {
        sys::wait_for("pipe", [(self.fd.as_raw_fd(), self.poll_events())], deadline)?;
        Ok(())
    }

    fn shutdown_output(&mut self) -> Result<()> {
        Ok(()) // a pipe end has one direction, which close ends
    }

    /// Nothing now: the fd closes when the stream drops, once no selector
    /// holds the socket any more (as the JDK defers the close of a registered
    /// pipe end to its deregistration), and the other end then sees it closed.
    /// Blocked threads were woken by the socket's close.
    fn close(&mut self) {}

    fn ready(&mut self, interest: u32) -> Result<u32> {
        let interest = interest & self.interest();
        if interest == 0 {
            return Ok(0);
        }
        if self.ready.is_none() && !self.other_end_closed {
            let mut poll_fd =
                libc::pollfd { fd: self.fd.as_raw_fd(), events: self.poll_events(), revents: 0 };
            // SAFETY: one valid pollfd; a zero timeout never blocks.
            if unsafe { libc::poll(&mut poll_fd, 1, 0) } < 0 {
                return Err(Error::last_os("poll(pipe)"));
            }
            self.other_end_closed |= poll_fd.revents & (libc::POLLHUP | libc::POLLERR) != 0;
            self.ready = Some(poll_fd.revents != 0);
        }
        self.known_ready(interest)
    }

    fn known_ready(&mut self, interest: u32) -> Result<u32> {
        let interest = interest & self.interest();
        Ok(if self.ready == Some(true) || self.other_end_closed { interest } else { 0 })
    }

    fn arm(&mut self, _interest: u32) -> Result<()> {
        Ok(()) // the kernel pipe signals by itself
    }

    fn disarm(&mut self) -> Result<()> {
        Ok(())
    }

    fn signals_by_itself(&self) -> bool {
        true
    }

    fn signalled(&mut self, fd: RawFd, events: u32) {
        if fd != self.fd.as_raw_fd() {
            return;
        }
        let closed = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        self.other_end_closed |= events & closed != 0;
        let wanted = if self.reads { libc::EPOLLIN } else { libc::EPOLLOUT } as u32;
        if events & (wanted | closed) != 0 {
            self.ready = Some(true);
        }
    }

    fn sources(&self, _interest: u32) -> [WaitSource; 2] {
        [(self.fd.as_raw_fd(), self.poll_events()), (-1, 0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

    #[test]
    fn bytes_cross_and_a_closed_sink_ends_the_stream() {
        let (mut source, mut sink) = PipeEnd::pair().unwrap();
        assert_eq!(source.ready(ops::READ).unwrap(), 0, "empty");
        assert_eq!(sink.ready(ops::WRITE).unwrap(), ops::WRITE);
        sink.write_all(b"hello", TIMEOUT).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(source.read(&mut buf, TIMEOUT).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(source.ready(ops::READ).unwrap(), 0, "a short read drained it");
        drop(sink);
        assert_eq!(source.read(&mut buf, TIMEOUT).unwrap(), 0, "end of stream once the sink is gone");
    }

    #[test]
    fn a_full_pipe_waits_for_room_and_a_closed_source_fails_the_writer() {
        let (mut source, mut sink) = PipeEnd::pair().unwrap();
        let chunk = vec![7u8; 1 << 20];
        while sink.try_write(&chunk).unwrap() == chunk.len() {}
        assert_eq!(sink.ready(ops::WRITE).unwrap(), 0, "full");
        let mut buf = vec![0u8; 1 << 20];
        source.read(&mut buf, TIMEOUT).unwrap();
        sink.signalled(sink.sources(ops::WRITE)[0].0, libc::EPOLLOUT as u32);
        assert_eq!(sink.ready(ops::WRITE).unwrap(), ops::WRITE);
        drop(source);
        let err =
            (0..64).find_map(|_| sink.try_write(&chunk).err()).expect("writes to a closed pipe went on");
        assert!(matches!(err, Error::Disconnected), "{err}");
    }
}
