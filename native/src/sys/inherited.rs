//! The socket a launcher (inetd, systemd's `Accept=yes`) hands a process as
//! its standard input, behind `System.inheritedChannel()`: what fd 0 is, a
//! duplicate of it to make a channel of, and the detaching of the standard
//! streams once that channel closes (they point at /dev/null then, so the
//! socket's last reference goes with the channel), as the JDK does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{check, Error, Result};

/// What fd 0 is, as a duplicate of it (close-on-exec, the original untouched).
pub(crate) enum StdinSocket {
    /// A connected TCP socket.
    Connection(OwnedFd),
    /// A TCP socket that is not connected: a listener.
    Listener(OwnedFd),
    /// A UDP socket; `ipv6`: its family.
    Datagram { fd: OwnedFd, ipv6: bool },
    /// A socket of another family (a Unix domain socket).
    OtherFamily,
}

/// The socket on fd 0, or `None` when fd 0 is closed or not a socket.
pub(crate) fn stdin_socket() -> Result<Option<StdinSocket>> {
    // SAFETY: no pointers; a new fd (at 3 or above) or -1.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EBADF) => Ok(None),
            _ => Err(Error::last_os("fcntl(0, F_DUPFD_CLOEXEC)")),
        };
    }
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let Some(kind) = super::socket_option(&fd, libc::SO_TYPE)? else {
        return Ok(None); // not a socket
    };
    let family = super::socket_option(&fd, libc::SO_DOMAIN)?.unwrap_or(libc::AF_UNSPEC);
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Ok(Some(StdinSocket::OtherFamily));
    }
    Ok(match kind {
        libc::SOCK_STREAM if has_peer(&fd)? => Some(StdinSocket::Connection(fd)),
        libc::SOCK_STREAM => Some(StdinSocket::Listener(fd)),
        libc::SOCK_DGRAM => Some(StdinSocket::Datagram { fd, ipv6: family == libc::AF_INET6 }),
        _ => None,
    })
}

fn has_peer(fd: &OwnedFd) -> Result<bool> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a live fd and room for any socket address.
    if unsafe {
        libc::getpeername(fd.as_raw_fd(), (&mut peer as *mut libc::sockaddr_storage).cast(), &mut len)
    } == 0
    {
        return Ok(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOTCONN) => Ok(false),
        _ => Err(Error::last_os("getpeername(inherited fd)")),
    }
}

/// Points fds 0, 1 and 2 at /dev/null: the standard streams no longer hold
/// the inherited socket, which closes with its channel.
pub(crate) fn detach_std_streams() -> Result<()> {
    // SAFETY: a NUL-terminated path; a new fd or -1.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    check("open(/dev/null)", null)?;
    // SAFETY: null is new and ours.
    let null = unsafe { OwnedFd::from_raw_fd(null) };
    for fd in 0..=2 {
        // SAFETY: both fds are valid; dup2 replaces the standard stream atomically.
        check("dup2(/dev/null)", unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    }
    Ok(())
}
