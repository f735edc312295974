//! The two-sided message path: whole messages up to `MAX_MESSAGE_SIZE` by
//! SEND/RECV over one RC queue pair, with receive buffers pre-posted before the
//! connection is established (the walking skeleton's data path; credits and a
//! shared receive queue come with the stream engine). A close delivers the
//! message in flight, as the streams' do (`closer`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::rdma::closer::{Close, Closing, Settle, CLOSE_WAIT};
use crate::rdma::endpoint::{DataPath, Endpoint, Listener, QpShape, Request};
use crate::rdma::hello::{Hello, PathKind, RingGrant, SlotGrant};
use crate::rdma::verbs::{Access, Completion, MemoryRegion, SendRequest};
use crate::sys::Deadline;

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

/// An established RC connection that sends and receives whole messages; its
/// close delivers the message in flight (see `Closing`). Everything else is
/// its `MessagePath`'s (it dereferences to it).
pub struct Connection(Closing<MessagePath>);

/// A message connection's queue pair, buffers and state.
pub struct MessagePath {
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
        let endpoint = Endpoint::resolve(addr, SHAPE, timeout)?;
        let mut conn = MessagePath::with_buffers(endpoint)?;
        let reply = conn.endpoint.connect(&HELLO)?;
        if reply.kind != PathKind::Messages {
            return Err(Error::InvalidArgument(format!(
                "{addr} answered with a {:?} connection",
                reply.kind
            )));
        }
        log::debug!("connected to {addr}, qp {}", conn.qp_num());
        Ok(Connection(Closing::new(conn)))
    }

    fn accept(request: Request) -> Result<Connection> {
        let (endpoint, _) = Endpoint::from_request(request, SHAPE, None)?;
        let mut conn = MessagePath::with_buffers(endpoint)?;
        conn.endpoint.accept(&HELLO)?;
        log::debug!("accepted a message connection, qp {}", conn.qp_num());
        Ok(Connection(Closing::new(conn)))
    }
}

impl Deref for Connection {
    type Target = MessagePath;

    fn deref(&self) -> &MessagePath {
        &self.0
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut MessagePath {
        &mut self.0
    }
}

impl MessagePath {
    /// Registers the buffers and pre-posts every receive.
    fn with_buffers(endpoint: Endpoint) -> Result<MessagePath> {
        // Minimal rights: receive buffers are written by the local device only;
        // the send buffer is only read. No remote access at all.
        let recv_buffers =
            MemoryRegion::new(endpoint.pd(), RECV_SLOTS * MAX_MESSAGE_SIZE, Access::LocalWrite)?;
        let send_buffer = MemoryRegion::new(endpoint.pd(), MAX_MESSAGE_SIZE, Access::Local)?;
        let mut conn = MessagePath {
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
        self.endpoint.local_addr().expect("a connected identifier has a local address")
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.endpoint.peer_addr().expect("a connected identifier has a peer address")
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
        if self.endpoint.peer_closed() {
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
            !c.received.is_empty() || c.endpoint.peer_closed()
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

    /// The message in flight, if any, was acknowledged (or never will be).
    fn sends_landed(&self) -> bool {
        self.sends_in_flight == 0 || self.endpoint.peer_closed()
    }

    fn post_recv(&mut self, slot: usize) -> Result<()> {
        let into = (&self.recv_buffers, slot * MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE);
        self.endpoint.qp().post_recv(slot as u64, Some(into))
    }

    /// Sends the first `len` bytes of the send buffer, which stays untouched
    /// until the completion.
    fn post_send(&mut self, len: usize) -> Result<()> {
        let send = SendRequest::send(SEND_WR_ID)
            .gather(&self.send_buffer, 0, len)
            .signaled(true)
            .inline(len as u32 <= self.endpoint.max_inline());
        self.endpoint.qp().post_send(&send)?;
        self.sends_in_flight += 1;
        Ok(())
    }
}

impl DataPath for MessagePath {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    fn complete(&mut self, wc: &Completion) -> Result<()> {
        let is_send = wc.wr_id == SEND_WR_ID;
        if is_send {
            self.sends_in_flight -= 1;
        }
        if wc.succeeded() {
            if !is_send {
                self.received.push_back(Received { slot: wc.wr_id as usize, len: wc.byte_len as usize });
            }
            Ok(())
        } else if wc.flushed() {
            self.endpoint.flushed(if is_send { "send" } else { "receive" }, wc)
        } else {
            Err(wc.error(if is_send { "send" } else { "receive" }))
        }
    }
}

impl Close for MessagePath {
    /// Disconnects once the message in flight landed: the disconnect would
    /// discard it. What takes longer than `CLOSE_WAIT` is the closer's.
    fn start_close(&mut self) {
        if self.endpoint.peer_closed() {
            return;
        }
        match self.wait_until("close", Deadline::after(Some(CLOSE_WAIT)), Self::sends_landed) {
            Ok(()) => {}
            Err(Error::TimedOut { .. }) => return,
            Err(err) => log::warn!("connection close: the last message may be lost: {err}"),
        }
        self.endpoint.disconnect();
    }
}

impl Settle for MessagePath {
    fn settle(&mut self) -> bool {
        self.settle_when(Self::sends_landed)
    }
}

impl Drop for MessagePath {
    fn drop(&mut self) {
        self.endpoint.shutdown();
    }
}
