//! The one-sided RDMA medium: a byte stream whose bytes travel by RDMA WRITE
//! into a ring in the peer's memory (the ring logic is `ring`'s).
//!
//! Each side grants its peer one memory region, and nothing else: its incoming
//! ring followed by a credit slot (`[ring: capacity][slot: 64 bytes]`), with
//! remote write and no other remote right (no read, no atomics), under an rkey
//! registered for this connection alone. The grant travels in the hello.
//!
//! - Data: the writer frames records into a local shadow of the peer's ring and
//!   writes the new bytes to the same offsets of the real one. The last write of
//!   a batch carries immediate data (the new tail's low 31 bits); its arrival
//!   consumes a receive on the peer and tells it the bytes are in place.
//! - Credit: every record carries the writer's own read position of the reverse
//!   direction in its `ack` (free credit on two-way traffic); besides, the
//!   reader writes `{head, reposted receives}` into the writer's slot (inline,
//!   so any number may be in flight) once a quarter of the ring was read or
//!   when the writer asked for a wake-up.
//! - Receives: immediate data needs a posted receive at the peer. The writer
//!   keeps its unacknowledged immediate writes below the peer's receive depth
//!   (the peer reports its reposts in the credit slot), keeping the last
//!   place for a wake-up request: a sender never causes a receiver-not-ready retry.
//! - Wake-up: a writer that finds no room sends a zero-length write with a
//!   REQUEST immediate, which makes the reader's next read write credit. Every
//!   credit write carries a WAKE immediate (while the writer's receives allow),
//!   which completes on the sleeping writer's CQ: a writer may have looked at
//!   its slot just before a credit landed, and the reader may never be called
//!   again (it read what it wanted), so no credit may land without waking it.
//!
//! - Close: the disconnect says only that the peer is gone; just before it, a
//!   close writes a CLOSED immediate, or a RESET one when bytes it received
//!   wait unread or it closes abortively (TCP's FIN and RST), where the
//!   peer's receives allow. A close while a selector holds the socket writes
//!   the end record only; the rest comes when the stream drops.
//!
//! Sends are signaled every `SIGNAL_EVERY` work requests, completions are
//! drained in batches.

use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::media::ring::{RingConfig, RingReader, RingWriter, Violation};
use crate::media::stream::{ops, ByteStream, Interest, PeerClose, ReadOutcome, WaitSource};
use crate::rdma::closer::{Close, Closing, Settle};
use crate::rdma::completions::CompletionChannel;
use crate::rdma::endpoint::{DataPath, Endpoint, Listener, QpShape, Request, Resolving};
use crate::rdma::hello::{Hello, PathKind, RingGrant};
use crate::rdma::verbs::{Access, Completion, MemoryRegion, RemoteAddr, SendRequest};
use crate::sys::port::ReservedPort;
use crate::sys::{self, Deadline};

/// Receives posted for immediate-data notifications (zero-length: no buffers).
const RECV_DEPTH: u32 = 64;
const SEND_DEPTH: u32 = 64;
/// Every this many work requests one is signaled, so the send queue drains.
const SIGNAL_EVERY: u32 = 16;
/// Bytes of the credit slot that follows each ring.
const SLOT_LEN: usize = 64;
/// Bytes of a credit write: `{head, reposted receives}`, little-endian.
const CREDIT_LEN: usize = 16;
/// The queue pair of a stream: data is written from the registered shadow,
/// credit inline (its bytes are copied at the post: no staging to reuse).
const SHAPE: QpShape = QpShape {
    send_depth: SEND_DEPTH,
    recv_depth: RECV_DEPTH,
    max_inline: CREDIT_LEN as u32,
    shared_receives: 0,
};

