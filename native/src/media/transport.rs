//! Choosing the medium of each connection from configuration: `rdma`, `shm` (a
//! peer on this host), `tcp` (no RDMA path), or `auto`: shared memory for a
//! peer on this host, RDMA when a device reaches the peer, TCP otherwise. The
//! same IP address and port name the peer whatever the medium, as in a TCP
//! deployment.
//!
//! Over RDMA a listener decides which path each peer gets: one-sided rings
//! (`RdmaStream`: the peer holds an rkey of a ring) for its ring peers, and
//! two-sided sends (`SendStream`: no rkey) for everyone else. A connecting side
//! asks for rings and falls back to sends when the listener says so.

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::media::connecting::Connect;
use crate::media::rdma_stream::{RdmaStream, StreamOptions};
use crate::media::receive_pool::ReceivePool;
use crate::media::ring::RingConfig;
use crate::media::send_stream::{SendOptions, SendStream};
use crate::media::shm_listener::ShmListener;
use crate::media::stream::{ByteStream, WaitSource};
use crate::media::tcp::TcpByteStream;
use crate::rdma::completions::{CompletionGroup, GroupOffer};
use crate::rdma::endpoint::{Listener, Request};
use crate::rdma::hello::{Hello, PathKind};
use crate::sys::port::ReservedPort;
use crate::sys::{self, Deadline};

/// Which medium a connection may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RDMA WRITE into rings, through an RDMA device.
    Rdma,
    /// Shared memory with a process on this host.
    Shm,
    /// A kernel TCP socket.
    Tcp,
    /// Shared memory for a peer on this host, else RDMA, else TCP.
    Auto,
}

impl FromStr for Transport {
    type Err = Error;

    fn from_str(name: &str) -> Result<Transport> {
        match name {
            "rdma" => Ok(Transport::Rdma),
            "shm" => Ok(Transport::Shm),
            "tcp" => Ok(Transport::Tcp),
            "auto" => Ok(Transport::Auto),
            other => Err(Error::InvalidArgument(format!(
                "unknown transport '{other}': use rdma, shm, tcp or auto"
            ))),
        }
    }
}

/// The peers a listener grants one-sided rings; the others get two-sided sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingPeers {
    /// Every peer.
    All,
    /// The peers at these addresses only (replicas, say; not their clients).
    Only(Vec<IpAddr>),
}

impl RingPeers {
    fn admit(&self, peer: Option<SocketAddr>) -> bool {
        match self {
            RingPeers::All => true,
            RingPeers::Only(ips) => peer.is_some_and(|peer| ips.contains(&peer.ip())),
        }
    }
}

impl FromStr for RingPeers {
    type Err = Error;

    /// "all", "none", or a comma-separated list of IP addresses.
    fn from_str(text: &str) -> Result<RingPeers> {
        match text.trim() {
            "all" => Ok(RingPeers::All),
            "none" | "" => Ok(RingPeers::Only(Vec::new())),
            list => list
                .split(',')
                .map(|ip| {
                    ip.trim().parse().map_err(|_| {
                        Error::InvalidArgument(format!(
                            "ring peers: '{ip}' is not an IP address (use all, none or a list of addresses)"
                        ))
                    })
                })
                .collect::<Result<_>>()
                .map(RingPeers::Only),
        }
    }
}

/// The medium a connection ended up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// `RdmaStream`: RDMA WRITE into rings.
    Rdma,
    /// `SendStream`: two-sided RDMA sends.
    RdmaSends,
    /// `ShmStream`.
    Shm,
    /// `TcpByteStream`.
    Tcp,
    /// `PipeEnd`: an end of a kernel pipe (no connection).
    Pipe,
    /// `DatagramSocket`: a UDP socket (no connection either).
    Datagram,
}

impl fmt::Display for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Medium::Rdma => "rdma",
            Medium::RdmaSends => "rdma-sends",
            Medium::Shm => "shm",
            Medium::Tcp => "tcp",
            Medium::Pipe => "pipe",
            Medium::Datagram => "udp",
        })
    }
}

