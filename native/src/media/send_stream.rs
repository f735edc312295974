//! The two-sided RDMA medium: a byte stream of SEND messages into the peer's
//! receive slots, for peers that must get no rkey (clients of a replica; see
//! `docs/threat-model.md`). Nothing of either side's memory is remotely
//! accessible: the queue pairs carry SEND/RECV only.
//!
//! - Messages: each fills at most one receive slot of the peer, a 16-byte
//!   header and up to `slot_len - 16` stream bytes (small ones go inline).
//! - Receive memory: a listener's connections all receive from one shared
//!   receive queue (`receive_pool`), so what a connection costs the listener is
//!   the few slots it is granted, not buffers of its own. A connecting side
//!   posts its own few slots.
//! - Credits (a sender never causes a receiver-not-ready retry): a receiver
//!   grants `data_credits` slots for data and `control_credits` for control
//!   messages (credit updates and the end). A data slot stays held until the
//!   reader has taken its last byte; a control slot is reposted at once. Every
//!   header carries how many data and control messages its sender has consumed
//!   so far (piggybacked credit). A reader that consumed half its data grant
//!   without saying so sends a credit update. Two control credits suffice for
//!   updates: each reports at least half a grant of new consumption, and
//!   between two reports of the peer there is at most one grant of it. A third
//!   (and one staged send) stays reserved for the end, so a half close never
//!   waits, as TCP's FIN does not.
//! - Close: just before its disconnect a close sends CLOSED, or RESET when
//!   messages it received wait unread or it closes abortively (TCP's FIN and
//!   RST), where a control credit allows (see `PeerClose`).
//! - Checks: a message shorter than a header, of an unknown kind, beyond its
//!   grant, or with consumption counts that go back or past what was sent is
//!   a protocol violation that ends the connection.

use std::collections::VecDeque;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::media::receive_pool::ReceivePool;
use crate::media::ring::Violation;
use crate::media::stream::{ops, ByteStream, Interest, PeerClose, ReadOutcome, WaitSource};
use crate::rdma::closer::{Close, Closing, Settle};
use crate::rdma::completions::CompletionChannel;
use crate::rdma::endpoint::{DataPath, Endpoint, QpShape, Request, Resolving};
use crate::rdma::hello::{Hello, PathKind, SlotGrant};
use crate::rdma::verbs::{Access, Completion, MemoryRegion, SendRequest, POLL_BATCH};
use crate::sys::port::ReservedPort;
use crate::sys::Deadline;

/// Bytes of a message header: kind, data consumed, control consumed, zero.
pub(crate) const HEADER_LEN: usize = 16;
pub(crate) const KIND_DATA: u32 = 1;
pub(crate) const KIND_CONTROL: u32 = 2;
/// The writer's last message (a half close): empty, a control message.
const KIND_END: u32 = 3;
/// The writer's close, clean or a reset (see `PeerClose`), just before its
/// disconnect: empty, control messages.
const KIND_CLOSED: u32 = 4;
const KIND_RESET: u32 = 5;
/// The slot of an end arrival, which holds none.
const NO_SLOT: u32 = u32::MAX;
/// The most sends a peer's credits may allow (see `check_grant`): a connecting
/// side's send queue depth, before it knows the listener's grant.
const SEND_DEPTH: u32 = 16;
/// At most every this many sends one is signaled (control and end messages always).
const SIGNAL_EVERY: u32 = 4;
const INLINE: u32 = 256;
const WR_SEND: u64 = 1 << 63;

/// The shape of the two-sided path.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// Bytes of one receive slot (header included).
    pub slot_len: usize,
    /// Slots a peer may hold with data.
    pub data_credits: u16,
    /// Slots a peer may use for control messages (at least 3: see the module doc).
    pub control_credits: u16,
    /// Slots of a listener's shared receive queue: the credits of all its
    /// two-sided connections together never exceed it.
    pub pool_slots: usize,
}

impl Default for SendOptions {
    /// 2 KiB slots, 4 + 3 credits: 14 KiB of the listener's pool per
    /// connection; a pool of 7168 slots (14 MiB) holds 1024 connections.
    fn default() -> Self {
        SendOptions { slot_len: 2048, data_credits: 4, control_credits: 3, pool_slots: 7168 }
    }
}

impl SendOptions {
    fn grant(&self) -> SlotGrant {
        SlotGrant {
            slot_len: self.slot_len as u32,
            data_credits: self.data_credits,
            control_credits: self.control_credits,
        }
    }

    fn slots_per_connection(&self) -> usize {
        usize::from(self.data_credits) + usize::from(self.control_credits)
    }

