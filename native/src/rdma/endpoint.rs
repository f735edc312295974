//! The part of every RDMA connection that does not depend on its data path: an
//! RC queue pair with its seat at a completion queue (its own, or the one of
//! the selector its listener is registered with: `completions`) and its PD
//! (its own, or for a listener's two-sided connections the PD of the
//! listener's shared receive queue), set up through
//! librdmacm the way TCP sockets are (a `Listener` binds an IP address and port
//! and accepts; a client connects to that address), with a small hello
//! exchanged in the connect request and reply, and the completion and
//! connection-event waiting all data paths share.
//!
//! A data path (`connection`: two-sided messages; `rdma_stream`: one-sided
//! rings; `send_stream`: a two-sided byte stream) registers its memory with the
//! endpoint's PD and posts its receives before it completes the connection, and
//! owns the endpoint, declared after its memory regions so that they are
//! deregistered before the PD goes.

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_sys::*;

use crate::error::{Error, Result};
use crate::rdma::closer::CLOSE_WAIT;
use crate::rdma::cm::{CmEvent, CmId, EventChannel};
use crate::rdma::completions::{CompletionGroup, Completions, GroupOffer};
use crate::rdma::device_events::{self, Watched, DRAIN_WR_ID, PROBE_WR_ID};
use crate::rdma::hello::{Hello, PathKind};
use crate::rdma::verbs::{
    self, Completion, Device, ProtectionDomain, QueuePair, SharedReceiveQueue, POLL_BATCH,
};
use crate::sys::port::ReservedPort;
use crate::sys::{self, Deadline, WaitSource};

/// Address and route resolution are local in practice; this bounds a lost reply.
const RESOLVE_TIMEOUT_MS: i32 = 2000;
/// Ports a client that named none tries when rdma_cm finds the one reserved
/// for it taken (by an identifier that holds no TCP port: a listener of
/// `Listener::bind` alone, another process's).
const PORT_TRIES: u32 = 8;
/// A reader that finds nothing looks for a disconnect once in this many times:
/// each look is a syscall on a spinning reader's path (once in 64 cost a 64-byte
/// round trip 12-15% under emulation); a sleeping reader learns of it at once.
const DISCONNECT_CHECK_EVERY: u32 = 1024;

/// The queue pair a data path asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QpShape {
    pub send_depth: u32,
    pub recv_depth: u32,
    pub max_inline: u32,
    /// Receives the queue pair may consume from a shared receive queue (the
    /// credits it grants its peer): completions it can have outstanding too.
    pub shared_receives: u32,
}

impl QpShape {
    /// The send queue's depth: the data path's, and a slot each for the
    /// drain marker and a keepalive probe (`device_events`).
    fn send_slots(&self) -> u32 {
        self.send_depth + 2
    }

    /// The completions the queue pair can have outstanding at once.
    fn completions(&self) -> u32 {
        self.send_slots() + self.recv_depth + self.shared_receives
    }
}

/// A listening rdma_cm identifier bound to an IP address and port.
pub struct Listener {
    // Declared before `events`: the identifier must go before its channel.
    #[allow(dead_code)] // owned for its Drop: the listening identifier
    id: CmId,
    events: EventChannel,
    local_addr: SocketAddr,
}

/// A connect request taken from a listener, not yet accepted. Dropping it
/// destroys its identifier, which makes the connection manager refuse it.
pub(crate) struct Request {
    id: CmId,
    pub hello: Hello,
    deadline: Deadline,
    /// The completion queues of the selector the listener is registered with, if any.
    pub completions: Option<Arc<CompletionGroup>>,
}

