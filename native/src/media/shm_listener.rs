//! Rendezvous for the shm medium by address, as TCP and RDMA have it: a
//! listener on IP:port is an abstract Unix datagram socket named after the
//! port (in the network namespace, so nothing on disk). The port alone,
//! because every local address reaches a listener bound to the wildcard
//! address, as with TCP; two listeners on one port and different local
//! addresses cannot both offer shm. A listener alone on its address also
//! holds its TCP port (`ReservedPort`), so that port 0 takes a port the
//! kernel picks, a port TCP uses is refused, and so is an address that is not
//! this host's.
//!
//! A client connects without waiting for the listener, as a TCP client's
//! connect completes in the kernel before any `accept`: it creates the
//! region (sealed, its rings shaped by the client's options), or takes one
//! it parked after an earlier connection to the same listener
//! (`shm_reuse`), with its doorbells and a liveness channel (a pipe,
//! `sys::liveness`), and sends the listener one datagram carrying its
//! address and, attached (SCM_RIGHTS), the region, the doorbells and one
//! end of the channel.
//! The listener's queue of such datagrams is its backlog. The kernel keeps
//! it short (`net.unix.max_dgram_qlen`, 10 by default), so a client that
//! finds it full nudges the listener (an empty datagram to a second socket,
//! `overflow_name`), whose owner may then move handovers to a longer queue
//! of its own, and waits for room. Each side keeps its end of the channel
//! for the connection's life: the kernel closes a dead process's end (or a
//! listener's queue that goes unaccepted), and the other end signals.
//! A client holds a TCP port for the connection's life too and sends its
//! address with the handover, so both ends report the connection by the
//! client's port, as over TCP (a name, not a proof: another local process
//! could claim a port it does not hold).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self, UnixDatagram};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::media::ring::RingConfig;
use crate::media::shm::{Doorbells, Mapping, ShmFds, ShmStream};
use crate::media::shm_reuse::{self, Parked};
use crate::sys::port::ReservedPort;
use crate::sys::{self, fd_passing, liveness, unix_socket, Deadline};

/// The first byte of a handover datagram: the rendezvous protocol's version
/// (3: the liveness channel is a pipe; 4: the client's address follows, as
/// text, not in the sender's name, so a client's socket outlives its port).
const HANDOVER_VERSION: u8 = 4;
/// The longest handover datagram: the version and an IPv6 address with a
/// scope and a port, as text.
const HANDOVER_MAX_LEN: usize = 64;

/// What the listener's receive failures name (as opposed to a handover's).
const RECEIVE: &str = "recvmsg(shm listener)";

/// The abstract socket name of the shm listener on `addr`.
fn listener_name(addr: SocketAddr) -> String {
    format!("rdma-nio/shm/port/{}", addr.port())
}

/// The abstract socket name where clients that found the listener's queue
/// full say so.
fn overflow_name(addr: SocketAddr) -> String {
    format!("{}/full", listener_name(addr))
}

/// A client's handover datagram: the version, then the address it holds.
fn handover_bytes(local: SocketAddr) -> Vec<u8> {
    let mut bytes = vec![HANDOVER_VERSION];
    bytes.extend_from_slice(local.to_string().as_bytes());
    bytes
}

