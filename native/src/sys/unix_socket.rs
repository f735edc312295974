//! Unix sockets for the shm medium's rendezvous: a client's datagram socket
//! named by the TCP address it holds (so the listener learns the client's
//! port from each message's sender) and connected to the listener's abstract
//! name, and the nudge a client sends when the listener's queue is full.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

/// A `sockaddr_un` for the abstract `name` (a leading NUL, no terminator).
fn abstract_addr(name: &[u8]) -> std::io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.len() + 1 > addr.sun_path.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, &byte) in addr.sun_path[1..].iter_mut().zip(name) {
        *slot = byte as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((addr, len as libc::socklen_t))
}

/// A new non-blocking, close-on-exec Unix socket of `kind`.
fn socket(kind: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: no pointers; a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking datagram socket bound to the abstract name `local` and
/// connected to the socket bound to the abstract name `remote`.
///
/// # Errors
/// `bind`'s (`EADDRINUSE`: another socket has the name) and `connect`'s
/// (`ECONNREFUSED`: no socket has the name).
pub(crate) fn datagram_to(local: &[u8], remote: &[u8]) -> std::io::Result<UnixDatagram> {
    let (local, local_len) = abstract_addr(local)?;
    let (remote, remote_len) = abstract_addr(remote)?;
    let socket = socket(libc::SOCK_DGRAM)?;
    let fd = socket.as_raw_fd();
    // SAFETY: a live fd and socket addresses of the lengths given.
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_un).cast(), local_len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above. A datagram connect does not wait.
    if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_un).cast(), remote_len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixDatagram::from(socket))
}

/// Sends an empty datagram to the socket bound to the abstract name
/// `remote`, from a socket of its own, without waiting (a full queue of such
/// nudges needs no other).
///
/// # Errors
/// `sendto`'s (`ECONNREFUSED`: no socket has the name).
pub(crate) fn nudge(remote: &[u8]) -> std::io::Result<()> {
    let (remote, remote_len) = abstract_addr(remote)?;
    let socket = socket(libc::SOCK_DGRAM)?;
    // SAFETY: a live fd, no payload, and a socket address of the length given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            std::ptr::null(),
            0,
            0,
            (&remote as *const libc::sockaddr_un).cast(),
            remote_len,
        )
    };
    match sent {
        0.. => Ok(()),
        _ => match std::io::Error::last_os_error() {
            err if err.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            err => Err(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd_passing;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;

    #[test]
    fn the_listener_learns_the_senders_name() {
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(b"rdma-nio/test/unix-listener").unwrap())
                .unwrap();
        let client = datagram_to(b"rdma-nio/test/unix-client", b"rdma-nio/test/unix-listener").unwrap();
        fd_passing::send(&client, 7, &[]).unwrap();
        let received = fd_passing::receive(&listener, 1).unwrap();
        assert_eq!(received.byte, Some(7));
        assert_eq!(received.sender.as_deref(), Some(&b"rdma-nio/test/unix-client"[..]));
        let refused = datagram_to(b"rdma-nio/test/unix-client-2", b"rdma-nio/test/nobody").unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
