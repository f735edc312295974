//! The two-sided message path: whole messages up to `MAX_MESSAGE_SIZE` by
//! SEND/RECV over one RC queue pair, with receive buffers pre-posted before the
//! connection is established (the walking skeleton's data path; credits and a
//! shared receive queue come with the stream engine).

use std::collections::VecDeque;
use std::mem;
use std::net::SocketAddr;
use std::ptr;
use std::time::Duration;

use rdma_sys::*;

use crate::completions::GroupOffer;
use crate::endpoint::{
    DataPath, Endpoint, Hello, Listener, PathKind, QpShape, Request, RingGrant, SlotGrant,
};
use crate::error::{check_errno, Error, Result};
use crate::sys::Deadline;
use crate::verbs::{self, MemoryRegion};

/// The largest message one `send` carries (the size of one receive buffer).
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// Receive buffers pre-posted per connection.
const RECV_SLOTS: usize = 16;
const SHAPE: QpShape =
    QpShape { send_depth: 16, recv_depth: RECV_SLOTS as u32, max_inline: 64, shared_receives: 0 };
const HELLO: Hello = Hello {
    kind: PathKind::Messages,
    grant: RingGrant { addr: 0, rkey: 0, capacity: 0, max_payload: 0, seed: 0, recv_depth: 0 },
    slots: SlotGrant { slot_len: 0, data_credits: 0, control_credits: 0 },
};
/// The work request id of sends; receives use their slot index.
const SEND_WR_ID: u64 = u64::MAX;
/// How long a closing connection waits for its last send to land.
const LINGER: Duration = Duration::from_secs(2);

impl Listener {
    /// Waits for a message connection and completes it.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Connection> {
        Connection::accept(self.next_request(PathKind::Messages, Deadline::after(timeout))?)
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
    // Declared before the endpoint: deregistered before its PD goes.
    recv_buffers: MemoryRegion,
    send_buffer: MemoryRegion,
    endpoint: Endpoint,
    /// Completed receives in arrival order; capacity RECV_SLOTS, so never reallocates.
    received: VecDeque<Received>,
    sends_in_flight: u32,
    busy_poll: Duration,
}

