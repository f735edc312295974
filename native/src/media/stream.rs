//! The byte-stream face every medium shows (`shm::ShmStream`,
//! `rdma_stream::RdmaStream`): ordered and lossless like a TCP socket, with
//! partial reads and writes. Non-blocking calls report "would block"; the
//! blocking ones are built once here from them and the medium's own wait.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::rdma::closer::{Close, Closing};
use crate::rdma::completions::CompletionChannel;
use crate::sys::Deadline;

/// What a non-blocking read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were read (never 0).
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The peer closed and everything it wrote was read.
    EndOfStream,
}

/// What a waiting caller needs the stream to be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Read a byte, or learn of end of stream.
    Read,
    /// Write a byte, or learn that the peer closed.
    Write,
}

/// Readiness bits, numbered as `java.nio.channels.SelectionKey`'s operations
/// so that they cross to Java unchanged.
pub mod ops {
    /// A read would return data, end of stream or an error.
    pub const READ: u32 = 1;
    /// A write would take bytes or report an error.
    pub const WRITE: u32 = 4;
    /// A pending connect has finished, one way or the other.
    pub const CONNECT: u32 = 8;
    /// An accept would return a connection.
    pub const ACCEPT: u32 = 16;
}

pub use crate::sys::WaitSource;

/// How an RDMA peer said it closed, before it disconnected: the disconnect
/// alone cannot tell a clean close from a reset, as TCP's FIN and RST do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PeerClose {
    /// Nothing said (yet, or ever: a peer that died, a failed queue pair).
    #[default]
    Unsaid,
    /// It closed having read everything sent to it.
    Clean,
    /// It closed abortively, or leaving bytes unread: reads fail once what
    /// came before is read, writes fail.
    Reset,
}

impl PeerClose {
    /// What a write of `len` bytes does once the peer disconnected: after its
    /// clean close the first is taken and dropped, up to `room` bytes (a TCP
    /// peer answers it with a reset, and a send buffer takes no more), and the
    /// later ones fail, as all do after a reset or a disconnect that said
    /// nothing. `wrote` remembers the first.
    pub(crate) fn write_after_disconnect(self, wrote: &mut bool, len: usize, room: usize) -> Result<usize> {
        match self {
            PeerClose::Clean if !std::mem::replace(wrote, true) => Ok(len.min(room)),
            _ => Err(Error::Disconnected),
        }
    }
}

/// A byte stream to one peer.
///
/// Besides reads and writes, a stream can be waited for from outside, many at
/// a time (the selector): `ready` says what it can do now, `arm` prepares the
/// `sources` to signal any change, and `disarm` consumes the signals. A waiter
/// arms, asks `ready` once more, and sleeps only if still nothing is ready.
pub trait ByteStream {
    /// Writes as much of `data` as there is room for; 0 means it would block.
    ///
    /// # Errors
    /// `Disconnected` once the peer has closed (shm: after the one write a
    /// peer whose stream is gone takes, as over TCP); a protocol violation by
    /// the peer; a failure of the medium.
    fn try_write(&mut self, data: &[u8]) -> Result<usize>;

    /// Reads what has arrived, up to `out.len()` bytes.
    ///
    /// # Errors
    /// A protocol violation by the peer; a failure of the medium.
    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome>;

    /// The kernel socket the stream is, if it is one: a blocking read may
    /// then sleep in its `recv` (without `MSG_DONTWAIT`) outside the
    /// socket's lock, and hands what it got to `kernel_read_done`.
    fn kernel_socket(&self) -> Option<RawFd> {
        None
    }

    /// Takes what a `recv` of up to `asked` bytes on `kernel_socket` got, as
    /// `try_read` takes its own (an interrupted one would have blocked).
    ///
    /// # Errors
    /// The socket's failure; on a stream that is no kernel socket, always.
    fn kernel_read_done(&mut self, _received: std::io::Result<usize>, _asked: usize) -> Result<ReadOutcome> {
        Err(Error::Failed("a kernel read on a stream that is no kernel socket".into()))
    }

    /// How many bytes a read returns now without waiting, at least (the
    /// socket adaptor's `available()`): exact where the kernel keeps the
    /// bytes (`FIONREAD`), the next message or record on the other media.
    ///
    /// # Errors
    /// A protocol violation by the peer; a failure of the medium.
    fn available(&mut self) -> Result<usize>;

    /// Sleeps until `interest` can make progress (it may wake early: callers
    /// retry), or fails with `TimedOut` at the deadline.
    fn wait(&mut self, interest: Interest, deadline: Deadline) -> Result<()>;

    /// Ends our direction (a half close): the peer reads end of stream after
    /// the last byte written; reading goes on. Writing after it is an error.
    fn shutdown_output(&mut self) -> Result<()>;

    /// Closes both directions now: the peer reads end of stream after what was
    /// written. The resources stay until the stream drops, so its fds remain
    /// valid for whoever watches them.
    fn close(&mut self);