/// Immediate data: the top bit marks control; data carries the tail's low 31 bits.
const IMM_CONTROL: u32 = 1 << 31;
const IMM_REQUEST: u32 = IMM_CONTROL | 1;
const IMM_WAKE: u32 = IMM_CONTROL | 2;
/// The writer's close, clean or a reset (see `PeerClose`), just before its disconnect.
const IMM_CLOSED: u32 = IMM_CONTROL | 3;
const IMM_RESET: u32 = IMM_CONTROL | 4;

/// Work request ids: the kind in the low byte, and for signaled sends the
/// number of send work requests their completion retires.
const WR_RECV: u64 = 0;
const WR_DATA: u64 = 1;
const WR_CREDIT: u64 = 2;
const WR_CONTROL: u64 = 3;

/// The shape of the ring a side offers its peer.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Bytes of the incoming ring (a power of two).
    pub ring_capacity: usize,
    /// The largest record the peer may write into it.
    pub max_record: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { ring_capacity: 256 * 1024, max_record: 32 * 1024 }
    }
}

impl Listener {
    /// Waits for a ring stream connection and completes it.
    pub fn accept_stream(&self, options: StreamOptions, timeout: Option<Duration>) -> Result<RdmaStream> {
        RdmaStream::accept(self.next_request(PathKind::Rings, Deadline::after(timeout))?, options)
    }
}

/// A byte stream to one peer over RDMA WRITE into rings. Dropped, it closes,
/// and a close delivers everything written before it (see `Closing`).
pub type RdmaStream = Closing<RingPath>;

/// The state of an `RdmaStream` (its methods are reached through it).
pub struct RingPath {
    // Memory regions before the endpoint: deregistered before its PD goes.
    /// Our incoming ring and credit slot, which the peer writes.
    incoming: MemoryRegion,
    /// A shadow of the peer's ring.
    outgoing: MemoryRegion,
    endpoint: Endpoint,
    reader: RingReader,
    writer: RingWriter,
    peer: RingGrant,
    /// Immediate writes sent to the peer, and how many receives it reposted for them.
    imm_sent: u64,
    peer_reposted: u64,
    /// Receives we reposted, and the count last reported to the peer.
    reposted: u64,
    reported_reposted: u64,
    reported_head: u64,
    /// Send work requests not yet retired by a signaled completion.
    sq_outstanding: u32,
    unsignaled: u32,
    /// The peer asked to be woken by our next credit.
    peer_wants_credit: bool,
    /// We asked the peer for a wake-up and wait for it.
    credit_requested: bool,
    /// `close` was called: the disconnect follows once the writes landed.
    closing: bool,
    /// `close_while_held` was called: the drop closes.
    closed_while_held: bool,
    /// How the peer said it closed, and whether a write came after its disconnect.
    peer_close: PeerClose,
    wrote_after_disconnect: bool,
    /// The last write found no room: until one succeeds, every wake-up that
    /// brings too little credit is followed by a new request (see `progress`).
    write_blocked: bool,
    /// `shutdown_output` was called; the end record may still wait for room.
    output_shut: bool,
    end_pending: bool,
    busy_poll: Duration,
}

impl RdmaStream {
    /// Connects to a listener at `addr` that accepts streams.
    pub fn connect(
        addr: SocketAddr,
        options: StreamOptions,
        timeout: Option<Duration>,
    ) -> Result<RdmaStream> {
        let endpoint = Endpoint::resolve(addr, SHAPE, timeout)?;
        let mut connecting = RdmaStream::start_connect(endpoint, options)?;
        let reply = connecting.await_connected()?;
        connecting.finish(reply)
    }

