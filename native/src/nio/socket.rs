//! A socket as the Java channels see it: connecting, connected or listening,
//! on whichever medium the transport picked. One `Arc<Socket>` is shared by the
//! channel's threads and by every selector it is registered with.
//!
//! Locking: one mutex per socket guards its state. Nothing waits while holding
//! it, except an RDMA accept's handshake and a closing stream's linger.
//!
//! Blocking: a thread that must wait first polls for the socket's `Spin` (an
//! adaptive one only while spinning pays: `spin`; never on a medium that
//! signals by itself), then becomes the socket's sleeper if there is none.
//! The sleeper sleeps on the socket's sources (for the interests of every
//! waiting thread) and on the socket's kick eventfd: in poll(2) the first
//! time, then in an epoll set the connection keeps (`take_wait_set`); the
//! others wait on `turn`, which the sleeper signals when it wakes. So a
//! completion that one thread consumes never leaves another asleep. `close`
//! sets `closed` and writes the kick fd, which stays readable from then on.
//! A blocking read of a kernel socket without a deadline sleeps in its `recv`
//! instead (`read_in_kernel`), which `close` and `shutdown_input` end.
//!
//! Listening: `accept` takes a TCP or shm connection from the kernel's queue
//! in the caller's thread; a listener on RDMA has an acceptor thread that
//! answers handshakes into a bounded backlog, as the kernel does for TCP
//! (`backlog`).
//!
//! Resources: `close` shuts the stream down (the peer sees end of stream at
//! once), but the stream and its fds live until the last `Arc` goes. A selector
//! that still watches the fds never sees them closed and reused under it.

use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::media::connecting::Connect;
use crate::media::datagram::DatagramSocket;
use crate::media::pipe::PipeEnd;
use crate::media::ring::RingConfig;
use crate::media::shm::ShmStream;
use crate::media::stream::{ops, ByteStream, ReadOutcome, WaitSource};
use crate::media::tcp::TcpByteStream;
use crate::media::transport::{self, Medium, Stream, StreamListener, Transport, TransportOptions};
use crate::nio::backlog::Listening;
use crate::nio::spin::AdaptiveSpin;
use crate::rdma::closer::{self, Settle};
use crate::rdma::completions::{CompletionChannel, CompletionGroup, GroupOffer};
use crate::sys::epoll::WaitSet;
use crate::sys::inherited::{self, StdinSocket};
use crate::sys::port::ReservedPort;
use crate::sys::{self, Deadline, NO_SOURCE};

/// Results of `read` and `write` that are not byte counts (as in the JDK's `IOStatus`).
pub mod status {
    /// End of stream.
    pub const EOF: isize = -1;
    /// Nothing now, and the caller does not block.
    pub const UNAVAILABLE: isize = -2;
}

/// The socket a launcher passed on standard input, as `Socket::inherited` makes it.
pub enum Inherited {
    /// A TCP connection.
    Connection(Arc<Socket>),
    /// A TCP listener.
    Listener(Arc<Socket>),
    /// A UDP socket; `ipv6`: its family.
    Datagram {
        /// The socket.
        socket: Arc<Socket>,
        /// Whether it is IPv6 (with IPv4 mapped in), else IPv4.
        ipv6: bool,
    },
    /// A socket of another family (a Unix domain socket), which the engine does not take.
    OtherFamily,
}

/// Every source a socket can have (a stream has two).
type Sources = [WaitSource; 3];

/// What a look at a socket found (`Socket::look`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Look {
    /// The operations of the interest that would not block.
    pub ops: u32,
    /// No change comes without a signal of the socket's fds (see
    /// `ByteStream::signals_by_itself`): a waiter need not look again before one.
    pub signals_by_itself: bool,
}

/// A connection, a connection attempt or a listener, shared between threads.
pub struct Socket {
    state: Mutex<State>,
    turn: Condvar,
    /// Written to wake the sleeper: by `close` (for good), by a new waiter, and
    /// by changes no source signals (also for the selectors that watch it).
    kick: Arc<OwnedFd>,
    closed: AtomicBool,
    /// How long a blocked operation polls before it sleeps (a time is the
    /// most it spins: see `State::spin`).
    spin: Spin,
    /// The completion queues of the selector it is registered with, which
    /// the RDMA connections it accepts (or makes, connecting) then share.
    completions: GroupOffer,
}

/// How long a blocking operation polls the socket before it sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spin {
    /// Polls until ready (lowest latency; the thread keeps a core busy).
    Forever,
    /// Polls this long, then sleeps (zero: sleeps at once).
    For(Duration),
}

impl Spin {
    /// A spin in microseconds as Java passes it: negative polls until ready.
    pub fn from_micros(micros: i64) -> Spin {
        match u64::try_from(micros) {
            Ok(micros) => Spin::For(Duration::from_micros(micros)),
            Err(_) => Spin::Forever,
        }
    }
}

struct State {
    role: Role,
    /// The socket's kick (`Socket::kick`): a connect that moves on to another
    /// fd rings it, so that selectors watch the new one.
    kick: Arc<OwnedFd>,
    /// The connect, once it is over (made or failed), kept as long as the
    /// socket so the fd numbers it had are never reused while a selector
    /// may still watch them.
    spent_connect: Option<Box<Connect>>,
    /// A thread sleeps on the sources, for these interests.
    sleeper: Option<u32>,
    /// How many threads wait for each interest bit (indexed by bit number).
    waiting: [u16; 5],
    /// A failure found while only looking (`ready`): the next operation reports it.
    pending_failure: Option<Error>,
    /// The connection failed: every later operation reports this.
    failed: Option<String>,
    /// A connect completed that `finish_connect` has not yet reported:
    /// `CONNECT` stays ready until it does.
    connect_untaken: bool,
    /// `shutdown_input` was called: reads report end of stream.
    input_shut: bool,
    /// A read sleeps in the kernel's `recv`, outside the lock (`read_in_kernel`).
    reading_in_kernel: bool,
    /// The address a client was bound to (`bind`), holding its port: a TCP
    /// connection is made from it, and a connection on another medium is
    /// named by it for the connection's life.
    bound: Option<Arc<ReservedPort>>,
    /// How long a blocked operation spins, when `Socket::spin` is a time.
    spin: AdaptiveSpin,
    /// The epoll set a connection's blocking waits sleep in from its second
    /// sleep on (see `take_wait_set`); out of here while a thread sleeps in it.
    wait_set: Option<Box<WaitSet<5>>>,
    /// A blocking wait of the connection slept already.
    slept: bool,
    /// The kick was written for the watchers (`State::kick_watchers`), and
    /// the selectors among them read nothing (they watch it edge-triggered):
    /// the next blocking wait reads it first, or its poll would end at once.
    kick_unread: bool,
    /// How many times a blocking wait slept (see `Socket::sleeps`).
    sleeps: u64,
}

