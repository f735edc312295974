//! One-sided ring buffers, the half that knows nothing of the medium.
//!
//! A ring lives in the receiver's memory and only its peer writes into it: with
//! RDMA WRITE (the rdma medium) or with plain stores into a shared mapping (the
//! shm medium). The writer frames each message into a record; the reader checks
//! every record before any of its bytes leave the ring, and tells the writer how
//! far it has read (credit), so the writer never overwrites unread bytes and the
//! receiver never needs a receive buffer that is not there.
//!
//! Positions are `u64` byte counts that only grow; a position's place in the
//! ring is `position % capacity`. A medium carries three things:
//! - each [`Frame`] the writer returns: its header and payload to `frame.offset`
//!   (and a padding header first, when the frame has one);
//! - the writer's tail to the reader ([`RingReader::publish`]), after the bytes;
//! - the reader's head back to the writer as credit ([`RingWriter::credit`]).
//!
//! Media that carry only 31 bits of a position (RDMA immediate data) recover the
//! whole position with [`extend_position`].
//!
//! Record layout (little-endian, 8-byte aligned, never wrapping):
//!
//! | offset | field   | meaning                                                        |
//! |--------|---------|----------------------------------------------------------------|
//! | 0      | `len`   | payload bytes                                                  |
//! | 4      | `seq`   | record number; the reader demands each one in turn             |
//! | 8      | `kind`  | 1: data; 2: padding up to the ring's end; 3: end of the stream; 4: one urgent byte |
//! | 12     | `ack`   | carried for the connection (credit of the reverse direction)   |
//! | 16     | `check` | CRC32C of the ring's seed, the fields above and the payload (zero on a ring without CRC: shm) |
//! | 20     | zero    |                                                                |
//! | 24     | payload, zero-padded to a multiple of 8                                  |
//!
//! An urgent record carries one byte of TCP's urgent (out-of-band) data: the
//! reader delivers it in line with the stream or drops it, as the receiving
//! socket's `SO_OOBINLINE` says.
//!
//! A record that does not fit before the end of the ring starts at offset 0
//! instead. The writer marks the skipped bytes with a padding record when they
//! can hold a header; fewer bytes than a header the reader skips by itself.
//!
//! Against a writer that breaks the rules (a Byzantine peer): the reader copies
//! a record out of the ring before it checks it, so the writer cannot change
//! bytes between the check and their delivery; it reads each header field once;
//! it bounds the length by the record limit, by the end of the ring and by the
//! published tail; it demands the next sequence number and (where the ring has one) a matching CRC; and
//! it accepts a tail or a credit only if it moves forward within the ring's
//! capacity. A violation is an error that ends the connection. What the writer
//! can still do is send bytes of its own stream, which it may anyway.

use std::fmt;

/// Bytes of a record header.
pub const HEADER_LEN: usize = 24;
/// Records start at multiples of this.
pub const ALIGN: usize = 8;
/// The largest ring: positions must stay recoverable from 31 bits.
pub const MAX_CAPACITY: usize = 1 << 30;

const KIND_DATA: u32 = 1;
const KIND_PADDING: u32 = 2;
/// The writer's last record (a half close): empty; nothing may follow it.
const KIND_END: u32 = 3;
/// One byte of urgent data: in line, or dropped (see the module's doc).
const KIND_URGENT: u32 = 4;
/// Room that data records leave free, so that the end record always fits
/// without waiting for credit (a half close never blocks, as TCP's FIN does
/// not): its header, after at most `HEADER_LEN - ALIGN` bytes skipped at the
/// end of the ring.
const END_RESERVE: usize = 2 * HEADER_LEN - ALIGN;

/// A broken rule of the ring protocol, found in what the peer wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The published tail moved backwards.
    #[error("tail {tail} is behind the previous tail {previous}")]
    TailBackwards {
        /// The new tail.
        tail: u64,
        /// The tail before it.
        previous: u64,
    },
    /// The published tail is more than one ring ahead of the reader.
    #[error("tail {tail} is more than the ring's {capacity} bytes ahead of head {head}")]
    TailBeyondCapacity {
        /// The new tail.
        tail: u64,
        /// The reader's head.
        head: u64,
        /// The ring's capacity.
        capacity: usize,
    },
    /// The published tail ends inside a record or header.
    #[error("tail {tail} ends inside the record at {position}")]
    TailInsideRecord {
        /// The published tail.
        tail: u64,
        /// Where the record starts.
        position: u64,
    },
    /// A record is longer than the limit or than the rest of the ring.
    #[error("record at {position}: length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// Where the record starts.
        position: u64,
        /// Its claimed payload length.
        len: u32,
        /// The largest payload allowed there.
        max: usize,
    },
    /// A record's sequence number is not the next one (replayed or skipped).
    #[error("record at {position}: sequence number {seq}, expected {expected}")]
    Sequence {
        /// Where the record starts.
        position: u64,
        /// Its sequence number.
        seq: u32,
        /// The one expected.
        expected: u32,
    },
    /// A record of no known kind.
    #[error("record at {position}: unknown kind {kind}")]
    Kind {
        /// Where the record starts.
        position: u64,
        /// The kind found.
        kind: u32,
    },
    /// A padding record that does not fill the ring exactly up to its end.
    #[error("padding at {position} covers {len} bytes, not the {expected} bytes up to the end of the ring")]
    Padding {
        /// Where the padding starts.
        position: u64,
        /// The payload length it claims.
        len: u32,
        /// The payload length up to the end of the ring.
        expected: usize,
    },
    /// An end-of-stream record with a payload, or a record after one.
    #[error("record at {position}: {what}")]
    End {
        /// Where the record starts.
        position: u64,
        /// What was wrong.
        what: &'static str,
    },
    /// A record's check does not match its contents.
    #[error("record at {position}: check {found:#010x}, but the contents give {computed:#010x}")]
    Check {
        /// Where the record starts.
        position: u64,
        /// The check in the header.
        found: u32,
        /// The check of what was read.
        computed: u32,
    },
    /// A count of reposted receives that moves backwards or beyond the
    /// notifications sent (RDMA medium).
    #[error("receive credit {reposted} is outside [{previous}, {sent}]")]
    ReceiveCredit {
        /// The reposted count claimed.
        reposted: u64,
        /// The previous count.
        previous: u64,
        /// The notifications sent so far.
        sent: u64,
    },
    /// An immediate value that is neither a tail nor a known control code (RDMA medium).
    #[error("unknown notification {imm:#x}")]
    Notification {
        /// The immediate data received.
        imm: u32,
    },
    /// Consumption counts that move backwards or beyond the messages sent
    /// (two-sided medium).
    #[error("consumed {data} data and {control} control messages of {data_sent} and {control_sent} sent")]
    Consumed {
        /// The data messages the peer claims consumed.
        data: u32,
        /// The control messages the peer claims consumed.
        control: u32,
        /// Data messages sent so far.
        data_sent: u32,
        /// Control messages sent so far.
        control_sent: u32,
    },
    /// A message that breaks the two-sided protocol.
    #[error("two-sided message: {what}")]
    Message {
        /// What was wrong with it.
        what: &'static str,
    },
    /// A credit that moves backwards or beyond what was written.
    #[error("credit {head} is outside [{previous}, {tail}]")]
    Credit {
        /// The credited head.
        head: u64,
        /// The previous credit.
        previous: u64,
        /// The writer's tail.
        tail: u64,
    },
}