    pub(crate) fn check(&self) -> Result<()> {
        check_grant(&self.grant()).map_err(|why| Error::InvalidArgument(format!("send options: {why}")))?;
        if self.pool_slots < self.slots_per_connection() {
            return Err(Error::InvalidArgument(format!(
                "send options: a pool of {} slots holds no connection",
                self.pool_slots
            )));
        }
        Ok(())
    }
}

/// The bounds any grant must keep, ours or a peer's.
pub(crate) fn check_grant(grant: &SlotGrant) -> std::result::Result<(), String> {
    if !(64..=1 << 20).contains(&grant.slot_len) {
        return Err(format!("slot of {} bytes outside 64..=1048576", grant.slot_len));
    }
    let (data, control) = (u32::from(grant.data_credits), u32::from(grant.control_credits));
    if data == 0 || !(3..=8).contains(&control) || data + control > SEND_DEPTH {
        return Err(format!(
            "{data} data and {control} control credits: at least 1 and 3..=8, at most {SEND_DEPTH} together"
        ));
    }
    Ok(())
}

/// Where a stream's receives come from.
enum Receives {
    /// Slots of its own, posted to its own queue pair (a connecting side).
    Own(MemoryRegion),
    /// A listener's pool, with the slots it was promised.
    Shared { pool: Arc<ReceivePool>, reserved: usize },
}

/// A message that arrived and is not fully read yet.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    slot: u32,
    /// Stream bytes in it (0 for the end).
    len: u32,
    end: bool,
}

/// What a peer's message turned out to be, once its header passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Stream bytes: this many, after the header.
    Data(u32),
    /// A credit update: its slot can be reposted at once.
    Control,
    /// The end of the peer's stream (a control message too).
    End,
    /// How the peer closes (a control message too).
    Closed(PeerClose),
}

/// The message accounting of a two-sided stream, apart from the verbs: how
/// many messages of each kind each side sent and consumed, the credits both
/// ways, and the checks a peer's message header must pass. All counts wrap.
#[derive(Debug)]
pub(crate) struct Ledger {
    own: SlotGrant,
    peer: SlotGrant,
    // Sending.
    data_sent: u32,
    control_sent: u32,
    /// What the peer last said it consumed of ours.
    peer_data_consumed: u32,
    peer_control_consumed: u32,
    // Receiving.
    data_received: u32,
    control_received: u32,
    data_consumed: u32,
    control_consumed: u32,
    /// The consumption counts our last message carried.
    reported_data: u32,
    reported_control: u32,
    end_received: bool,
}

impl Ledger {
    /// The accounting of a stream that grants `own` and was granted `peer`.
    pub(crate) fn new(own: SlotGrant, peer: SlotGrant) -> Ledger {
        Ledger {
            own,
            peer,
            data_sent: 0,
            control_sent: 0,
            peer_data_consumed: 0,
            peer_control_consumed: 0,
            data_received: 0,
            control_received: 0,
            data_consumed: 0,
            control_consumed: 0,
            reported_data: 0,
            reported_control: 0,
            end_received: false,
        }
    }

    /// Whether the peer's credits allow a message, `kept` control credits left over.
    pub(crate) fn credit_for(&self, control: bool, kept: u32) -> bool {
        if control {
            self.control_sent.wrapping_sub(self.peer_control_consumed) + kept
                < u32::from(self.peer.control_credits)
        } else {
            self.data_sent.wrapping_sub(self.peer_data_consumed) < u32::from(self.peer.data_credits)
        }
    }

