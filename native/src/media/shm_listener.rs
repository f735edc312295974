//! Rendezvous for the shm medium by address, as TCP and RDMA have it: a
//! listener on IP:port is an abstract Unix socket named after the port (in the
//! network namespace, so nothing on disk). The port alone, because every local
//! address reaches a listener bound to the wildcard address, as with TCP; two
//! listeners on one port and different local addresses cannot both offer shm.
//! A listener alone on its address also holds its TCP port (`ReservedPort`),
//! so that port 0 takes a port the kernel picks, a port TCP uses is refused,
//! and so is an address that is not this host's.
//! Accepting a client means
//! creating a fresh region with its doorbells and handing the client its fds
//! with SCM_RIGHTS. The listener chooses the rings' shape. A client holds a
//! TCP port for the connection's life too and names its Unix socket after it
//! (`client_name`), so both ends report the connection by the client's port,
//! as over TCP.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self, UnixListener, UnixStream};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::media::ring::RingConfig;
use crate::media::shm::{ShmFds, ShmStream};
use crate::sys::port::ReservedPort;
use crate::sys::{self, fd_passing, Deadline};

/// The first byte of a handover: the rendezvous protocol's version.
const HANDOVER_VERSION: u8 = 1;

/// The abstract socket name of the shm listener on `addr`.
fn listener_name(addr: SocketAddr) -> String {
    format!("rdma-nio/shm/port/{}", addr.port())
}

/// The abstract socket name of a client that holds the TCP address `local`:
/// the listener reads the client's address from it.
const CLIENT_NAME_PREFIX: &str = "rdma-nio/shm/client/";

fn client_name(local: SocketAddr) -> String {
    format!("{CLIENT_NAME_PREFIX}{local}")
}

/// The address a client's socket name gives (none for an unnamed or foreign one).
fn client_addr(name: &net::SocketAddr) -> Option<SocketAddr> {
    let name = std::str::from_utf8(name.as_abstract_name()?).ok()?;
    name.strip_prefix(CLIENT_NAME_PREFIX)?.parse().ok()
}

/// Hands out shared-memory streams to local clients that connect to an address.
pub struct ShmListener {
    socket: UnixListener,
    addr: SocketAddr,
    config: RingConfig,
    /// The TCP port it holds, when no TCP listener beside it does.
    _port: Option<ReservedPort>,
}

impl ShmListener {
    /// Listens for shm clients of `addr`, giving each a region of two rings
    /// shaped by `config`, and holds the address's TCP port (port 0: one the
    /// kernel picks).
    ///
    /// # Errors
    /// `Os` naming `bind` when a TCP socket holds the port or the address is
    /// not this host's (`EADDRINUSE`, `EADDRNOTAVAIL`), and naming
    /// `bind(shm listener)` when another shm listener has the port.
    pub fn bind(addr: SocketAddr, config: RingConfig) -> Result<ShmListener> {
        let port = ReservedPort::bind(addr)?;
        let mut listener = ShmListener::bind_beside_tcp(port.addr(), config)?;
        listener._port = Some(port);
        Ok(listener)
    }