    /// Starts resolving `addr` for a ring stream's queue pair (from the port
    /// `from` holds, a client's bind, when given): `start_connect` takes the endpoint.
    pub(crate) fn resolve(
        from: Option<Arc<ReservedPort>>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<Resolving> {
        Resolving::start(from, addr, SHAPE, deadline)
    }

    /// Registers the ring's memory on a resolved `endpoint` and sends the
    /// connect request: `RingsConnecting::finish` builds the stream from the
    /// answer `Endpoint::connected` brings.
    pub(crate) fn start_connect(mut endpoint: Endpoint, options: StreamOptions) -> Result<RingsConnecting> {
        let (incoming, grant) = grant_memory(&endpoint, options)?;
        post_receives(&endpoint, RECV_DEPTH)?;
        endpoint.start_connect(&Hello::rings(grant))?;
        Ok(RingsConnecting { incoming, grant, endpoint })
    }

    /// Checks the client's grant before accepting, so a bad one is refused.
    pub(crate) fn accept(request: Request, options: StreamOptions) -> Result<RdmaStream> {
        let (endpoint, hello) = Endpoint::from_request(request, SHAPE, None)?;
        let (incoming, grant) = grant_memory(&endpoint, options)?;
        post_receives(&endpoint, RECV_DEPTH)?;
        let mut stream = RingPath::build(endpoint, incoming, grant, hello.grant)?;
        stream.endpoint.accept(&Hello::rings(grant))?;
        Ok(Closing::new(stream))
    }
}

/// A ring stream's connect whose request is out, waiting for the answer.
pub(crate) struct RingsConnecting {
    // Declared before the endpoint: the memory goes before its PD.
    incoming: MemoryRegion,
    grant: RingGrant,
    endpoint: Endpoint,
}

impl RingsConnecting {
    /// The fd that becomes readable when the answer is there.
    pub(crate) fn event_fd(&self) -> RawFd {
        self.endpoint.event_fd()
    }

    /// The peer's hello once it answered (see `Endpoint::connected`).
    pub(crate) fn connected(&mut self) -> Result<Option<Hello>> {
        self.endpoint.connected()
    }

    /// Waits for the peer's answer.
    fn await_connected(&mut self) -> Result<Hello> {
        self.endpoint.await_connected()
    }