    /// The header of our next message of `kind`, with what we consumed so far.
    pub(crate) fn header(&self, kind: u32) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[4..8].copy_from_slice(&self.data_consumed.to_le_bytes());
        header[8..12].copy_from_slice(&self.control_consumed.to_le_bytes());
        header
    }

    /// Counts a message of `kind` sent with `header`'s report.
    pub(crate) fn sent(&mut self, kind: u32) {
        self.reported_data = self.data_consumed;
        self.reported_control = self.control_consumed;
        match kind {
            KIND_DATA => self.data_sent = self.data_sent.wrapping_add(1),
            _ => self.control_sent = self.control_sent.wrapping_add(1),
        }
    }

    /// Whether half our data grant was consumed without saying so.
    pub(crate) fn report_due(&self) -> bool {
        self.data_consumed.wrapping_sub(self.reported_data) >= u32::from(self.own.data_credits).div_ceil(2)
    }

    /// Counts a data message whose last byte was read: its slot goes back.
    pub(crate) fn consumed_data(&mut self) {
        self.data_consumed = self.data_consumed.wrapping_add(1);
    }

    /// Checks a peer's message of `byte_len` bytes whose first bytes are
    /// `message` (its header, at least, when it is long enough) and counts it.
    ///
    /// # Errors
    /// A protocol violation: shorter than a header, an unknown kind, beyond
    /// the granted credits, data after the end, a control message with bytes,
    /// or consumption counts that go back or past what we sent.
    pub(crate) fn admit(&mut self, message: &[u8], byte_len: usize) -> Result<Admitted> {
        if byte_len < HEADER_LEN || message.len() < HEADER_LEN {
            return Err(Violation::Message { what: "shorter than a header" }.into());
        }
        let word = |at: usize| u32::from_le_bytes(message[at..at + 4].try_into().unwrap());
        let (kind, payload) = (word(0), byte_len - HEADER_LEN);
        self.take_reports(word(4), word(8))?;
        match kind {
            KIND_DATA => {
                if payload == 0 || self.end_received {
                    return Err(Violation::Message { what: "data without bytes, or after the end" }.into());
                }
                if self.data_received.wrapping_sub(self.reported_data) >= u32::from(self.own.data_credits) {
                    return Err(Violation::Message { what: "data beyond the granted credits" }.into());
                }
                let len = u32::try_from(payload)
                    .map_err(|_| Violation::Message { what: "data longer than a slot" })?;
                self.data_received = self.data_received.wrapping_add(1);
                Ok(Admitted::Data(len))
            }
            KIND_CONTROL | KIND_END | KIND_CLOSED | KIND_RESET => {
                if payload != 0 || (kind == KIND_END && self.end_received) {
                    return Err(
                        Violation::Message { what: "a control message with bytes, or a second end" }.into()
                    );
                }
                if self.control_received.wrapping_sub(self.reported_control)
                    >= u32::from(self.own.control_credits)
                {
                    return Err(
                        Violation::Message { what: "control messages beyond the granted credits" }.into()
                    );
                }
                self.control_received = self.control_received.wrapping_add(1);
                self.control_consumed = self.control_consumed.wrapping_add(1);
                self.end_received |= kind == KIND_END;
                Ok(match kind {
                    KIND_END => Admitted::End,
                    KIND_CLOSED => Admitted::Closed(PeerClose::Clean),
                    KIND_RESET => Admitted::Closed(PeerClose::Reset),
                    _ => Admitted::Control,
                })
            }
            _ => Err(Violation::Message { what: "an unknown kind" }.into()),
        }
    }

    /// Takes the peer's consumption counts from a header, if they are possible.
    fn take_reports(&mut self, data: u32, control: u32) -> Result<()> {
        let moves = |reported: u32, previous: u32, sent: u32| {
            reported.wrapping_sub(previous) <= sent.wrapping_sub(previous)
        };
        if !moves(data, self.peer_data_consumed, self.data_sent)
            || !moves(control, self.peer_control_consumed, self.control_sent)
        {
            return Err(Violation::Consumed {
                data,
                control,
                data_sent: self.data_sent,
                control_sent: self.control_sent,
            }
            .into());
        }
        self.peer_data_consumed = data;
        self.peer_control_consumed = control;
        Ok(())
    }

    /// Data messages admitted and not yet consumed, and our data messages the
    /// peer has not consumed: never more than the credits granted.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn outstanding(&self) -> (u32, u32) {
        (
            self.data_received.wrapping_sub(self.data_consumed),
            self.data_sent.wrapping_sub(self.peer_data_consumed),
        )
    }
}

/// A byte stream to one peer over SEND/RECV. Dropped, it closes, and a close
/// delivers everything written before it (see `Closing`).
pub type SendStream = Closing<SendPath>;

/// The state of a `SendStream` (its methods are reached through it).
pub struct SendPath {
    // Memory before the endpoint: deregistered before its domain goes.
    receives: Receives,
    /// Staging of sends too long to go inline, one slot per send the peer's
    /// credits allow; made at the first such send (a peer that gets only
    /// short messages, a client's replies say, costs none).
    outgoing: Option<MemoryRegion>,
    endpoint: Endpoint,
    own: SlotGrant,
    peer: SlotGrant,
    ledger: Ledger,
    // Sending.
    next_outgoing: u32,
    /// The longest message we send, header included: the peer's slot, but no
    /// more than our own (a peer's huge slots must not make us stage huge buffers).
    message_len: usize,
    /// Staged slots in `outgoing`: as many as the peer's credits. A slot is
    /// reused only once its send retired, so sends outstanding stay below this.
    send_slots: u32,
    /// Every this many sends one is signaled (see `accept_peer_grant`).
    signal_every: u32,
    sq_outstanding: u32,
    unsignaled: u32,
    // Receiving.
    arrivals: VecDeque<Arrival>,
    /// Bytes of the front arrival already read.
    front_read: usize,
    /// The end arrival was read.
    ended: bool,
    output_shut: bool,
    end_pending: bool,
    /// `close` was called: the disconnect follows once the sends landed.
    closing: bool,
    /// `close_while_held` was called: the drop closes.
    closed_while_held: bool,
    /// How the peer said it closed, and whether a write came after its disconnect.
    peer_close: PeerClose,
    wrote_after_disconnect: bool,
    busy_poll: Duration,
}