/// The client's address a handover's bytes after the version give.
fn client_addr(text: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Takes local clients' shared-memory streams to an address.
pub struct ShmListener {
    socket: UnixDatagram,
    /// Where clients that found `socket`'s queue full nudge (see `take_nudges`).
    overflow: UnixDatagram,
    addr: SocketAddr,
    /// The TCP port it holds, when no TCP listener beside it does.
    port: Option<ReservedPort>,
}

impl ShmListener {
    /// Listens for shm clients of `addr`, and holds the address's TCP port
    /// (port 0: one the kernel picks).
    ///
    /// # Errors
    /// `Os` naming `bind` when a TCP socket holds the port or the address is
    /// not this host's (`EADDRINUSE`, `EADDRNOTAVAIL`), and naming
    /// `bind(shm listener)` when another shm listener has the port.
    pub fn bind(addr: SocketAddr) -> Result<ShmListener> {
        let port = ReservedPort::bind(addr)?;
        let mut listener = ShmListener::bind_beside_tcp(port.addr())?;
        listener.port = Some(port);
        Ok(listener)
    }

    /// Listens for shm clients of `addr`, whose TCP port a TCP listener of
    /// the same `StreamListener` holds.
    pub(crate) fn bind_beside_tcp(addr: SocketAddr) -> Result<ShmListener> {
        let bind = |name: String| {
            let name = net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(|source| Error::Os { op: "shm socket name", source })?;
            let socket = UnixDatagram::bind_addr(&name)
                .map_err(|source| Error::Os { op: "bind(shm listener)", source })?;
            socket.set_nonblocking(true).map_err(|source| Error::Os { op: "fcntl(shm listener)", source })?;
            Ok::<_, Error>(socket)
        };
        let socket = bind(listener_name(addr))?;
        let overflow = bind(overflow_name(addr))?;
        Ok(ShmListener { socket, overflow, addr, port: None })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for a client and takes its stream.
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

    /// Closes both sockets while their fds stay open (see `sys::pre_close`):
    /// the names and the port are free again, and the handovers queued are
    /// dropped.
    pub(crate) fn pre_close(&self) -> Result<()> {
        sys::pre_close(self.socket.as_raw_fd())?;
        sys::pre_close(self.overflow.as_raw_fd())?;
        self.port.as_ref().map_or(Ok(()), ReservedPort::release)
    }

    /// The fd that becomes readable when a client found the queue full.
    pub(crate) fn overflow_fd(&self) -> RawFd {
        self.overflow.as_raw_fd()
    }

    /// Consumes the nudges of clients that found the queue full: true if there were any.
    pub(crate) fn take_nudges(&self) -> bool {
        let mut nudged = false;
        let mut byte = [0u8; 1];
        while self.overflow.recv(&mut byte).is_ok() {
            nudged = true;
        }
        nudged
    }

    /// `try_accept`, skipping (and logging) a handover that fails: one local
    /// client must not fail the server's accept.
    pub(crate) fn try_take(&self) -> Option<ShmStream> {
        loop {
            match self.try_accept() {
                Ok(stream) => return stream,
                Err(err @ Error::Os { op: RECEIVE, .. }) => {
                    log::warn!("shm listener {}: {err}", self.addr);
                    return None; // the socket's own failure: the next call tries again
                }
                Err(err) => log::warn!("shm listener {}: a client's handover failed: {err}", self.addr),
            }
        }
    }

    /// Takes a waiting client's stream, if there is one, without waiting.
    ///
    /// # Errors
    /// A handover that is not an rdma-nio shm client's of this version (it
    /// is consumed: the next call takes the next client).
    pub(crate) fn try_accept(&self) -> Result<Option<ShmStream>> {
        let received = match fd_passing::receive(&self.socket, HANDOVER_MAX_LEN, 4) {
            Ok(received) => received,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(source) => return Err(Error::Os { op: RECEIVE, source }),
        };
        let invalid = |why: &str| Error::InvalidArgument(format!("shm handover: {why}"));
        if received.bytes.first() != Some(&HANDOVER_VERSION) {
            return Err(invalid("not an rdma-nio shm client of this version"));
        }
        if received.truncated {
            return Err(invalid("more bytes or fds than expected"));
        }
        let count = received.fds.len();
        let Ok([region, doorbell0, doorbell1, liveness]) = <[OwnedFd; 4]>::try_from(received.fds) else {
            return Err(invalid(&format!("{count} fds, expected 4")));
        };
        let liveness =
            liveness::from_peer(liveness).ok_or_else(|| invalid("the liveness channel is no pipe"))?;
        let stream =
            ShmStream::open(ShmFds { region, doorbells: [doorbell0, doorbell1] }, 1)?.with_liveness(liveness);
        // A client named by the address it holds (another process could claim
        // a port it does not hold: a local peer's port is a name, not a proof).
        Ok(Some(match client_addr(&received.bytes[1..]) {
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
    /// both ends, as over TCP. The region's rings are shaped by `config`.
    ///
    /// # Errors
    /// `ConnectionRefused` when no shm listener has the address; `TimedOut`
    /// when its backlog stays full until the timeout.
    pub fn connect(
        addr: SocketAddr,
        from: Option<SocketAddr>,
        config: RingConfig,
        timeout: Option<Duration>,
    ) -> Result<ShmStream> {
        Self::connect_wakeable(addr, from, config, timeout, None)
    }

    /// `connect`, which a signal on `waker` (readable) ends with `Closed`
    /// while it waits for room in the listener's backlog: a blocking connect
    /// in the caller's thread that a close must wake.
    pub(crate) fn connect_wakeable(
        addr: SocketAddr,
        from: Option<SocketAddr>,
        config: RingConfig,
        timeout: Option<Duration>,
        waker: Option<RawFd>,
    ) -> Result<ShmStream> {
        let mut handover = ShmHandover::start(addr, from, config, Deadline::after(timeout))?;
        loop {
            if let Some(stream) = handover.try_finish()? {
                return Ok(stream);
            }
            let waiting = [(handover.fd(), libc::POLLOUT), (waker.unwrap_or(-1), libc::POLLIN)];
            let [room, woken] = sys::wait_for("shm handover", waiting, handover.deadline)?;
            if woken && !room {
                return Err(Error::Closed("connect"));
            }
        }
    }
}

/// A handover waiting for room in the listener's backlog.
struct Unsent {
    /// The socket connected to the listener.
    link: UnixDatagram,
    /// What it carries: the region, the doorbells, the listener's liveness end.
    fds: [OwnedFd; 4],
    bytes: Vec<u8>,
    /// Our copy of the region's memfd, kept with the link once it went.
    region: OwnedFd,
}

/// A client's connect to an shm listener: done at once, unless the
/// listener's backlog is full; `try_finish` then sends again, without
/// waiting, once `fd` is writable, so a connect needs no thread to wait.
pub(crate) struct ShmHandover {
    /// Our side, named, with its liveness end; until `try_finish` hands it out.
    stream: Option<ShmStream>,
    /// What the listener has yet to get, while its backlog is full.
    unsent: Option<Unsent>,
    addr: SocketAddr,
    deadline: Deadline,
}

impl ShmHandover {
    /// Connects to the listener on `addr` (see `ShmStream::connect`).
    ///
    /// # Errors
    /// `ConnectionRefused` when no shm listener has the address.
    pub(crate) fn start(
        addr: SocketAddr,
        from: Option<SocketAddr>,
        config: RingConfig,
        deadline: Deadline,
    ) -> Result<ShmHandover> {
        // A region parked after a connection to this listener, if it released
        // one; else first what a refusal needs, so a refused connect costs little.
        let parked = if from.is_none() { shm_reuse::take_parked(addr, config) } else { None };
        let (link, region) = match parked {
            Some(Parked { link, region, map, doorbells, .. }) => (link, Some((region, map, doorbells))),
            None => {
                let link = unix_socket::datagram_to(listener_name(addr).as_bytes())
                    .map_err(|source| refusal_or(addr, "connect(shm listener)", source))?;
                (link, None)
            }
        };
        let reused = region.is_some();
        let (local, port) = match from {
            // Bound to a wildcard address: the connection is on the one it reached.
            Some(from) if from.ip().is_unspecified() => (SocketAddr::new(addr.ip(), from.port()), None),
            Some(from) => (from, None),
            None => {
                let port = ReservedPort::bind(SocketAddr::new(addr.ip(), 0))?;
                (port.addr(), Some(port))
            }
        };
        match Self::hand_over(link, region, addr, local, port, config, deadline) {
            // The listener the region was parked for closed (another may have its port now).
            Err(Error::ConnectionRefused(_)) if reused => Self::start(addr, from, config, deadline),
            done => done,
        }
    }

    /// Hands the listener on `addr` a region (`parked`, or a new one) over
    /// `link`, a socket connected to it, from `local`.
    fn hand_over(
        link: UnixDatagram,
        parked: Option<(OwnedFd, Mapping, Doorbells)>,
        addr: SocketAddr,
        local: SocketAddr,
        port: Option<ReservedPort>,
        config: RingConfig,
        deadline: Deadline,
    ) -> Result<ShmHandover> {
        let bytes = handover_bytes(local);
        let (ours, theirs) = liveness::pair()?;
        let (stream, unsent, region) = ShmStream::create_in(parked, config, |fds| {
            let [doorbell0, doorbell1] = &fds.doorbells;
            let handed = [&fds.region, doorbell0, doorbell1, &theirs];
            match send_handover(&link, addr, &bytes, handed.map(AsRawFd::as_raw_fd))? {
                true => Ok(None),
                // The backlog is full: keep copies to send once there is room.
                false => {
                    nudge(addr);
                    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|source| Error::Os { op: "dup", source });
                    let [region, doorbell0, doorbell1, theirs] = handed.map(dup);
                    Ok(Some([region?, doorbell0?, doorbell1?, theirs?]))
                }
            }
        })?;
        let mut stream = stream.with_liveness(ours).with_addresses(local, addr, port);
        let unsent = match unsent {
            None => {
                stream.keep_for_listener(region, link, addr);
                None
            }
            Some(fds) => Some(Unsent { link, fds, bytes, region }),
        };
        Ok(ShmHandover { stream: Some(stream), unsent, addr, deadline })
    }

    /// The fd that becomes writable when the listener's backlog has room
    /// (-1 once the handover went).
    pub(crate) fn fd(&self) -> RawFd {
        self.unsent.as_ref().map_or(-1, |unsent| unsent.link.as_raw_fd())
    }

    /// The stream once the handover went, `None` while the backlog is full.
    ///
    /// # Errors
    /// `TimedOut` once the deadline passed with the backlog still full;
    /// `ConnectionRefused` when the listener went meanwhile.
    pub(crate) fn try_finish(&mut self) -> Result<Option<ShmStream>> {
        if let Some(unsent) = &self.unsent {
            let fds = unsent.fds.each_ref().map(AsRawFd::as_raw_fd);
            if !send_handover(&unsent.link, self.addr, &unsent.bytes, fds)? {
                nudge(self.addr);
                return match self.deadline.expired() {
                    true => Err(self.deadline.timed_out("shm handover")),
                    false => Ok(None),
                };
            }
        }
        let mut stream =
            self.stream.take().ok_or_else(|| Error::InvalidArgument("the handover is done".into()))?;
        if let Some(Unsent { link, region, .. }) = self.unsent.take() {
            stream.keep_for_listener(region, link, self.addr);
        }
        Ok(Some(stream))
    }
}

/// Sends the handover's `bytes` with its `fds` attached: false while the
/// listener's backlog is full.
fn send_handover(socket: &UnixDatagram, addr: SocketAddr, bytes: &[u8], fds: [RawFd; 4]) -> Result<bool> {
    match fd_passing::send(socket, bytes, &fds) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(source) => Err(refusal_or(addr, "sendmsg(shm handover)", source)),
    }
}

/// Tells the listener on `addr` that its queue is full (a listener that
/// went needs no telling).
fn nudge(addr: SocketAddr) {
    if let Err(err) = unix_socket::nudge(overflow_name(addr).as_bytes()) {
        log::debug!("shm connect to {addr}: no nudge: {err}");
    }
}

/// `ConnectionRefused` for a name no listener has (or had), else `Os` naming `op`.
fn refusal_or(addr: SocketAddr, op: &'static str, source: std::io::Error) -> Error {
    match source.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
            Error::ConnectionRefused(addr)
        }
        _ => Error::Os { op, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stream::ByteStream;
    use std::thread;
    use std::time::Instant;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

    fn config() -> RingConfig {
        RingConfig::new(64 * 1024, 8192, 3).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A listener on a port of its own (a fixed port of the ephemeral range
    /// may be anyone's connection's), and its address.
    fn listening() -> (ShmListener, SocketAddr) {
        let listener = ShmListener::bind(addr(0)).unwrap();
        let at = listener.local_addr();
        (listener, at)
    }

    /// An address whose port this process holds and where nobody listens.
    fn unused() -> (ReservedPort, SocketAddr) {
        let port = ReservedPort::bind(addr(0)).unwrap();
        let at = port.addr();
        (port, at)
    }

    #[test]
    fn a_client_finds_the_listener_by_address_and_they_talk() {
        let (listener, at) = listening();
        let server = thread::spawn(move || {
            let mut stream = listener.accept(TIMEOUT).unwrap();
            let mut request = [0u8; 5];
            stream.read_exact(&mut request, TIMEOUT).unwrap();
            assert_eq!(&request, b"hello");
            stream.write_all(&vec![7u8; 300_000], TIMEOUT).unwrap();
        });
        let mut client = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
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
        let (listener, at) = listening();
        let server = thread::spawn(move || {
            (0..3)
                .map(|_| {
                    let served = listener.accept(TIMEOUT).unwrap();
                    assert_eq!(served.local_addr(), Some(at));
                    served.peer_addr().unwrap()
                })
                .collect::<Vec<_>>()
        });
        let first = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
        let second = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
        let from = ReservedPort::bind(addr(0)).unwrap();
        let bound = ShmStream::connect(at, Some(from.addr()), config(), TIMEOUT).unwrap();
        let locals: Vec<_> = [&first, &second, &bound].iter().map(|s| s.local_addr().unwrap()).collect();
        assert_ne!(locals[0].port(), 0);
        assert_ne!(locals[0], locals[1]);
        assert_eq!(locals[2], from.addr());
        assert!(std::net::TcpListener::bind(locals[0]).is_err(), "the port is held");
        assert_eq!(first.peer_addr(), Some(at));
        assert_eq!(server.join().unwrap(), locals, "the server names each client by its port");
    }

    #[test]
    fn nothing_listening_is_a_refusal() {
        let (_held, at) = unused();
        match ShmStream::connect(at, None, config(), TIMEOUT) {
            Err(Error::ConnectionRefused(refused)) => assert_eq!(refused, at),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn an_address_has_one_listener_and_accept_times_out() {
        let (listener, at) = listening();
        let err = ShmListener::bind(at).err().expect("a second listener bound");
        assert_eq!(err.errno(), Some(libc::EADDRINUSE), "{err}");
        let err = listener.accept(Some(Duration::from_millis(30))).err().expect("accepted nobody");
        assert!(matches!(err, Error::TimedOut { op: "shm accept", .. }), "{err}");
    }

    /// A connect completes without the listener, as a TCP connect completes
    /// in the kernel: what the client writes waits in the ring for the
    /// accept. (It waited for the listener's answer.)
    #[test]
    fn a_connect_completes_before_the_listener_accepts() {
        let (listener, at) = listening();
        let mut client = ShmStream::connect(at, None, config(), Some(Duration::from_millis(500))).unwrap();
        client.write_all(b"early", TIMEOUT).unwrap();
        let mut server = listener.accept(TIMEOUT).unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got, TIMEOUT).unwrap();
        assert_eq!(&got, b"early");
    }

    /// A listener that closes with a handover in its queue ends that
    /// client's stream (its liveness end goes with the queue), as a TCP
    /// listener's close resets the connections in its backlog: a read ends,
    /// it does not hang.
    #[test]
    fn a_listener_that_closes_unaccepted_ends_its_clients_streams() {
        let (listener, at) = listening();
        let mut client = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
        drop(listener);
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf, TIMEOUT).unwrap(), 0, "end of stream");
    }

    /// A handover carries no Unix socket: one in flight over a Unix socket
    /// made the kernel run its collector of in-flight sockets at later
    /// closes, host-wide (more than one run per connect cycle).
    #[test]
    fn a_handover_carries_no_socket() {
        let (_held, at) = unused();
        let name = listener_name(at);
        let impostor =
            UnixDatagram::bind_addr(&net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let _client = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
        let received = fd_passing::receive(&impostor, HANDOVER_MAX_LEN, 4).unwrap();
        assert_eq!(received.fds.len(), 4);
        for (i, fd) in received.fds.iter().enumerate() {
            assert_eq!(
                sys::socket_option(fd, libc::SO_TYPE).unwrap(),
                None,
                "fd {i} of the handover is a socket"
            );
        }
    }

    /// While the listener's backlog is full a connect waits for room: a
    /// waker or its timeout ends it, an accept makes room.
    #[test]
    fn a_connect_to_a_full_backlog_waits_for_room() {
        let _serial = shm_reuse::SERIAL.lock(); // its thousands of regions would crowd out the others'
        let (listener, at) = listening();
        let mut queued = Vec::new();
        let mut waiting = loop {
            let handover = ShmHandover::start(at, None, config(), Deadline::after(TIMEOUT)).unwrap();
            match handover.fd() {
                -1 => queued.push(handover),
                _ => break handover,
            }
            assert!(queued.len() < 10_000, "the backlog never filled");
        };
        assert!(waiting.try_finish().unwrap().is_none(), "no room yet");
        assert!(listener.take_nudges(), "the client that found no room said so");
        assert!(!listener.take_nudges(), "the nudges were taken");

        let waker = std::sync::Arc::new(sys::eventfd().unwrap());
        let signaller = {
            let waker = std::sync::Arc::clone(&waker);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                sys::signal_eventfd(&waker).unwrap();
            })
        };
        let err = ShmStream::connect_wakeable(at, None, config(), TIMEOUT, Some(waker.as_raw_fd()))
            .err()
            .expect("connected to a full backlog");
        assert!(matches!(err, Error::Closed("connect")), "{err}");
        signaller.join().unwrap();
        let err = ShmStream::connect(at, None, config(), Some(Duration::from_millis(50)))
            .err()
            .expect("connected to a full backlog");
        assert!(matches!(err, Error::TimedOut { .. }), "without a waker the timeout ends it: {err}");

        drop(listener.accept(TIMEOUT).unwrap());
        assert!(waiting.try_finish().unwrap().is_some(), "an accept made room");
    }

    /// A datagram that is not a client's handover fails that accept alone.
    #[test]
    fn a_foreign_client_is_refused_and_the_next_one_served() {
        let (listener, at) = listening();
        let foreign = unix_socket::datagram_to(listener_name(at).as_bytes()).unwrap();
        fd_passing::send(&foreign, &[HANDOVER_VERSION], &[]).unwrap(); // the version, no fds
        let _client = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
        let err = listener.accept(TIMEOUT).err().expect("accepted a foreign client");
        assert!(err.to_string().contains("0 fds, expected 4"), "{err}");
        listener.accept(TIMEOUT).unwrap();
    }

    /// One round of the connect cycle on `listener`: connect, a message
    /// each way, both close; the file of the region the server saw.
    fn cycle(listener: &ShmListener, message: &[u8]) -> shm_reuse::FileId {
        cycle_seeing_doorbells(listener, message).0
    }

    /// `cycle`, which also says what pipes the client's and the server's
    /// doorbells were.
    fn cycle_seeing_doorbells(
        listener: &ShmListener,
        message: &[u8],
    ) -> (shm_reuse::FileId, crate::media::shm::PipeIds) {
        let mut client = ShmStream::connect(listener.local_addr(), None, config(), TIMEOUT).unwrap();
        client.write_all(message, TIMEOUT).unwrap();
        let mut server = listener.accept(TIMEOUT).unwrap();
        let file = server.region_file().expect("a listener's stream knows its region's file");
        let doorbells = [client.doorbell_pipe(), server.doorbell_pipe()];
        let mut got = vec![0u8; message.len()];
        server.read_exact(&mut got, TIMEOUT).unwrap();
        assert_eq!(got, message, "the server read what this connection's client wrote");
        server.write_all(&got, TIMEOUT).unwrap();
        drop(server);
        let mut echoed = vec![0u8; message.len() + 1];
        client.read_exact(&mut echoed[..message.len()], TIMEOUT).unwrap();
        assert_eq!(&echoed[..message.len()], message);
        assert_eq!(client.read(&mut echoed, TIMEOUT).unwrap(), 0, "the end of stream after the echo");
        (file, doorbells)
    }

    /// A closed connection's region serves the next connect to the same
    /// listener, with its doorbells (no mapping made or unmapped, no pipe
    /// made or opened on either side), and the connection on it reads only
    /// what is written on it, not what the region held from before.
    #[test]
    fn the_next_connect_to_a_listener_takes_the_region_of_a_closed_connection() {
        let _serial = shm_reuse::SERIAL.lock();
        let (listener, _) = listening();
        let first = cycle_seeing_doorbells(&listener, &[1u8; 50_000]);
        let second = cycle_seeing_doorbells(&listener, b"short");
        assert_eq!(second.0, first.0, "the second connection has a region of its own");
        assert_eq!(second.1, first.1, "the second connection has doorbells of its own (client's, server's)");
        assert_eq!(cycle_seeing_doorbells(&listener, &[3u8; 40_000]), first);
    }

    /// A parked region goes back only to the listener it was shared with: a
    /// listener that took the port since gets a new one (the old listener's
    /// process could still read the parked region).
    #[test]
    fn a_parked_region_goes_to_no_other_listener_on_the_port() {
        let _serial = shm_reuse::SERIAL.lock();
        let (listener, at) = listening();
        let first = cycle(&listener, b"to the first listener");
        drop(listener);
        let successor = ShmListener::bind(at).unwrap();
        let next = cycle(&successor, b"to its successor");
        assert_ne!(next, first, "the region shared with a closed listener went to its successor");
        assert_eq!(cycle(&successor, b"again"), next, "the successor's own region is reused");
    }

    /// A region goes to a new connection only once the listener let go of
    /// it: while the listener's stream on it lives, a connect makes another.
    #[test]
    fn a_region_the_listener_still_holds_is_not_taken() {
        let _serial = shm_reuse::SERIAL.lock();
        let (listener, at) = listening();
        let client = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
        let held = listener.accept(TIMEOUT).unwrap();
        let first = held.region_file().unwrap();
        drop(client);
        let _second = ShmStream::connect(at, None, config(), TIMEOUT).unwrap();
        let second = listener.accept(TIMEOUT).unwrap();
        assert_ne!(
            second.region_file().unwrap(),
            first,
            "a region still mapped by the listener's stream was taken"
        );
    }

    /// A process that stops connecting holds no kept region after a while,
    /// nor the thread that lets them go.
    #[test]
    fn kept_regions_go_after_a_while_and_so_does_their_thread() {
        let _serial = shm_reuse::SERIAL.lock();
        let (listener, _) = listening();
        cycle(&listener, b"once");
        let (parked, mapped, expiring) = shm_reuse::kept();
        assert!(
            parked > 0 && mapped > 0 && expiring,
            "kept: {parked} parked, {mapped} mapped, thread {expiring}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while shm_reuse::kept() != (0, 0, false) {
            assert!(Instant::now() < deadline, "still kept after 20 s: {:?}", shm_reuse::kept());
            thread::sleep(Duration::from_millis(100));
        }
    }
}