    /// Listens for shm clients of `addr`, whose TCP port a TCP listener of
    /// the same `StreamListener` holds.
    pub(crate) fn bind_beside_tcp(addr: SocketAddr, config: RingConfig) -> Result<ShmListener> {
        let name = net::SocketAddr::from_abstract_name(listener_name(addr).as_bytes())
            .map_err(|source| Error::Os { op: "shm socket name", source })?;
        let socket = UnixListener::bind_addr(&name)
            .map_err(|source| Error::Os { op: "bind(shm listener)", source })?;
        socket.set_nonblocking(true).map_err(|source| Error::Os { op: "fcntl(shm listener)", source })?;
        Ok(ShmListener { socket, addr, config, _port: None })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for a client, creates its region and hands it over.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<ShmStream> {
        let deadline = Deadline::after(timeout);
        loop {
            if let Some(stream) = self.try_accept()? {
                return Ok(stream);
            }
            sys::wait_readable("shm accept", [self.socket.as_raw_fd()], deadline)?;
        }
    }

    /// The fd that becomes readable when a client is waiting.
    pub(crate) fn socket_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Serves a waiting client, if there is one, without waiting.
    pub(crate) fn try_accept(&self) -> Result<Option<ShmStream>> {
        let (client, name) = loop {
            match self.socket.accept() {
                Ok(accepted) => break accepted,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::Os { op: "accept(shm listener)", source }),
            }
        };
        client.set_nonblocking(true).map_err(|source| Error::Os { op: "fcntl(shm liveness)", source })?;
        // The client gets its own copies of the fds from the kernel.
        let (stream, ()) = ShmStream::create_with(self.config, |fds| {
            send_fds(
                &client,
                &[fds.region.as_raw_fd(), fds.doorbells[0].as_raw_fd(), fds.doorbells[1].as_raw_fd()],
            )
        })?;
        // The socket stays, to tell of the client's death.
        let stream = stream.with_liveness(client);
        // A client named by the address it holds (another process could claim
        // a port it does not hold: a local peer's port is a name, not a proof).
        Ok(Some(match client_addr(&name) {
            Some(client) => {
                // A wildcard listener's connection is on the address the client reached.
                let ip = if self.addr.ip().is_unspecified() { client.ip() } else { self.addr.ip() };
                stream.with_addresses(SocketAddr::new(ip, self.addr.port()), client, None)
            }
            None => stream,
        }))
    }
}

impl ShmStream {
    /// Connects to the shm listener on `addr` (a process on this host), from
    /// the TCP address `from` holds (a client's bind) or from a port held for
    /// the connection's life: a connection is named by a port of its own on
    /// both ends, as over TCP.
    ///
    /// # Errors
    /// `ConnectionRefused` when no shm listener has the address.
    pub fn connect(
        addr: SocketAddr,
        from: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Result<ShmStream> {
        Self::connect_wakeable(addr, from, timeout, None)
    }

    /// `connect`, which a signal on `waker` (readable) ends with `Closed`
    /// while it waits for the listener's answer: a blocking connect in the
    /// caller's thread that a close must wake.
    pub(crate) fn connect_wakeable(
        addr: SocketAddr,
        from: Option<SocketAddr>,
        timeout: Option<Duration>,
        waker: Option<RawFd>,
    ) -> Result<ShmStream> {
        let mut handover = ShmHandover::start(addr, from, Deadline::after(timeout))?;
        loop {
            if let Some(stream) = handover.try_finish()? {
                return Ok(stream);
            }
            let waiting = [handover.fd(), waker.unwrap_or(-1)];
            let [answered, woken] = sys::wait_readable("shm handover", waiting, handover.deadline)?;
            if woken && !answered {
                return Err(Error::Closed("connect"));
            }
        }
    }
}

/// A client's connect to an shm listener whose answer (the region's fds)
/// has not come yet: `try_finish` takes it without waiting once `fd` is
/// readable, so a connect needs no thread to wait for it.
pub(crate) struct ShmHandover {
    /// Until it goes to the stream (its liveness socket: the fd a selector
    /// watched stays the connection's).
    socket: Option<UnixStream>,
    local: SocketAddr,
    addr: SocketAddr,
    /// The port held for the connection's life, when the client had no bind.
    port: Option<ReservedPort>,
    deadline: Deadline,
}

impl ShmHandover {
    /// Connects to the listener on `addr` (see `ShmListener::connect`).
    ///
    /// # Errors
    /// `ConnectionRefused` when no shm listener has the address.
    pub(crate) fn start(
        addr: SocketAddr,
        from: Option<SocketAddr>,
        deadline: Deadline,
    ) -> Result<ShmHandover> {
        let (local, port) = match from {
            // Bound to a wildcard address: the connection is on the one it reached.
            Some(from) if from.ip().is_unspecified() => (SocketAddr::new(addr.ip(), from.port()), None),
            Some(from) => (from, None),
            None => {
                let port = ReservedPort::bind(SocketAddr::new(addr.ip(), 0))?;
                (port.addr(), Some(port))
            }
        };
        let socket =
            sys::unix_socket::connect_named(client_name(local).as_bytes(), listener_name(addr).as_bytes())
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                        Error::ConnectionRefused(addr)
                    }
                    _ => Error::Os { op: "connect(shm listener)", source },
                })?;
        socket.set_nonblocking(true).map_err(|source| Error::Os { op: "fcntl(shm handover)", source })?;
        Ok(ShmHandover { socket: Some(socket), local, addr, port, deadline })
    }

    /// The fd that becomes readable when the listener has answered.
    pub(crate) fn fd(&self) -> RawFd {
        self.socket.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// The stream once the listener's answer is there, `None` before.
    ///
    /// # Errors
    /// `TimedOut` once the deadline passed without an answer; an answer that
    /// is not an rdma-nio shm listener's of this version.
    pub(crate) fn try_finish(&mut self) -> Result<Option<ShmStream>> {
        let socket =
            self.socket.as_ref().ok_or_else(|| Error::InvalidArgument("the handover is done".into()))?;
        let Some([region, doorbell0, doorbell1]) = receive_fds(socket)? else {
            return match self.deadline.expired() {
                true => Err(self.deadline.timed_out("shm handover")),
                false => Ok(None),
            };
        };
        let stream = ShmStream::open(ShmFds { region, doorbells: [doorbell0, doorbell1] }, 1)?;
        let socket = self.socket.take().expect("looked at above");
        Ok(Some(stream.with_liveness(socket).with_addresses(self.local, self.addr, self.port.take())))
    }
}