/// The queue pair of a stream: `sends` the peer's credits allow; receives of
/// its own (none when they come from a pool).
fn shape(sends: u32, own_receives: u32) -> QpShape {
    QpShape { send_depth: sends, recv_depth: own_receives, max_inline: INLINE, shared_receives: 0 }
}

impl SendStream {
    /// Connects to a listener at `addr` over the two-sided path.
    pub fn connect(addr: SocketAddr, options: SendOptions, timeout: Option<Duration>) -> Result<SendStream> {
        let endpoint = Endpoint::resolve(addr, connect_shape(&options)?, timeout)?;
        let mut connecting = SendStream::start_connect(endpoint, options)?;
        let reply = connecting.await_connected()?;
        connecting.finish(reply)
    }

    /// Starts resolving `addr` for a two-sided stream's queue pair (from the
    /// port `from` holds, a client's bind, when given): `start_connect` takes the endpoint.
    pub(crate) fn resolve(
        from: Option<Arc<ReservedPort>>,
        addr: SocketAddr,
        options: &SendOptions,
        deadline: Deadline,
    ) -> Result<Resolving> {
        Resolving::start(from, addr, connect_shape(options)?, deadline)
    }

    /// Registers and posts the receive slots on a resolved `endpoint` and
    /// sends the connect request: `SendsConnecting::finish` builds the stream
    /// from the answer `Endpoint::connected` brings.
    pub(crate) fn start_connect(endpoint: Endpoint, options: SendOptions) -> Result<SendsConnecting> {
        let own = options.grant();
        let slots = MemoryRegion::new(
            endpoint.pd(),
            options.slots_per_connection() * options.slot_len,
            Access::LocalWrite,
        )?;
        let mut path = SendPath::build(endpoint, Receives::Own(slots), own);
        for slot in 0..options.slots_per_connection() as u32 {
            path.repost(slot)?;
        }
        path.endpoint.start_connect(&Hello::sends(own))?;
        Ok(SendsConnecting { path })
    }

    /// Accepts a two-sided request, its receives from `pool`. A pool that is
    /// spent refuses the connection (the request is dropped).
    pub(crate) fn accept(
        request: Request,
        pool: &Arc<ReceivePool>,
        options: &SendOptions,
    ) -> Result<SendStream> {
        let own = SlotGrant { slot_len: pool.slot_len as u32, ..options.grant() };
        let peer = request.hello.slots;
        check_grant(&peer).map_err(|why| Error::InvalidArgument(format!("peer's slot grant: {why}")))?;
        let reserved = options.slots_per_connection();
        pool.reserve(reserved)?;
        // From here the reservation goes back when `receives` drops.
        let receives = Receives::Shared { pool: Arc::clone(pool), reserved };
        let sends = u32::from(peer.data_credits) + u32::from(peer.control_credits);
        // Receives come from the pool; as many as the peer has credit for complete at once.
        let shared_receives = u32::from(own.data_credits) + u32::from(own.control_credits);
        let shape = QpShape { shared_receives, ..shape(sends, 0) };
        let (endpoint, _) = Endpoint::from_request(request, shape, Some(pool.queue()))?;
        let mut stream = SendPath::build(endpoint, receives, own);
        stream.accept_peer_grant(peer)?;
        stream.endpoint.accept(&Hello::sends(own))?;
        Ok(Closing::new(stream))
    }
}

/// A client's queue pair shape for `options` (checked): its own receives.
fn connect_shape(options: &SendOptions) -> Result<QpShape> {
    options.check()?;
    Ok(shape(SEND_DEPTH, options.slots_per_connection() as u32))
}

/// A two-sided stream's connect whose request is out, waiting for the answer.
pub(crate) struct SendsConnecting {
    path: SendPath,
}