/// The shape of a ring, agreed by both ends when the connection is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    capacity: usize,
    max_payload: usize,
    seed: u32,
    /// Whether records carry a CRC32C (see [`RingConfig::without_crc`]).
    crc: bool,
}

impl RingConfig {
    /// A ring of `capacity` bytes (a power of two from 128 to [`MAX_CAPACITY`])
    /// carrying records of up to `max_payload` bytes; `seed` makes its checks
    /// specific to one connection.
    ///
    /// # Errors
    /// A description of the rule the arguments break. A record of
    /// `max_payload` bytes and the room kept for the end record must fit in
    /// half the ring, so that a record always fits after padding once the ring
    /// is empty.
    pub fn new(capacity: usize, max_payload: usize, seed: u32) -> Result<Self, String> {
        if !capacity.is_power_of_two() || !(128..=MAX_CAPACITY).contains(&capacity) {
            return Err(format!("ring capacity {capacity} is not a power of two from 128 to {MAX_CAPACITY}"));
        }
        if record_len(max_payload) + END_RESERVE > capacity / 2 {
            return Err(format!(
                "records of {max_payload} bytes do not fit in half of a {capacity}-byte ring"
            ));
        }
        Ok(RingConfig { capacity, max_payload, seed, crc: true })
    }

    /// The same ring with records that carry no CRC (their `check` is zero and
    /// not read), for a medium whose writes cannot arrive torn: shm's stores
    /// are in place before the tail's release store makes them visible. The
    /// CRC is no MAC, so it stops no lying peer either; every other rule of the
    /// reader still holds. Computing it took two passes over every byte.
    pub fn without_crc(self) -> Self {
        RingConfig { crc: false, ..self }
    }

    /// The `check` a record with `header`'s fields and `payload` carries.
    fn check_of(&self, header: &Header, payload: &[u8]) -> u32 {
        if self.crc {
            header.compute_check(self.seed, payload)
        } else {
            0
        }
    }

    /// Whether the record at `position` carries the check it must.
    fn verify(&self, header: &Header, payload: &[u8], position: u64) -> Result<(), Violation> {
        if !self.crc {
            return Ok(());
        }
        let computed = header.compute_check(self.seed, payload);
        if computed != header.check {
            return Err(Violation::Check { position, found: header.check, computed });
        }
        Ok(())
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest payload of one record.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The seed of the records' checks.
    pub fn seed(&self) -> u32 {
        self.seed
    }

    fn index(&self, position: u64) -> usize {
        (position % self.capacity as u64) as usize
    }
}

/// Bytes a record with `payload` bytes takes in the ring.
pub fn record_len(payload: usize) -> usize {
    (HEADER_LEN + payload).next_multiple_of(ALIGN)
}

/// Recovers a position from its low 31 bits, given a position `known` that it
/// is at most 2^30 ahead of (the ring capacity bounds every step).
pub fn extend_position(known: u64, low31: u32) -> u64 {
    let step = low31.wrapping_sub(known as u32) & 0x7fff_ffff;
    known + u64::from(step)
}

/// The parsed fields of a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    len: u32,
    seq: u32,
    kind: u32,
    ack: u32,
    check: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        for (i, field) in [self.len, self.seq, self.kind, self.ack, self.check].iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&field.to_le_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let field = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        Header { len: field(0), seq: field(1), kind: field(2), ack: field(3), check: field(4) }
    }

    /// The check of these fields (but `check`) and `payload`, under `seed`.
    fn compute_check(&self, seed: u32, payload: &[u8]) -> u32 {
        let mut fields = [0u8; 20];
        for (i, field) in [seed, self.len, self.seq, self.kind, self.ack].iter().enumerate() {
            fields[i * 4..i * 4 + 4].copy_from_slice(&field.to_le_bytes());
        }
        crc32c::crc32c_append(crc32c::crc32c(&fields), payload)
    }
}

/// Where and what the writer puts in the ring for one record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// A padding header to write first, and where: it marks the bytes from
    /// there to the end of the ring as skipped.
    pub padding: Option<(usize, [u8; HEADER_LEN])>,
    /// Where the record starts in the ring.
    pub offset: usize,
    /// The record's header; the payload follows it directly.
    pub header: [u8; HEADER_LEN],
    /// The writer's tail after this record: publish it once the bytes are in place.
    pub tail: u64,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("padding_at", &self.padding.map(|(at, _)| at))
            .field("offset", &self.offset)
            .field("header", &Header::decode(&self.header))
            .field("tail", &self.tail)
            .finish()
    }
}

/// The writer's side of a ring in the peer's memory.
#[derive(Debug)]
pub struct RingWriter {
    config: RingConfig,
    /// The next position to write.
    tail: u64,
    /// How far the reader has read, as last credited.
    head: u64,
    seq: u32,
}