impl Request {
    /// The address the request came from.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.id.peer_addr()
    }

    /// The device the request arrived on.
    pub(crate) fn device(&self) -> Option<Device> {
        self.id.device()
    }

    /// Refuses the request, telling the peer which path this listener grants it
    /// instead (see `Error::SendsOnly`).
    pub(crate) fn redirect(self, to: &Hello) {
        let bytes = to.encode();
        if let Err(err) = self.id.reject(&bytes) {
            log::warn!("rejecting a connect request: {err}");
        }
    }
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port) and listens with `backlog`.
    ///
    /// # Errors
    /// `NoDevice` on a host without RDMA; `Os` naming `rdma_bind_addr` when no
    /// RDMA device has the address or the port is taken.
    pub fn bind(addr: SocketAddr, backlog: i32) -> Result<Listener> {
        verbs::check_device()?; // "no device" is reported as such, not as a cm failure
        let events = EventChannel::new()?;
        let id = CmId::new(&events)?;
        id.bind(addr)?;
        id.listen(backlog)?;
        let local_addr = id.local_addr().unwrap_or(addr);
        log::debug!("listening on {local_addr}");
        Ok(Listener { id, events, local_addr })
    }

    /// The bound address, with the actual port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for a connect request for the data path `kind`; requests for
    /// another path, or with an unreadable hello, are refused.
    pub(crate) fn next_request(&self, kind: PathKind, deadline: Deadline) -> Result<Request> {
        loop {
            match self.try_request(deadline)? {
                Some(request) if request.hello.kind == kind => return Ok(request),
                Some(request) => {
                    log::warn!("refusing a {:?} connection on a {kind:?} accept", request.hello.kind)
                }
                None => {
                    sys::wait_readable("accept", [self.events.fd()], deadline)?;
                }
            }
        }
    }

    /// The fd that becomes readable when a connect request may be pending.
    pub(crate) fn event_fd(&self) -> std::os::fd::RawFd {
        self.events.fd()
    }

    /// Takes a pending connect request, without waiting; the connection is
    /// then completed by `deadline`.
    pub(crate) fn try_request(&self, deadline: Deadline) -> Result<Option<Request>> {
        loop {
            let Some(event) = self.events.try_next()? else { return Ok(None) };
            if event.kind() != rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST {
                log::warn!("listener on {}: ignoring {}", self.local_addr, event.name());
                continue;
            }
            // The private data lives only until the event is acknowledged.
            let hello = Hello::decode(event.private_data());
            // SAFETY: the request's identifier is new and ours; its event is
            // acknowledged (dropped) before the identifier is used.
            let id = unsafe { CmId::from_request(event.id()) };
            drop(event);
            match hello {
                Ok(hello) => return Ok(Some(Request { id, hello, deadline, completions: None })),
                Err(err) => log::warn!("refusing a connection: {err}"),
            }
        }
    }
}

/// A client's address and route resolution under way, one rdma_cm event at
/// a time and without waiting: a look (`advance`) when `event_fd` is
/// readable takes the next step, and the last one opens the endpoint.
pub(crate) struct Resolving {
    // Declared before `events` and `port`: the identifier must go first.
    /// Until it goes to the endpoint.
    id: Option<CmId>,
    /// Shared with the endpoint, so its fd stays the connect's from the
    /// first step to the last (a selector watches one fd).
    events: Arc<EventChannel>,
    /// The TCP port the identifier's RDMA port is held by; goes to the endpoint.
    port: Option<Arc<ReservedPort>>,
    addr: SocketAddr,
    shape: QpShape,
    deadline: Deadline,
    route_asked: bool,
}