    /// The stream, from the peer's answer (`reply`).
    pub(crate) fn finish(self, reply: Hello) -> Result<RdmaStream> {
        if reply.kind != PathKind::Rings {
            return Err(Error::InvalidArgument(format!(
                "{} answered with a {:?} connection",
                self.endpoint.peer(),
                reply.kind
            )));
        }
        RingPath::build(self.endpoint, self.incoming, self.grant, reply.grant).map(Closing::new)
    }
}

impl RingPath {
    /// Checks the peer's grant and sets up both rings' state.
    fn build(
        endpoint: Endpoint,
        incoming: MemoryRegion,
        own: RingGrant,
        peer: RingGrant,
    ) -> Result<RingPath> {
        let invalid = |why: String| Error::InvalidArgument(format!("peer's ring grant: {why}"));
        let peer_ring =
            RingConfig::new(peer.capacity as usize, peer.max_payload as usize, peer.seed).map_err(invalid)?;
        if !(2..=4096).contains(&peer.recv_depth) {
            return Err(invalid(format!("receive depth {} outside 2..=4096", peer.recv_depth)));
        }
        let own_ring = RingConfig::new(own.capacity as usize, own.max_payload as usize, own.seed)
            .map_err(Error::InvalidArgument)?;
        // The shadow is only read by our own device for the writes: no access rights.
        let outgoing = MemoryRegion::new(endpoint.pd(), peer.capacity as usize, Access::Local)?;
        Ok(RingPath {
            incoming,
            outgoing,
            endpoint,
            reader: RingReader::new(own_ring),
            writer: RingWriter::new(peer_ring),
            peer,
            imm_sent: 0,
            peer_reposted: 0,
            reposted: 0,
            reported_reposted: 0,
            reported_head: 0,
            sq_outstanding: 0,
            unsignaled: 0,
            peer_wants_credit: false,
            credit_requested: false,
            closing: false,
            closed_while_held: false,
            peer_close: PeerClose::Unsaid,
            wrote_after_disconnect: false,
            write_blocked: false,
            output_shut: false,
            end_pending: false,
            busy_poll: Duration::ZERO,
        })
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

    /// The local queue pair number.
    pub fn qp_num(&self) -> u32 {
        self.endpoint.qp_num()
    }

    /// See `Connection::set_busy_poll`.
    pub fn set_busy_poll(&mut self, busy_poll: Duration) {
        self.busy_poll = busy_poll;
    }

    /// Every write posted was acknowledged, or none will be.
    fn writes_landed(&self) -> bool {
        self.sq_outstanding == 0 || self.endpoint.peer_closed()
    }

    /// The peer disconnected, or reset the connection.
    fn peer_gone(&self) -> bool {
        self.endpoint.peer_closed() || self.peer_close == PeerClose::Reset
    }

    /// Closes (see `close`): a reset when `abortive` or bytes wait unread.
    fn close_telling(&mut self, abortive: bool) {
        if self.closing || self.endpoint.peer_closed() {
            return;
        }
        self.tell_how_it_closes(abortive);
        self.closing = true;
        // A signaled empty write retires everything before it.
        if self.sq_outstanding > 0 {
            if let Err(err) = self.post(WR_DATA, 0, 0, 0, None, true) {
                log::warn!("rdma stream close: the last writes may be lost: {err}");
                self.endpoint.disconnect();
                return;
            }
        }
        self.disconnect_once_landed("rdma stream close", Self::writes_landed);
    }

    /// Writes the CLOSED or RESET immediate, where the peer's receives allow
    /// (a peer told nothing fails its writes from the disconnect on).
    fn tell_how_it_closes(&mut self, abortive: bool) {
        let unread = self.drain_completions().and_then(|()| {
            let capacity = self.reader_capacity();
            Ok(self.reader.available(&self.incoming.bytes()[..capacity])?)
        });
        let imm = if abortive || unread.map_or(true, |unread| unread > 0) { IMM_RESET } else { IMM_CLOSED };
        if !self.can_post(1, 0) {
            return;
        }
        if let Err(err) = self.post(WR_CONTROL, 0, 0, 0, Some(imm), false) {
            log::debug!("rdma stream close: the peer is not told how: {err}");
        }
    }

    fn reader_capacity(&self) -> usize {
        self.incoming.bytes().len() - SLOT_LEN
    }

    /// Immediate writes not yet known to have a reposted receive at the peer.
    fn imm_outstanding(&self) -> u64 {
        self.imm_sent - self.peer_reposted
    }

    /// Room for a batch of `writes` work requests with one notification,
    /// keeping `kept` writes and notifications for what must never wait: the
    /// end record (its two writes, one notification) and a wake-up request;
    /// and a place in the send queue for a credit write.
    fn can_post(&self, writes: u32, kept: u32) -> bool {
        self.sq_outstanding + writes + kept < SEND_DEPTH // the credit write's place
            && self.imm_outstanding() + 1 + u64::from(kept.min(2)) <= u64::from(self.peer.recv_depth)
    }

    /// Room for a data batch (two writes when it wraps), keeping room for the end and a request.
    fn can_send_data(&self) -> bool {
        self.can_post(2, 3)
    }

    fn writable(&self) -> bool {
        self.can_send_data() && self.writer.fits(1)
    }

    /// Asks the peer for a wake-up with its next credit, once per wait.
    fn request_credit(&mut self) -> Result<()> {
        if self.credit_requested
            || self.sq_outstanding + 2 > SEND_DEPTH // keeping the credit write's place
            || self.imm_outstanding() + 1 > u64::from(self.peer.recv_depth)
        {
            return Ok(());
        }
        self.post(WR_CONTROL, 0, 0, 0, Some(IMM_REQUEST), true)?;
        self.credit_requested = true;
        Ok(())
    }

    /// Writes `len` bytes of the shadow at `offset` to the same offset of the peer's ring.
    fn post_write(&mut self, offset: usize, len: usize, imm: Option<u32>) -> Result<()> {
        self.post(WR_DATA, offset, offset, len, imm, false)
    }

    /// Posts one RDMA WRITE (with immediate data if `imm`) from `local` in the
    /// outgoing region to `remote` in the peer's grant. It is signaled when
    /// `signaled` asks, or when it is the `SIGNAL_EVERY`th unsignaled one.
    fn post(
        &mut self,
        kind: u64,
        local: usize,
        remote: usize,
        len: usize,
        imm: Option<u32>,
        signaled: bool,
    ) -> Result<()> {
        let (wr_id, signaled) = self.next_work_request(kind, signaled);
        let write = SendRequest::write(wr_id, self.remote(remote), imm)
            .gather(&self.outgoing, local, len)
            .signaled(signaled);
        // The shadow bytes stay untouched until the peer credits them.
        self.endpoint.qp().post_send(&write)?;
        self.posted(imm);
        Ok(())
    }

    /// The id of the next send work request of `kind`, and whether it is
    /// signaled: when `signaled` asks, or as the `SIGNAL_EVERY`th unsignaled one.
    fn next_work_request(&mut self, kind: u64, signaled: bool) -> (u64, bool) {
        self.unsignaled += 1;
        let signaled = signaled || self.unsignaled >= SIGNAL_EVERY;
        let retires = if signaled { mem::take(&mut self.unsignaled) } else { 0 };
        (kind | u64::from(retires) << 8, signaled)
    }

    /// `offset` in the peer's grant.
    fn remote(&self, offset: usize) -> RemoteAddr {
        RemoteAddr { addr: self.peer.addr + offset as u64, rkey: self.peer.rkey }
    }

    fn posted(&mut self, imm: Option<u32>) {
        self.sq_outstanding += 1;
        if imm.is_some() {
            self.imm_sent += 1;
        }
    }

    /// Writes the shadow's bytes from `start` up to the writer's tail to the
    /// peer's ring: one write, or two when they run past its end. The last
    /// one notifies with the new tail.
    fn post_new_bytes(&mut self, start: u64) -> Result<()> {
        let capacity = self.peer.capacity as usize;
        let tail = self.writer.tail();
        let from = (start % capacity as u64) as usize;
        let to = (tail % capacity as u64) as usize;
        let imm = (tail as u32) & !IMM_CONTROL;
        if from < to {
            self.post_write(from, to - from, Some(imm))
        } else {
            self.post_write(from, capacity - from, if to == 0 { Some(imm) } else { None })?;
            if to > 0 {
                self.post_write(0, to, Some(imm))?;
            }
            Ok(())
        }
    }

    /// Writes the end record once there is room for it (see `shutdown_output`).
    fn flush_end(&mut self) -> Result<()> {
        if !self.end_pending || self.endpoint.peer_closed() {
            return Ok(());
        }
        // Data always leaves the room for this (see `can_send_data` and the ring's end reserve).
        if !self.can_post(2, 1) {
            return self.request_credit();
        }
        let start = self.writer.tail();
        let ack = (self.reader.head() as u32) & !IMM_CONTROL;
        let Some(frame) = self.writer.frame_end(ack) else {
            return self.request_credit();
        };
        let shadow = self.outgoing.bytes_mut();
        if let Some((at, padding)) = frame.padding {
            shadow[at..at + padding.len()].copy_from_slice(&padding);
        }
        shadow[frame.offset..frame.offset + frame.header.len()].copy_from_slice(&frame.header);
        self.end_pending = false;
        self.post_new_bytes(start)
    }

    /// Takes the credit the peer wrote into our slot.
    fn take_credit(&mut self) -> Result<()> {
        let capacity = self.reader_capacity();
        let slot = self.incoming.bytes()[capacity..].as_ptr();
        // SAFETY: the slot is 8-aligned (the region is a heap allocation, at
        // least 16-aligned, and the capacity before it a power of two ≥ 64), in
        // bounds, and written only by the peer's device: atomic loads read
        // whole words, never a torn one.
        let (head, reposted) = unsafe {
            let words = slot.cast::<AtomicU64>();
            (
                u64::from_le((*words).load(Ordering::Acquire)),
                u64::from_le((*words.add(1)).load(Ordering::Acquire)),
            )
        };
        self.writer.credit(head)?;
        if reposted < self.peer_reposted || reposted > self.imm_sent {
            return Err(Violation::ReceiveCredit {
                reposted,
                previous: self.peer_reposted,
                sent: self.imm_sent,
            }
            .into());
        }
        self.peer_reposted = reposted;
        Ok(())
    }

    /// Writes our head and reposted count into the peer's slot when it is worth
    /// it, or when the peer waits for a wake-up, waking the peer with it.
    fn send_credit_if_due(&mut self) -> Result<()> {
        if self.sq_outstanding + 1 > SEND_DEPTH {
            return Ok(());
        }
        let head = self.reader.head();
        let news = head > self.reported_head || self.reposted > self.reported_reposted;
        // No credit write for a drained ring, unlike shm: a writer that needs
        // room asks for it, and two-way traffic carries credit in its acks.
        let due = head - self.reported_head >= self.reader_capacity() as u64 / 4
            || self.reposted - self.reported_reposted >= u64::from(RECV_DEPTH / 4)
            || (self.peer_wants_credit && news);
        if !due || !news {
            return Ok(());
        }
        // The wake-up consumes a receive at the peer: within its budget, an
        // unasked one keeping the places of our end record and wake-up request,
        // an asked one taking the last place if it must.
        let free_receives = u64::from(self.peer.recv_depth) - self.imm_outstanding();
        let wake = free_receives > if self.peer_wants_credit { 0 } else { 2 };
        let mut credit = [0u8; CREDIT_LEN];
        credit[..8].copy_from_slice(&head.to_le_bytes());
        credit[8..].copy_from_slice(&self.reposted.to_le_bytes());
        let imm = wake.then_some(IMM_WAKE);
        let (wr_id, signaled) = self.next_work_request(WR_CREDIT, false);
        let write = SendRequest::write(wr_id, self.remote(self.peer.capacity as usize), imm)
            .inline_bytes(&credit)
            .signaled(signaled);
        self.endpoint.qp().post_send(&write)?;
        self.posted(imm);
        self.reported_head = head;
        self.reported_reposted = self.reposted;
        if wake {
            self.peer_wants_credit = false;
        }
        Ok(())
    }
}

/// The stream operations proper; the `ByteStream` face wraps each in
/// `revoking_on_violation` (`DataPath`).
impl RingPath {
    fn write_some(&mut self, data: &[u8]) -> Result<usize> {
        if self.output_shut {
            return Err(Error::InvalidArgument("write after shutdown_output".into()));
        }
        self.progress()?;
        if self.peer_close == PeerClose::Reset {
            return Err(Error::Disconnected);
        }
        if self.endpoint.peer_closed() {
            let room = self.peer.max_payload as usize; // a record
            return self.peer_close.write_after_disconnect(
                &mut self.wrote_after_disconnect,
                data.len(),
                room,
            );
        }
        if !self.can_send_data() {
            self.write_blocked = true;
            self.request_credit()?;
            return Ok(0);
        }
        let start = self.writer.tail();
        let ack = (self.reader.head() as u32) & !IMM_CONTROL;
        let shadow = self.outgoing.bytes_mut();
        let written =
            self.writer.write(data, ack, |at, bytes| shadow[at..at + bytes.len()].copy_from_slice(bytes));
        if written == 0 {
            self.write_blocked = true;
            self.request_credit()?;
            return Ok(0);
        }
        self.write_blocked = false;
        self.post_new_bytes(start)?;
        Ok(written)
    }