    /// Closes while a selector still holds the socket, whose stream then goes
    /// at the selector's next select: as the JDK's channel closed while
    /// registered, only the output ends now, so the peer reads the end and
    /// its writes are taken till then; bytes left unread when the stream
    /// goes reset the connection. Elsewhere as `close`.
    fn close_while_held(&mut self) {
        self.close();
    }

    /// Moves a close on without waiting; true once it is complete. Only an
    /// RDMA stream may have more to do after `close` (`rdma::closer`).
    fn close_complete(&mut self) -> bool {
        true
    }

    /// Closes abortively (`SO_LINGER` 0): what is not yet delivered may be
    /// dropped, and the peer's reads and writes fail with `ConnectionReset`
    /// where the medium can tell it (TCP, shm); elsewhere as `close`.
    fn abort(&mut self) {
        self.close();
    }

    /// Sends `byte` as urgent (out-of-band) data; false when there is no
    /// room now. Only TCP has urgent data: the other media fail.
    fn try_send_urgent(&mut self, _byte: u8) -> Result<bool> {
        Err(Error::Failed("urgent data: this medium has none".into()))
    }

    /// Whether urgent data the peer sends is read in line with the rest
    /// (`SO_OOBINLINE`), else dropped. Nothing to do where none arrives.
    fn set_urgent_inline(&mut self, _inline: bool) -> Result<()> {
        Ok(())
    }

    /// The datagram socket this is, if it is one (its own calls go past the face).
    fn datagram(&mut self) -> Option<&mut crate::media::datagram::DatagramSocket> {
        None
    }

    /// The local address, when the medium has one.
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// The peer's address, when the medium knows it.
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Makes progress without blocking and returns which of the `interest`
    /// operations (`ops::READ`, `ops::WRITE`) would not block now. An error
    /// here is the stream's failure, which the next read or write reports.
    fn ready(&mut self, interest: u32) -> Result<u32>;

    /// What `ready` would say, without a syscall: a medium whose readiness is
    /// the kernel's says not ready for a direction it has not heard of since
    /// its last operation. A thread about to sleep on the kernel's fd looks
    /// with this (the sleep itself returns at once for what is ready).
    fn known_ready(&mut self, interest: u32) -> Result<u32> {
        self.ready(interest)
    }

    /// Asks the sources to signal the next change that may matter to `interest`.
    fn arm(&mut self, interest: u32) -> Result<()>;

    /// Ends a sleep prepared by `arm`: consumes what the sources signalled.
    fn disarm(&mut self) -> Result<()>;

    /// Ends an arming whose sources an edge-triggered epoll set watched (a
    /// selector's): what only a level-triggered wait would see again need not
    /// be consumed now (a later blocking wait consumes it, or wakes once for it).
    fn disarm_watched(&mut self) -> Result<()> {
        self.disarm()
    }

    /// The fds that signal a change while armed, with the events to watch for `interest`.
    fn sources(&self, interest: u32) -> [WaitSource; 2];

    /// Whether `ready` changes only after a signal of the sources (a kernel
    /// socket's readiness, as the kernel last reported it): then looking
    /// again without one is useless, and a waiter sleeps at once.
    fn signals_by_itself(&self) -> bool {
        false
    }

    /// A selector's epoll set reported `events` (`EPOLL*` bits) for the
    /// source `fd`: what the medium keeps of the kernel's readiness is updated.
    fn signalled(&mut self, _fd: RawFd, _events: u32) {}

    /// An fd that reports a hang-up or an error, and stays so (watch it
    /// level-triggered, for nothing else), once the peer may be gone without
    /// closing: its process died. -1 when
    /// the medium has none (its other sources report a dead peer) or the
    /// peer is known to be gone already.
    fn liveness_fd(&self) -> RawFd {
        -1
    }

    /// Looks whether the peer is gone, after `liveness_fd` signalled; a gone
    /// peer reads as closed from then on.
    fn check_liveness(&mut self) -> Result<()> {
        Ok(())
    }

    /// The channel of the completion queue the stream shares with others
    /// (an RDMA stream's), which whoever waits for it must watch too: a
    /// sleeping thread brackets its sleep with `sleep_begins` and `sleep_ends`,
    /// a selector routes it when it collects signals.
    #[doc(hidden)]
    fn completion_channel(&self) -> Option<CompletionChannel> {
        None
    }

    /// Writes all of `data`, waiting for room as needed.
    fn write_all(&mut self, mut data: &[u8], timeout: Option<Duration>) -> Result<()> {
        let deadline = Deadline::after(timeout);
        while !data.is_empty() {
            let n = self.try_write(data)?;
            data = &data[n..];
            if n == 0 {
                self.wait(Interest::Write, deadline)?;
            }
        }
        Ok(())
    }