/// A connection on whichever medium was chosen.
pub type Stream = Box<dyn ByteStream + Send>;

/// The shape of each medium's buffers, and who gets which RDMA path.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// The ring an RDMA peer writes into.
    pub rdma: StreamOptions,
    /// The two-sided RDMA path.
    pub sends: SendOptions,
    /// A listener's ring peers (the others get the two-sided path).
    pub ring_peers: RingPeers,
    /// The rings of a shared-memory region (set by the connecting side).
    pub shm: RingConfig,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            rdma: StreamOptions::default(),
            sends: SendOptions::default(),
            ring_peers: RingPeers::All,
            shm: RingConfig::new(256 * 1024, 32 * 1024, 0).expect("a valid ring shape"),
        }
    }
}

impl TransportOptions {
    /// The options for connections whose receive buffer (`SO_RCVBUF`) is
    /// `bytes` (0 for the default): rings of twice that size rounded up to a
    /// power of two within 4 KiB..64 MiB, records of at most a quarter of it
    /// (32 KiB at most). Twice, as Linux doubles the value for its own
    /// bookkeeping (socket(7)): a record's header and alignment cost a ring
    /// as much, and an application that sized its buffers for TCP must find
    /// room for as many small writes a peer has not read yet.
    pub fn with_receive_buffer(bytes: usize) -> Result<TransportOptions> {
        let mut options = TransportOptions::default();
        if bytes > 0 {
            let capacity = bytes.saturating_mul(2).next_power_of_two().clamp(4096, 1 << 26);
            let max_record = (capacity / 4).min(32 * 1024);
            options.rdma = StreamOptions { ring_capacity: capacity, max_record };
            options.shm = RingConfig::new(capacity, max_record, 0).map_err(Error::InvalidArgument)?;
        }
        Ok(options)
    }
}

/// Whether `ip` belongs to this host: binding a socket to it succeeds.
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind((ip, 0)).is_ok()
}

/// Connects to `addr` over `transport`; says which medium it took.
///
/// # Errors
/// The medium's own errors; under `auto`, the error of the last medium tried
/// (TCP), after shm and RDMA refused or could not reach the peer.
pub fn connect(
    addr: SocketAddr,
    transport: Transport,
    options: &TransportOptions,
    timeout: Option<Duration>,
) -> Result<(Medium, Stream)> {
    Connect::start(addr, transport, options.clone(), timeout, GroupOffer::default(), None)?.finish_blocking()
}

/// Whether the host has an RDMA device at all (`check_device`: asked until
/// one is found, so a device added later is). Without one, `auto` goes
/// straight to TCP.
pub(crate) fn host_has_rdma() -> bool {
    crate::rdma::verbs::check_device().is_ok()
}

/// A failed TCP connect to `addr` as the engine reports it.
pub(crate) fn tcp_connect_error(
    addr: SocketAddr,
    timeout: Option<Duration>,
    source: std::io::Error,
) -> Error {
    match source.kind() {
        std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused(addr),
        std::io::ErrorKind::TimedOut => {
            Error::TimedOut { op: "tcp connect", timeout: timeout.unwrap_or_default() }
        }
        _ => Error::Os { op: "connect(tcp)", source },
    }
}

/// Listens on one address over every medium that `transport` allows, and
/// accepts connections from whichever medium they come.
pub struct StreamListener {
    addr: SocketAddr,
    tcp: Option<TcpListener>,
    /// Shared with a listening socket's shm overflow thread (see `nio::backlog`).
    shm: Option<Arc<ShmListener>>,
    rdma: Option<Listener>,
    /// RDMA's port held in TCP's port space, when no TCP listener holds it
    /// (see `Resolving::start`); declared after `rdma`, which goes first.
    held: Option<ReservedPort>,
    /// The receive slots of two-sided connections, made at the first one.
    pool: Mutex<Option<Arc<ReceivePool>>>,
    options: TransportOptions,
}