enum Role {
    /// Its fd is among the sources: a look moves it on.
    Connecting {
        addr: SocketAddr,
        connect: Box<Connect>,
    },
    Connected(Connected),
    Listening {
        addr: SocketAddr,
        listening: Listening,
    },
    /// Neither connecting nor listening yet, or a connect attempt failed (its
    /// error is then the pending failure).
    Fresh,
}

struct Connected {
    medium: Medium,
    stream: Stream,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Socket {
    fn new(role: Role, spin: Spin) -> Result<Arc<Socket>> {
        let kick = Arc::new(sys::eventfd()?);
        Ok(Arc::new(Socket {
            state: Mutex::new(State {
                role,
                kick: Arc::clone(&kick),
                spent_connect: None,
                sleeper: None,
                waiting: [0; 5],
                pending_failure: None,
                failed: None,
                connect_untaken: false,
                input_shut: false,
                reading_in_kernel: false,
                bound: None,
                spin: AdaptiveSpin::new(match spin {
                    Spin::For(spin) => spin,
                    Spin::Forever => Duration::ZERO,
                }),
                wait_set: None,
                slept: false,
                kick_unread: false,
                sleeps: 0,
            }),
            turn: Condvar::new(),
            kick,
            closed: AtomicBool::new(false),
            spin,
            completions: GroupOffer::default(),
        }))
    }

    /// A socket that neither connects nor listens yet: a selector can watch it
    /// from the start (`start_connect` and `start_listen` wake it).
    pub fn open(spin: Spin) -> Result<Arc<Socket>> {
        Socket::new(Role::Fresh, spin)
    }

    /// A socket connecting to `addr` (see `start_connect`).
    pub fn connect(
        addr: SocketAddr,
        transport: Transport,
        options: TransportOptions,
        timeout: Option<Duration>,
    ) -> Result<Arc<Socket>> {
        let socket = Socket::open(Spin::For(Duration::ZERO))?;
        socket.start_connect(addr, transport, options, timeout)?;
        Ok(socket)
    }

    /// A socket listening on `addr` (see `start_listen`).
    pub fn listen(
        addr: SocketAddr,
        transport: Transport,
        options: TransportOptions,
        backlog: usize,
    ) -> Result<Arc<Socket>> {
        let socket = Socket::open(Spin::For(Duration::ZERO))?;
        socket.start_listen(addr, transport, options, backlog)?;
        Ok(socket)
    }

    /// Starts connecting to `addr` (see `Connect`): `finish_connect` or a
    /// selector learn when it is done.
    pub fn start_connect(
        &self,
        addr: SocketAddr,
        transport: Transport,
        options: TransportOptions,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let mut state = self.fresh_state()?;
        let from = state.bound.clone();
        match Connect::start(addr, transport, options, timeout, self.completions.clone(), from) {
            Ok(connect) => state.role = Role::Connecting { addr, connect: Box::new(connect) },
            // Failed at once: reported when it is looked at, as a later failure is.
            Err(err) => state.pending_failure = Some(err),
        }
        // Selectors that watch this socket look again and find its new fds.
        state.kick_watchers()
    }

    /// A blocking channel's connect, in the calling thread wherever nothing
    /// in it can block past a close (TCP's connect and shm's wait for backlog room watch
    /// the kick): true once connected. Else (RDMA, also as `auto`'s where
    /// the host has a device) it starts as `start_connect` and says false:
    /// `finish_connect` waits for it. The common blocking connects thus make
    /// no more syscalls than they need (a refused connect on the JDK is cheap).
    /// No selector watches the socket meanwhile (a channel changes its
    /// blocking mode only between operations, and only a non-blocking one
    /// registers), so none is told of the connection's fds: a selector that
    /// registers it later finds them.
    pub fn connect_here(
        &self,
        addr: SocketAddr,
        transport: Transport,
        options: TransportOptions,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        match transport {
            Transport::Tcp => self.connect_tcp_here(addr, timeout).map(|()| true),
            Transport::Shm | Transport::Auto if transport::is_local(addr.ip()) => {
                match self.connect_shm_here(addr, options.shm, timeout) {
                    Err(Error::ConnectionRefused(_)) if transport == Transport::Auto => {
                        self.connect_past_shm_here(addr, options, timeout)
                    }
                    done => done.map(|()| true),
                }
            }
            Transport::Auto => self.connect_past_shm_here(addr, options, timeout),
            _ => self.start_connect(addr, transport, options, timeout).map(|()| false),
        }
    }

    /// `auto` where shm does not reach: over TCP in the calling thread on a
    /// host without an RDMA device, else (RDMA first) as `start_connect`.
    fn connect_past_shm_here(
        &self,
        addr: SocketAddr,
        options: TransportOptions,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        if !transport::host_has_rdma() {
            return self.connect_tcp_here(addr, timeout).map(|()| true);
        }
        self.start_connect(addr, Transport::Auto, options, timeout).map(|()| false)
    }

    /// Connects to `addr` over shm in the calling thread (it waits only
    /// while the listener's backlog is full); a close wakes it with `Closed`.
    fn connect_shm_here(&self, addr: SocketAddr, rings: RingConfig, timeout: Option<Duration>) -> Result<()> {
        // The reservation stays the socket's: it holds the connection's port for its life.
        let from = self.fresh_state()?.bound.as_deref().map(ReservedPort::addr);
        let stream = ShmStream::connect_wakeable(addr, from, rings, timeout, Some(self.kick.as_raw_fd()));
        let mut state = self.state.lock();
        if self.is_closed() {
            return Err(Error::Closed("connect"));
        }
        let stream = stream?;
        let local = stream.local_addr().unwrap_or(SocketAddr::new(addr.ip(), 0));
        let peer = stream.peer_addr().unwrap_or(addr);
        state.role =
            Role::Connected(Connected { medium: Medium::Shm, stream: Box::new(stream), local, peer });
        Ok(())
    }

    /// Connects to `addr` over TCP in the calling thread, as a blocking
    /// channel's connect does (no connector thread: the kernel connects while
    /// the caller waits); a close wakes it with `Closed`.
    fn connect_tcp_here(&self, addr: SocketAddr, timeout: Option<Duration>) -> Result<()> {
        let from = self.fresh_state()?.bound.clone();
        let connected = sys::port::connect_tcp(from.as_deref(), addr, timeout, Some(self.kick.as_raw_fd()));
        drop(from); // the stream's socket is then its own
        let mut state = self.state.lock();
        if self.is_closed() {
            return Err(Error::Closed("connect"));
        }
        let stream = TcpByteStream::new(
            connected.map_err(|source| transport::tcp_connect_error(addr, timeout, source))?,
        )?;
        let local = stream.local_addr().unwrap_or(SocketAddr::new(addr.ip(), 0));
        let peer = stream.peer_addr().unwrap_or(addr);
        state.bound = None;
        state.role =
            Role::Connected(Connected { medium: Medium::Tcp, stream: Box::new(stream), local, peer });
        Ok(())
    }

    /// Listens on `addr` on every medium `transport` allows; a thread takes
    /// up to `backlog` RDMA or shm connections ahead of `accept` (see
    /// `backlog`), as a kernel backlog holds TCP's.
    pub fn start_listen(
        &self,
        addr: SocketAddr,
        transport: Transport,
        options: TransportOptions,
        backlog: usize,
    ) -> Result<()> {
        let mut state = self.fresh_state()?;
        let listener = StreamListener::bind(addr, transport, options)?;
        self.accept_from(&mut state, listener, backlog)
    }

    /// Takes `listener`'s connections from now on: the socket listens.
    fn accept_from(&self, state: &mut State, listener: StreamListener, backlog: usize) -> Result<()> {
        let addr = listener.local_addr();
        let listening = Listening::start(listener, backlog, self.spin, self.completions.clone())?;
        state.role = Role::Listening { addr, listening };
        state.kick_watchers()
    }

    /// Binds a socket that is to connect to `addr` (port 0: one the kernel
    /// picks), as the JDK's client bind does: the port is held at once.
    ///
    /// # Errors
    /// `Os` naming `bind` (`EADDRINUSE`, `EADDRNOTAVAIL`); `InvalidArgument`
    /// when the socket is bound already or connects or listens.
    pub fn bind(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let mut state = self.fresh_state()?;
        if state.bound.is_some() {
            return Err(Error::InvalidArgument("the socket is bound already".into()));
        }
        let reserved = ReservedPort::bind(addr)?;
        let local = reserved.addr();
        state.bound = Some(Arc::new(reserved));
        Ok(local)
    }

    fn fresh_state(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.state.lock();
        if self.is_closed() {
            return Err(Error::Closed("open"));
        }
        match state.role {
            Role::Fresh if state.failed.is_none() && state.pending_failure.is_none() => Ok(state),
            _ => Err(Error::InvalidArgument("the socket already connects or listens".into())),
        }
    }

    /// The ends of a new kernel pipe, as sockets: (source, sink). The source
    /// only reads and the sink only writes; each has no addresses.
    pub fn pipe(spin: Spin) -> Result<(Arc<Socket>, Arc<Socket>)> {
        let (source, sink) = PipeEnd::pair()?;
        let none = SocketAddr::from(([0, 0, 0, 0], 0));
        let end = |stream: PipeEnd| {
            let connected =
                Connected { medium: Medium::Pipe, stream: Box::new(stream), local: none, peer: none };
            Socket::new(Role::Connected(connected), spin)
        };
        Ok((end(source)?, end(sink)?))
    }

    /// A new UDP socket (`ipv6`: IPv6 with IPv4 mapped in, else IPv4), as a
    /// socket that selectors take; its own calls are `send_to`,
    /// `receive_from` and `with_datagram`, a connected one's `read` and `write`.
    pub fn datagram(ipv6: bool, spin: Spin) -> Result<Arc<Socket>> {
        let none = SocketAddr::from(([0, 0, 0, 0], 0));
        let stream = Box::new(DatagramSocket::open(ipv6)?);
        Socket::new(
            Role::Connected(Connected { medium: Medium::Datagram, stream, local: none, peer: none }),
            spin,
        )
    }

    /// The socket a launcher passed on standard input (see `sys::inherited`),
    /// as a socket of the engine over a duplicate of fd 0; `None` when fd 0 is
    /// not a socket.
    pub fn inherited(spin: Spin) -> Result<Option<Inherited>> {
        let none = SocketAddr::from(([0, 0, 0, 0], 0));
        Ok(Some(match inherited::stdin_socket()? {
            None => return Ok(None),
            Some(StdinSocket::OtherFamily) => Inherited::OtherFamily,
            Some(StdinSocket::Connection(fd)) => {
                let stream = TcpByteStream::new(std::net::TcpStream::from(fd))?;
                let local = stream.local_addr().unwrap_or(none);
                let peer = stream.peer_addr().unwrap_or(none);
                let connected = Connected { medium: Medium::Tcp, stream: Box::new(stream), local, peer };
                Inherited::Connection(Socket::new(Role::Connected(connected), spin)?)
            }
            Some(StdinSocket::Listener(fd)) => {
                let listener =
                    StreamListener::over_tcp(std::net::TcpListener::from(fd), TransportOptions::default())?;
                let socket = Socket::open(spin)?;
                // TCP alone: its connections wait in the launcher's kernel backlog.
                socket.accept_from(&mut socket.state.lock(), listener, 0)?;
                Inherited::Listener(socket)
            }
            Some(StdinSocket::Datagram { fd, ipv6 }) => {
                let datagram = DatagramSocket::over(fd, ipv6)?;
                let local = datagram.local()?;
                let peer = datagram.peer().unwrap_or(none);
                let connected =
                    Connected { medium: Medium::Datagram, stream: Box::new(datagram), local, peer };
                Inherited::Datagram { socket: Socket::new(Role::Connected(connected), spin)?, ipv6 }
            }
        }))
    }

    /// Runs `op` on a datagram socket (bind, connect, options, memberships).
    pub fn with_datagram<T>(&self, op: impl FnOnce(&mut DatagramSocket) -> Result<T>) -> Result<T> {
        let mut state = self.state.lock();
        if self.is_closed() {
            return Err(Error::Closed("datagram socket"));
        }
        op(state.datagram()?)
    }

    /// Sends one datagram to `to` (`None`: the connected peer); when `block`,
    /// waits for room, else says `None` when there is none.
    pub fn send_to(&self, data: &[u8], to: Option<SocketAddr>, block: bool) -> Result<Option<usize>> {
        let mut state = self.state.lock();
        loop {
            if self.is_closed() {
                return Err(Error::Closed("send"));
            }
            let sent = state.datagram()?.try_send_to(data, to)?;
            if sent.is_some() || !block {
                return Ok(sent);
            }
            self.wait(&mut state, "send", ops::WRITE, Deadline::after(None))?;
        }
    }

    /// Receives one datagram into `out`: its length and sender; `None` when
    /// none is waiting and not `block`. A blocking receive gives up with
    /// `TimedOut` after `timeout`.
    pub fn receive_from(
        &self,
        out: &mut [u8],
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<Option<(usize, SocketAddr)>> {
        let deadline = Deadline::after(timeout);
        let mut state = self.state.lock();
        loop {
            if self.is_closed() {
                return Err(Error::Closed("receive"));
            }
            let received = state.datagram()?.try_receive_from(out)?;
            if received.is_some() || !block {
                return Ok(received);
            }
            self.wait(&mut state, "receive", ops::READ, deadline)?;
        }
    }

    pub(crate) fn accepted(
        medium: Medium,
        stream: Stream,
        listener_addr: SocketAddr,
        spin: Spin,
    ) -> Result<Arc<Socket>> {
        let unknown = SocketAddr::new(listener_addr.ip(), 0);
        let local = stream.local_addr().unwrap_or(listener_addr);
        let peer = stream.peer_addr().unwrap_or(unknown);
        Socket::new(Role::Connected(Connected { medium, stream, local, peer }), spin)
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Completes a connect: true once connected, false while it is still
    /// under way (and `block` is false).
    ///
    /// # Errors
    /// Why the connection could not be made; `Closed` if closed meanwhile.
    pub fn finish_connect(&self, block: bool) -> Result<bool> {
        let mut state = self.state.lock();
        loop {
            state.ready(ops::CONNECT);
            state.take_failure()?;
            match &state.role {
                Role::Connected(_) => {
                    state.connect_untaken = false;
                    return Ok(true);
                }
                Role::Connecting { .. } if !block => return Ok(false),
                Role::Connecting { connect, .. } => {
                    // At the connect's deadline the next look fails it.
                    let deadline = connect.deadline();
                    match self.wait(&mut state, "connect", ops::CONNECT, deadline) {
                        Ok(()) | Err(Error::TimedOut { .. }) => {}
                        Err(err) => return Err(err),
                    }
                }
                _ => return Err(Error::InvalidArgument("not a connecting socket".into())),
            }
        }
    }

    /// Takes a connection that was accepted, or accepts one: `None` when none
    /// is waiting and `block` is false; a blocking accept gives up with
    /// `TimedOut` after `timeout`.
    pub fn accept(&self, block: bool, timeout: Option<Duration>) -> Result<Option<Arc<Socket>>> {
        let deadline = Deadline::after(timeout);
        let mut state = self.state.lock();
        loop {
            if self.is_closed() {
                return Err(Error::Closed("accept"));
            }
            let Role::Listening { listening, .. } = &mut state.role else {
                return Err(Error::InvalidArgument("not a listening socket".into()));
            };
            if let Some(socket) = listening.take()? {
                return Ok(Some(socket));
            }
            if !block {
                return Ok(None);
            }
            self.wait(&mut state, "accept", ops::ACCEPT, deadline)?;
        }
    }

    /// Reads what has arrived into `out`: a byte count, `status::EOF`, or
    /// `status::UNAVAILABLE` when nothing is there and `block` is false.
    pub fn read(&self, out: &mut [u8], block: bool, timeout: Option<Duration>) -> Result<isize> {
        let deadline = Deadline::after(timeout);
        let mut state = self.state.lock();
        // A kernel socket last seen drained would only say EAGAIN: sleep first.
        let mut drained = block && state.known_drained();
        loop {
            if self.is_closed() {
                return Err(Error::Closed("read"));
            }
            if state.input_shut {
                return Ok(status::EOF);
            }
            let outcome = if !std::mem::take(&mut drained) {
                let outcome = state.connected()?.stream.try_read(out);
                self.check(&mut state, outcome)?
            } else if let Some(outcome) = self.read_in_kernel(&mut state, out, deadline)? {
                outcome
            } else {
                self.wait(&mut state, "read", ops::READ, deadline)?;
                continue;
            };
            match outcome {
                ReadOutcome::Data(n) => return Ok(n as isize),
                ReadOutcome::EndOfStream => return Ok(status::EOF),
                ReadOutcome::WouldBlock if !block => return Ok(status::UNAVAILABLE),
                ReadOutcome::WouldBlock => drained = true,
            }
        }
    }

    /// A blocking read of a kernel socket without a deadline sleeps in its
    /// `recv`, outside the lock: one syscall where a wait and a read take
    /// two, as the JDK's blocking channel. `close` and `shutdown_input` wake
    /// it (`wake_kernel_reader`). None where it cannot: another medium, a
    /// deadline, an empty buffer (`recv` would not sleep), a reader already there.
    fn read_in_kernel(
        &self,
        state: &mut MutexGuard<'_, State>,
        out: &mut [u8],
        deadline: Deadline,
    ) -> Result<Option<ReadOutcome>> {
        if deadline.instant().is_some() || out.is_empty() || state.reading_in_kernel {
            return Ok(None);
        }
        let Some(socket) = state.connected()?.stream.kernel_socket() else {
            return Ok(None);
        };
        // The fd lives as long as the socket's stream, which outlives `self`'s borrow.
        state.reading_in_kernel = true;
        let received = MutexGuard::unlocked(state, || sys::recv(socket, out, 0));
        state.reading_in_kernel = false;
        self.turn.notify_all(); // a close may wait for the read to leave the kernel
        if (self.is_closed() || state.input_shut) && !matches!(received, Ok(1..)) {
            return Ok(Some(ReadOutcome::WouldBlock)); // woken for that: the caller reports it
        }
        let outcome = state.connected()?.stream.kernel_read_done(received, out.len());
        self.check(state, outcome).map(Some)
    }

    /// Wakes a read asleep in the kernel's `recv` (`read_in_kernel`) by
    /// shutting the socket's reading down, and waits until it has left.
    fn wake_kernel_reader(&self, state: &mut MutexGuard<'_, State>) {
        let socket = match &state.role {
            Role::Connected(connected) if state.reading_in_kernel => connected.stream.kernel_socket(),
            _ => None,
        };
        let Some(socket) = socket else {
            return;
        };
        if let Err(err) = sys::shutdown_read(socket) {
            log::error!("socket: cannot wake a read asleep in the kernel: {err}");
            return;
        }
        while state.reading_in_kernel {
            self.turn.wait(state);
        }
    }

    /// Writes `data`: all of it when `block`, else as much as there is room
    /// for (possibly 0). Returns the byte count.
    pub fn write(&self, data: &[u8], block: bool) -> Result<usize> {
        let mut state = self.state.lock();
        let mut done = 0;
        loop {
            if self.is_closed() {
                return Err(Error::Closed("write"));
            }
            let written = state.connected()?.stream.try_write(&data[done..]);
            done += self.check(&mut state, written)?;
            if done == data.len() || !block {
                return Ok(done);
            }
            self.wait(&mut state, "write", ops::WRITE, Deadline::after(None))?;
        }
    }

    /// Sends `byte` as urgent data (TCP only); when `block`, waits for room,
    /// else says false when there is none.
    pub fn send_urgent(&self, byte: u8, block: bool) -> Result<bool> {
        let mut state = self.state.lock();
        loop {
            if self.is_closed() {
                return Err(Error::Closed("send urgent data"));
            }
            let sent = state.connected()?.stream.try_send_urgent(byte);
            let sent = self.check(&mut state, sent)?;
            if sent || !block {
                return Ok(sent);
            }
            self.wait(&mut state, "write", ops::WRITE, Deadline::after(None))?;
        }
    }

    /// Reads urgent data in line (`SO_OOBINLINE`), or drops it.
    pub fn set_urgent_inline(&self, inline: bool) -> Result<()> {
        let mut state = self.state.lock();
        let set = state.connected()?.stream.set_urgent_inline(inline);
        self.check(&mut state, set)
    }

    /// Half-closes: the peer reads end of stream after the bytes written so far.
    pub fn shutdown_output(&self) -> Result<()> {
        let mut state = self.state.lock();
        let shut = state.connected()?.stream.shutdown_output();
        self.check(&mut state, shut)?;
        // Writes now fail at once: the socket is writable, unsignalled.
        state.kick_watchers()
    }

    /// Ends reading: reads, also those blocked now, report end of stream and
    /// whatever arrives later is dropped unread.
    pub fn shutdown_input(&self) -> Result<()> {
        let mut state = self.state.lock();
        state.connected()?;
        state.input_shut = true;
        self.wake_kernel_reader(&mut state);
        self.turn.notify_all();
        state.kick_watchers()
    }

    /// How many bytes a read returns now without waiting, at least
    /// (`ByteStream::available`): the socket adaptor's `available()`. 0 once
    /// reading was shut down.
    pub fn available(&self) -> Result<usize> {
        let mut state = self.state.lock();
        if state.input_shut {
            return Ok(0);
        }
        let available = state.connected()?.stream.available();
        self.check(&mut state, available)
    }

    /// How many times a blocking operation slept on the socket's sources:
    /// what blocking calls cost, for tests and benchmarks.
    pub fn sleeps(&self) -> u64 {
        self.state.lock().sleeps
    }

    /// The local and the peer's address of a connection; a listener's address twice.
    pub fn addresses(&self) -> Result<(SocketAddr, SocketAddr)> {
        let mut state = self.state.lock();
        if let Role::Listening { addr, .. } = &state.role {
            return Ok((*addr, *addr));
        }
        let connected = state.connected()?;
        Ok((connected.local, connected.peer))
    }

    /// The medium of a connection.
    pub fn medium(&self) -> Result<Medium> {
        Ok(self.state.lock().connected()?.medium)
    }

    /// Closes: wakes every thread blocked on the socket (their operation fails
    /// with `Closed`), shuts the stream down, and drops connections accepted
    /// but not taken. Idempotent.
    pub fn close(&self) {
        self.close_as(Ending::Close);
    }

    /// Closes as `close` does, and leaves what the stream's close could not
    /// finish at once to the closer (`rdma::closer`), which holds the socket
    /// till then: a selector may hold it too, until its next select.
    /// `held`: a selector's key still holds the socket, which then goes at
    /// its next select (`ByteStream::close_while_held`).
    pub fn close_handing_over(self: &Arc<Self>, held: bool) {
        self.close_as(if held { Ending::WhileHeld } else { Ending::Close });
        if !self.close_complete() {
            closer::adopt(Box::new(Closed(Arc::clone(self))));
        }
    }

    /// Moves the close of a closed socket's stream on; true once it is complete.
    fn close_complete(&self) -> bool {
        match &mut self.state.lock().role {
            Role::Connected(connected) => connected.stream.close_complete(),
            _ => true,
        }
    }

    /// Closes abortively (`SO_LINGER` 0): as `close`, but the peer's
    /// connection is reset where the medium can tell it (`ByteStream::abort`).
    pub fn abort(&self) {
        self.close_as(Ending::Abort);
    }

    fn close_as(&self, ending: Ending) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(err) = sys::signal_eventfd(&self.kick) {
            log::error!("socket close: cannot wake blocked threads: {err}");
        }
        let mut state = self.state.lock();
        self.turn.notify_all();
        // First, so a read asleep in the kernel reports the close, not the reset.
        self.wake_kernel_reader(&mut state);
        let acceptor = match &mut state.role {
            Role::Connected(connected) => {
                match ending {
                    Ending::Close => connected.stream.close(),
                    Ending::WhileHeld => connected.stream.close_while_held(),
                    Ending::Abort => connected.stream.abort(),
                }
                None
            }
            Role::Listening { listening, .. } => listening.stop(),
            Role::Connecting { .. } | Role::Fresh => None,
        };
        drop(state);
        // The port is free again once close returns, as with a kernel listener;
        // connections accepted but never taken close with the backlog.
        if let Some(acceptor) = acceptor {
            if acceptor.join().is_err() {
                log::error!("listener close: its thread panicked");
            }
            if let Role::Listening { listening, .. } = &self.state.lock().role {
                listening.clear();
            }
        }
    }

    /// Which of `interest` would not block now (see `ByteStream::ready`; a
    /// closed socket is ready for everything, so its users learn of it), and
    /// whether only a signal of the socket's fds can change that.
    pub(crate) fn look(&self, interest: u32) -> Look {
        if self.is_closed() {
            return Look { ops: interest, signals_by_itself: true };
        }
        let mut state = self.state.lock();
        Look { ops: state.ready(interest), signals_by_itself: state.signals_by_itself() }
    }

    /// A selector's epoll set reported `events` for `fd`, one of `all_sources`.
    pub(crate) fn signalled(&self, fd: RawFd, events: u32) {
        match &mut self.state.lock().role {
            Role::Connected(connected) => connected.stream.signalled(fd, events),
            Role::Listening { listening, .. } => listening.signalled(),
            _ => {}
        }
    }

    /// Prepares the sources to signal a change for `interest`; then the caller
    /// looks at `ready` once more before it sleeps. Returns the sources.
    pub(crate) fn arm(&self, interest: u32) -> Sources {
        let mut state = self.state.lock();
        if let Err(err) = state.arm(interest) {
            state.pending_failure.get_or_insert(err);
        }
        state.sources(interest)
    }

    /// Ends a sleep prepared by `arm` (a selector's: see `ByteStream::disarm_watched`).
    pub(crate) fn disarm(&self) {
        let mut state = self.state.lock();
        if let Err(err) = state.disarm_watched() {
            state.pending_failure.get_or_insert(err);
        }
    }

    /// A selector registers the socket: the RDMA connections it accepts from
    /// now on, or its own if it is still to be made, share the selector's
    /// completion queues.
    pub(crate) fn offer_completions(&self, group: &Arc<CompletionGroup>) {
        self.completions.offer(group);
    }

    /// A selector deregisters the socket: its completion queues are no longer offered.
    pub(crate) fn withdraw_completions(&self, group: &Arc<CompletionGroup>) {
        self.completions.withdraw(group);
    }

    /// The channel of the completion queue the socket's stream shares, which a
    /// selector watching the socket watches too (see `completions`).
    pub(crate) fn completion_channel(&self) -> Option<CompletionChannel> {
        self.state.lock().completion_channel()
    }

    /// The fd that tells of a peer gone without closing, for a selector to
    /// watch level-triggered (see `ByteStream::liveness_fd`); -1 for none.
    pub(crate) fn liveness_fd(&self) -> RawFd {
        self.state.lock().liveness_fd()
    }

    /// Looks whether the peer is gone, after the liveness fd signalled.
    pub(crate) fn check_liveness(&self) {
        self.state.lock().check_liveness();
    }

    /// Every fd that can signal for this socket, for a selector's epoll set:
    /// its sources and the kick fd (a connect or listen starting, a close).
    pub(crate) fn all_sources(&self) -> [RawFd; 4] {
        let [a, b, c] = self.state.lock().sources(ops::READ | ops::WRITE | ops::CONNECT | ops::ACCEPT);
        [a.0, b.0, c.0, self.kick.as_raw_fd()]
    }

    /// Waits until something may have changed for `interest` (callers look
    /// again), as the sleeper or behind it. See the module documentation.
    fn wait(
        &self,
        state: &mut MutexGuard<'_, State>,
        op: &'static str,
        interest: u32,
        deadline: Deadline,
    ) -> Result<()> {
        state.count_waiter(interest, true);
        let began = Instant::now();
        let spin = match self.spin {
            _ if state.signals_by_itself() => Spin::For(Duration::ZERO),
            Spin::For(_) => Spin::For(state.spin.budget(began)),
            Spin::Forever => Spin::Forever,
        };
        let result = self.wait_as_waiter(state, op, interest, deadline, spin);
        if let Spin::For(budget) = spin {
            state.spin.waited(budget, began.elapsed(), result.is_ok());
        }
        state.count_waiter(interest, false);
        result?;
        if self.is_closed() {
            return Err(Error::Closed(op));
        }
        Ok(())
    }

    fn wait_as_waiter(
        &self,
        state: &mut MutexGuard<'_, State>,
        op: &'static str,
        interest: u32,
        deadline: Deadline,
        spin: Spin,
    ) -> Result<()> {
        // The spin lets other threads in between its looks, so whether another
        // thread became the sleeper is known only after it.
        if self.spin_until_ready(state, interest, deadline, spin) {
            return Ok(());
        }
        if let Some(watched) = state.sleeper {
            if interest & !watched != 0 {
                // The sleeper does not watch for what we need: make it look again.
                sys::signal_eventfd(&self.kick)?;
            }
            let timed_out = match deadline.instant() {
                Some(at) => self.turn.wait_until(state, at).timed_out(),
                None => {
                    self.turn.wait(state);
                    false
                }
            };
            return if timed_out { Err(deadline.timed_out(op)) } else { Ok(()) };
        }
        if mem::take(&mut state.kick_unread) {
            sys::drain_eventfd(&self.kick)?; // before the look at `closed` below: a close's kick is not missed
        }
        let watch = state.waiting_interest();
        state.arm(watch)?;
        if state.known_ready(interest) != 0 || self.is_closed() {
            return state.disarm();
        }
        let [a, b, c] = state.sources(watch);
        debug_assert!(state.sleeper.is_none(), "one sleeper per socket");
        state.sleeper = Some(watch);
        state.sleeps += 1;
        let kick = (self.kick.as_raw_fd(), libc::POLLIN);
        let liveness = (state.liveness_fd(), sys::liveness::EVENTS);
        let channel = state.completion_channel();
        let mut wait_set = if channel.is_none() { state.take_wait_set() } else { None };
        let edge_triggered = wait_set.is_some();
        // Which woke it: (the kick, the liveness fd).
        let woke = match (channel, &mut wait_set) {
            (None, Some(set)) => MutexGuard::unlocked(state, || {
                // poll(2)'s event bits are epoll's. The kick and the liveness
                // fd stay level-triggered: a kick is consumed below, a hang-up never.
                let level = |(fd, events): WaitSource| (fd, events as u16 as u32);
                let edge = |source: WaitSource| (source.0, level(source).1 | libc::EPOLLET as u32);
                set.wait(op, [edge(a), edge(b), edge(c), level(kick), level(liveness)], deadline)
                    .map(|[.., kick, gone]| (kick, gone))
            }),
            (None, None) => MutexGuard::unlocked(state, || {
                sys::wait_for(op, [a, b, c, kick, liveness], deadline).map(|[.., kick, gone]| (kick, gone))
            }),
            (Some(channel), _) => MutexGuard::unlocked(state, || {
                channel.sleep_through(|fd| {
                    sys::wait_for(op, [a, b, c, kick, liveness, (fd, libc::POLLIN)], deadline)
                        .map(|[.., kick, gone, _]| (kick, gone))
                })
            }),
        };
        state.wait_set = wait_set;
        if let Ok((_, true)) = woke {
            state.check_liveness();
        }
        state.sleeper = None;
        self.turn.notify_all();
        // A kick that came after the wake stays readable and wakes the next sleep.
        if matches!(woke, Ok((true, _))) && !self.is_closed() {
            sys::drain_eventfd(&self.kick)?;
        }
        if edge_triggered {
            state.disarm_watched()?; // what a level-triggered wait would see again need not be consumed
        } else {
            state.disarm()?;
        }
        woke.map(drop)
    }
}

/// How `Socket::close_as` ends a connection's stream.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// `ByteStream::close`.
    Close,
    /// `ByteStream::close_while_held`: a selector's key still holds the socket.
    WhileHeld,
    /// `ByteStream::abort` (`SO_LINGER` 0).
    Abort,
}

/// A closed socket the closer holds until its stream's close is complete.
struct Closed(Arc<Socket>);

impl Settle for Closed {
    fn settle(&mut self) -> bool {
        self.0.close_complete()
    }
}

impl Socket {
    /// Passes a stream result through, remembering a failure: a stream that
    /// failed (a violation, a broken QP) is not used again. A failed socket is
    /// ready for everything, which its medium signals to no one: see `kick_watchers`.
    fn check<T>(&self, state: &mut State, result: Result<T>) -> Result<T> {
        result.map_err(|err| {
            // Writing to a closed peer or after a half close leaves the
            // stream sound: what arrived can still be read. A datagram
            // socket's errors concern one datagram each.
            let datagrams = matches!(&state.role, Role::Connected(c) if c.medium == Medium::Datagram);
            if !datagrams
                && !matches!(err, Error::Disconnected | Error::ConnectionReset | Error::InvalidArgument(_))
            {
                if state.failed.is_none() {
                    if let Err(err) = state.kick_watchers() {
                        log::error!("socket: cannot signal a change to its watchers: {err}");
                    }
                }
                state.failed = Some(err.to_string());
            }
            err
        })
    }