impl Resolving {
    /// Starts resolving `addr` from the port `from` holds (a client's bind),
    /// or from one reserved here. rdma_cm's ports are a space of their own: a
    /// port it picked alone could be the one the kernel gives the next TCP
    /// bind, whose RDMA connect would then fail with `EADDRINUSE`. So every
    /// client identifier is named by a port held in TCP's space, from before
    /// it binds until it is destroyed (the endpoint holds it, through the
    /// closer's wait too): a port means one connection whatever the medium.
    ///
    /// # Errors
    /// `NoDevice` on a host without RDMA; what rdma_cm reports at once.
    pub(crate) fn start(
        from: Option<Arc<ReservedPort>>,
        addr: SocketAddr,
        shape: QpShape,
        deadline: Deadline,
    ) -> Result<Resolving> {
        verbs::check_device()?;
        let events = Arc::new(EventChannel::new()?);
        let mut tries = 1;
        loop {
            let port = match &from {
                Some(port) => Arc::clone(port),
                None => Arc::new(ReservedPort::bind(SocketAddr::new(unspecified_like(addr), 0))?),
            };
            let id = CmId::new(&events)?;
            match id.resolve_addr(Some(rdma_source(port.addr(), addr)), addr, RESOLVE_TIMEOUT_MS) {
                Ok(()) => {
                    let port = Some(port);
                    return Ok(Resolving {
                        id: Some(id),
                        events,
                        port,
                        addr,
                        shape,
                        deadline,
                        route_asked: false,
                    });
                }
                // Taken in rdma_cm's space: EADDRNOTAVAIL where either
                // holder's address is a wildcard (ours is), else EADDRINUSE.
                Err(err)
                    if from.is_none()
                        && matches!(err.errno(), Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL))
                        && tries < PORT_TRIES =>
                {
                    tries += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The fd that becomes readable when the next step's event is pending.
    pub(crate) fn event_fd(&self) -> RawFd {
        self.events.fd()
    }

    /// The channel its events, and the endpoint's, come to.
    pub(crate) fn channel(&self) -> Arc<EventChannel> {
        Arc::clone(&self.events)
    }

    fn step_name(&self) -> &'static str {
        match self.route_asked {
            false => "rdma_resolve_addr",
            true => "rdma_resolve_route",
        }
    }

    /// Takes the step whose event is pending, if any: the endpoint (its queue
    /// pair at the group `offer` holds by then) once the route is resolved.
    ///
    /// # Errors
    /// `Unreachable` when no route leads to the peer; `TimedOut` once the
    /// deadline passed.
    pub(crate) fn advance(&mut self, offer: &GroupOffer) -> Result<Option<Endpoint>> {
        use rdma_cm_event_type::*;
        let resolved_already = || Error::InvalidArgument("the endpoint was opened already".into());
        while let Some(event) = self.events.try_next()? {
            let id = self.id.as_ref().ok_or_else(resolved_already)?;
            let want =
                if self.route_asked { RDMA_CM_EVENT_ROUTE_RESOLVED } else { RDMA_CM_EVENT_ADDR_RESOLVED };
            drop(expect_event(event, self.step_name(), want, self.addr)?);
            if !self.route_asked {
                id.resolve_route(RESOLVE_TIMEOUT_MS)?;
                self.route_asked = true;
                continue;
            }
            let id = self.id.take().ok_or_else(resolved_already)?;
            let events = Arc::clone(&self.events);
            let group = offer.current();
            let mut endpoint =
                Endpoint::open(events, id, self.shape, self.deadline, self.addr, None, group.as_deref())?;
            endpoint.port = self.port.take();
            return Ok(Some(endpoint));
        }
        match self.deadline.expired() {
            true => Err(self.deadline.timed_out(self.step_name())),
            false => Ok(None),
        }
    }
}

/// The unspecified address of `peer`'s family.
fn unspecified_like(peer: SocketAddr) -> IpAddr {
    match peer {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// The source rdma_cm resolves `peer` from, for a client that holds the TCP
/// address `held`: a wildcard (the kernel's is IPv6's, IPv4 mapped in) becomes
/// the peer family's, and an IPv4-mapped address IPv4's, as rdma_cm takes no
/// source of another family than the destination's.
fn rdma_source(held: SocketAddr, peer: SocketAddr) -> SocketAddr {
    let ip = match held.ip() {
        ip if ip.is_unspecified() => unspecified_like(peer),
        IpAddr::V6(v6) if peer.is_ipv4() => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    };
    SocketAddr::new(ip, held.port())
}

/// An RC queue pair connected (or being connected) through rdma_cm.
pub(crate) struct Endpoint {
    // Fields drop in declaration order: the identifier before its channel. The
    // QP goes before all of them (a seat is left once its QP is gone): the
    // owner destroys it in its `Drop` (`shutdown`), before its memory regions;
    // `Drop` here does it for an endpoint whose owner was never built (a
    // connect refused or failed half-way), whose QP would otherwise leak.
    /// Its seat at a completion queue (see `completions`).
    completions: Completions,
    /// The connection's own domain, or the one of the shared receive queue it uses.
    pd: Arc<ProtectionDomain>,
    id: CmId,
    /// Its own, or shared with the `Resolving` that opened it.
    events: Arc<EventChannel>,
    /// A client's: the TCP port its identifier's RDMA port is held by (see
    /// `Resolving::start`), let go only after the identifier.
    port: Option<Arc<ReservedPort>>,
    /// The peer disconnected, or we did (a close, a queue pair that failed).
    peer_closed: bool,
    /// The disconnect is complete: the peer's request came, or it answered
    /// ours (or the request timed out, or none could be sent). Until then the
    /// identifier must live: destroying it cancels our request's retries.
    disconnected: bool,
    /// The inline size the device granted.
    max_inline: u32,
    deadline: Deadline,
    /// The peer's address, for messages.
    peer: SocketAddr,
    /// Looks that found nothing to read (see `learn_of_disconnect`).
    empty_looks: u32,
    /// The connection events' fd signalled in a selector's epoll set while
    /// the stream was not armed (edge-triggered: once), so the next look
    /// reads the events (see `learn_of_disconnect`).
    events_signalled: bool,
    /// The queue pair as the device's event thread sees it (`device_events`).
    watched: Arc<Watched>,
}

impl Endpoint {
    /// Client side: resolves `addr` and creates the queue pair with a
    /// completion queue of its own, ready for `connect` once the data path
    /// has registered and posted its memory. Blocks; `Resolving` is the
    /// same without waiting (and can seat the queue pair at a selector's group).
    pub(crate) fn resolve(addr: SocketAddr, shape: QpShape, timeout: Option<Duration>) -> Result<Endpoint> {
        let mut resolving = Resolving::start(None, addr, shape, Deadline::after(timeout))?;
        loop {
            if let Some(endpoint) = resolving.advance(&GroupOffer::default())? {
                return Ok(endpoint);
            }
            sys::wait_readable(resolving.step_name(), [resolving.event_fd()], resolving.deadline)?;
        }
    }

    /// Server side: takes over a request's identifier, on a channel of its own
    /// (so its events never reach the listener), and creates the queue pair,
    /// at the request's completion group if it has one. With `shared`, the
    /// queue pair receives from that shared receive queue.
    pub(crate) fn from_request(
        request: Request,
        shape: QpShape,
        shared: Option<&SharedReceiveQueue>,
    ) -> Result<(Endpoint, Hello)> {
        let Request { id, hello, deadline, completions } = request;
        let events = Arc::new(EventChannel::new()?);
        id.migrate(&events)?;
        let peer = id.peer_addr().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let endpoint = Endpoint::open(events, id, shape, deadline, peer, shared, completions.as_deref())?;
        Ok((endpoint, hello))
    }

    /// (Parameters drop in reverse order on failure: `id` before its channel.)
    fn open(
        events: Arc<EventChannel>,
        id: CmId,
        shape: QpShape,
        deadline: Deadline,
        peer: SocketAddr,
        shared: Option<&SharedReceiveQueue>,
        group: Option<&CompletionGroup>,
    ) -> Result<Endpoint> {
        let device = id.device().ok_or_else(|| Error::Failed("no device after route resolution".into()))?;
        let pd = match shared {
            Some(srq) => Arc::clone(srq.pd()),
            None => Arc::new(ProtectionDomain::new(device)?),
        };
        let completions = Completions::join(group, device, shape.completions())?;
        // SAFETY: all-zero is a valid ibv_qp_init_attr (null pointers, no flags).
        let mut attr: ibv_qp_init_attr = unsafe { mem::zeroed() };
        attr.send_cq = completions.queue().as_ptr();
        attr.recv_cq = completions.queue().as_ptr();
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        if let Some(srq) = shared {
            attr.srq = srq.as_ptr();
        }
        attr.cap = ibv_qp_cap {
            max_send_wr: shape.send_slots(),
            max_recv_wr: shape.recv_depth,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: shape.max_inline,
        };
        id.create_qp(pd.as_ptr(), &mut attr)?;
        let max_inline = attr.cap.max_inline_data;
        let watched = device_events::watch(device, id.port_num(), id.qp());
        // Built before the binding can fail: its `Drop` destroys the new QP.
        let endpoint = Endpoint {
            completions,
            pd,
            id,
            events,
            port: None,
            peer_closed: false,
            disconnected: false,
            max_inline,
            deadline,
            peer,
            empty_looks: 0,
            events_signalled: false,
            watched,
        };
        endpoint.completions.bind(endpoint.qp_num())?;
        Ok(endpoint)
    }

    /// Client side: connects with `hello`; returns the peer's. Blocks;
    /// `start_connect` and `connected` are the same without waiting.
    ///
    /// # Errors
    /// `SendsOnly` when the listener grants this peer two-sided sends only.
    pub(crate) fn connect(&mut self, hello: &Hello) -> Result<Hello> {
        self.start_connect(hello)?;
        self.await_connected()
    }

    /// Waits for the answer to `start_connect`: the peer's hello.
    pub(crate) fn await_connected(&mut self) -> Result<Hello> {
        loop {
            if let Some(reply) = self.connected()? {
                return Ok(reply);
            }
            sys::wait_readable("rdma_connect", [self.events.fd()], self.deadline)?;
        }
    }

    /// Client side: sends the connect request with `hello`; `connected`
    /// learns the answer.
    pub(crate) fn start_connect(&mut self, hello: &Hello) -> Result<()> {
        let bytes = hello.encode();
        self.id.connect(&mut conn_param(&bytes))
    }

    /// The peer's hello once the connection is established, `None` while the
    /// answer has not come (its event makes `event_fd` readable).
    ///
    /// # Errors
    /// As `connect`; `TimedOut` once the deadline passed without an answer.
    pub(crate) fn connected(&mut self) -> Result<Option<Hello>> {
        let Some(event) = self.events.try_next()? else {
            return match self.deadline.expired() {
                true => Err(self.deadline.timed_out("rdma_connect")),
                false => Ok(None),
            };
        };
        if event.kind() == rdma_cm_event_type::RDMA_CM_EVENT_REJECTED
            && Hello::decode(event.private_data()).is_ok_and(|to| to.kind == PathKind::Sends)
        {
            return Err(Error::SendsOnly(self.peer));
        }
        let event =
            expect_event(event, "rdma_connect", rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED, self.peer)?;
        let reply = Hello::decode(event.private_data());
        drop(event);
        self.watched.set_established(true);
        reply.map(Some)
    }

    /// The fd that becomes readable when a connection event is pending.
    pub(crate) fn event_fd(&self) -> RawFd {
        self.events.fd()
    }

    /// Server side: accepts with `hello`.
    pub(crate) fn accept(&mut self, hello: &Hello) -> Result<()> {
        let bytes = hello.encode();
        self.id.accept(&mut conn_param(&bytes))?;
        await_event(
            &self.events,
            "rdma_accept",
            self.deadline,
            rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED,
            self.peer,
        )?;
        self.watched.set_established(true);
        Ok(())
    }

    /// The queue pair, to post on.
    pub(crate) fn qp(&self) -> QueuePair<'_> {
        // SAFETY: the QP lives until `shutdown` or drop destroy it, and the
        // data paths post only before that.
        unsafe { QueuePair::from_ptr(self.id.qp()) }
    }

    /// The RDMA device that carries the connection, e.g. "rxe0".
    pub(crate) fn device_name(&self) -> String {
        self.id.device().map_or_else(|| "?".into(), Device::name)
    }

    /// The local queue pair number.
    pub(crate) fn qp_num(&self) -> u32 {
        self.qp().number()
    }

    /// Its protection domain, to register memory in.
    pub(crate) fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// Its seat at a completion queue.
    pub(crate) fn completions(&self) -> &Completions {
        &self.completions
    }

    /// The peer disconnected, or the queue pair was flushed.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// A work request of `op` flushed: the queue pair stopped. After a
    /// disconnect (the peer's or ours, which stop it on purpose) the stream
    /// just ends. Before one, the queue pair failed under us (its port went
    /// down, a fatal error of the device, an access the device refused): the
    /// connection fails with that error, and a disconnect tells the peer.
    pub(crate) fn flushed(&mut self, op: &'static str, wc: &Completion) -> Result<()> {
        if !self.peer_closed {
            self.handle_connection_events()?; // a disconnect may wait among them
        }
        if self.peer_closed {
            return Ok(());
        }
        log::warn!("connection to {}: the queue pair entered the error state; disconnecting", self.peer);
        self.disconnect();
        Err(match self.watched.failure() {
            Some(why) => Error::DeviceFailed(why.to_owned()),
            None => wc.flush_error(op),
        })
    }

    /// A keepalive probe completed (see `device_events`). One that failed
    /// found the peer's queue pair gone (its process died, and its disconnect
    /// request was lost): the connection fails, as a TCP connection whose
    /// keepalive probes go unanswered does.
    pub(crate) fn probe_completed(&mut self, wc: &Completion) -> Result<()> {
        self.watched.probe_completed();
        if wc.succeeded() {
            return Ok(());
        }
        if wc.flushed() || self.peer_closed {
            return self.flushed("keepalive probe", wc);
        }
        log::warn!("connection to {}: the peer stopped answering; disconnecting", self.peer);
        self.disconnect();
        Err(Error::PeerSilent { peer: self.peer, status: wc.error("keepalive probe").to_string() })
    }

    /// Drives the queue pair into the error state, as a fatal error of the
    /// device would (tests of what follows).
    pub(crate) fn fail_queue_pair(&self) -> Result<()> {
        self.qp().fail()
    }

    /// The inline size the device granted.
    pub(crate) fn max_inline(&self) -> u32 {
        self.max_inline
    }

    /// The peer's address, for messages.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's local address.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.id.local_addr()
    }

    /// The connection's peer address, as the connection manager has it.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.id.peer_addr()
    }

    /// The fds that signal a completion (once the seat is armed) or a connection event.
    pub(crate) fn sources(&self) -> [WaitSource; 2] {
        [(self.completions.signal_fd(), libc::POLLIN), (self.events.fd(), libc::POLLIN)]
    }

    /// Sleeps until a completion or a connection event may be there. The
    /// caller arms its seat and polls once more before calling this: a
    /// completion that lands before the arming raises no signal.
    pub(crate) fn sleep(&mut self, op: &'static str, deadline: Deadline) -> Result<()> {
        let [(completion, _), (cm_event, _)] = self.sources();
        let channel = self.completions.channel();
        channel.sleep_through(|channel| sys::wait_readable(op, [completion, cm_event, channel], deadline))?;
        self.consume_signals()
    }

    /// Ends an arming, consuming the signal that woke a sleeper (the
    /// completions themselves wait for polling), and handles connection events.
    pub(crate) fn consume_signals(&mut self) -> Result<()> {
        self.completions.disarm()?;
        self.handle_connection_events()
    }

    /// Handles the connection events there are, without waiting (one syscall
    /// when there are none): a disconnect marks the peer closed.
    pub(crate) fn handle_connection_events(&mut self) -> Result<()> {
        while let Some(event) = self.events.try_next()? {
            if event.kind() == rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED {
                log::debug!("peer {} disconnected", self.peer);
                drop(event);
                // Answers the peer's request (also one that crossed ours), and
                // moves the QP to the error state, so work requests in flight
                // flush instead of hanging.
                self.id.disconnect();
                self.peer_closed = true;
                self.disconnected = true;
                self.watched.set_established(false);
            } else {
                log::debug!("connection event {} ignored", event.name());
            }
        }
        Ok(())
    }

    /// Looks for a disconnect while nothing is readable (a reader that never
    /// sleeps would not learn of it otherwise): at once after `signalled`
    /// said the connection events' fd signalled, else on every
    /// `DISCONNECT_CHECK_EVERY`th empty look (it costs a syscall, which a
    /// spinning reader must not pay each time). True when the peer just went.
    /// Completions that arrived before the disconnect still wait in the CQ:
    /// the caller polls once more before it reports end of stream.
    pub(crate) fn learn_of_disconnect(&mut self) -> Result<bool> {
        if self.peer_closed {
            return Ok(false);
        }
        self.empty_looks = self.empty_looks.wrapping_add(1);
        let signalled = mem::take(&mut self.events_signalled);
        if !signalled && self.empty_looks % DISCONNECT_CHECK_EVERY != 0 {
            return Ok(false);
        }
        self.handle_connection_events()?;
        Ok(self.peer_closed)
    }

    /// A selector's epoll set reported `fd`, one of `sources`. The signal of
    /// the connection events' fd comes once, also while the stream is not
    /// armed (asked on every look, which does not read the events), so it is
    /// kept for the next look: a stream armed after it would sleep through a
    /// disconnect otherwise.
    pub(crate) fn signalled(&mut self, fd: RawFd) {
        if fd == self.events.fd() {
            self.events_signalled = true;
        }
    }

    /// Disconnects: the peer sees end of stream, and so do we from now on
    /// (the QP moves to the error state; work in flight flushes).
    pub(crate) fn disconnect(&mut self) {
        if !self.peer_closed {
            self.peer_closed = true;
            self.watched.set_established(false);
            if !self.id.disconnect() {
                self.disconnected = true; // no request went out: none to wait for
            }
        }
    }

    /// Whether the disconnect is complete (see `disconnected`), handling the
    /// connection events there are; a failure to read them counts as complete.
    pub(crate) fn disconnect_confirmed(&mut self) -> bool {
        if !self.disconnected {
            if let Err(err) = self.handle_connection_events() {
                log::warn!("connection to {}: {err}; not waiting for its disconnect", self.peer);
                self.disconnected = true;
            }
        }
        self.disconnected
    }

    /// Disconnects and destroys the queue pair: the owner calls this in its
    /// `Drop`, before its memory regions go.
    pub(crate) fn shutdown(&mut self) {
        self.disconnect();
        self.destroy_qp();
    }

    fn destroy_qp(&mut self) {
        self.watched.forget();
        self.id.destroy_qp();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.destroy_qp();
    }
}

/// A data path that sits on an endpoint: what the shared wait loop needs of it.
pub(crate) trait DataPath {
    fn endpoint(&mut self) -> &mut Endpoint;

