//! Unix stream sockets with abstract names on both ends: the shm medium's
//! client names itself by the TCP address it holds, so the listener learns
//! the client's port from `accept` (std connects only from an unnamed socket).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::error::check;

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

/// Connects a socket bound to the abstract name `local` to the listener on
/// the abstract name `remote`.
///
/// # Errors
/// `bind`'s (`EADDRINUSE`: another socket has the name) and `connect`'s
/// (`ECONNREFUSED`: no listener has the name).
pub(crate) fn connect_named(local: &[u8], remote: &[u8]) -> std::io::Result<UnixStream> {
    let (local, local_len) = abstract_addr(local)?;
    let (remote, remote_len) = abstract_addr(remote)?;
    // SAFETY: no pointers; a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let as_io = |err: crate::error::Error| std::io::Error::other(err.to_string());
    check("socket(AF_UNIX)", fd).map_err(as_io)?;
    // SAFETY: fd is new and ours.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a live fd and socket addresses of the lengths given.
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_un).cast(), local_len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    loop {
        // SAFETY: as above.
        if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_un).cast(), remote_len) } == 0 {
            return Ok(UnixStream::from(socket));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    #[test]
    fn the_listener_learns_the_clients_name() {
        let listener =
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(b"rdma-nio/test/unix-listener").unwrap())
                .unwrap();
        let _client = connect_named(b"rdma-nio/test/unix-client", b"rdma-nio/test/unix-listener").unwrap();
        let (_, from) = listener.accept().unwrap();
        assert_eq!(from.as_abstract_name(), Some(&b"rdma-nio/test/unix-client"[..]));
        let refused = connect_named(b"rdma-nio/test/unix-client-2", b"rdma-nio/test/nobody").unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