    /// Polls for `interest` for `spin` (letting other threads in between
    /// looks); true once ready or closed.
    fn spin_until_ready(
        &self,
        state: &mut MutexGuard<'_, State>,
        interest: u32,
        deadline: Deadline,
        spin: Spin,
    ) -> bool {
        let until = match spin {
            Spin::For(spin) if spin.is_zero() => return false,
            Spin::For(spin) => Some(Instant::now() + spin),
            Spin::Forever => None,
        };
        loop {
            if state.ready(interest) != 0 || self.is_closed() {
                return true;
            }
            if until.is_some_and(|until| Instant::now() >= until) || deadline.expired() {
                return false;
            }
            MutexGuard::unlocked(state, std::hint::spin_loop);
        }
    }
}

impl State {
    /// Makes the sleeper and every selector that armed the socket look again,
    /// after a change its medium raises no signal for.
    fn kick_watchers(&mut self) -> Result<()> {
        self.kick_unread = true;
        sys::signal_eventfd(&self.kick)
    }

    fn connected(&mut self) -> Result<&mut Connected> {
        self.take_failure()?;
        match &mut self.role {
            Role::Connected(connected) => Ok(connected),
            _ => Err(Error::InvalidArgument("not a connected socket".into())),
        }
    }

    fn datagram(&mut self) -> Result<&mut DatagramSocket> {
        self.connected()?
            .stream
            .datagram()
            .ok_or_else(|| Error::InvalidArgument("not a datagram socket".into()))
    }

