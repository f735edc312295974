//! Message connections over one reliable-connected (RC) queue pair, set up with
//! librdmacm the way TCP sockets are: a `Listener` binds an IP address and port
//! and accepts, a client connects to that address.
//!
//! This is the walking-skeleton data path: two-sided SEND/RECV of whole
//! messages up to `MAX_MESSAGE_SIZE`, with receive buffers pre-posted before the
//! connection is established. Completions are drained in batches from one CQ;
//! waiting arms the CQ and sleeps on its channel fd together with the rdma_cm fd,
//! so a peer's disconnect wakes a blocked receive.

use std::collections::VecDeque;
use std::mem;
use std::net::SocketAddr;
use std::ptr;
use std::time::{Duration, Instant};

use rdma_sys::*;

use crate::cm::{CmEvent, CmId, EventChannel};
use crate::error::{check_errno, Error, Result};
use crate::sys::{self, Deadline};
use crate::verbs::{self, CompletionQueue, MemoryRegion, ProtectionDomain};

/// The largest message one `send` carries (the size of one receive buffer).
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// Receive buffers pre-posted per connection.
const RECV_SLOTS: usize = 16;
/// Send work requests outstanding at most (one send buffer, so one in practice).
const SEND_QUEUE_DEPTH: u32 = 16;
/// Inline data requested for small sends (copied into the WQE: no DMA read).
const REQUESTED_MAX_INLINE: u32 = 64;
/// Completions taken per `ibv_poll_cq` call.
const POLL_BATCH: usize = 16;
/// Address and route resolution are local in practice; this bounds a lost reply.
const RESOLVE_TIMEOUT_MS: i32 = 2000;
/// The work request id of sends; receives use their slot index.
const SEND_WR_ID: u64 = u64::MAX;

/// A listening rdma_cm identifier bound to an IP address and port.
pub struct Listener {
    // Declared before `events`: the identifier must go before its channel.
    #[allow(dead_code)] // owned for its Drop: the listening identifier
    id: CmId,
    events: EventChannel,
    local_addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port) and listens with `backlog`.
    ///
    /// # Errors
    /// `NoDevice` on a host without RDMA; `Os` naming `rdma_bind_addr` when no
    /// RDMA device has the address or the port is taken.
    pub fn bind(addr: SocketAddr, backlog: i32) -> Result<Listener> {
        verbs::device_names()?; // "no device" is reported as such, not as a cm failure
        let events = EventChannel::new()?;
        let id = CmId::new(&events)?;
        id.bind(addr)?;
        id.listen(backlog)?;
        let local_addr = id.local_addr().unwrap_or(addr);
        log::debug!("listening on {local_addr}");
        Ok(Listener {
            id,
            events,
            local_addr,
        })
    }

    /// The bound address, with the actual port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for a connect request and completes the connection.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Connection> {
        let deadline = Deadline::after(timeout);
        let request = loop {
            let event = self.events.next("accept", deadline)?;
            if event.kind() == rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST {
                break event.id();
            }
            log::warn!("listener on {}: ignoring {}", self.local_addr, event.name());
        };
        // SAFETY: the request's identifier is new and ours; its event was acknowledged above.
        let id = unsafe { CmId::from_request(request) };
        Connection::accept(id, deadline)
    }
}

/// A completed receive not yet handed to the caller.
#[derive(Clone, Copy)]
struct Received {
    slot: usize,
    len: usize,
}

/// An established RC connection that sends and receives whole messages.
pub struct Connection {
    // Teardown: `Drop` destroys the QP, then the fields go in declaration order,
    // which is the order verbs requires (buffers and CQ before their PD, the
    // identifier before its event channel).
    recv_buffers: MemoryRegion,
    send_buffer: MemoryRegion,
    cq: CompletionQueue,
    #[allow(dead_code)] // owned for its Drop, after everything allocated in it
    pd: ProtectionDomain,
    id: CmId,
    events: EventChannel,
    /// Completed receives in arrival order; capacity RECV_SLOTS, so never reallocates.
    received: VecDeque<Received>,
    sends_in_flight: u32,
    max_inline: u32,
    /// The peer disconnected (or the QP was flushed): no more receives will complete.
    peer_closed: bool,
    /// How long a wait polls the CQ before it arms it and sleeps.
    busy_poll: Duration,
}