impl StreamListener {
    /// Binds `addr` for `transport`. Under `auto`, TCP and shm always, and
    /// RDMA when a device has the address; port 0 takes the port TCP picks.
    ///
    /// # Errors
    /// Whatever binding a medium reports.
    pub fn bind(addr: SocketAddr, transport: Transport, options: TransportOptions) -> Result<StreamListener> {
        let mut listener = StreamListener {
            addr,
            tcp: None,
            shm: None,
            rdma: None,
            held: None,
            pool: Mutex::new(None),
            options,
        };
        if matches!(transport, Transport::Tcp | Transport::Auto) {
            let tcp = sys::port::tcp_listener(addr)?;
            listener.addr = tcp.local_addr().map_err(|source| Error::Os { op: "getsockname", source })?;
            listener.tcp = Some(tcp);
        }
        if transport == Transport::Rdma {
            let held = ReservedPort::bind(addr)?;
            listener.addr = SocketAddr::new(addr.ip(), held.addr().port());
            listener.held = Some(held);
        }
        if matches!(transport, Transport::Rdma | Transport::Auto) {
            // The address asked for (a wildcard TCP listener is IPv6's), at the port picked.
            match Listener::bind(SocketAddr::new(addr.ip(), listener.addr.port()), 128) {
                Ok(rdma) => {
                    if listener.tcp.is_none() {
                        listener.addr = rdma.local_addr(); // the port it picked, when alone on port 0
                    }
                    listener.rdma = Some(rdma);
                }
                Err(err) if transport == Transport::Auto => {
                    log::debug!("auto listener on {addr}: no RDMA ({err})")
                }
                Err(err) => return Err(err),
            }
        }
        if matches!(transport, Transport::Shm | Transport::Auto) {
            let shm = match listener.tcp {
                Some(_) => ShmListener::bind_beside_tcp(listener.addr)?,
                None => ShmListener::bind(listener.addr)?,
            };
            listener.addr = shm.local_addr(); // the port it picked, when shm is alone on port 0
            listener.shm = Some(Arc::new(shm));
        }
        Ok(listener)
    }

    /// A listener on TCP alone, over a kernel listener made elsewhere (the one
    /// a launcher passed on standard input).
    ///
    /// # Errors
    /// `Os` naming `getsockname` or `fcntl`.
    pub fn over_tcp(tcp: TcpListener, options: TransportOptions) -> Result<StreamListener> {
        tcp.set_nonblocking(true).map_err(|source| Error::Os { op: "fcntl(tcp listener)", source })?;
        let addr = tcp.local_addr().map_err(|source| Error::Os { op: "getsockname", source })?;
        Ok(StreamListener {
            addr,
            tcp: Some(tcp),
            shm: None,
            rdma: None,
            held: None,
            pool: Mutex::new(None),
            options,
        })
    }

    /// The bound address (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The media this listener accepts on.
    pub fn media(&self) -> Vec<Medium> {
        [
            (self.rdma.is_some(), Medium::Rdma),
            (self.shm.is_some(), Medium::Shm),
            (self.tcp.is_some(), Medium::Tcp),
        ]
        .into_iter()
        .filter_map(|(on, medium)| on.then_some(medium))
        .collect()
    }