    /// Reports a failure found earlier, once as itself and then as `Failed`.
    fn take_failure(&mut self) -> Result<()> {
        if let Some(err) = self.pending_failure.take() {
            self.failed = Some(err.to_string());
            return Err(err);
        }
        match &self.failed {
            Some(text) => Err(Error::Failed(text.clone())),
            None => Ok(()),
        }
    }

    fn count_waiter(&mut self, interest: u32, arrives: bool) {
        for bit in 0..self.waiting.len() {
            if interest & (1 << bit) != 0 {
                if arrives {
                    self.waiting[bit] += 1;
                } else {
                    self.waiting[bit] -= 1;
                }
            }
        }
    }

    fn waiting_interest(&self) -> u32 {
        (0..self.waiting.len()).filter(|&bit| self.waiting[bit] > 0).fold(0, |ops, bit| ops | 1 << bit)
    }

    /// Which of `interest` would not block now (see `ByteStream::ready`).
    fn ready(&mut self, interest: u32) -> u32 {
        self.look(interest, true)
    }

    /// `ready` without a syscall (see `ByteStream::known_ready`): the look of
    /// a thread about to sleep, whose sleep on a kernel fd returns at once for
    /// what is ready.
    fn known_ready(&mut self, interest: u32) -> u32 {
        self.look(interest, false)
    }