/// Sends the version byte with the region's and doorbells' `fds` attached.
fn send_fds(socket: &UnixStream, fds: &[RawFd; 3]) -> Result<()> {
    fd_passing::send(socket, HANDOVER_VERSION, fds)
        .map_err(|source| Error::Os { op: "sendmsg(shm handover)", source })
}

/// Receives the version byte and exactly three fds: `None` while nothing
/// came (the socket is non-blocking).
fn receive_fds(socket: &UnixStream) -> Result<Option<[OwnedFd; 3]>> {
    let invalid = |why: &str| Error::InvalidArgument(format!("shm handover: {why}"));
    let received = match fd_passing::receive(socket, 3) {
        Ok(received) => received,
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
        Err(source) => return Err(Error::Os { op: "recvmsg(shm handover)", source }),
    };
    if received.byte != Some(HANDOVER_VERSION) {
        return Err(invalid("not an rdma-nio shm listener of this version"));
    }
    if received.truncated {
        return Err(invalid("more fds than expected"));
    }
    let fds = received.fds;
    fds.try_into().map(Some).map_err(|fds: Vec<OwnedFd>| invalid(&format!("{} fds, expected 3", fds.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stream::ByteStream;
    use std::thread;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

    /// An address no other test uses (the names are per network namespace).
    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_client_finds_the_listener_by_address_and_they_talk() {
        let listener = ShmListener::bind(addr(40001), RingConfig::new(64 * 1024, 8192, 3).unwrap()).unwrap();
        let server = thread::spawn(move || {
            let mut stream = listener.accept(TIMEOUT).unwrap();
            let mut request = [0u8; 5];
            stream.read_exact(&mut request, TIMEOUT).unwrap();
            assert_eq!(&request, b"hello");
            stream.write_all(&vec![7u8; 300_000], TIMEOUT).unwrap();
        });
        let mut client = ShmStream::connect(addr(40001), None, TIMEOUT).unwrap();
        client.write_all(b"hello", TIMEOUT).unwrap();
        let mut reply = vec![0u8; 300_000];
        client.read_exact(&mut reply, TIMEOUT).unwrap();
        assert!(reply.iter().all(|&b| b == 7));
        server.join().unwrap();
        let mut rest = [0u8; 1];
        assert_eq!(client.read(&mut rest, TIMEOUT).unwrap(), 0, "end of stream after the server closed");
    }

    /// Each end names the connection by the client's own port, as over TCP
    /// (both reported port 0, so a server could not tell local clients apart).
    #[test]
    fn a_connection_is_named_by_a_port_the_client_holds() {
        let listener = ShmListener::bind(addr(40005), RingConfig::new(4096, 1024, 1).unwrap()).unwrap();
        let server = thread::spawn(move || {
            (0..3)
                .map(|_| {
                    let served = listener.accept(TIMEOUT).unwrap();
                    assert_eq!(served.local_addr(), Some(addr(40005)));
                    served.peer_addr().unwrap()
                })
                .collect::<Vec<_>>()
        });
        let first = ShmStream::connect(addr(40005), None, TIMEOUT).unwrap();
        let second = ShmStream::connect(addr(40005), None, TIMEOUT).unwrap();
        let from = ReservedPort::bind(addr(0)).unwrap();
        let bound = ShmStream::connect(addr(40005), Some(from.addr()), TIMEOUT).unwrap();
        let locals: Vec<_> = [&first, &second, &bound].iter().map(|s| s.local_addr().unwrap()).collect();
        assert_ne!(locals[0].port(), 0);
        assert_ne!(locals[0], locals[1]);
        assert_eq!(locals[2], from.addr());
        assert!(std::net::TcpListener::bind(locals[0]).is_err(), "the port is held");
        assert_eq!(first.peer_addr(), Some(addr(40005)));
        assert_eq!(server.join().unwrap(), locals, "the server names each client by its port");
    }

    #[test]
    fn nothing_listening_is_a_refusal() {
        match ShmStream::connect(addr(40002), None, TIMEOUT) {
            Err(Error::ConnectionRefused(refused)) => assert_eq!(refused, addr(40002)),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn an_address_has_one_listener_and_accept_times_out() {
        let config = RingConfig::new(4096, 1024, 1).unwrap();
        let listener = ShmListener::bind(addr(40003), config).unwrap();
        let err = ShmListener::bind(addr(40003), config).err().expect("a second listener bound");
        assert_eq!(err.errno(), Some(libc::EADDRINUSE), "{err}");
        let err = listener.accept(Some(Duration::from_millis(30))).err().expect("accepted nobody");
        assert!(matches!(err, Error::TimedOut { op: "shm accept", .. }), "{err}");
    }

    /// A connect in a caller's thread that a close must be able to end: the
    /// listener never answers (it accepts nobody), the waker does.
    #[test]
    fn a_wakeable_connect_the_listener_does_not_answer_ends_with_its_waker() {
        let _listener = ShmListener::bind(addr(40006), RingConfig::new(4096, 1024, 1).unwrap()).unwrap();
        let waker = std::sync::Arc::new(sys::eventfd().unwrap());
        let signaller = {
            let waker = std::sync::Arc::clone(&waker);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                sys::signal_eventfd(&waker).unwrap();
            })
        };
        let err = ShmStream::connect_wakeable(addr(40006), None, TIMEOUT, Some(waker.as_raw_fd()))
            .err()
            .expect("connected to a listener that accepts nobody");
        assert!(matches!(err, Error::Closed("connect")), "{err}");
        signaller.join().unwrap();
        let err = ShmStream::connect(addr(40006), None, Some(Duration::from_millis(50)))
            .err()
            .expect("connected to a listener that accepts nobody");
        assert!(matches!(err, Error::TimedOut { .. }), "without a waker the timeout ends it: {err}");
    }

    #[test]
    fn a_foreign_peer_is_refused() {
        let name = net::SocketAddr::from_abstract_name(listener_name(addr(40004)).as_bytes()).unwrap();
        let foreign = UnixListener::bind_addr(&name).unwrap();
        let server = thread::spawn(move || {
            let (client, _) = foreign.accept().unwrap();
            use std::io::Write;
            (&client).write_all(b"?").unwrap(); // a byte, no fds
        });
        let err =
            ShmStream::connect(addr(40004), None, TIMEOUT).err().expect("connected to a foreign listener");
        assert!(err.to_string().contains("not an rdma-nio shm listener"), "{err}");
        server.join().unwrap();
    }
}