    /// Fills `out` completely, waiting as needed.
    ///
    /// # Errors
    /// `Disconnected` when the stream ends first.
    fn read_exact(&mut self, mut out: &mut [u8], timeout: Option<Duration>) -> Result<()> {
        let deadline = Deadline::after(timeout);
        while !out.is_empty() {
            match self.try_read(out)? {
                ReadOutcome::Data(n) => out = &mut out[n..],
                ReadOutcome::EndOfStream => return Err(Error::Disconnected),
                ReadOutcome::WouldBlock => self.wait(Interest::Read, deadline)?,
            }
        }
        Ok(())
    }

    /// Reads at least one byte, waiting while there is none; `Ok(0)` is end of stream.
    fn read(&mut self, out: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        let deadline = Deadline::after(timeout);
        loop {
            match self.try_read(out)? {
                ReadOutcome::Data(n) => return Ok(n),
                ReadOutcome::EndOfStream => return Ok(0),
                ReadOutcome::WouldBlock => self.wait(Interest::Read, deadline)?,
            }
        }
    }
}

/// The body of a `ByteStream` impl for a type that dereferences to a stream:
/// every call goes to the stream (`**self`).
macro_rules! forward_byte_stream {
    () => {
        fn try_write(&mut self, data: &[u8]) -> $crate::error::Result<usize> {
            (**self).try_write(data)
        }

        fn try_read(&mut self, out: &mut [u8]) -> $crate::error::Result<$crate::media::stream::ReadOutcome> {
            (**self).try_read(out)
        }

        fn kernel_socket(&self) -> Option<std::os::fd::RawFd> {
            (**self).kernel_socket()
        }

        fn kernel_read_done(
            &mut self,
            received: std::io::Result<usize>,
            asked: usize,
        ) -> $crate::error::Result<$crate::media::stream::ReadOutcome> {
            (**self).kernel_read_done(received, asked)
        }

        fn wait(
            &mut self,
            interest: $crate::media::stream::Interest,
            deadline: $crate::sys::Deadline,
        ) -> $crate::error::Result<()> {
            (**self).wait(interest, deadline)
        }

        fn shutdown_output(&mut self) -> $crate::error::Result<()> {
            (**self).shutdown_output()
        }

        fn close(&mut self) {
            (**self).close()
        }

        fn close_while_held(&mut self) {
            (**self).close_while_held()
        }

        fn close_complete(&mut self) -> bool {
            (**self).close_complete()
        }

        fn abort(&mut self) {
            (**self).abort()
        }

        fn try_send_urgent(&mut self, byte: u8) -> $crate::error::Result<bool> {
            (**self).try_send_urgent(byte)
        }

        fn set_urgent_inline(&mut self, inline: bool) -> $crate::error::Result<()> {
            (**self).set_urgent_inline(inline)
        }

        fn datagram(&mut self) -> Option<&mut $crate::media::datagram::DatagramSocket> {
            (**self).datagram()
        }

        fn local_addr(&self) -> Option<std::net::SocketAddr> {
            (**self).local_addr()
        }

        fn peer_addr(&self) -> Option<std::net::SocketAddr> {
            (**self).peer_addr()
        }

        fn available(&mut self) -> $crate::error::Result<usize> {
            (**self).available()
        }

        fn ready(&mut self, interest: u32) -> $crate::error::Result<u32> {
            (**self).ready(interest)
        }

        fn known_ready(&mut self, interest: u32) -> $crate::error::Result<u32> {
            (**self).known_ready(interest)
        }

        fn arm(&mut self, interest: u32) -> $crate::error::Result<()> {
            (**self).arm(interest)
        }

        fn disarm(&mut self) -> $crate::error::Result<()> {
            (**self).disarm()
        }

        fn disarm_watched(&mut self) -> $crate::error::Result<()> {
            (**self).disarm_watched()
        }

        fn sources(&self, interest: u32) -> [$crate::media::stream::WaitSource; 2] {
            (**self).sources(interest)
        }

        fn signals_by_itself(&self) -> bool {
            (**self).signals_by_itself()
        }

        fn signalled(&mut self, fd: std::os::fd::RawFd, events: u32) {
            (**self).signalled(fd, events)
        }

        fn liveness_fd(&self) -> std::os::fd::RawFd {
            (**self).liveness_fd()
        }

        fn check_liveness(&mut self) -> $crate::error::Result<()> {
            (**self).check_liveness()
        }

        fn completion_channel(&self) -> Option<$crate::rdma::completions::CompletionChannel> {
            (**self).completion_channel()
        }
    };
}

/// A closing RDMA stream (`RdmaStream`, `SendStream`) is its stream.
impl<S: ByteStream + Close> ByteStream for Closing<S> {
    forward_byte_stream!();
}

/// A boxed stream (`transport::Stream`, whatever its medium) is a stream.
impl<S: ByteStream + ?Sized> ByteStream for Box<S> {
    forward_byte_stream!();
}