    fn read_some(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        self.progress()?;
        let capacity = self.reader_capacity();
        let n = self.reader.read(&self.incoming.bytes()[..capacity], out)?;
        if let Some(ack) = self.reader.take_ack() {
            self.writer.credit_low31(ack)?;
        }
        if n > 0 {
            self.send_credit_if_due()?;
        } else if self.endpoint.learn_of_disconnect()? {
            return self.read_some(out); // once more with what arrived before the disconnect
        }
        Ok(match n {
            // What arrived before a reset is read first, as from a TCP socket.
            0 if self.peer_close == PeerClose::Reset && !self.reader.has_data() => {
                return Err(Error::ConnectionReset)
            }
            0 if self.reader.ended() || (self.endpoint.peer_closed() && !self.reader.has_data()) => {
                ReadOutcome::EndOfStream
            }
            0 => ReadOutcome::WouldBlock,
            n => ReadOutcome::Data(n),
        })
    }

    fn ready_ops(&mut self, interest: u32) -> Result<u32> {
        self.progress()?;
        if !self.reader.has_data() && self.endpoint.learn_of_disconnect()? {
            self.progress()?;
        }
        let closed = self.peer_gone();
        let mut ready = 0;
        if self.reader.has_data() || self.reader.ended() || closed {
            ready |= ops::READ;
        }
        if self.writable() || self.output_shut || closed {
            ready |= ops::WRITE;
        } else if interest & ops::WRITE != 0 {
            // Someone waits for room: make sure the peer's next credit wakes us.
            self.write_blocked = true;
            self.request_credit()?;
        }
        Ok(ready & interest)
    }
}

impl ByteStream for RingPath {
    /// Writes as much of `data` as the peer's ring has room for; returns how
    /// much (0: would block until credit comes).
    ///
    /// # Errors
    /// `Disconnected` once the peer has closed; a protocol violation when its
    /// credit is impossible; a failed work completion.
    fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        self.revoking_on_violation(|s| s.write_some(data))
    }