    /// How long a wait polls before it arms the CQ and sleeps.
    fn busy_poll(&self) -> Duration;

    /// Handles one work completion.
    fn complete(&mut self, wc: &Completion) -> Result<()>;

    /// Ends the connection of a peer that broke the protocol; a data path that
    /// granted the peer memory also revokes that (`RdmaStream`).
    fn revoke(&mut self, why: &Error) {
        let endpoint = self.endpoint();
        log::warn!("connection from {}: {why}; connection closed", endpoint.peer);
        endpoint.disconnect();
    }

    /// Runs one stream operation; a protocol violation by the peer in it
    /// revokes the connection before the error goes to the caller.
    fn revoking_on_violation<T>(&mut self, operation: impl FnOnce(&mut Self) -> Result<T>) -> Result<T>
    where
        Self: Sized,
    {
        let result = operation(self);
        if let Err(err @ Error::Violation(_)) = &result {
            self.revoke(err);
        }
        result
    }

    /// Handles every completion there is, a batch per `ibv_poll_cq`.
    fn drain_completions(&mut self) -> Result<()> {
        let mut wcs = [Completion::default(); POLL_BATCH];
        loop {
            let n = self.endpoint().completions.poll(&mut wcs)?;
            let mut heard = false;
            for wc in &wcs[..n] {
                // The first two are not the data path's but the device watcher's:
                // it failed the queue pair, or probed an idle connection.
                if wc.wr_id == DRAIN_WR_ID {
                    self.endpoint().flushed("drain marker", wc)?;
                } else if wc.wr_id == PROBE_WR_ID {
                    self.endpoint().probe_completed(wc)?;
                } else {
                    heard = true;
                    self.complete(wc)?;
                }
            }
            if heard {
                self.endpoint().watched.heard();
            }
            if n < POLL_BATCH {
                return Ok(());
            }
        }
    }