    fn look(&mut self, interest: u32, ask_kernel: bool) -> u32 {
        if self.pending_failure.is_some() || self.failed.is_some() {
            return interest;
        }
        let ready = match &mut self.role {
            Role::Connecting { addr, connect } => {
                let watched = connect.source();
                match connect.advance() {
                    Ok(None) => {
                        if connect.source() != watched {
                            // Selectors look again and watch the new fd.
                            self.kick_watchers().map(|()| 0)
                        } else {
                            Ok(0)
                        }
                    }
                    Ok(Some((medium, stream))) => {
                        // The connection was made from the bound address (see
                        // `Connect::from`); the reservation holds the port for
                        // the connection's life on media other than TCP.
                        if medium == Medium::Tcp {
                            self.bound = None;
                        }
                        let local = stream.local_addr().unwrap_or(SocketAddr::new(addr.ip(), 0));
                        let peer = stream.peer_addr().unwrap_or(*addr);
                        let connected = Role::Connected(Connected { medium, stream, local, peer });
                        if let Role::Connecting { connect, .. } = std::mem::replace(&mut self.role, connected)
                        {
                            self.spent_connect = Some(connect);
                        }
                        self.connect_untaken = true;
                        Ok(ops::CONNECT)
                    }
                    Err(err) => Err(err),
                }
            }
            Role::Connected(connected) => match ask_kernel {
                true => connected.stream.ready(interest),
                false => connected.stream.known_ready(interest),
            }
            .map(|ready| {
                let connect = if self.connect_untaken { ops::CONNECT } else { 0 };
                let eof = if self.input_shut { ops::READ } else { 0 };
                ready | connect | eof
            }),
            Role::Listening { listening, .. } => {
                Ok(if listening.has_waiting(ask_kernel) { ops::ACCEPT } else { 0 })
            }
            Role::Fresh => Ok(0),
        };
        match ready {
            Ok(ready) => ready & interest,
            // Room or readability to report: the operation itself tells.
            Err(Error::Disconnected) => interest,
            Err(err) => {
                if matches!(self.role, Role::Connecting { .. }) {
                    if let Role::Connecting { connect, .. } = std::mem::replace(&mut self.role, Role::Fresh) {
                        self.spent_connect = Some(connect);
                    }
                }
                self.pending_failure = Some(err);
                interest
            }
        }
    }