impl RingWriter {
    /// A writer for an empty ring.
    pub fn new(config: RingConfig) -> Self {
        RingWriter { config, tail: 0, head: 0, seq: 0 }
    }

    /// The position after the last record framed.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// The ring's shape.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// How far the reader has read, as last credited.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Where a record of `len` payload bytes would start, and where it would end.
    fn place(&self, len: usize) -> (u64, u64) {
        let to_end = (self.config.capacity - self.config.index(self.tail)) as u64;
        let record = record_len(len) as u64;
        let start = if record <= to_end { self.tail } else { self.tail + to_end };
        (start, start + record)
    }

    /// Whether a data record of `len` payload bytes fits now, without more
    /// credit, leaving room for the end record.
    pub fn fits(&self, len: usize) -> bool {
        len <= self.config.max_payload
            && self.place(len).1 - self.head + END_RESERVE as u64 <= self.config.capacity as u64
    }

    /// Whether the end record fits now (it may use the room data leaves for it).
    fn end_fits(&self) -> bool {
        self.place(0).1 - self.head <= self.config.capacity as u64
    }

    /// The largest payload, up to `want` (and the record limit), that fits
    /// now: a writer that has room for one byte never writes nothing.
    pub fn fitting(&self, want: usize) -> usize {
        let want = want.min(self.config.max_payload);
        if self.fits(want) {
            return want;
        }
        let free = (self.config.capacity - (self.tail - self.head) as usize).saturating_sub(END_RESERVE);
        let to_end = self.config.capacity - self.config.index(self.tail);
        // In place before the end of the ring, or wrapped to its start.
        let payload = |room: usize| (room / ALIGN * ALIGN).saturating_sub(HEADER_LEN);
        let mut len = payload(free.min(to_end)).max(payload(free.saturating_sub(to_end))).min(want);
        while len > 0 && !self.fits(len) {
            len -= 1;
        }
        len
    }

    /// Frames `payload` as the next record, or returns `None` when the ring has
    /// no room for it until more credit comes.
    ///
    /// # Panics
    /// When `payload` exceeds the ring's `max_payload`: callers split first.
    pub fn frame(&mut self, payload: &[u8], ack: u32) -> Option<Frame> {
        self.frame_kind(payload, ack, KIND_DATA)
    }

    /// Frames the end-of-stream record (the stream's half close), or returns
    /// `None` when there is no room for it yet. The caller writes nothing after it.
    pub fn frame_end(&mut self, ack: u32) -> Option<Frame> {
        self.frame_kind(&[], ack, KIND_END)
    }

    fn frame_kind(&mut self, payload: &[u8], ack: u32, kind: u32) -> Option<Frame> {
        assert!(payload.len() <= self.config.max_payload, "payload exceeds the ring's record limit");
        let fits = if kind == KIND_END { self.end_fits() } else { self.fits(payload.len()) };
        if !fits {
            return None;
        }
        let (start, end) = self.place(payload.len());
        let skipped = (start - self.tail) as usize;
        let padding = (skipped >= HEADER_LEN).then(|| {
            let mut pad = Header {
                len: (skipped - HEADER_LEN) as u32,
                seq: self.seq,
                kind: KIND_PADDING,
                ack,
                check: 0,
            };
            pad.check = self.config.check_of(&pad, &[]);
            self.seq = self.seq.wrapping_add(1);
            (self.config.index(self.tail), pad.encode())
        });
        let mut header = Header { len: payload.len() as u32, seq: self.seq, kind, ack, check: 0 };
        header.check = self.config.check_of(&header, payload);
        self.seq = self.seq.wrapping_add(1);
        self.tail = end;
        Some(Frame { padding, offset: self.config.index(start), header: header.encode(), tail: end })
    }

    /// Frames as much of the stream bytes `data` as there is room for, in
    /// records of at most `max_payload` bytes, and hands each piece to
    /// `copy_in(offset, bytes)` for the medium to place in the ring (padding
    /// header, record header, payload). Returns how many bytes of `data` went in.
    pub fn write(&mut self, data: &[u8], ack: u32, mut copy_in: impl FnMut(usize, &[u8])) -> usize {
        let mut written = 0;
        while written < data.len() {
            let len = self.fitting(data.len() - written);
            if len == 0 {
                break;
            }
            let chunk = &data[written..written + len];
            let Some(frame) = self.frame(chunk, ack) else { break };
            if let Some((at, padding)) = frame.padding {
                copy_in(at, &padding);
            }
            copy_in(frame.offset, &frame.header);
            copy_in(frame.offset + HEADER_LEN, chunk);
            written += chunk.len();
        }
        written
    }

    /// Frames one byte of urgent data and hands it to `copy_in` as `write`
    /// does; false when there is no room for it now.
    pub fn write_urgent(&mut self, byte: u8, ack: u32, mut copy_in: impl FnMut(usize, &[u8])) -> bool {
        let Some(frame) = self.frame_kind(&[byte], ack, KIND_URGENT) else {
            return false;
        };
        if let Some((at, padding)) = frame.padding {
            copy_in(at, &padding);
        }
        copy_in(frame.offset, &frame.header);
        copy_in(frame.offset + HEADER_LEN, &[byte]);
        true
    }

    /// Takes the reader's head as credit. A head behind the credit already
    /// taken is old news (credit travels by more than one path) and is ignored.
    ///
    /// # Errors
    /// `Violation::Credit` when the head is past the tail: the reader cannot
    /// have read what was never written.
    pub fn credit(&mut self, head: u64) -> Result<(), Violation> {
        if head > self.tail {
            return Err(Violation::Credit { head, previous: self.head, tail: self.tail });
        }
        self.head = self.head.max(head);
        Ok(())
    }