impl SendsConnecting {
    /// The fd that becomes readable when the answer is there.
    pub(crate) fn event_fd(&self) -> RawFd {
        self.path.endpoint.event_fd()
    }

    /// The peer's hello once it answered (see `Endpoint::connected`).
    pub(crate) fn connected(&mut self) -> Result<Option<Hello>> {
        self.path.endpoint.connected()
    }

    /// Waits for the peer's answer.
    fn await_connected(&mut self) -> Result<Hello> {
        self.path.endpoint.await_connected()
    }

    /// The stream, from the peer's answer (`reply`).
    pub(crate) fn finish(mut self, reply: Hello) -> Result<SendStream> {
        if reply.kind != PathKind::Sends {
            return Err(Error::InvalidArgument(format!(
                "{} answered with a {:?} connection",
                self.path.endpoint.peer(),
                reply.kind
            )));
        }
        self.path.accept_peer_grant(reply.slots)?;
        Ok(Closing::new(self.path))
    }
}

impl SendPath {
    fn build(endpoint: Endpoint, receives: Receives, own: SlotGrant) -> SendPath {
        SendPath {
            receives,
            outgoing: None,
            endpoint,
            own,
            peer: SlotGrant::default(),
            ledger: Ledger::new(own, SlotGrant::default()),
            next_outgoing: 0,
            message_len: 0,
            send_slots: 0,
            signal_every: 1,
            sq_outstanding: 0,
            unsignaled: 0,
            arrivals: VecDeque::with_capacity(usize::from(own.data_credits)),
            front_read: 0,
            ended: false,
            output_shut: false,
            end_pending: false,
            closing: false,
            closed_while_held: false,
            peer_close: PeerClose::Unsaid,
            wrote_after_disconnect: false,
            busy_poll: Duration::ZERO,
        }
    }

    /// Checks the peer's grant and stages one outgoing slot per send it allows.
    fn accept_peer_grant(&mut self, peer: SlotGrant) -> Result<()> {
        check_grant(&peer).map_err(|why| Error::InvalidArgument(format!("peer's slot grant: {why}")))?;
        self.peer = peer;
        self.ledger = Ledger::new(self.own, peer);
        self.send_slots = u32::from(peer.data_credits) + u32::from(peer.control_credits);
        // Unsignaled sends retire only with a later signaled one: fewer of them
        // than slots, or a writer could wait on slots that never retire.
        self.signal_every = (self.send_slots / 2).clamp(1, SIGNAL_EVERY);
        self.message_len = peer.slot_len.min(self.own.slot_len) as usize;
        Ok(())
    }

    /// Drives the queue pair into the error state, as a fatal error of the
    /// device would: for tests of what follows (the stream fails with an
    /// error that says so, the peer is told, other connections go on).
    #[doc(hidden)]
    pub fn fail_queue_pair(&self) -> Result<()> {
        self.endpoint.fail_queue_pair()
    }

    /// The RDMA device that carries the stream, e.g. "rxe0".
    pub fn device_name(&self) -> String {
        self.endpoint.device_name()
    }

    /// See `Connection::set_busy_poll`.
    pub fn set_busy_poll(&mut self, busy_poll: Duration) {
        self.busy_poll = busy_poll;
    }

    /// Sends a signaled credit update, if a control credit allows, so that
    /// the unsignaled sends before it retire with it.
    fn retire_unsignaled(&mut self) {
        if self.unsignaled > 0 && self.can_send(true, 0) {
            if let Err(err) = self.send(KIND_CONTROL, &[], true) {
                log::debug!("send stream close: {err}");
            }
        }
    }

    /// The peer disconnected, or reset the connection.
    fn peer_gone(&self) -> bool {
        self.endpoint.peer_closed() || self.peer_close == PeerClose::Reset
    }

    /// Closes (see `close`): a reset when `abortive` or messages wait unread.
    fn close_telling(&mut self, abortive: bool) {
        if self.closing || self.endpoint.peer_closed() {
            return;
        }
        self.tell_how_it_closes(abortive);
        self.closing = true;
        self.retire_unsignaled();
        self.disconnect_once_landed("send stream close", Self::sends_landed);
    }

    /// Sends CLOSED or RESET, where a control credit allows (a peer told
    /// nothing fails its writes from the disconnect on).
    fn tell_how_it_closes(&mut self, abortive: bool) {
        let unread = self.drain_completions().map_or(true, |()| self.has_data());
        let kind = if abortive || unread { KIND_RESET } else { KIND_CLOSED };
        if !self.can_send(true, 0) {
            return;
        }
        if let Err(err) = self.send(kind, &[], true) {
            log::debug!("send stream close: the peer is not told how: {err}");
        }
    }

