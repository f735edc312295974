//! TCP ports held without listening: a medium with no kernel socket of its
//! own (shm) reserves the port it is named by, so that a port means one
//! listener or connection on this host whatever the medium, and an address
//! that is not this host's is refused as TCP refuses it.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::{check, Error, Result};
use crate::sys::sockaddr::{socket_addr, SockAddr};
use crate::sys::{self, Deadline};

/// A TCP socket bound to an address and never listening: it holds the port,
/// and a TCP connect to it is refused.
pub(crate) struct ReservedPort {
    socket: OwnedFd,
    addr: SocketAddr,
}

impl ReservedPort {
    /// Binds `addr` (port 0: one the kernel picks from its ephemeral range).
    ///
    /// # Errors
    /// `Os` naming `bind` with `EADDRINUSE` when a socket holds the port, and
    /// `EADDRNOTAVAIL` when the address is not this host's.
    pub(crate) fn bind(addr: SocketAddr) -> Result<ReservedPort> {
        let (socket, addr) = bound_socket(addr, false)?;
        Ok(ReservedPort { socket, addr })
    }

    /// The address with the port it holds.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lets the port go now, before the reservation drops (see `sys::pre_close`).
    pub(crate) fn release(&self) -> Result<()> {
        sys::pre_close(self.socket.as_raw_fd())
    }
}

/// Starts a non-blocking TCP connect to `peer` from the reserved socket of
/// `from` (a client's bind honoured; the stream shares it through a
/// duplicate fd, so the reservation is to be dropped once connected) or from
/// a new socket. The socket is connecting, or connected already; it is
/// writable once the connect is done, and `connect_outcome` then tells how.
///
/// # Errors
/// A connect that failed at once (`ConnectionRefused` on loopback, say).
pub(crate) fn start_tcp_connect(from: Option<&ReservedPort>, peer: SocketAddr) -> std::io::Result<OwnedFd> {
    let as_io = |err: Error| std::io::Error::other(err.to_string());
    let socket = match from {
        Some(from) => {
            let socket = from.socket.try_clone()?;
            sys::set_nonblocking("fcntl(O_NONBLOCK)", socket.as_raw_fd()).map_err(as_io)?;
            socket
        }
        None => {
            let family = if peer.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            // SAFETY: no pointers; a new fd or -1.
            let fd = unsafe {
                libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
            };
            check("socket(tcp)", fd).map_err(as_io)?;
            // SAFETY: fd is new and ours.
            unsafe { OwnedFd::from_raw_fd(fd) }
        }
    };
    // An IPv6 socket (bound to "::") reaches IPv4 peers by their mapped address.
    let peer = match (peer, from) {
        (SocketAddr::V4(v4), Some(from)) if from.addr.is_ipv6() => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        (peer, _) => peer,
    };
    let mut storage = SockAddr::from(peer);
    // SAFETY: a live fd and a socket address of the length given.
    if unsafe { libc::connect(socket.as_raw_fd(), storage.as_mut_ptr(), storage.len()) } < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(socket)
}

/// How a connect `start_tcp_connect` began ended, once its socket is writable.
pub(crate) fn connect_outcome(socket: &OwnedFd) -> std::io::Result<()> {
    match super::int_socket_option(socket, libc::SO_ERROR)? {
        0 => Ok(()),
        error => Err(std::io::Error::from_raw_os_error(error)),
    }
}