    /// Takes a credit known by its low 31 bits, such as a record's `ack`: it
    /// lies ahead of the credit taken (up to the tail) or, when it is old news,
    /// up to a ring's capacity behind it.
    pub fn credit_low31(&mut self, low31: u32) -> Result<(), Violation> {
        let ahead = low31.wrapping_sub(self.head as u32) & 0x7fff_ffff;
        if u64::from(ahead) <= self.tail - self.head {
            return self.credit(self.head + u64::from(ahead));
        }
        let behind = (self.head as u32).wrapping_sub(low31) & 0x7fff_ffff;
        if behind as usize <= MAX_CAPACITY {
            return Ok(());
        }
        Err(Violation::Credit {
            head: extend_position(self.head, low31),
            previous: self.head,
            tail: self.tail,
        })
    }
}

/// The ring's bytes as the reader sees them: local memory that the peer writes.
pub trait RingMemory {
    /// Copies `dst.len()` bytes from `offset` (which the ring layout keeps in bounds).
    fn copy_out(&self, offset: usize, dst: &mut [u8]);
}

impl RingMemory for [u8] {
    fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self[offset..offset + dst.len()]);
    }
}

/// The reader's side of a ring in local memory.
#[derive(Debug)]
pub struct RingReader {
    config: RingConfig,
    /// The next position to read from the ring.
    head: u64,
    /// How far the writer has published.
    tail: u64,
    /// The head as last handed out for credit.
    credited: u64,
    seq: u32,
    /// A record copied out of the ring and checked, not yet fully delivered.
    staged: Vec<u8>,
    staged_read: usize,
    /// The `ack` field of the last record read, until taken.
    ack: Option<u32>,
    /// The end-of-stream record was read.
    ended: bool,
    /// Urgent bytes are delivered in line; else dropped.
    urgent_inline: bool,
}

impl RingReader {
    /// A reader of an empty ring.
    pub fn new(config: RingConfig) -> Self {
        RingReader {
            config,
            head: 0,
            tail: 0,
            credited: 0,
            seq: 0,
            staged: Vec::with_capacity(config.max_payload),
            staged_read: 0,
            ack: None,
            ended: false,
            urgent_inline: false,
        }
    }

    /// Delivers urgent bytes in line with the stream from now on, or drops them
    /// (the default, as a TCP socket's without `SO_OOBINLINE`).
    pub fn set_urgent_inline(&mut self, inline: bool) {
        self.urgent_inline = inline;
    }

    /// The position after the last record taken out of the ring.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// How far the writer has published.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Takes the writer's new tail: the bytes before it are in place.
    ///
    /// # Errors
    /// When the tail moves backwards or more than a ring ahead of the head.
    pub fn publish(&mut self, tail: u64) -> Result<(), Violation> {
        if tail < self.tail {
            return Err(Violation::TailBackwards { tail, previous: self.tail });
        }
        if tail - self.head > self.config.capacity as u64 {
            return Err(Violation::TailBeyondCapacity {
                tail,
                head: self.head,
                capacity: self.config.capacity,
            });
        }
        self.tail = tail;
        Ok(())
    }

    /// Takes a tail from its low 31 bits (see [`extend_position`]).
    pub fn publish_low31(&mut self, low31: u32) -> Result<(), Violation> {
        self.publish(extend_position(self.tail, low31))
    }

    /// Whether published records or a staged one remain to be read. (They may
    /// turn out to be only padding, so a read can still return 0.)
    pub fn has_data(&self) -> bool {
        self.staged_read < self.staged.len() || self.head < self.tail
    }

    /// Whether the writer ended the stream and every byte before the end was read.
    pub fn ended(&self) -> bool {
        self.ended && self.staged_read == self.staged.len()
    }

    /// The `ack` of the last record read since the previous call.
    pub fn take_ack(&mut self) -> Option<u32> {
        self.ack.take()
    }

    /// Reads stream bytes into `out`, across records, as far as published;
    /// returns how many (0 when nothing is there).
    ///
    /// # Errors
    /// The first [`Violation`] found; the reader must not be used after one.
    pub fn read(&mut self, ring: &(impl RingMemory + ?Sized), out: &mut [u8]) -> Result<usize, Violation> {
        let mut done = self.read_staged(out);
        while done < out.len() {
            let Some((header, position)) = self.next_record(ring)? else {
                break;
            };
            let len = header.len as usize;
            let room = out.len() - done;
            if len <= room {
                self.take_record(ring, header, position, &mut out[done..done + len])?;
                done += len;
            } else {
                self.stage_record(ring, header, position)?;
                done += self.read_staged(&mut out[done..]);
            }
        }
        Ok(done)
    }

    /// How many stream bytes a read returns now, at least: the rest of the
    /// record being delivered, else the whole next published record, which
    /// is taken out of the ring and checked for it (the next reads deliver
    /// it). 0 when no data record is published.
    ///
    /// # Errors
    /// The first [`Violation`] found; the reader must not be used after one.
    pub fn available(&mut self, ring: &(impl RingMemory + ?Sized)) -> Result<usize, Violation> {
        if self.staged.is_empty() {
            if let Some((header, position)) = self.next_record(ring)? {
                self.stage_record(ring, header, position)?;
            }
        }
        Ok(self.staged.len() - self.staged_read)
    }

    /// Takes the record at `position` out of the ring into the staging buffer.
    fn stage_record(
        &mut self,
        ring: &(impl RingMemory + ?Sized),
        header: Header,
        position: u64,
    ) -> Result<(), Violation> {
        let mut staged = std::mem::take(&mut self.staged);
        staged.resize(header.len as usize, 0);
        let taken = self.take_record(ring, header, position, &mut staged);
        self.staged = staged;
        self.staged_read = 0;
        if taken.is_err() {
            self.staged.clear();
        }
        taken
    }

    /// Copies the payload of the record at `position` into `out` (its length),
    /// checks it and moves past the record. The payload is copied out of the
    /// ring before it is checked: the writer cannot change what was checked.
    fn take_record(
        &mut self,
        ring: &(impl RingMemory + ?Sized),
        header: Header,
        position: u64,
        out: &mut [u8],
    ) -> Result<(), Violation> {
        ring.copy_out(self.config.index(position) + HEADER_LEN, out);
        self.config.verify(&header, out, position)?;
        self.seq = self.seq.wrapping_add(1);
        self.head = position + record_len(out.len()) as u64;
        self.ack = Some(header.ack);
        Ok(())
    }