// SAFETY: every verbs object of a connection belongs to it alone, and `&mut self`
// on every data-path call keeps it to one thread at a time.
unsafe impl Send for Connection {}

impl Connection {
    /// Connects to a listener at `addr`.
    ///
    /// # Errors
    /// `NoDevice`; `ConnectionRefused` when nothing listens there; `Unreachable`
    /// when no RDMA route leads there; `TimedOut` after `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Option<Duration>) -> Result<Connection> {
        verbs::device_names()?;
        let deadline = Deadline::after(timeout);
        let events = EventChannel::new()?;
        let id = CmId::new(&events)?;
        id.resolve_addr(addr, RESOLVE_TIMEOUT_MS)?;
        await_event(
            &events,
            "rdma_resolve_addr",
            deadline,
            rdma_cm_event_type::RDMA_CM_EVENT_ADDR_RESOLVED,
            addr,
        )?;
        id.resolve_route(RESOLVE_TIMEOUT_MS)?;
        await_event(
            &events,
            "rdma_resolve_route",
            deadline,
            rdma_cm_event_type::RDMA_CM_EVENT_ROUTE_RESOLVED,
            addr,
        )?;
        let conn = Connection::open(events, id)?;
        conn.id.connect(&mut conn_param())?;
        await_event(
            &conn.events,
            "rdma_connect",
            deadline,
            rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED,
            addr,
        )?;
        log::debug!("connected to {addr}, qp {}", conn.qp_num());
        Ok(conn)
    }

    /// Completes a connect request whose identifier `id` the listener handed over.
    /// On any failure the identifier is destroyed unaccepted, which makes the
    /// kernel connection manager reject the request: the peer sees a refusal.
    fn accept(id: CmId, deadline: Deadline) -> Result<Connection> {
        // The connection gets its own channel, so that its events (disconnect)
        // never reach the listener and can wake this connection's waits.
        let events = EventChannel::new()?;
        id.migrate(&events)?;
        let peer = id.peer_addr();
        let conn = Connection::open(events, id)?;
        conn.id.accept(&mut conn_param())?;
        let peer = peer.unwrap_or_else(|| conn.local_addr());
        await_event(
            &conn.events,
            "rdma_accept",
            deadline,
            rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED,
            peer,
        )?;
        log::debug!("accepted {peer}, qp {}", conn.qp_num());
        Ok(conn)
    }

    /// Creates the verbs resources on `id`'s device and pre-posts every receive.
    /// (Parameters drop in reverse order on failure: `id` before its channel.)
    fn open(events: EventChannel, id: CmId) -> Result<Connection> {
        let context = id.verbs();
        // SAFETY: context is the identifier's live device context, which librdmacm
        // keeps open for at least as long as the identifier.
        let (pd, cq) = unsafe {
            let pd = ProtectionDomain::new(context)?;
            let cq = CompletionQueue::new(context, RECV_SLOTS as i32 + SEND_QUEUE_DEPTH as i32)?;
            (pd, cq)
        };
        // Minimal rights: receive buffers are written by the local device only;
        // the send buffer is only read. No remote access at all.
        let recv_buffers = MemoryRegion::new(
            &pd,
            RECV_SLOTS * MAX_MESSAGE_SIZE,
            ibv_access_flags::IBV_ACCESS_LOCAL_WRITE,
        )?;
        let send_buffer = MemoryRegion::new(&pd, MAX_MESSAGE_SIZE, ibv_access_flags(0))?;

        // SAFETY: all-zero is a valid ibv_qp_init_attr (null pointers, no flags).
        let mut attr: ibv_qp_init_attr = unsafe { mem::zeroed() };
        attr.send_cq = cq.as_ptr();
        attr.recv_cq = cq.as_ptr();
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        attr.cap = ibv_qp_cap {
            max_send_wr: SEND_QUEUE_DEPTH,
            max_recv_wr: RECV_SLOTS as u32,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: REQUESTED_MAX_INLINE,
        };
        id.create_qp(pd.as_ptr(), &mut attr)?;

        let mut conn = Connection {
            recv_buffers,
            send_buffer,
            cq,
            pd,
            id,
            events,
            received: VecDeque::with_capacity(RECV_SLOTS),
            sends_in_flight: 0,
            max_inline: attr.cap.max_inline_data, // what the device granted
            peer_closed: false,
            busy_poll: Duration::ZERO,
        };
        for slot in 0..RECV_SLOTS {
            conn.post_recv(slot)?;
        }
        Ok(conn)
    }

    /// The RDMA device that carries the connection, e.g. "rxe0".
    pub fn device_name(&self) -> String {
        // SAFETY: a connected identifier has a live device context.
        unsafe { verbs::device_name((*self.id.verbs()).device) }
    }

    /// The local queue pair number.
    pub fn qp_num(&self) -> u32 {
        // SAFETY: the QP lives as long as the connection.
        unsafe { (*self.id.qp()).qp_num }
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.id
            .local_addr()
            .expect("a connected identifier has a local address")
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.id
            .peer_addr()
            .expect("a connected identifier has a peer address")
    }

    /// Sets how long a blocked send or receive keeps polling the completion
    /// queue before it sleeps on the completion channel (zero: sleep at once).
    /// Polling saves a sleep and a wakeup per message at the cost of a busy core.
    pub fn set_busy_poll(&mut self, busy_poll: Duration) {
        self.busy_poll = busy_poll;
    }

    /// Sends one message. Returns once the message is posted; its delivery
    /// error, if any, is reported by the next operation.
    ///
    /// # Errors
    /// `MessageTooLarge` beyond `MAX_MESSAGE_SIZE`; `Disconnected` once the peer
    /// has closed; `TimedOut` when the previous send does not complete in time.
    pub fn send(&mut self, message: &[u8], timeout: Option<Duration>) -> Result<()> {
        if message.len() > MAX_MESSAGE_SIZE {
            return Err(Error::MessageTooLarge {
                len: message.len(),
                max: MAX_MESSAGE_SIZE,
            });
        }
        // One send buffer: the previous message must have left it.
        self.wait_until("send", Deadline::after(timeout), |c| c.sends_in_flight == 0)?;
        if self.peer_closed {
            return Err(Error::Disconnected);
        }
        self.send_buffer.bytes_mut()[..message.len()].copy_from_slice(message);
        self.post_send(message.len())
    }

    /// Receives one message into `buf`; `Ok(None)` is end of stream (the peer
    /// closed and every message it sent was received).
    ///
    /// # Errors
    /// `MessageTooLarge` when the next message does not fit in `buf` (the
    /// message stays queued); `TimedOut` when none arrives in time.
    pub fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Option<usize>> {
        self.wait_until("receive", Deadline::after(timeout), |c| {
            !c.received.is_empty() || c.peer_closed
        })?;
        let Some(&Received { slot, len }) = self.received.front() else {
            return Ok(None);
        };
        if len > buf.len() {
            return Err(Error::MessageTooLarge {
                len,
                max: buf.len(),
            });
        }
        self.received.pop_front();
        let offset = slot * MAX_MESSAGE_SIZE;
        buf[..len].copy_from_slice(&self.recv_buffers.bytes()[offset..offset + len]);
        self.post_recv(slot)?;
        Ok(Some(len))
    }

    fn post_recv(&mut self, slot: usize) -> Result<()> {
        let mut sge = self
            .recv_buffers
            .sge(slot * MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE);
        let mut wr = ibv_recv_wr {
            wr_id: slot as u64,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = ptr::null_mut();
        // SAFETY: the QP is live; wr and sge are valid for the call, and the buffer
        // stays registered until the QP is destroyed.
        check_errno("ibv_post_recv", unsafe {
            ibv_post_recv(self.id.qp(), &mut wr, &mut bad)
        })
    }

    fn post_send(&mut self, len: usize) -> Result<()> {
        let mut sge = self.send_buffer.sge(0, len);
        // SAFETY: all-zero is a valid ibv_send_wr (no next, no remote fields).
        let mut wr: ibv_send_wr = unsafe { mem::zeroed() };
        wr.wr_id = SEND_WR_ID;
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        wr.sg_list = &mut sge;
        wr.num_sge = if len == 0 { 0 } else { 1 };
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        if len as u32 <= self.max_inline {
            wr.send_flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        let mut bad = ptr::null_mut();
        // SAFETY: as in post_recv; the send buffer is not touched until the completion.
        check_errno("ibv_post_send", unsafe {
            ibv_post_send(self.id.qp(), &mut wr, &mut bad)
        })?;
        self.sends_in_flight += 1;
        Ok(())
    }

    /// Processes completions and connection events until `done` holds.
    fn wait_until(
        &mut self,
        op: &'static str,
        deadline: Deadline,
        done: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        if !self.busy_poll.is_zero() {
            let spin_until = Instant::now() + self.busy_poll;
            loop {
                self.drain_completions()?;
                if done(self) {
                    return Ok(());
                }
                if Instant::now() >= spin_until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        loop {
            self.drain_completions()?;
            if done(self) {
                return Ok(());
            }
            // A completion that lands between the drain and the arming raises no
            // channel event, so drain once more after arming before sleeping.
            self.cq.arm()?;
            self.drain_completions()?;
            if done(self) {
                return Ok(());
            }
            let [completion, cm_event] =
                sys::wait_readable(op, [self.cq.event_fd(), self.events.fd()], deadline)?;
            if completion {
                while self.cq.consume_event()? {}
            }
            if cm_event {
                self.drain_cm_events()?;
            }
        }
    }

    fn drain_completions(&mut self) -> Result<()> {
        // SAFETY: all-zero is a valid ibv_wc.
        let mut wcs: [ibv_wc; POLL_BATCH] = unsafe { mem::zeroed() };
        loop {
            let n = self.cq.poll(&mut wcs)?;
            for wc in &wcs[..n] {
                self.complete(wc)?;
            }
            if n < POLL_BATCH {
                return Ok(());
            }
        }
    }

    fn complete(&mut self, wc: &ibv_wc) -> Result<()> {
        let is_send = wc.wr_id == SEND_WR_ID;
        if is_send {
            self.sends_in_flight -= 1;
        }
        match wc.status {
            ibv_wc_status::IBV_WC_SUCCESS if !is_send => {
                self.received.push_back(Received {
                    slot: wc.wr_id as usize,
                    len: wc.byte_len as usize,
                });
                Ok(())
            }
            ibv_wc_status::IBV_WC_SUCCESS => Ok(()),
            // The QP went to the error state (disconnect): outstanding requests flush.
            ibv_wc_status::IBV_WC_WR_FLUSH_ERR => {
                self.peer_closed = true;
                Ok(())
            }
            status => Err(Error::Completion {
                op: if is_send { "send" } else { "receive" },
                status: verbs::wc_status_text(status),
                vendor_err: wc.vendor_err,
            }),
        }
    }

    fn drain_cm_events(&mut self) -> Result<()> {
        while let Some(event) = self.events.try_next()? {
            match event.kind() {
                rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED => {
                    log::debug!("peer {:?} disconnected", self.id.peer_addr());
                    self.peer_closed = true;
                    drop(event);
                    // Completes our side of the disconnect and moves the QP to the
                    // error state, so sends in flight flush instead of hanging.
                    self.id.disconnect();
                }
                _ => log::debug!("connection event {} ignored", event.name()),
            }
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.peer_closed {
            self.id.disconnect(); // the peer sees end of stream
        }
        self.id.destroy_qp();
    }
}

/// Connection parameters: no RDMA READ or atomics (the peer gets no access to
/// our memory), transport retries as for a LAN, and RNR retries that never give
/// up (the skeleton has no credits yet; its receivers repost at once).
fn conn_param() -> rdma_conn_param {
    // SAFETY: all-zero is a valid rdma_conn_param (no private data).
    let mut param: rdma_conn_param = unsafe { mem::zeroed() };
    param.retry_count = 7;
    param.rnr_retry_count = 7; // 7 = retry forever
    param
}

/// Waits for `want` on `events`, turning the failure events into the errors a
/// socket user expects.
fn await_event(
    events: &EventChannel,
    op: &'static str,
    deadline: Deadline,
    want: rdma_cm_event_type::Type,
    peer: SocketAddr,
) -> Result<()> {
    let event: CmEvent = events.next(op, deadline)?;
    use rdma_cm_event_type::*;
    match event.kind() {
        kind if kind == want && event.status() == 0 => Ok(()),
        RDMA_CM_EVENT_REJECTED => Err(Error::ConnectionRefused(peer)),
        RDMA_CM_EVENT_ADDR_ERROR | RDMA_CM_EVENT_ROUTE_ERROR | RDMA_CM_EVENT_UNREACHABLE => {
            Err(Error::Unreachable {
                addr: peer,
                event: event.name(),
            })
        }
        _ => Err(event.unexpected(op)),
    }
}