    /// Reads what has arrived, up to `out.len()` bytes.
    ///
    /// # Errors
    /// A protocol violation when the peer wrote what the ring rules forbid
    /// (the connection is then revoked: see `revoke`).
    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        self.revoking_on_violation(|s| s.read_some(out))
    }

    fn available(&mut self) -> Result<usize> {
        self.revoking_on_violation(|s| {
            s.progress()?;
            let capacity = s.reader_capacity();
            Ok(s.reader.available(&s.incoming.bytes()[..capacity])?)
        })
    }

    fn wait(&mut self, interest: Interest, deadline: Deadline) -> Result<()> {
        self.revoking_on_violation(|s| match interest {
            Interest::Write => s.wait_until("rdma stream write", deadline, |s| s.writable() || s.peer_gone()),
            Interest::Read => s.wait_until("rdma stream read", deadline, |s| {
                s.reader.has_data() || s.reader.ended() || s.peer_gone()
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

    /// Tells the peer how it closes, and disconnects once the writes in
    /// flight landed (`DataPath::disconnect_once_landed`).
    fn close(&mut self) {
        self.close_telling(false);
    }

    /// As `close`, telling the peer of a reset whatever was read.
    fn abort(&mut self) {
        self.close_telling(true);
    }

    /// Sends the end record only: the peer reads the end, and its writes
    /// land in our ring, unread, until the stream drops, whose close
    /// (`Closing`) disconnects; from then on they fail, as a TCP peer's do
    /// once the JDK's channel closed its file.
    fn close_while_held(&mut self) {
        match self.shutdown_output() {
            Ok(()) => self.closed_while_held = true,
            Err(err) => {
                log::warn!("rdma stream close: cannot end the stream ({err}); disconnecting");
                self.close();
            }
        }
    }

    fn close_complete(&mut self) -> bool {
        // Closed while held, the drop closes, and leaves to the closer what it cannot finish.
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

impl DataPath for RingPath {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// The disconnect moves the queue pair to the error state, and the ring's
    /// registration goes at once, so the peer's rkey is dead even for writes
    /// already on the wire. The stream is unusable after.
    fn revoke(&mut self, why: &Error) {
        log::warn!(
            "rdma stream from {}: {why}; connection closed and its rkey revoked",
            self.endpoint.peer()
        );
        self.endpoint.disconnect();
        self.incoming.deregister();
    }

    fn complete(&mut self, wc: &Completion) -> Result<()> {
        let kind = wc.wr_id & 0xff;
        if kind != WR_RECV {
            self.sq_outstanding -= (wc.wr_id >> 8) as u32;
        }
        let op = match kind {
            WR_RECV => "ring notification",
            WR_CREDIT => "credit write",
            _ => "ring write",
        };
        if wc.flushed() {
            return self.endpoint.flushed(op, wc);
        }
        if !wc.succeeded() {
            return Err(wc.error(op));
        }
        if kind == WR_RECV {
            post_receives(&self.endpoint, 1)?;
            self.reposted += 1;
            match wc.imm {
                IMM_REQUEST => self.peer_wants_credit = true,
                IMM_WAKE => self.credit_requested = false,
                IMM_CLOSED => self.peer_close = PeerClose::Clean,
                IMM_RESET => self.peer_close = PeerClose::Reset,
                imm if imm & IMM_CONTROL == 0 => self.reader.publish_low31(imm)?,
                imm => return Err(Violation::Notification { imm }.into()),
            }
        }
        Ok(())
    }

    fn progress(&mut self) -> Result<()> {
        self.drain_completions()?;
        self.take_credit()?;
        if self.closing {
            // Nothing goes out after the close's signaled write, which retires
            // everything before it (see `close`): an unsignaled credit write
            // behind it would keep `writes_landed` false, and the disconnect
            // would wait for `ORPHAN_LIMIT`. Nobody reads any more, and the
            // disconnect ends the stream as the end record would.
            return Ok(());
        }
        // A wake-up answered our request but brought too little credit: ask
        // again, or the peer's later credit would reach a writer that sleeps.
        if self.write_blocked && !self.credit_requested && !self.writable() {
            self.request_credit()?;
        }
        self.flush_end()?;
        self.send_credit_if_due()
    }
}

impl Settle for RingPath {
    fn settle(&mut self) -> bool {
        self.settle_when(Self::writes_landed)
    }
}

impl Close for RingPath {
    fn start_close(&mut self) {
        ByteStream::close(self);
    }
}

impl Drop for RingPath {
    fn drop(&mut self) {
        self.close();
        self.endpoint.shutdown();
    }
}

/// Registers our incoming ring and credit slot for the peer to write, under a
/// fresh rkey, and describes it in a grant with a random check seed.
fn grant_memory(endpoint: &Endpoint, options: StreamOptions) -> Result<(MemoryRegion, RingGrant)> {
    let mut seed = [0u8; 4];
    sys::random::fill(&mut seed)?;
    let config = RingConfig::new(options.ring_capacity, options.max_record, u32::from_ne_bytes(seed))
        .map_err(Error::InvalidArgument)?;
    let region = MemoryRegion::new(endpoint.pd(), config.capacity() + SLOT_LEN, Access::RemoteWrite)?;
    let grant = RingGrant {
        addr: region.addr(),
        rkey: region.rkey(),
        capacity: config.capacity() as u32,
        max_payload: config.max_payload() as u32,
        seed: config.seed(),
        recv_depth: RECV_DEPTH,
    };
    Ok((region, grant))
}

/// Posts `count` zero-length receives for immediate-data notifications.
fn post_receives(endpoint: &Endpoint, count: u32) -> Result<()> {
    for _ in 0..count {
        endpoint.qp().post_recv(WR_RECV, None)?;
    }
    Ok(())
}