    /// Waits for a connection on any medium; says which.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<(Medium, Stream)> {
        let deadline = Deadline::after(timeout);
        loop {
            if let Some(accepted) = self.try_accept(deadline, None)? {
                return Ok(accepted);
            }
            // poll(2) ignores negative fds: a medium that is off costs nothing.
            sys::wait_for("accept", self.sources(), deadline)?;
        }
    }

    /// The fds that become readable when a connection may be waiting.
    pub(crate) fn sources(&self) -> [WaitSource; 3] {
        let fd = |fd: Option<RawFd>| (fd.unwrap_or(-1), libc::POLLIN);
        [
            fd(self.rdma.as_ref().map(Listener::event_fd)),
            fd(self.shm.as_deref().map(ShmListener::socket_fd)),
            fd(self.tcp.as_ref().map(|tcp| tcp.as_raw_fd())),
        ]
    }

    /// Accepts a connection that is waiting, if one is; an RDMA one completes
    /// its handshake by `deadline`, its completions at the queues of `group`
    /// (the listener's selector's) if given.
    pub(crate) fn try_accept(
        &self,
        deadline: Deadline,
        group: Option<&Arc<CompletionGroup>>,
    ) -> Result<Option<(Medium, Stream)>> {
        if let Some(rdma) = &self.rdma {
            while let Some(mut request) = rdma.try_request(deadline)? {
                request.completions = group.cloned();
                if let Some(accepted) = self.accept_rdma(request)? {
                    return Ok(Some(accepted));
                }
            }
        }
        self.try_accept_queued()
    }

    /// Whether its connects complete only when it answers (RDMA's
    /// handshake): else they wait in the kernel for `try_accept_queued`.
    pub(crate) fn answers_handshakes(&self) -> bool {
        self.rdma.is_some()
    }

    /// Stops listening on shm and TCP: their ports and names are free again,
    /// and the connections waiting in their queues are reset, while their
    /// fds stay open until the listener drops (see `sys::pre_close`).
    ///
    /// # Errors
    /// `Os` naming `dup3` or `eventfd`.
    pub(crate) fn pre_close(&self) -> Result<()> {
        if let Some(shm) = &self.shm {
            shm.pre_close()?;
        }
        match &self.tcp {
            Some(tcp) => sys::pre_close(tcp.as_raw_fd()),
            None => Ok(()),
        }
    }

    /// Its shm listener, if it listens on shm.
    pub(crate) fn shm(&self) -> Option<&Arc<ShmListener>> {
        self.shm.as_ref()
    }

    /// Takes a connection that waits in the kernel (a shm client's handover,
    /// as `ShmListener::try_take`; a TCP connection), if one does.
    ///
    /// # Errors
    /// TCP's `accept` errors (`EMFILE`, ...), as the JDK's accept reports them.
    pub(crate) fn try_accept_queued(&self) -> Result<Option<(Medium, Stream)>> {
        if let Some(stream) = self.shm.as_ref().and_then(|shm| shm.try_take()) {
            return Ok(Some((Medium::Shm, Box::new(stream))));
        }
        if let Some(tcp) = &self.tcp {
            match tcp.accept() {
                Ok((socket, peer)) => {
                    return Ok(Some((Medium::Tcp, Box::new(TcpByteStream::accepted(socket, peer)?))))
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(source) => return Err(Error::Os { op: "accept(tcp)", source }),
            }
        }
        Ok(None)
    }

    /// Completes an RDMA request on the path its peer may have; `None` when
    /// the request was turned away.
    fn accept_rdma(&self, request: Request) -> Result<Option<(Medium, Stream)>> {
        match request.hello.kind {
            PathKind::Rings if self.options.ring_peers.admit(request.peer_addr()) => {
                Ok(Some((Medium::Rdma, Box::new(RdmaStream::accept(request, self.options.rdma)?))))
            }
            PathKind::Rings => {
                log::debug!("{:?} is no ring peer: redirected to sends", request.peer_addr());
                request.redirect(&Hello::sends(Default::default()));
                Ok(None)
            }
            PathKind::Sends => {
                let pool = self.receive_pool(&request)?;
                Ok(Some((
                    Medium::RdmaSends,
                    Box::new(SendStream::accept(request, &pool, &self.options.sends)?),
                )))
            }
            PathKind::Messages => {
                log::warn!("refusing a message connection on a stream listener");
                Ok(None)
            }
        }
    }

    /// The pool of two-sided receives, made on the first request's device.
    fn receive_pool(&self, request: &Request) -> Result<Arc<ReceivePool>> {
        let device =
            request.device().ok_or_else(|| Error::Failed("a connect request without a device".into()))?;
        let mut pool = self.pool.lock();
        if pool.is_none() {
            *pool = Some(Arc::new(ReceivePool::new(device, &self.options.sends)?));
        }
        let pool = pool.as_ref().expect("made above");
        if !pool.serves(device) {
            return Err(Error::InvalidArgument(
                "two-sided connections on a second RDMA device of one listener are not supported".into(),
            ));
        }
        Ok(Arc::clone(pool))
    }
}
