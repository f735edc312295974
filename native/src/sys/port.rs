//! TCP ports held without listening: a medium with no kernel socket of its
//! own (shm) reserves the port it is named by, so that a port means one
//! listener or connection on this host whatever the medium, and an address
//! that is not this host's is refused as TCP refuses it.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::{check, Error, Result};
use crate::sys::sockaddr::{socket_addr, SockAddr};

/// A TCP socket bound to an address and never listening: it holds the port,
/// and a TCP connect to it is refused.
pub(crate) struct ReservedPort {
    _socket: OwnedFd,
    addr: SocketAddr,
}

impl ReservedPort {
    /// Binds `addr` (port 0: one the kernel picks from its ephemeral range).
    ///
    /// # Errors
    /// `Os` naming `bind` with `EADDRINUSE` when a socket holds the port, and
    /// `EADDRNOTAVAIL` when the address is not this host's.
    pub(crate) fn bind(addr: SocketAddr) -> Result<ReservedPort> {
        let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: no pointers; a new fd or -1.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        check("socket(port reservation)", fd)?;
        // SAFETY: fd is new and ours.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut storage = SockAddr::from(addr);
        // SAFETY: a live fd and a socket address of the length given.
        check("bind", unsafe { libc::bind(fd, storage.as_mut_ptr(), storage.len()) })?;
        let mut bound = SockAddr::from(addr);
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: a live fd and room for any socket address.
        check("getsockname", unsafe { libc::getsockname(fd, bound.as_mut_ptr(), &mut len) })?;
        let addr =
            socket_addr(&bound.0).ok_or_else(|| Error::Failed("getsockname: not an IP address".into()))?;
        Ok(ReservedPort { _socket: socket, addr })
    }

    /// The address with the port it holds.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_reserved_port_is_held_and_refuses_connections() {
        let reserved = ReservedPort::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(reserved.addr().port(), 0);
        let taken = TcpListener::bind(reserved.addr()).unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
        let refused = TcpStream::connect(reserved.addr()).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_port_in_use_or_a_foreign_address_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = ReservedPort::bind(listener.local_addr().unwrap()).err().unwrap();
        assert_eq!(err.errno(), Some(libc::EADDRINUSE), "{err}");
        // TEST-NET-3: no host of this test's has it.
        let err = ReservedPort::bind("203.0.113.7:0".parse().unwrap()).err().unwrap();
        assert_eq!(err.errno(), Some(libc::EADDRNOTAVAIL), "{err}");
    }
}