    /// Every send posted was acknowledged but the unsignaled ones no credit
    /// allowed to retire (see `retire_unsignaled`), or none will be.
    fn sends_landed(&self) -> bool {
        self.sq_outstanding == self.unsignaled || self.endpoint.peer_closed()
    }

    fn own_slot_len(&self) -> usize {
        self.own.slot_len as usize
    }

    /// The bytes of receive slot `slot` (valid from its completion to its repost).
    fn slot(&self, slot: u32) -> &[u8] {
        let len = self.own_slot_len();
        let at = slot as usize * len;
        match &self.receives {
            Receives::Own(region) => &region.bytes()[at..at + len],
            Receives::Shared { pool, .. } => pool.slot(slot, len),
        }
    }

    fn repost(&self, slot: u32) -> Result<()> {
        match &self.receives {
            Receives::Own(region) => {
                let len = self.own.slot_len as usize;
                // The slot stays untouched until its completion.
                self.endpoint.qp().post_recv(u64::from(slot), Some((region, slot as usize * len, len)))
            }
            Receives::Shared { pool, .. } => pool.repost(slot),
        }
    }

    /// A control credit and a staged slot kept for the end until it is sent.
    fn end_reserve(&self) -> u32 {
        u32::from(!self.output_shut || self.end_pending)
    }

    /// Room for a message with `kept` control credits and staged slots left over.
    fn can_send(&self, control: bool, kept: u32) -> bool {
        self.ledger.credit_for(control, kept) && self.sq_outstanding + kept < self.send_slots
    }

    fn writable(&self) -> bool {
        self.can_send(false, self.end_reserve())
    }

    /// Sends one message of `kind` with `payload`; the caller checked its credit.
    fn send(&mut self, kind: u32, payload: &[u8], signaled: bool) -> Result<()> {
        let header = self.ledger.header(kind);
        let len = HEADER_LEN + payload.len();
        self.unsignaled += 1;
        let signaled = signaled || self.unsignaled >= self.signal_every;
        let retires = if signaled { mem::take(&mut self.unsignaled) } else { 0 };
        let send = SendRequest::send(WR_SEND | u64::from(retires)).signaled(signaled);
        // Short messages go inline, from the stack: the device copies them at the post.
        if len <= self.endpoint.max_inline().min(INLINE) as usize {
            let mut inline = [0u8; INLINE as usize];
            inline[..HEADER_LEN].copy_from_slice(&header);
            inline[HEADER_LEN..len].copy_from_slice(payload);
            self.endpoint.qp().post_send(&send.inline_bytes(&inline[..len]))?;
        } else {
            if self.outgoing.is_none() {
                let staging = self.send_slots as usize * self.message_len;
                self.outgoing = Some(MemoryRegion::new(self.endpoint.pd(), staging, Access::Local)?);
            }
            let outgoing = self.outgoing.as_mut().expect("made above");
            let at = (self.next_outgoing % self.send_slots) as usize * self.message_len;
            self.next_outgoing = self.next_outgoing.wrapping_add(1);
            let staged = &mut outgoing.bytes_mut()[at..at + len];
            staged[..HEADER_LEN].copy_from_slice(&header);
            staged[HEADER_LEN..].copy_from_slice(payload);
            // A staged slot is not reused before this send retires (there are
            // as many slots as sends the peer's credits allow).
            self.endpoint.qp().post_send(&send.gather(outgoing, at, len))?;
        }
        self.sq_outstanding += 1;
        self.ledger.sent(kind);
        Ok(())
    }

    /// Tells the peer what we consumed when half our data grant went unreported.
    fn send_control_if_due(&mut self) -> Result<()> {
        if self.ledger.report_due() && self.can_send(true, self.end_reserve()) && !self.endpoint.peer_closed()
        {
            self.send(KIND_CONTROL, &[], true)?;
        }
        Ok(())
    }

    /// Sends the end message, on the credit kept for it (see `shutdown_output`).
    fn flush_end(&mut self) -> Result<()> {
        if self.end_pending && self.can_send(true, 0) && !self.endpoint.peer_closed() {
            self.send(KIND_END, &[], true)?;
            self.end_pending = false;
        }
        Ok(())
    }