    /// A connection on a medium that signals by itself, which has not said
    /// since its last read that it has something to read: a blocking read
    /// sleeps on the kernel's fd first, which returns at once if something
    /// is there (a read first would find nothing or, as a look first would,
    /// cost a syscall more).
    fn known_drained(&mut self) -> bool {
        matches!(&self.role, Role::Connected(connected) if connected.stream.signals_by_itself())
            && self.known_ready(ops::READ) == 0
    }

    /// See `Look::signals_by_itself`: a connection's medium tells; a connect
    /// or listener signals through its eventfds, a fresh socket through its kick.
    fn signals_by_itself(&self) -> bool {
        match &self.role {
            Role::Connected(connected) => connected.stream.signals_by_itself(),
            _ => true,
        }
    }

    fn arm(&mut self, interest: u32) -> Result<()> {
        match &mut self.role {
            Role::Connected(connected) => connected.stream.arm(interest),
            _ => Ok(()), // eventfds and listening sockets signal by themselves
        }
    }

    fn disarm(&mut self) -> Result<()> {
        match &mut self.role {
            Role::Connected(connected) => connected.stream.disarm(),
            _ => Ok(()), // a connect's look takes what signalled
        }
    }

    fn disarm_watched(&mut self) -> Result<()> {
        match &mut self.role {
            Role::Connected(connected) => connected.stream.disarm_watched(),
            _ => self.disarm(),
        }
    }