    fn read_staged(&mut self, out: &mut [u8]) -> usize {
        let n = (self.staged.len() - self.staged_read).min(out.len());
        out[..n].copy_from_slice(&self.staged[self.staged_read..self.staged_read + n]);
        self.staged_read += n;
        if self.staged_read == self.staged.len() {
            self.staged.clear();
            self.staged_read = 0;
        }
        n
    }

    /// Finds the next data record at the head (or urgent record, read in
    /// line), skipping padding and dropped urgent records, and checks its header; returns it with its position, or `None` when none is published.
    fn next_record(&mut self, ring: &(impl RingMemory + ?Sized)) -> Result<Option<(Header, u64)>, Violation> {
        loop {
            if self.head == self.tail {
                return Ok(None);
            }
            let position = self.head;
            if self.ended {
                return Err(Violation::End { position, what: "written after the end of the stream" });
            }
            let to_end = self.config.capacity - self.config.index(position);
            let published = (self.tail - position) as usize;
            if to_end < HEADER_LEN {
                // Too little room for a header: the writer skipped it unmarked.
                if published < to_end {
                    return Err(Violation::TailInsideRecord { tail: self.tail, position });
                }
                self.head += to_end as u64;
                continue;
            }
            if published < HEADER_LEN {
                return Err(Violation::TailInsideRecord { tail: self.tail, position });
            }
            let mut bytes = [0u8; HEADER_LEN];
            ring.copy_out(self.config.index(position), &mut bytes);
            let header = Header::decode(&bytes);
            if header.seq != self.seq {
                return Err(Violation::Sequence { position, seq: header.seq, expected: self.seq });
            }
            match header.kind {
                KIND_PADDING => {
                    if header.len as usize != to_end - HEADER_LEN {
                        return Err(Violation::Padding {
                            position,
                            len: header.len,
                            expected: to_end - HEADER_LEN,
                        });
                    }
                    self.config.verify(&header, &[], position)?;
                    if published < to_end {
                        return Err(Violation::TailInsideRecord { tail: self.tail, position });
                    }
                    self.seq = self.seq.wrapping_add(1);
                    self.head += to_end as u64;
                    self.ack = Some(header.ack);
                }
                KIND_URGENT if header.len != 1 => {
                    return Err(Violation::TooLong { position, len: header.len, max: 1 });
                }
                KIND_URGENT if !self.urgent_inline => {
                    if record_len(1) > published {
                        return Err(Violation::TailInsideRecord { tail: self.tail, position });
                    }
                    let mut byte = [0u8; 1];
                    ring.copy_out(self.config.index(position) + HEADER_LEN, &mut byte);
                    self.config.verify(&header, &byte, position)?;
                    self.seq = self.seq.wrapping_add(1);
                    self.head = position + record_len(1) as u64;
                    self.ack = Some(header.ack);
                }
                KIND_DATA | KIND_URGENT => {
                    let max = self.config.max_payload.min(to_end - HEADER_LEN);
                    if header.len as usize > max {
                        return Err(Violation::TooLong { position, len: header.len, max });
                    }
                    if record_len(header.len as usize) > published {
                        return Err(Violation::TailInsideRecord { tail: self.tail, position });
                    }
                    return Ok(Some((header, position)));
                }
                KIND_END => {
                    if header.len != 0 {
                        return Err(Violation::End { position, what: "end of stream with a payload" });
                    }
                    self.config.verify(&header, &[], position)?;
                    self.seq = self.seq.wrapping_add(1);
                    self.head = position + HEADER_LEN as u64;
                    self.ack = Some(header.ack);
                    self.ended = true;
                }
                kind => return Err(Violation::Kind { position, kind }),
            }
        }
    }