    /// Handles a message that arrived in `slot` with `byte_len` bytes.
    fn arrived(&mut self, slot: u32, byte_len: usize) -> Result<()> {
        let mut header = [0u8; HEADER_LEN];
        let slot_bytes = self.slot(slot);
        let known = slot_bytes.len().min(HEADER_LEN);
        header[..known].copy_from_slice(&slot_bytes[..known]);
        match self.ledger.admit(&header[..known], byte_len)? {
            Admitted::Data(len) => self.arrivals.push_back(Arrival { slot, len, end: false }),
            Admitted::Control => self.repost(slot)?,
            Admitted::Closed(how) => {
                self.repost(slot)?;
                self.peer_close = how;
            }
            Admitted::End => {
                self.repost(slot)?;
                self.arrivals.push_back(Arrival { slot: NO_SLOT, len: 0, end: true });
            }
        }
        Ok(())
    }

    /// Hands the front arrival's slot back once it is read.
    fn consume_front(&mut self) -> Result<()> {
        let arrival = self.arrivals.pop_front().expect("an arrival to consume");
        self.front_read = 0;
        if arrival.end {
            self.ended = true;
            return Ok(());
        }
        self.ledger.consumed_data();
        self.repost(arrival.slot)
    }

    fn has_data(&self) -> bool {
        self.arrivals.front().is_some_and(|arrival| !arrival.end)
    }

    fn at_end(&mut self) -> Result<bool> {
        if self.arrivals.front().is_some_and(|arrival| arrival.end) {
            self.consume_front()?;
        }
        Ok(self.ended || (self.endpoint.peer_closed() && self.arrivals.is_empty()))
    }

    fn write_some(&mut self, data: &[u8]) -> Result<usize> {
        if self.output_shut {
            return Err(Error::InvalidArgument("write after shutdown_output".into()));
        }
        self.progress()?;
        if self.peer_close == PeerClose::Reset {
            return Err(Error::Disconnected);
        }
        let chunk = self.message_len - HEADER_LEN;
        if self.endpoint.peer_closed() {
            return self.peer_close.write_after_disconnect(
                &mut self.wrote_after_disconnect,
                data.len(),
                chunk,
            );
        }
        let mut written = 0;
        while written < data.len() && self.writable() {
            let piece = &data[written..data.len().min(written + chunk)];
            self.send(KIND_DATA, piece, false)?;
            written += piece.len();
        }
        Ok(written)
    }

    fn read_some(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        self.progress()?;
        let mut done = 0;
        while done < out.len() {
            let Some(&Arrival { slot, len, end: false }) = self.arrivals.front() else { break };
            let at = HEADER_LEN + self.front_read;
            let n = (len as usize - self.front_read).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.slot(slot)[at..at + n]);
            done += n;
            self.front_read += n;
            if self.front_read == len as usize {
                self.consume_front()?;
            }
        }
        if done > 0 {
            self.send_control_if_due()?;
            return Ok(ReadOutcome::Data(done));
        }
        // What arrived before a reset is read first, as from a TCP socket.
        if self.peer_close == PeerClose::Reset {
            return Err(Error::ConnectionReset);
        }
        if self.at_end()? {
            return Ok(ReadOutcome::EndOfStream);
        }
        if self.endpoint.learn_of_disconnect()? {
            return self.read_some(out); // once more with what arrived before the disconnect
        }
        Ok(ReadOutcome::WouldBlock)
    }

    fn ready_ops(&mut self, interest: u32) -> Result<u32> {
        self.progress()?;
        if self.arrivals.is_empty() && self.endpoint.learn_of_disconnect()? {
            self.progress()?;
        }
        let closed = self.peer_gone();
        let mut ready = 0;
        if self.has_data() || self.at_end()? || closed {
            ready |= ops::READ;
        }
        if self.writable() || self.output_shut || closed {
            ready |= ops::WRITE;
        }
        Ok(ready & interest)
    }

    /// Gives the pool back every slot this stream holds or consumed, whatever
    /// the messages in them, once the queue pair stopped taking any.
    fn return_slots(&mut self) {
        if matches!(self.receives, Receives::Own(_)) {
            return;
        }
        let mut slots: Vec<u32> =
            self.arrivals.drain(..).filter(|arrival| !arrival.end).map(|arrival| arrival.slot).collect();
        let mut wcs = [Completion::default(); POLL_BATCH];
        while let Ok(n @ 1..) = self.endpoint.completions().poll(&mut wcs) {
            // Every receive completion, failed ones too, consumed a pool slot.
            slots.extend(wcs[..n].iter().filter(|wc| wc.wr_id & WR_SEND == 0).map(|wc| wc.wr_id as u32));
        }
        for slot in slots {
            if let Err(err) = self.repost(slot) {
                log::error!("send stream close: slot {slot} not returned to the pool: {err}");
            }
        }
    }
}