impl Connection {
    /// Connects to a listener at `addr`.
    ///
    /// # Errors
    /// `NoDevice`; `ConnectionRefused` when nothing listens there; `Unreachable`
    /// when no RDMA route leads there; `TimedOut` after `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Option<Duration>) -> Result<Connection> {
        let mut conn =
            Connection::with_buffers(Endpoint::resolve(addr, SHAPE, timeout, &GroupOffer::default())?)?;
        let reply = conn.endpoint.connect(&HELLO)?;
        if reply.kind != PathKind::Messages {
            return Err(Error::InvalidArgument(format!(
                "{addr} answered with a {:?} connection",
                reply.kind
            )));
        }
        log::debug!("connected to {addr}, qp {}", conn.qp_num());
        Ok(conn)
    }

    fn accept(request: Request) -> Result<Connection> {
        let (endpoint, _) = Endpoint::from_request(request, SHAPE, None)?;
        let mut conn = Connection::with_buffers(endpoint)?;
        conn.endpoint.accept(&HELLO)?;
        log::debug!("accepted a message connection, qp {}", conn.qp_num());
        Ok(conn)
    }

    /// Registers the buffers and pre-posts every receive.
    fn with_buffers(endpoint: Endpoint) -> Result<Connection> {
        // Minimal rights: receive buffers are written by the local device only;
        // the send buffer is only read. No remote access at all.
        let recv_buffers = MemoryRegion::new(
            &endpoint.pd,
            RECV_SLOTS * MAX_MESSAGE_SIZE,
            ibv_access_flags::IBV_ACCESS_LOCAL_WRITE,
        )?;
        let send_buffer = MemoryRegion::new(&endpoint.pd, MAX_MESSAGE_SIZE, ibv_access_flags(0))?;
        let mut conn = Connection {
            recv_buffers,
            send_buffer,
            endpoint,
            received: VecDeque::with_capacity(RECV_SLOTS),
            sends_in_flight: 0,
            busy_poll: Duration::ZERO,
        };
        for slot in 0..RECV_SLOTS {
            conn.post_recv(slot)?;
        }
        Ok(conn)
    }

    /// The RDMA device that carries the connection, e.g. "rxe0".
    pub fn device_name(&self) -> String {
        self.endpoint.device_name()
    }

    /// The local queue pair number.
    pub fn qp_num(&self) -> u32 {
        self.endpoint.qp_num()
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.id.local_addr().expect("a connected identifier has a local address")
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.endpoint.id.peer_addr().expect("a connected identifier has a peer address")
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
            return Err(Error::MessageTooLarge { len: message.len(), max: MAX_MESSAGE_SIZE });
        }
        // One send buffer: the previous message must have left it.
        self.wait_until("send", Deadline::after(timeout), |c| c.sends_in_flight == 0)?;
        if self.endpoint.peer_closed {
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
            !c.received.is_empty() || c.endpoint.peer_closed
        })?;
        let Some(&Received { slot, len }) = self.received.front() else {
            return Ok(None);
        };
        if len > buf.len() {
            return Err(Error::MessageTooLarge { len, max: buf.len() });
        }
        self.received.pop_front();
        let offset = slot * MAX_MESSAGE_SIZE;
        buf[..len].copy_from_slice(&self.recv_buffers.bytes()[offset..offset + len]);
        self.post_recv(slot)?;
        Ok(Some(len))
    }

    fn post_recv(&mut self, slot: usize) -> Result<()> {
        let mut sge = self.recv_buffers.sge(slot * MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE);
        let mut wr = ibv_recv_wr { wr_id: slot as u64, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad = ptr::null_mut();
        // SAFETY: the QP is live; wr and sge are valid for the call, and the buffer
        // stays registered until the QP is destroyed.
        check_errno("ibv_post_recv", unsafe { ibv_post_recv(self.endpoint.qp(), &mut wr, &mut bad) })
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
        if len as u32 <= self.endpoint.max_inline {
            wr.send_flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        let mut bad = ptr::null_mut();
        // SAFETY: as in post_recv; the send buffer is not touched until the completion.
        check_errno("ibv_post_send", unsafe { ibv_post_send(self.endpoint.qp(), &mut wr, &mut bad) })?;
        self.sends_in_flight += 1;
        Ok(())
    }
}

impl DataPath for Connection {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    fn complete(&mut self, wc: &ibv_wc) -> Result<()> {
        let is_send = wc.wr_id == SEND_WR_ID;
        if is_send {
            self.sends_in_flight -= 1;
        }
        match wc.status {
            ibv_wc_status::IBV_WC_SUCCESS if !is_send => {
                self.received.push_back(Received { slot: wc.wr_id as usize, len: wc.byte_len as usize });
                Ok(())
            }
            ibv_wc_status::IBV_WC_SUCCESS => Ok(()),
            // The QP went to the error state (disconnect): outstanding requests flush.
            ibv_wc_status::IBV_WC_WR_FLUSH_ERR => {
                self.endpoint.peer_closed = true;
                Ok(())
            }
            status => Err(Error::Completion {
                op: if is_send { "send" } else { "receive" },
                status: verbs::wc_status_text(status),
                vendor_err: wc.vendor_err,
            }),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Linger: the disconnect would flush a send still in flight.
        if self.sends_in_flight > 0 && !self.endpoint.peer_closed {
            let landed = self.wait_until("close", Deadline::after(Some(LINGER)), |c| {
                c.sends_in_flight == 0 || c.endpoint.peer_closed
            });
            if let Err(err) = landed {
                log::warn!("connection close: the last message may be lost: {err}");
            }
        }
        self.endpoint.shutdown();
    }
}
