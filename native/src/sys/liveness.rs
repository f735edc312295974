//! A connection's liveness channel between two processes: one pipe, each
//! side holding one end that it never reads or writes. The kernel reports a
//! pipe's read end hung up once no writer is left and its write end in error
//! once no reader is left, so either side learns that the other's end closed
//! (its process died, or a listener's queue went unaccepted) without a byte
//! sent, and the peer's bytes cannot make the channel look ready either: it
//! is watched for those two conditions only.
//!
//! A pipe and not a Unix socket pair: a Unix socket sent over a Unix socket
//! (SCM_RIGHTS) makes the kernel run its collector of in-flight sockets at
//! later closes of Unix sockets, host-wide (a kernel worker's wake-up; 5,189
//! runs in 3,600 shm connect cycles, when the channel was a socket pair).

use std::os::fd::{OwnedFd, RawFd};

use crate::error::{Error, Result};

/// A new channel: (the end to keep, the end to hand to the peer).
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    let (read, write) = super::pipe()?;
    Ok((write, read))
}

/// `fd`, the end a peer sent, if it is an end of a pipe (it could be anything).
pub(crate) fn from_peer(fd: OwnedFd) -> Option<OwnedFd> {
    super::is_pipe(&fd).then_some(fd)
}

/// The poll(2) events of an end to watch: none, so that only a hang-up or an
/// error (reported whatever is asked) signals it.
pub(crate) const EVENTS: libc::c_short = 0;

/// Whether the peer's end of the channel whose end is `fd` closed. Non-blocking.
pub(crate) fn hung_up(fd: RawFd) -> Result<bool> {
    let mut pollfd = libc::pollfd { fd, events: EVENTS, revents: 0 };
    loop {
        // SAFETY: one live pollfd; no wait.
        match unsafe { libc::poll(&mut pollfd, 1, 0) } {
            -1 if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            -1 => return Err(Error::last_os("poll(liveness)")),
            _ => return Ok(pollfd.revents & (libc::POLLHUP | libc::POLLERR) != 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn each_end_tells_when_the_other_closes_and_bytes_do_not_signal() {
        let (kept, handed) = pair().unwrap();
        assert!(!hung_up(kept.as_raw_fd()).unwrap() && !hung_up(handed.as_raw_fd()).unwrap(), "both open");
        // The side holding the write end can fill the pipe: the reader's end must not signal.
        // SAFETY: writing a live byte to a pipe we hold.
        assert_eq!(unsafe { libc::write(kept.as_raw_fd(), [1u8].as_ptr().cast(), 1) }, 1);
        assert!(!hung_up(handed.as_raw_fd()).unwrap(), "a byte in the pipe is no hang-up");
        drop(handed);
        assert!(hung_up(kept.as_raw_fd()).unwrap(), "the reader closed: the writer's end reports it");

        let (kept, handed) = pair().unwrap();
        drop(kept);
        assert!(hung_up(handed.as_raw_fd()).unwrap(), "the writer closed: the reader's end reports it");
    }

    #[test]
    fn only_a_pipe_passes_for_a_peers_end() {
        let (kept, _handed) = pair().unwrap();
        assert!(from_peer(kept).is_some());
        let (socket, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(from_peer(OwnedFd::from(socket)).is_none());
        assert!(from_peer(crate::sys::eventfd().unwrap()).is_none());
    }
}