    /// The head to send to the writer as credit, when it is worth a message:
    /// a quarter of the ring read since the last credit, or everything
    /// published read (the writer may be waiting for exactly that room).
    pub fn credit_due(&mut self) -> Option<u64> {
        let read = self.head - self.credited;
        let due = read > 0 && (read >= self.config.capacity as u64 / 4 || self.head == self.tail);
        due.then(|| {
            self.credited = self.head;
            self.head
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED: u32 = 0x5eed;

    /// A writer and a reader joined by a plain byte array: the "medium".
    struct Pair {
        ring: Vec<u8>,
        writer: RingWriter,
        reader: RingReader,
    }

    impl Pair {
        fn new(capacity: usize, max_payload: usize) -> Pair {
            let config = RingConfig::new(capacity, max_payload, SEED).unwrap();
            Pair { ring: vec![0; capacity], writer: RingWriter::new(config), reader: RingReader::new(config) }
        }

        /// Frames and places one record without publishing it; false when it does not fit.
        fn write(&mut self, payload: &[u8], ack: u32) -> bool {
            let Some(frame) = self.writer.frame(payload, ack) else {
                return false;
            };
            self.place(&frame, payload);
            true
        }

        fn place(&mut self, frame: &Frame, payload: &[u8]) {
            if let Some((at, pad)) = frame.padding {
                self.ring[at..at + HEADER_LEN].copy_from_slice(&pad);
            }
            let at = frame.offset;
            self.ring[at..at + HEADER_LEN].copy_from_slice(&frame.header);
            self.ring[at + HEADER_LEN..at + HEADER_LEN + payload.len()].copy_from_slice(payload);
        }

        fn send(&mut self, payload: &[u8]) {
            assert!(self.write(payload, 0), "no room for {} bytes", payload.len());
            self.reader.publish(self.writer.tail()).unwrap();
        }

        fn read_all(&mut self) -> Result<Vec<u8>, Violation> {
            let mut out = vec![0; self.ring.len()];
            let n = self.reader.read(&self.ring[..], &mut out)?;
            out.truncate(n);
            Ok(out)
        }

        fn return_credit(&mut self) {
            if let Some(head) = self.reader.credit_due() {
                self.writer.credit(head).unwrap();
            }
        }
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        assert!(RingConfig::new(1000, 16, SEED).unwrap_err().contains("power of two"));
        assert!(RingConfig::new(32, 0, SEED).is_err());
        assert!(RingConfig::new(MAX_CAPACITY * 2, 16, SEED).is_err());
        assert!(RingConfig::new(64, 0, SEED).is_err());
        assert!(RingConfig::new(256, 72, SEED).unwrap_err().contains("half"));
        assert!(RingConfig::new(256, 64, SEED).is_ok()); // 24 + 64 + 40 (end reserve) = 128: exactly half
    }

    #[test]
    fn records_are_aligned_and_the_header_is_counted() {
        assert_eq!(record_len(0), 24);
        assert_eq!(record_len(1), 32);
        assert_eq!(record_len(8), 32);
        assert_eq!(record_len(9), 40);
    }

    #[test]
    fn positions_are_recovered_from_31_bits() {
        assert_eq!(extend_position(0, 5), 5);
        assert_eq!(extend_position(0x7fff_fff0, 0x10), 0x8000_0010);
        assert_eq!(extend_position(0x1_2345_6789, 0x2345_6789 + 100), 0x1_2345_6789 + 100);
        assert_eq!(extend_position(41, 41), 41);
    }

    #[test]
    fn a_message_round_trips_with_its_ack() {
        let mut pair = Pair::new(256, 64);
        assert!(pair.write(b"hello", 77));
        assert!(!pair.reader.has_data(), "nothing is readable before the tail is published");
        pair.reader.publish(pair.writer.tail()).unwrap();
        assert!(pair.reader.has_data());
        assert_eq!(pair.read_all().unwrap(), b"hello");
        assert_eq!(pair.reader.take_ack(), Some(77));
        assert_eq!(pair.reader.take_ack(), None);
        assert_eq!(pair.reader.head(), 32);
    }

    #[test]
    fn partial_reads_deliver_a_record_piece_by_piece() {
        let mut pair = Pair::new(256, 64);
        pair.send(b"abcdefghij");
        pair.send(b"KLM");
        let mut out = [0u8; 4];
        let mut got = Vec::new();
        loop {
            let n = pair.reader.read(&pair.ring[..], &mut out).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got, b"abcdefghijKLM");
        assert!(!pair.reader.has_data());
    }

    #[test]
    fn available_counts_the_record_at_hand_and_reads_deliver_it_after() {
        let mut pair = Pair::new(256, 64);
        assert_eq!(pair.reader.available(&pair.ring[..]).unwrap(), 0);
        pair.send(b"abcdefghij");
        pair.send(b"KLM");
        assert_eq!(pair.reader.available(&pair.ring[..]).unwrap(), 10);
        assert_eq!(pair.reader.available(&pair.ring[..]).unwrap(), 10, "a second look takes nothing more");
        let mut out = [0u8; 4];
        assert_eq!(pair.reader.read(&pair.ring[..], &mut out).unwrap(), 4);
        assert_eq!(pair.reader.available(&pair.ring[..]).unwrap(), 6);
        assert_eq!(pair.read_all().unwrap(), b"efghijKLM");
        assert_eq!(pair.reader.available(&pair.ring[..]).unwrap(), 0);
    }

    #[test]
    fn available_checks_the_record_it_counts() {
        let mut pair = Pair::new(256, 64);
        forge(&mut pair, 0, Header { check: 1, ..valid(4, 0, b"abcd") }, b"abcd");
        pair.reader.publish(32).unwrap();
        let err = pair.reader.available(&pair.ring[..]).expect_err("a forged record counted");
        assert!(matches!(err, Violation::Check { found: 1, .. }), "{err}");
    }

    #[test]
    fn a_full_ring_blocks_the_writer_until_credit_returns() {
        let mut pair = Pair::new(256, 40); // records of 64 bytes: three fill the ring but its end reserve
        pair.send(&[1; 40]);
        pair.send(&[2; 40]);
        pair.send(&[3; 40]);
        assert!(!pair.writer.fits(40));
        assert!(pair.writer.frame(&[4; 40], 0).is_none(), "a fourth record would overwrite unread bytes");
        assert_eq!(pair.read_all().unwrap().len(), 120);
        pair.return_credit();
        pair.send(&[4; 40]);
        assert_eq!(pair.read_all().unwrap(), vec![4; 40]);
    }

    #[test]
    fn wrapping_pads_to_the_end_of_the_ring() {
        let mut pair = Pair::new(256, 40);
        pair.send(&[1; 8]); // 32 bytes at 0
        pair.send(&[2; 40]); // 64 bytes at 32
        pair.send(&[2; 40]); // 64 bytes at 96
        assert_eq!(pair.read_all().unwrap().len(), 88);
        pair.return_credit();
        pair.send(&[2; 40]); // 64 bytes at 160; tail 224
        assert_eq!(pair.read_all().unwrap().len(), 40);
        pair.return_credit();
        // 32 bytes left before the end, a 64-byte record does not fit: padding, then offset 0.
        let frame = pair.writer.frame(&[3; 40], 0).unwrap();
        assert_eq!(frame.padding.map(|(at, _)| at), Some(224));
        assert_eq!(frame.offset, 0);
        assert_eq!(frame.tail, 256 + 64);
        pair.place(&frame, &[3; 40]);
        pair.reader.publish(frame.tail).unwrap();
        assert_eq!(pair.read_all().unwrap(), vec![3; 40]);
    }

    #[test]
    fn fewer_bytes_than_a_header_are_skipped_without_padding() {
        let mut pair = Pair::new(256, 40);
        for _ in 0..3 {
            pair.send(&[1; 40]); // 64 bytes each: tail 192
        }
        pair.read_all().unwrap();
        pair.return_credit();
        pair.send(&[2; 24]); // 48: tail 240, 16 bytes to the end
        pair.read_all().unwrap();
        pair.return_credit();
        let frame = pair.writer.frame(&[3; 4], 0).unwrap();
        assert_eq!(frame.padding, None);
        assert_eq!(frame.offset, 0);
        pair.place(&frame, &[3; 4]);
        pair.reader.publish(frame.tail).unwrap();
        assert_eq!(pair.read_all().unwrap(), vec![3; 4]);
    }

    #[test]
    fn credit_is_due_after_a_quarter_or_when_drained() {
        let mut pair = Pair::new(1024, 64);
        pair.send(&[0; 8]);
        pair.send(&[0; 8]);
        let mut out = [0u8; 8];
        pair.reader.read(&pair.ring[..], &mut out).unwrap();
        assert_eq!(pair.reader.credit_due(), None, "32 of 1024 bytes read, more is published");
        pair.reader.read(&pair.ring[..], &mut out).unwrap();
        assert_eq!(pair.reader.credit_due(), Some(64), "everything published was read");
        assert_eq!(pair.reader.credit_due(), None, "credit goes out once");
    }

    #[test]
    fn credit_beyond_what_was_written_is_a_violation_and_old_credit_is_ignored() {
        let mut pair = Pair::new(256, 64);
        pair.send(b"x");
        assert_eq!(pair.writer.credit(64), Err(Violation::Credit { head: 64, previous: 0, tail: 32 }));
        pair.writer.credit(32).unwrap();
        pair.writer.credit(0).unwrap(); // a late message
        assert_eq!(pair.writer.head(), 32, "the newer credit stands");
        pair.writer.credit_low31(0).unwrap();
        pair.writer.credit_low31(32).unwrap();
        assert!(matches!(pair.writer.credit_low31(33), Err(Violation::Credit { .. })));
        assert!(matches!(pair.writer.credit_low31(5000), Err(Violation::Credit { .. })));
    }

    #[test]
    fn tails_that_move_backwards_or_too_far_are_violations() {
        let mut pair = Pair::new(256, 64);
        pair.send(b"x");
        assert_eq!(pair.reader.publish(0), Err(Violation::TailBackwards { tail: 0, previous: 32 }));
        assert!(matches!(pair.reader.publish(257), Err(Violation::TailBeyondCapacity { .. })));
    }

    /// Writes a hand-made header at `offset` of the ring.
    fn forge(pair: &mut Pair, offset: usize, header: Header, payload: &[u8]) {
        let at = offset;
        pair.ring[at..at + HEADER_LEN].copy_from_slice(&header.encode());
        pair.ring[at + HEADER_LEN..at + HEADER_LEN + payload.len()].copy_from_slice(payload);
    }

    fn valid(len: u32, seq: u32, payload: &[u8]) -> Header {
        let mut header = Header { len, seq, kind: KIND_DATA, ack: 0, check: 0 };
        header.check = header.compute_check(SEED, payload);
        header
    }

    /// A forged record: what it is, its header, the tail published, and the violation expected.
    type ForgedCase = (&'static str, Header, u64, fn(&Violation) -> bool);

    #[test]
    fn forged_records_are_caught() {
        let cases: Vec<ForgedCase> = vec![
            ("length beyond the limit", valid(65, 0, &[0; 65]), 96, |v| {
                matches!(v, Violation::TooLong { len: 65, .. })
            }),
            ("length beyond the tail", valid(40, 0, &[0; 40]), 32, |v| {
                matches!(v, Violation::TailInsideRecord { .. })
            }),
            ("skipped sequence number", valid(4, 1, b"abcd"), 32, |v| {
                matches!(v, Violation::Sequence { seq: 1, expected: 0, .. })
            }),
            ("bad check", Header { check: 1, ..valid(4, 0, b"abcd") }, 32, |v| {
                matches!(v, Violation::Check { found: 1, .. })
            }),
            ("unknown kind", Header { kind: 9, ..valid(4, 0, b"abcd") }, 32, |v| {
                matches!(v, Violation::Kind { kind: 9, .. })
            }),
            (
                "urgent data of more than a byte",
                Header { kind: KIND_URGENT, ..valid(2, 0, b"ab") },
                32,
                |v| matches!(v, Violation::TooLong { len: 2, max: 1, .. }),
            ),
            ("tail inside the header", valid(4, 0, b"abcd"), 16, |v| {
                matches!(v, Violation::TailInsideRecord { .. })
            }),
        ];
        for (what, header, tail, expected) in cases {
            let mut pair = Pair::new(256, 64);
            forge(&mut pair, 0, header, b"abcd");
            pair.reader.publish(tail).unwrap();
            let err = pair.read_all().expect_err(what);
            assert!(expected(&err), "{what}: {err}");
        }
    }

    /// shm's rings: the check field is neither written nor read, and the
    /// reader's other rules stand.
    #[test]
    fn a_ring_without_crc_ignores_the_check_and_keeps_every_other_rule() {
        let config = RingConfig::new(256, 64, SEED).unwrap().without_crc();
        let mut pair =
            Pair { ring: vec![0; 256], writer: RingWriter::new(config), reader: RingReader::new(config) };
        pair.send(b"abcd");
        assert_eq!(Header::decode(pair.ring[..HEADER_LEN].try_into().unwrap()).check, 0, "no CRC written");
        assert_eq!(pair.read_all().unwrap(), b"abcd");

        forge(&mut pair, 32, Header { check: 0xbad, ..valid(4, 1, b"efgh") }, b"efgh");
        pair.reader.publish(64).unwrap();
        assert_eq!(pair.read_all().unwrap(), b"efgh", "the check is not read");

        forge(&mut pair, 64, Header { check: 0, ..valid(4, 7, b"ijkl") }, b"ijkl");
        pair.reader.publish(96).unwrap();
        let err = pair.read_all().expect_err("a skipped sequence number");
        assert!(matches!(err, Violation::Sequence { seq: 7, expected: 2, .. }), "{err}");
    }

    #[test]
    fn a_replayed_record_is_caught() {
        let mut pair = Pair::new(256, 64);
        pair.send(b"once");
        assert_eq!(pair.read_all().unwrap(), b"once");
        // The same bytes again at the next position: a valid record, but record 0 again.
        let copy: Vec<u8> = pair.ring[0..32].to_vec();
        pair.ring[32..64].copy_from_slice(&copy);
        pair.reader.publish(64).unwrap();
        assert!(matches!(pair.read_all(), Err(Violation::Sequence { seq: 0, expected: 1, .. })));
    }

    #[test]
    fn a_check_uses_the_connection_seed() {
        let mut pair = Pair::new(256, 64);
        let other = RingConfig::new(256, 64, SEED + 1).unwrap();
        let mut foreign = RingWriter::new(other);
        let frame = foreign.frame(b"from another connection", 0).unwrap();
        pair.place(&frame, b"from another connection");
        pair.reader.publish(frame.tail).unwrap();
        assert!(matches!(pair.read_all(), Err(Violation::Check { .. })));
    }

    #[test]
    fn padding_must_reach_exactly_the_end() {
        let mut pair = Pair::new(256, 40);
        let mut pad = Header { len: 8, seq: 0, kind: KIND_PADDING, ack: 0, check: 0 };
        pad.check = pad.compute_check(SEED, &[]);
        forge(&mut pair, 0, pad, &[]);
        pair.reader.publish(32).unwrap();
        assert!(matches!(pair.read_all(), Err(Violation::Padding { len: 8, expected: 232, .. })));
    }

    #[test]
    fn a_write_takes_what_fits_even_when_a_whole_record_does_not() {
        let mut pair = Pair::new(512, 100);
        let data = [5u8; 1000];
        let mut placed = Vec::new();
        let mut copy_in = |at: usize, bytes: &[u8]| placed.push((at, bytes.to_vec()));
        // Records of 100 and 70 bytes take 128 + 96 of the 512; one more of
        // 100 takes 128; of the 160 left, 40 stay reserved for the end record,
        // and the 120 hold a record of 96: less than a whole one, not nothing.
        assert_eq!(pair.writer.write(&data[..170], 0, &mut copy_in), 170);
        assert_eq!(pair.writer.write(&data, 0, &mut copy_in), 196);
        for (at, bytes) in placed {
            pair.ring[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        let written = 366;
        assert!(!pair.writer.fits(1), "the ring is full");
        assert_eq!(pair.writer.fitting(1000), 0);
        pair.reader.publish(pair.writer.tail()).unwrap();
        assert_eq!(pair.read_all().unwrap(), vec![5u8; written]);
        pair.return_credit();
        assert_eq!(pair.writer.fitting(1000), 100, "a whole record again after credit");
    }

    /// Urgent bytes (TCP's out-of-band data, over shm) are dropped unless
    /// the reader takes them in line, where they sit between the stream's bytes.
    #[test]
    fn an_urgent_byte_is_read_in_line_or_dropped() {
        for inline in [false, true] {
            let mut pair = Pair::new(256, 64);
            pair.reader.set_urgent_inline(inline);
            pair.send(b"ab");
            let Pair { writer, ring, .. } = &mut pair;
            assert!(
                writer.write_urgent(b'!', 0, |at, bytes| ring[at..at + bytes.len()].copy_from_slice(bytes))
            );
            pair.send(b"cd");
            let expected: &[u8] = if inline { b"ab!cd" } else { b"abcd" };
            assert_eq!(pair.read_all().unwrap(), expected, "inline={inline}");
        }
    }

    #[test]
    fn the_end_record_ends_the_stream_after_its_bytes() {
        let mut pair = Pair::new(256, 64);
        pair.send(b"last words");
        let end = pair.writer.frame_end(0).unwrap();
        pair.place(&end, &[]);
        pair.reader.publish(pair.writer.tail()).unwrap();
        let mut out = [0u8; 4];
        assert_eq!(pair.reader.read(&pair.ring[..], &mut out), Ok(4));
        assert!(!pair.reader.ended(), "bytes before the end are still staged");
        let mut rest = [0u8; 64];
        assert_eq!(pair.reader.read(&pair.ring[..], &mut rest), Ok(6));
        assert!(pair.reader.ended());
        assert_eq!(pair.reader.head(), pair.writer.tail(), "the end record is consumed (and credited)");
    }

    #[test]
    fn nothing_may_follow_the_end_and_it_carries_nothing() {
        let mut pair = Pair::new(256, 64);
        let end = pair.writer.frame_end(0).unwrap();
        pair.place(&end, &[]);
        pair.send(b"more");
        assert!(matches!(pair.read_all(), Err(Violation::End { position: 24, .. })));

        let mut pair = Pair::new(256, 64);
        let mut end = Header { len: 4, seq: 0, kind: KIND_END, ack: 0, check: 0 };
        end.check = end.compute_check(SEED, b"abcd");
        forge(&mut pair, 0, end, b"abcd");
        pair.reader.publish(32).unwrap();
        assert!(matches!(pair.read_all(), Err(Violation::End { position: 0, .. })));
    }

    proptest! {
        /// Any sequence of messages, read with any buffer sizes and with credit
        /// returned whenever due, arrives as the same byte stream.
        #[test]
        fn the_stream_arrives_intact(
            capacity_log in 8u32..12,
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 1..60),
            read_sizes in prop::collection::vec(1usize..300, 1..20),
        ) {
            let capacity = 1usize << capacity_log;
            let max_payload = (capacity / 2 - HEADER_LEN - END_RESERVE).min(100);
            let mut pair = Pair::new(capacity, max_payload);
            let messages: Vec<&[u8]> = messages.iter().map(|m| &m[..m.len().min(max_payload)]).collect();
            let expected = messages.concat();
            let mut received = Vec::new();
            let mut pending = messages.iter().peekable();
            let mut reads = read_sizes.iter().cycle();
            let mut idle_rounds = 0;
            while received.len() < expected.len() {
                // Write whatever fits, then publish once for the batch.
                let mut wrote = false;
                while let Some(message) = pending.peek() {
                    if !pair.write(message, 0) {
                        break;
                    }
                    pending.next();
                    wrote = true;
                }
                if wrote {
                    pair.reader.publish(pair.writer.tail()).unwrap();
                }
                let mut out = vec![0; *reads.next().unwrap()];
                let n = pair.reader.read(&pair.ring[..], &mut out).unwrap();
                received.extend_from_slice(&out[..n]);
                pair.return_credit();
                idle_rounds = if n == 0 && !wrote { idle_rounds + 1 } else { 0 };
                prop_assert!(idle_rounds < 3, "no progress: deadlock between writer and reader");
            }
            prop_assert_eq!(received, expected);
        }
    }
}