impl ByteStream for SendPath {
    fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        self.revoking_on_violation(|s| s.write_some(data))
    }

    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        self.revoking_on_violation(|s| s.read_some(out))
    }

    /// The bytes of every message that arrived and is not yet read.
    fn available(&mut self) -> Result<usize> {
        self.revoking_on_violation(|s| {
            s.progress()?;
            let arrived: usize = s.arrivals.iter().filter(|a| !a.end).map(|a| a.len as usize).sum();
            Ok(arrived - s.front_read)
        })
    }

    fn wait(&mut self, interest: Interest, deadline: Deadline) -> Result<()> {
        self.revoking_on_violation(|s| match interest {
            Interest::Write => s.wait_until("send stream write", deadline, |s| s.writable() || s.peer_gone()),
            Interest::Read => s.wait_until("send stream read", deadline, |s| {
                !s.arrivals.is_empty() || s.ended || s.peer_gone()
            }),
        })
    }

    fn shutdown_output(&mut self) -> Result<()> {
        if !self.output_shut {
            self.output_shut = true;
            self.end_pending = true;
        }
        self.revoking_on_violation(Self::flush_end)
    }

    /// As `RdmaStream`'s close; the last unsignaled sends are retired by the
    /// signaled CLOSED or RESET, or a credit update, when a control credit allows.
    fn close(&mut self) {
        self.close_telling(false);
    }

    /// As `close`, telling the peer of a reset whatever was read.
    fn abort(&mut self) {
        self.close_telling(true);
    }

    /// As `RdmaStream`'s: the end message only; the peer's messages wait,
    /// unread, until the stream drops and its close disconnects.
    fn close_while_held(&mut self) {
        match self.shutdown_output() {
            Ok(()) => self.closed_while_held = true,
            Err(err) => {
                log::warn!("send stream close: cannot end the stream ({err}); disconnecting");
                self.close();
            }
        }
    }

    fn close_complete(&mut self) -> bool {
        (self.closed_while_held && !self.closing) || self.settle()
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.endpoint.peer_addr()
    }

    fn ready(&mut self, interest: u32) -> Result<u32> {
        self.revoking_on_violation(|s| s.ready_ops(interest))
    }

    fn arm(&mut self, _interest: u32) -> Result<()> {
        self.endpoint.completions().arm()
    }

    fn disarm(&mut self) -> Result<()> {
        self.endpoint.consume_signals()
    }

    fn sources(&self, _interest: u32) -> [WaitSource; 2] {
        self.endpoint.sources()
    }

    fn signalled(&mut self, fd: RawFd, _events: u32) {
        self.endpoint.signalled(fd);
    }

    fn completion_channel(&self) -> Option<CompletionChannel> {
        Some(self.endpoint.completions().channel())
    }
}

impl DataPath for SendPath {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    fn complete(&mut self, wc: &Completion) -> Result<()> {
        let is_send = wc.wr_id & WR_SEND != 0;
        if is_send {
            self.sq_outstanding -= (wc.wr_id & !WR_SEND) as u32;
        }
        // Our own receives and sends flush when the queue pair stops (a pool's never do).
        if wc.flushed() {
            return self.endpoint.flushed(if is_send { "send" } else { "receive" }, wc);
        }
        if !wc.succeeded() {
            if !is_send && matches!(self.receives, Receives::Shared { .. }) {
                self.repost(wc.wr_id as u32)?; // e.g. a message too long for its slot
            }
            return Err(wc.error(if is_send { "send" } else { "receive" }));
        }
        if is_send {
            return Ok(());
        }
        let slot = wc.wr_id as u32;
        let arrived = self.arrived(slot, wc.byte_len as usize);
        if arrived.is_err() {
            // A refused message holds its slot no longer.
            self.repost(slot)?;
        }
        arrived
    }

    fn progress(&mut self) -> Result<()> {
        self.drain_completions()?;
        self.flush_end()?;
        self.send_control_if_due()
    }
}

impl Settle for SendPath {
    fn settle(&mut self) -> bool {
        if !self.endpoint.peer_closed() {
            self.retire_unsignaled(); // when a credit came back since
        }
        self.settle_when(Self::sends_landed)
    }
}

impl Close for SendPath {
    fn start_close(&mut self) {
        ByteStream::close(self);
    }
}

impl Drop for SendPath {
    fn drop(&mut self) {
        self.close();
        self.endpoint.disconnect();
        self.return_slots();
        self.endpoint.shutdown();
    }
}

impl Drop for Receives {
    fn drop(&mut self) {
        if let Receives::Shared { pool, reserved } = self {
            pool.release(*reserved);
        }
    }
}