/// A TCP connect to `peer` (see `start_tcp_connect`) made while the caller
/// waits: it gives up after `timeout`, and with `Interrupted` once `waker`
/// (an eventfd, say a close's) is readable.
///
/// # Errors
/// `ConnectionRefused`, `TimedOut`, `Interrupted` and the other kinds of a
/// failed connect.
pub(crate) fn connect_tcp(
    from: Option<&ReservedPort>,
    peer: SocketAddr,
    timeout: Option<Duration>,
    waker: Option<RawFd>,
) -> std::io::Result<TcpStream> {
    let socket = start_tcp_connect(from, peer)?;
    let sources = [(socket.as_raw_fd(), libc::POLLOUT), (waker.unwrap_or(-1), libc::POLLIN)];
    let woken = sys::wait_for("tcp connect", sources, Deadline::after(timeout)).map_err(|err| match err {
        Error::TimedOut { .. } => std::io::Error::from(std::io::ErrorKind::TimedOut),
        other => std::io::Error::other(other.to_string()),
    })?;
    if woken[1] && !woken[0] {
        return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
    }
    connect_outcome(&socket)?;
    Ok(TcpStream::from(socket))
}

/// A TCP socket bound to `addr`, and the address it got. A wildcard address
/// (`0.0.0.0` or `::`) binds IPv6's with IPv4 mapped in, as the JDK's sockets
/// do, so that IPv4 and IPv6 peers reach it alike (on a host without IPv6,
/// IPv4's). `reuse`: `SO_REUSEADDR`, as listeners have it.
fn bound_socket(addr: SocketAddr, reuse: bool) -> Result<(OwnedFd, SocketAddr)> {
    if addr.ip().is_unspecified() && addr.is_ipv4() {
        let any6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), addr.port());
        match bound_socket(any6, reuse) {
            Err(err) if err.errno() == Some(libc::EAFNOSUPPORT) => {}
            done => return done,
        }
    }
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: no pointers; a new fd or -1.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    check("socket(tcp)", fd)?;
    // SAFETY: fd is new and ours.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    if addr.is_ipv6() {
        sys::set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0, "setsockopt(IPV6_V6ONLY)")?;
    }
    if reuse {
        sys::set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)")?;
    }
    let mut storage = SockAddr::from(addr);
    // SAFETY: a live fd and a socket address of the length given.
    check("bind", unsafe { libc::bind(fd, storage.as_mut_ptr(), storage.len()) })?;
    let mut bound = SockAddr::from(addr);
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a live fd and room for any socket address.
    check("getsockname", unsafe { libc::getsockname(fd, bound.as_mut_ptr(), &mut len) })?;
    let addr = socket_addr(&bound.0).ok_or_else(|| Error::Failed("getsockname: not an IP address".into()))?;
    Ok((socket, addr))
}

/// A listening TCP socket on `addr` (non-blocking); a wildcard address
/// listens on IPv4 and IPv6 alike (see `bound_socket`).
///
/// # Errors
/// `Os` naming `bind` or `listen`.
pub(crate) fn tcp_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let (socket, _) = bound_socket(addr, true)?;
    // SAFETY: a live, bound fd.
    check("listen(tcp)", unsafe { libc::listen(socket.as_raw_fd(), 128) })?;
    sys::set_nonblocking("fcntl(tcp listener)", socket.as_raw_fd())?;
    Ok(std::net::TcpListener::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// As the JDK's: a listener on the wildcard address takes IPv4 and IPv6
    /// clients (it took IPv4's only: `[::1]` was refused).
    #[test]
    fn a_wildcard_listener_takes_ipv4_and_ipv6_clients() {
        let listener = tcp_listener("0.0.0.0:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_unspecified(), "{addr}");
        for client in ["127.0.0.1", "::1"] {
            TcpStream::connect((client, addr.port())).unwrap();
        }
        let reserved = ReservedPort::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        assert!(TcpListener::bind(("::1", reserved.addr().port())).is_err(), "the port is held for IPv6 too");
    }

    #[test]
    fn a_reserved_port_connects_from_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let reserved = ReservedPort::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stream = connect_tcp(Some(&reserved), listener.local_addr().unwrap(), None, None).unwrap();
        assert_eq!(stream.local_addr().unwrap(), reserved.addr());
        let (_, client) = listener.accept().unwrap();
        assert_eq!(client, reserved.addr());

        let closed = ReservedPort::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let refused = connect_tcp(Some(&closed), reserved.addr(), None, None).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        let refused = connect_tcp(None, reserved.addr(), None, None).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

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
