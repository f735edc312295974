//! Unix sockets for the shm medium's rendezvous: a client's datagram socket
//! connected to the listener's abstract name, and the nudge a client sends
//! when the listener's queue is full.

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

/// A non-blocking, unnamed datagram socket connected to the socket bound to
/// the abstract name `remote`. Connected, it sends to that socket (the
/// object, not the name) for good: once that socket closes, a send fails
/// with `ECONNREFUSED`, even if another socket took the name since.
///
/// # Errors
/// `connect`'s (`ECONNREFUSED`: no socket has the name).
pub(crate) fn datagram_to(remote: &[u8]) -> std::io::Result<UnixDatagram> {
    let (remote, remote_len) = abstract_addr(remote)?;
    let socket = socket(libc::SOCK_DGRAM)?;
    // SAFETY: a live fd and a socket address of the length given. A datagram connect does not wait.
    if unsafe { libc::connect(socket.as_raw_fd(), (&remote as *const libc::sockaddr_un).cast(), remote_len) }
        < 0
    {
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
    fn a_connected_socket_reaches_the_socket_it_connected_to_and_no_other() {
        let name = b"rdma-nio/test/unix-listener";
        let bind = || UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap();
        let listener = bind();
        let client = datagram_to(name).unwrap();
        fd_passing::send(&client, b"hello", &[]).unwrap();
        let received = fd_passing::receive(&listener, 16, 1).unwrap();
        assert_eq!(received.bytes, b"hello");
        assert!(!received.truncated);
        fd_passing::send(&client, b"too long", &[]).unwrap();
        assert!(
            fd_passing::receive(&listener, 4, 1).unwrap().truncated,
            "a longer message is cut and says so"
        );

        // Another socket takes the name: the connected client does not reach it.
        drop(listener);
        let successor = bind();
        let err = fd_passing::send(&client, b"again", &[]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        assert_eq!(
            fd_passing::receive(&successor, 16, 1).err().map(|e| e.kind()),
            Some(std::io::ErrorKind::WouldBlock)
        );

        let refused = datagram_to(b"rdma-nio/test/nobody").unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