    fn completion_channel(&self) -> Option<CompletionChannel> {
        match &self.role {
            Role::Connected(connected) => connected.stream.completion_channel(),
            _ => None,
        }
    }

    /// The epoll set for a blocking wait of a connection that slept before,
    /// taken out for the sleep. Sleeping in it, the sources are watched
    /// edge-triggered, as a selector watches them: shm then reads no doorbell
    /// after a wake-up. None (poll(2)) for its first sleep (a connection that
    /// blocks once, as in a connect-echo-close cycle, pays no set up); for a
    /// socket not connected (a connect's or listener's fds change; a
    /// connection's stay open as long as the socket); and for a medium that
    /// signals by itself (a kernel socket: its sleeper looks with
    /// `known_ready`, which may miss data that came before, and counts on a
    /// level-triggered sleep to return at once for it).
    /// A set that cannot be made (no fd left) leaves the sleep to poll(2).
    fn take_wait_set(&mut self) -> Option<Box<WaitSet<5>>> {
        if !matches!(self.role, Role::Connected(_)) || self.signals_by_itself() {
            return None;
        }
        if let Some(set) = self.wait_set.take() {
            return Some(set);
        }
        if !std::mem::replace(&mut self.slept, true) {
            return None;
        }
        WaitSet::new()
            .map_err(|err| log::debug!("socket: blocking waits go on in poll(2): {err}"))
            .ok()
            .map(Box::new)
    }

    fn liveness_fd(&self) -> RawFd {
        match &self.role {
            Role::Connected(connected) => connected.stream.liveness_fd(),
            _ => -1,
        }
    }

    /// See `Socket::check_liveness`; a failure to look is the next operation's.
    fn check_liveness(&mut self) {
        if let Role::Connected(connected) = &mut self.role {
            if let Err(err) = connected.stream.check_liveness() {
                self.pending_failure.get_or_insert(err);
            }
        }
    }

    fn sources(&self, interest: u32) -> Sources {
        match &self.role {
            Role::Connected(connected) => {
                let [a, b] = connected.stream.sources(interest);
                [a, b, NO_SOURCE]
            }
            Role::Listening { listening, .. } => listening.sources(),
            Role::Connecting { connect, .. } => [connect.source(), NO_SOURCE, NO_SOURCE],
            Role::Fresh => [NO_SOURCE; 3],
        }
    }
}