    /// Disconnects once `landed` holds, waiting for it up to `CLOSE_WAIT`
    /// (a round trip on a working link); a connection whose last writes take
    /// longer is disconnected by the closer (`settle_when`).
    fn disconnect_once_landed(&mut self, op: &'static str, landed: impl Fn(&Self) -> bool)
    where
        Self: Sized,
    {
        if !landed(self) {
            match self.wait_until(op, Deadline::after(Some(CLOSE_WAIT)), landed) {
                Ok(()) => {}
                Err(Error::TimedOut { .. }) => return,
                Err(err) => log::warn!("{op}: the last writes may be lost: {err}"),
            }
        }
        self.endpoint().disconnect();
    }

    /// Moves a close on without waiting (`media::closing`): handles the
    /// completions there are and disconnects once `landed` holds, or the
    /// queue pair failed. True once the disconnect is confirmed.
    fn settle_when(&mut self, landed: impl Fn(&Self) -> bool) -> bool
    where
        Self: Sized,
    {
        if !self.endpoint().peer_closed() {
            if let Err(err) = self.drain_completions() {
                log::warn!(
                    "close of the connection to {}: the last writes may be lost: {err}",
                    self.endpoint().peer
                );
            } else if !landed(self) {
                return false;
            }
            self.endpoint().disconnect();
        }
        self.endpoint().disconnect_confirmed()
    }

    /// Everything a wait does between looks at its condition (by default,
    /// handling completions).
    fn progress(&mut self) -> Result<()> {
        self.drain_completions()
    }

    /// Makes progress until `done` holds: polls, spins for `busy_poll`, then
    /// arms its seat, polls once more (a completion that landed before the
    /// arming raises no signal) and sleeps on the seat's signal and the
    /// connection channel.
    fn wait_until(&mut self, op: &'static str, deadline: Deadline, done: impl Fn(&Self) -> bool) -> Result<()>
    where
        Self: Sized,
    {
        self.progress()?;
        if done(self) {
            return Ok(());
        }
        if !self.busy_poll().is_zero() {
            let spin_until = Instant::now() + self.busy_poll();
            while Instant::now() < spin_until {
                std::hint::spin_loop();
                self.progress()?;
                if done(self) {
                    return Ok(());
                }
            }
        }
        loop {
            self.endpoint().completions.arm()?;
            self.progress()?;
            if done(self) {
                // Not sleeping after all: no signal wanted (a cheap lock, no syscall, unless one came).
                return self.endpoint().completions.disarm();
            }
            self.endpoint().sleep(op, deadline)?;
            self.progress()?;
            if done(self) {
                return Ok(());
            }
        }
    }
}

/// Connection parameters: no RDMA READ or atomics from the peer, transport
/// retries as for a LAN (6, not the largest value, 7: Soft-RoCE takes 7 to
/// mean "retry forever", as the RNR count does, and a request to a dead peer
/// would never fail), RNR retries that never give up (the message path has
/// no credits yet; the ring path never causes RNR), and the hello.
fn conn_param(hello: &[u8; Hello::LEN]) -> rdma_conn_param {
    // SAFETY: all-zero is a valid rdma_conn_param.
    let mut param: rdma_conn_param = unsafe { mem::zeroed() };
    param.retry_count = 6;
    param.rnr_retry_count = 7; // 7 = retry forever
    param.private_data = hello.as_ptr().cast();
    param.private_data_len = Hello::LEN as u8;
    param
}

/// Waits for `want` on `events`, turning the failure events into the errors a
/// socket user expects; returns the event (for its private data).
fn await_event(
    events: &EventChannel,
    op: &'static str,
    deadline: Deadline,
    want: rdma_cm_event_type::Type,
    peer: SocketAddr,
) -> Result<CmEvent> {
    expect_event(events.next(op, deadline)?, op, want, peer)
}

/// `event` if it is `want`, else the error it means for a socket user.
fn expect_event(
    event: CmEvent,
    op: &'static str,
    want: rdma_cm_event_type::Type,
    peer: SocketAddr,
) -> Result<CmEvent> {
    use rdma_cm_event_type::*;
    match event.kind() {
        kind if kind == want && event.status() == 0 => Ok(event),
        RDMA_CM_EVENT_REJECTED => Err(Error::ConnectionRefused(peer)),
        RDMA_CM_EVENT_ADDR_ERROR | RDMA_CM_EVENT_ROUTE_ERROR | RDMA_CM_EVENT_UNREACHABLE => {
            Err(Error::Unreachable { addr: peer, event: event.name() })
        }
        _ => Err(event.unexpected(op)),
    }
}
