//! The shared-memory medium: a byte stream between two processes on one host
//! over the same rings as RDMA (see `ring`), in a memfd both map. The memfd
//! is sealed at its size before the peer gets it, and `open` refuses one that
//! is not: a peer that shrank the region would make our next access fault.
//!
//! Region layout (each control word on its own cache line):
//!
//! | offset            | what                                                   |
//! |-------------------|--------------------------------------------------------|
//! | 0                 | magic, version, ring capacity, record limit, seed      |
//! | 64 + 256 * side   | side's `tail` of the ring it writes                    |
//! | 128 + 256 * side  | side's `head` of the ring it reads (credit)            |
//! | 192 + 256 * side  | what side sleeps for: `WAITS_DATA`, `WAITS_CREDIT`     |
//! | 256 + 256 * side  | side's `closed` flags: `CLOSED_CLEANLY`, `RESET`, `RELEASED` |
//! | 4096 + cap * side | the ring that `side` writes and the other side reads   |
//!
//! Each side has a doorbell, a pipe, that the other side rings (a byte) after
//! it moves a tail (data), a head (credit) or its closed flag, but only while
//! the owner says it sleeps for that: a reader waiting for data is not woken by
//! the credit its own peer hands back, and the data path makes no syscall while
//! both sides are busy. A waiter announces what it sleeps for, looks once more,
//! and only then waits on its doorbell; the peer publishes, then looks at the
//! announcement. With sequentially consistent order on both sides, either the
//! waiter sees the new value or the peer sees the announcement: no wakeup is
//! lost. The peer that rings clears the bit it rang for first, so one sleep
//! takes one ring however much is published meanwhile. A waiter that sleeps
//! level-triggered (poll(2): the stream's own blocking calls, a connection's
//! first socket-level sleep) finds the bit cleared, knows there is a ring to
//! consume, and reads it (and whatever else the pipe holds, or its next poll
//! would not sleep): a doorbell that did not ring is not read. One that
//! sleeps edge-triggered (a selector, a connection's later sleeps in its
//! `WaitSet`) reads none and leaves the bytes in the pipe: an edge comes with
//! every write, a full pipe's too (`signal_pipe`). The doorbell fd fits an
//! epoll set next to any other fd. The creator makes both pipes; the side that opens reopens the two ends
//! it was given (`/proc/self/fd`), so that every doorbell end in use is an open
//! file of its user's own: the flags of an open file, `O_NONBLOCK` among them,
//! are shared by its copies, and a peer that kept copies could otherwise make
//! our reads or writes of it block for good. A full doorbell is a rung one.
//! The doorbells go with a kept region to its next connection (`shm_reuse`).
//!
//! A peer that dies sets no closed flag and rings no doorbell. A stream made
//! through the rendezvous (`shm_listener`) keeps its end of a pipe for its
//! life as a liveness channel (`sys::liveness`): the kernel closes the dead
//! process's end, which makes ours signal (`liveness_fd`). A sleeper
//! watches it next to its doorbell, a selector watches it level-triggered;
//! a reader or writer that never sleeps looks at it once in
//! `LIVENESS_CHECK_EVERY` empty tries. A gone peer reads as closed.

use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{check, Error, Result};
use crate::media::ring::{RingConfig, RingMemory, RingReader, RingWriter};
use crate::media::shm_reuse;
use crate::media::stream::{ops, ByteStream, Interest, ReadOutcome, WaitSource};
use crate::sys::port::ReservedPort;
use crate::sys::{self, liveness, Deadline};

const MAGIC: u32 = u32::from_le_bytes(*b"rnsh");
/// 3: records carry no CRC (`RingConfig::without_crc`).
const VERSION: u32 = 3;
const CONTROL_LEN: usize = 4096;
const SIDE_STRIDE: usize = 256;
const TAIL: usize = 64;
const HEAD: usize = 128;
const SLEEPING: usize = 192;
const CLOSED: usize = 256;
/// The closed flag of a side that closed: its reader sees the end after the data.
const CLOSED_CLEANLY: u32 = 1;
/// The closed flag of a side that closed abortively, or went with bytes
/// unread: its peer reads what had arrived, then every read fails with
/// `ConnectionReset` (writes with `Disconnected`), as over TCP.
const RESET: u32 = 2;
/// Set beside the closed flag once the side's stream is gone (dropped), as a
/// TCP socket's file closes. A socket closed while a selector holds it stays
/// until the selector's next select (`close_while_held`), and till then its
/// peer's writes go into the ring, as into the JDK's socket, which shuts down
/// only its output then. Gone with bytes unread, a side sets `RESET` too, and
/// the peer's writes fail; gone with none, the peer's first write is taken
/// and dropped and the later ones fail (a closed socket answers data with a
/// reset). So a peer writing while our last bytes and close are on their way
/// learns of the close from its next read, as over TCP (Kafka's TLS client
/// reads the server's alert only after writes that did not fail).
const RELEASED: u32 = 4;
/// A sleeper waits for the peer's tail to move (data, the end, a close).
const WAITS_DATA: u32 = 1;
/// A sleeper waits for the peer's head to move (credit for its writes, a close).
const WAITS_CREDIT: u32 = 2;
/// A region's seals: a fixed size for good (shrinking it would make the peer's
/// accesses fault; growing it is refused too, so the size `open` checked stays).
pub(crate) const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
/// A read or write that finds nothing to do looks at the liveness channel
/// once in this many times (a syscall: a spinning side must not pay it each time).
const LIVENESS_CHECK_EVERY: u32 = 1024;

/// A mapping of a memfd, unmapped on drop.
pub(super) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all cross-thread access to it goes
// through atomics or through the ring protocol.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: RawFd, len: usize) -> Result<Mapping> {
        // SAFETY: a fresh shared mapping of an fd we hold; the kernel picks the address.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(Error::last_os("mmap(shm region)"));
        }
        Ok(Mapping { base: NonNull::new(base.cast()).expect("mmap returned null"), len })
    }

    /// No mapping: what a stream holds once its region went to `shm_reuse`.
    fn none() -> Mapping {
        Mapping { base: NonNull::dangling(), len: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= CONTROL_LEN);
        // SAFETY: in bounds, 4-aligned (page-aligned base), and only ever accessed atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= CONTROL_LEN);
        // SAFETY: as above, 8-aligned.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping came from mmap with this length and is unmapped once.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        }
    }
}

/// One ring inside the mapping, as raw memory: the other process writes it
/// while we read, so it is never borrowed as a Rust slice.
struct RingArea {
    base: *mut u8,
    len: usize,
}

impl RingMemory for RingArea {
    fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset + dst.len() <= self.len);
        // SAFETY: in bounds of the ring. The peer may be writing these bytes at
        // the same time only if it breaks the protocol; the reader checks every
        // record it copies, so such bytes are rejected, never trusted.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(offset), dst.as_mut_ptr(), dst.len()) };
    }
}

impl RingArea {
    fn copy_in(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.len);
        // SAFETY: in bounds; the ring protocol gives these bytes to the writer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(offset), src.len()) };
    }
}

/// The fds that make one shm stream, for handing to the peer process (over a
/// Unix socket with SCM_RIGHTS, or by inheritance).
#[derive(Debug)]
pub struct ShmFds {
    /// The memfd of the region.
    pub region: OwnedFd,
    /// The doorbells (pipes) of side 0 and side 1, as one side holds them:
    /// the read end of its own, the write end of the other's.
    pub doorbells: [OwnedFd; 2],
}

impl ShmFds {
    /// Duplicates the fds (for the other side in the same process).
    pub fn try_clone(&self) -> Result<ShmFds> {
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|source| Error::Os { op: "dup", source });
        Ok(ShmFds {
            region: dup(&self.region)?,
            doorbells: [dup(&self.doorbells[0])?, dup(&self.doorbells[1])?],
        })
    }
}

/// A side's ends of the two doorbells, each an open file of its own. They
/// go with the region to the next connection on it (see `shm_reuse`).
pub(super) struct Doorbells {
    /// Read end of ours, which the peer rings.
    own: OwnedFd,
    /// Write end of the peer's, which we ring.
    peers: OwnedFd,
    /// A read end of the peer's, never read: with it open the pipe we ring
    /// always has a reader, so a ring after the peer is gone finds the pipe
    /// full at worst, never `EPIPE` (nor `SIGPIPE`, which ends a process that
    /// does not ignore it). The side that made the pipes hands it over.
    peers_reader: OwnedFd,
    /// The side that made the pipes: the write end of ours, which it hands over.
    own_writer: Option<OwnedFd>,
}

impl Doorbells {
    /// Doorbells kept from a connection before: the rings its peer left are
    /// read, so that our next sleep sleeps.
    fn reused(self) -> Result<Doorbells> {
        sys::drain_pipe(&self.own)?;
        Ok(self)
    }
}

/// The pipes of a region's two doorbells, as its maker handed them over: a
/// listener's doorbells serve the next connection on the region if the same
/// pipes come with it.
pub(super) type PipeIds = [Option<(u64, u64)>; 2];

/// One end of a shared-memory byte stream.
pub struct ShmStream {
    side: usize,
    map: Mapping,
    /// Taken only by the drop, which keeps them with the region.
    doorbells: Option<Doorbells>,
    reader: RingReader,
    writer: RingWriter,
    incoming: RingArea,
    outgoing: RingArea,
    /// `shutdown_output` was called; the end record may still wait for room.
    output_shut: bool,
    end_pending: bool,
    /// Our end of the liveness channel, to learn of the peer's death (see the module comment).
    liveness: Option<OwnedFd>,
    /// The peer is gone without closing: it reads as closed.
    peer_gone: bool,
    /// A write met the peer's stream gone and was taken (see `RELEASED`).
    wrote_after_release: bool,
    /// Reads and writes that found nothing to do (see `LIVENESS_CHECK_EVERY`).
    idle_tries: u32,
    /// What the current sleep announced (0: none).
    sleeping_for: u32,
    /// The peer rang for a past sleep that did not consume it (a selector's,
    /// or its write had not landed yet): the next end of a blocking sleep does.
    ring_pending: bool,
    /// The connection's local and peer addresses (the client's is the TCP
    /// address it holds, which names the connection on this host).
    addresses: Option<(SocketAddr, SocketAddr)>,
    /// The TCP port a client holds for the connection's life, when it was
    /// not bound by its owner.
    _port: Option<ReservedPort>,
    /// The rings' shape.
    config: RingConfig,
    /// Where the region goes when the stream does.
    keep: Keep,
}

/// Where a stream's region goes when the stream does (see `shm_reuse`).
enum Keep {
    /// Unmapped: a region of a pair made in one process (`create`).
    Nothing,
    /// A client's region, parked with the socket it went to the listener
    /// on, for the next connect to that listener.
    ForListener { region: OwnedFd, link: UnixDatagram, listener: SocketAddr },
    /// A region a peer made: its mapping and our doorbells are kept by the
    /// region's file, for the peer's next handover of it with the same pipes.
    ByFile(shm_reuse::FileId, PipeIds),
}

// SAFETY: the raw ring pointers point into `map`, which the stream owns.
unsafe impl Send for ShmStream {}

impl ShmStream {
    /// Creates a region with two rings shaped by `config` and returns side 0
    /// of the stream, with the fds the peer needs for side 1.
    pub fn create(config: RingConfig) -> Result<(ShmStream, ShmFds)> {
        Self::create_with(config, ShmFds::try_clone)
    }

    /// Creates a region with two rings shaped by `config`, lets `hand_over`
    /// give the peer side 1's fds (it sends them; no copy is made for it),
    /// and returns side 0 of the stream with what `hand_over` returned.
    pub fn create_with<T>(
        config: RingConfig,
        hand_over: impl FnOnce(&ShmFds) -> Result<T>,
    ) -> Result<(ShmStream, T)> {
        // The mapping outlives the memfd, which closes here.
        Self::create_in(None, config, hand_over).map(|(stream, handed, _region)| (stream, handed))
    }

    /// `create_with` on `parked`, a region of this shape kept from a
    /// connection before (its control area is reset) with its doorbells, or
    /// on a new region; returns the region's memfd too.
    pub(super) fn create_in<T>(
        parked: Option<(OwnedFd, Mapping, Doorbells)>,
        config: RingConfig,
        hand_over: impl FnOnce(&ShmFds) -> Result<T>,
    ) -> Result<(ShmStream, T, OwnedFd)> {
        // Plain stores land whole before the tail's release: no CRC to pay for.
        let config = config.without_crc();
        let (region, map, doorbells) = match parked {
            Some((region, map, doorbells)) => {
                debug_assert_eq!(map.len, CONTROL_LEN + 2 * config.capacity());
                // Every word a side reads starts at zero, as in a new memfd;
                // the rings' bytes need no reset: only what a tail covers is read.
                for offset in (0..CONTROL_LEN).step_by(8) {
                    map.word64(offset).store(0, Ordering::Relaxed);
                }
                (region, map, Some(doorbells.reused()?))
            }
            None => {
                let (region, map) = Self::new_region(config)?;
                (region, map, None)
            }
        };
        map.word32(4).store(VERSION, Ordering::Relaxed);
        map.word32(8).store(config.capacity() as u32, Ordering::Relaxed);
        map.word32(12).store(config.max_payload() as u32, Ordering::Relaxed);
        map.word32(16).store(config.seed(), Ordering::Relaxed);
        map.word32(0).store(MAGIC, Ordering::Release); // last: the header is complete
        let (own, peers, handed_ends) = match doorbells {
            Some(Doorbells { own, peers, peers_reader, own_writer: Some(own_writer) }) => {
                (own, peers, [own_writer, peers_reader])
            }
            _ => {
                let (own, own_writer) = sys::pipe()?;
                let (peers_reader, peers) = sys::pipe()?;
                (own, peers, [own_writer, peers_reader])
            }
        };
        let theirs = ShmFds { region, doorbells: handed_ends };
        let handed = hand_over(&theirs)?;
        // Our copies of what went stay: the read end of the peer's doorbell
        // (see `Doorbells`), and the write end of ours for the next handover.
        let ShmFds { region, doorbells: [own_writer, peers_reader] } = theirs;
        let doorbells = Doorbells { own, peers, peers_reader, own_writer: Some(own_writer) };
        Ok((ShmStream::on_mapping(map, config, doorbells, 0), handed, region))
    }

    /// A new region for two rings shaped by `config`, sealed, and mapped.
    fn new_region(config: RingConfig) -> Result<(OwnedFd, Mapping)> {
        // SAFETY: a static NUL-terminated name; a new fd or -1.
        let fd = unsafe {
            libc::memfd_create(c"rdma-nio-shm".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        check("memfd_create", fd)?;
        // SAFETY: fd is new and ours.
        let region = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = CONTROL_LEN + 2 * config.capacity();
        // SAFETY: sizing the memfd we own.
        check("ftruncate(shm region)", unsafe { libc::ftruncate(fd, len as libc::off_t) })?;
        // The peer gets this fd: sealed, it cannot shrink the region under our
        // mapping (our next access would fault: SIGBUS, the JVM's end).
        // SAFETY: fcntl on the memfd we own; no memory is passed.
        check("fcntl(F_ADD_SEALS, shm region)", unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, SEALS) })?;
        let map = Mapping::new(fd, len)?;
        Ok((region, map))
    }

    /// Opens `side` (0 or 1) of the stream whose fds these are.
    ///
    /// # Errors
    /// `InvalidArgument` for a region that is not an rdma-nio shm region or
    /// does not match its size.
    pub fn open(fds: ShmFds, side: usize) -> Result<ShmStream> {
        if side > 1 {
            return Err(Error::InvalidArgument(format!("shm side {side} is not 0 or 1")));
        }
        // Before its size is read: a region that can shrink would fault our accesses.
        // SAFETY: fcntl on an fd we hold; no memory is passed.
        let seals = unsafe { libc::fcntl(fds.region.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::InvalidArgument(
                "shm region is not sealed against shrinking (not a memfd of an rdma-nio peer)".into(),
            ));
        }
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: stat is a valid out-struct.
        check("fstat(shm region)", unsafe { libc::fstat(fds.region.as_raw_fd(), &mut stat) })?;
        let len = stat.st_size as usize;
        if len < CONTROL_LEN {
            return Err(Error::InvalidArgument(format!("shm region of {len} bytes is too small")));
        }
        let file = shm_reuse::FileId { device: stat.st_dev, inode: stat.st_ino };
        let pipes = fds.doorbells.each_ref().map(sys::pipe_id);
        let (map, kept_doorbells) = match shm_reuse::take_mapping(file, len) {
            Some((map, kept)) => {
                let same_pipes =
                    kept.side == side && kept.pipes == pipes && pipes.iter().all(Option::is_some);
                (map, same_pipes.then_some(kept))
            }
            None => (Mapping::new(fds.region.as_raw_fd(), len)?, None),
        };
        if map.word32(0).load(Ordering::Acquire) != MAGIC || map.word32(4).load(Ordering::Relaxed) != VERSION
        {
            return Err(Error::InvalidArgument("not an rdma-nio shm region of this version".into()));
        }
        let capacity = map.word32(8).load(Ordering::Relaxed) as usize;
        let config = RingConfig::new(
            capacity,
            map.word32(12).load(Ordering::Relaxed) as usize,
            map.word32(16).load(Ordering::Relaxed),
        )
        .map_err(Error::InvalidArgument)?
        .without_crc();
        if len != CONTROL_LEN + 2 * capacity {
            return Err(Error::InvalidArgument(format!(
                "shm region of {len} bytes does not hold two {capacity}-byte rings"
            )));
        }
        let doorbells = match kept_doorbells {
            // The same pipes as on the region's connection before: our ends of them.
            Some(kept) => kept.doorbells.reused()?,
            None => {
                // Open files of our own: the peer may have kept copies of these, and
                // could otherwise make our reads or writes of them block.
                let [first, second] = &fds.doorbells;
                let (own, peers) = if side == 0 { (first, second) } else { (second, first) };
                let [own] = sys::reopen_pipe_ends(own, [false])?;
                let [peers, peers_reader] = sys::reopen_pipe_ends(peers, [true, false])?;
                Doorbells { own, peers, peers_reader, own_writer: None }
            }
        };
        // The mapping outlives the memfd, which closes here with the ends as they came.
        let mut stream = ShmStream::on_mapping(map, config, doorbells, side);
        stream.keep = Keep::ByFile(file, pipes);
        Ok(stream)
    }

    /// `side` of the stream on `map`, a region of two rings shaped by `config`.
    fn on_mapping(map: Mapping, config: RingConfig, doorbells: Doorbells, side: usize) -> ShmStream {
        let capacity = config.capacity();
        debug_assert_eq!(map.len, CONTROL_LEN + 2 * capacity);
        let ring = |writer: usize| RingArea {
            // SAFETY: in bounds: CONTROL_LEN + 2 * capacity == the mapping's length.
            base: unsafe { map.base.as_ptr().add(CONTROL_LEN + writer * capacity) },
            len: capacity,
        };
        let (outgoing, incoming) = (ring(side), ring(1 - side));
        ShmStream {
            side,
            map,
            doorbells: Some(doorbells),
            reader: RingReader::new(config),
            writer: RingWriter::new(config),
            incoming,
            outgoing,
            output_shut: false,
            end_pending: false,
            liveness: None,
            peer_gone: false,
            wrote_after_release: false,
            idle_tries: 0,
            sleeping_for: 0,
            ring_pending: false,
            addresses: None,
            _port: None,
            config,
            keep: Keep::Nothing,
        }
    }

    /// Names the connection: `local` and `peer` addresses, and the port
    /// reservation (if any) that holds the local one.
    pub(crate) fn with_addresses(
        mut self,
        local: SocketAddr,
        peer: SocketAddr,
        port: Option<ReservedPort>,
    ) -> Self {
        self.addresses = Some((local, peer));
        self._port = port;
        self
    }

    /// Parks the region, when the stream goes, for the next connect to the
    /// listener on `listener`: `region` is its memfd, `link` the socket it
    /// was handed over on (see `shm_reuse`). For a side 0 from `create_in`.
    pub(super) fn keep_for_listener(&mut self, region: OwnedFd, link: UnixDatagram, listener: SocketAddr) {
        debug_assert_eq!(self.side, 0);
        self.keep = Keep::ForListener { region, link, listener };
    }

    /// The file of the region, for a stream on a region a peer made.
    #[cfg(test)]
    pub(super) fn region_file(&self) -> Option<shm_reuse::FileId> {
        match self.keep {
            Keep::ByFile(file, _) => Some(file),
            _ => None,
        }
    }

    /// The pipe of our doorbell.
    #[cfg(test)]
    pub(super) fn doorbell_pipe(&self) -> Option<(u64, u64)> {
        sys::pipe_id(&self.doorbells().own)
    }

    /// Keeps `end`, our end of a `sys::liveness` channel with the peer's
    /// process, as the stream's liveness channel: its hang-up says the peer is gone.
    pub(crate) fn with_liveness(mut self, end: OwnedFd) -> ShmStream {
        self.liveness = Some(end);
        self
    }

    /// A read or write found nothing to do: once in a while, look whether the peer is gone.
    fn idle_try(&mut self) -> Result<()> {
        self.idle_tries = self.idle_tries.wrapping_add(1);
        if self.idle_tries % LIVENESS_CHECK_EVERY == 0 {
            self.check_liveness()?;
        }
        Ok(())
    }

    fn own(&self, word: usize) -> usize {
        word + SIDE_STRIDE * self.side
    }

    fn peer(&self, word: usize) -> usize {
        word + SIDE_STRIDE * (1 - self.side)
    }

    fn doorbells(&self) -> &Doorbells {
        self.doorbells.as_ref().expect("the doorbells are taken only by the drop")
    }

    /// The fd that becomes readable when the peer moved something while we
    /// slept (see `arm`).
    pub fn doorbell_fd(&self) -> RawFd {
        self.doorbells().own.as_raw_fd()
    }

    /// Rings the peer's doorbell if it sleeps for `what` (`WAITS_DATA`,
    /// `WAITS_CREDIT` or both); called after every store it may wait for. The
    /// bit is cleared by whoever rings, so one sleep takes one ring.
    fn notify_peer(&self, what: u32) -> Result<()> {
        let sleeping = self.map.word32(self.peer(SLEEPING));
        if sleeping.load(Ordering::SeqCst) & what != 0
            && sleeping.fetch_and(!what, Ordering::SeqCst) & what != 0
        {
            sys::signal_pipe(&self.doorbells().peers)?;
        }
        Ok(())
    }

    /// Takes the credit the peer stored since we last looked.
    fn take_credit(&mut self) -> Result<()> {
        let credit = self.map.word64(self.peer(HEAD)).load(Ordering::Acquire);
        Ok(self.writer.credit(credit)?)
    }

    /// Publishes the end record once it fits (see `shutdown_output`).
    fn flush_end(&mut self) -> Result<()> {
        if !self.end_pending {
            return Ok(());
        }
        self.take_credit()?;
        let Some(frame) = self.writer.frame_end(0) else {
            return Ok(()); // no room yet: the next look tries again
        };
        if let Some((at, padding)) = frame.padding {
            self.outgoing.copy_in(at, &padding);
        }
        self.outgoing.copy_in(frame.offset, &frame.header);
        self.end_pending = false;
        self.map.word64(self.own(TAIL)).store(self.writer.tail(), Ordering::SeqCst);
        self.notify_peer(WAITS_DATA)
    }

    /// Fails a write that cannot be made (after a half close, to a peer that
    /// reset or died, the second to a peer whose stream is gone) and takes
    /// the credit the peer returned; false: the write is taken and dropped,
    /// the first after the peer's stream went (see `RELEASED`).
    fn writable(&mut self) -> Result<bool> {
        if self.output_shut {
            return Err(Error::InvalidArgument("write after shutdown_output".into()));
        }
        let flags = self.map.word32(self.peer(CLOSED)).load(Ordering::Acquire);
        if self.peer_gone || flags & RESET != 0 {
            return Err(Error::Disconnected);
        }
        if flags & RELEASED != 0 {
            return match mem::replace(&mut self.wrote_after_release, true) {
                true => Err(Error::Disconnected),
                false => Ok(false),
            };
        }
        self.take_credit().map(|()| true)
    }

    /// A write would not wait for credit: the peer reset, died or let its
    /// stream go (see `RELEASED`).
    fn peer_refuses_writes(&self) -> bool {
        self.peer_gone || self.map.word32(self.peer(CLOSED)).load(Ordering::SeqCst) & (RESET | RELEASED) != 0
    }

    /// Publishes what a write placed in the ring, or counts a write that found
    /// no room (`nothing_asked`: an empty write, which needs none).
    fn written(&mut self, placed: bool, nothing_asked: bool) -> Result<()> {
        if !placed && !nothing_asked {
            self.idle_try()?;
        }
        if placed {
            // Release: the records are visible before the tail that covers them.
            self.map.word64(self.own(TAIL)).store(self.writer.tail(), Ordering::SeqCst);
            self.notify_peer(WAITS_DATA)?;
        }
        Ok(())
    }

    /// Closes with `how` (`CLOSED_CLEANLY` or `RESET`) unless closed already,
    /// and wakes the peer whatever it sleeps for.
    fn set_closed(&mut self, how: u32) {
        let closed = self.map.word32(self.own(CLOSED));
        if closed.compare_exchange(0, how, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            if let Err(err) = self.notify_peer(WAITS_DATA | WAITS_CREDIT) {
                log::warn!("shm close: cannot ring the peer's doorbell: {err}");
            }
        }
    }

    /// Tells the peer that the stream is gone (`RELEASED`), with a reset if
    /// bytes it wrote wait unread, as a TCP socket's file closing does;
    /// wakes the peer whatever it sleeps for.
    fn set_released(&mut self) {
        let unread = self.available().map_or(true, |unread| unread > 0);
        let flags = if unread { RELEASED | RESET } else { RELEASED };
        self.map.word32(self.own(CLOSED)).fetch_or(flags, Ordering::SeqCst);
        if let Err(err) = self.notify_peer(WAITS_DATA | WAITS_CREDIT) {
            log::warn!("shm release: cannot ring the peer's doorbell: {err}");
        }
    }

    /// Announces that we are about to sleep on the doorbell for `what`. Check
    /// the stream once more after arming, and sleep only if nothing changed.
    fn announce_sleep(&mut self, what: u32) {
        self.sleeping_for = what;
        self.map.word32(self.own(SLEEPING)).store(what, Ordering::SeqCst);
    }

    /// Ends the sleep announced by `announce_sleep`, and consumes the ring if
    /// the peer rang (it cleared a bit) or a ring is still pending.
    fn end_sleep(&mut self) -> Result<()> {
        let left = self.map.word32(self.own(SLEEPING)).swap(0, Ordering::SeqCst);
        let rang = left != mem::take(&mut self.sleeping_for);
        if rang || self.ring_pending {
            // A ring whose write has not landed yet is consumed next time.
            self.ring_pending = !sys::drain_pipe(&self.doorbells().own)?;
        }
        Ok(())
    }

    fn peer_closed_now(&self) -> bool {
        self.peer_gone || self.map.word32(self.peer(CLOSED)).load(Ordering::SeqCst) != 0
    }

    fn incoming_moved(&self) -> bool {
        self.peer_closed_now()
            || self.map.word64(self.peer(TAIL)).load(Ordering::SeqCst) != self.reader.tail()
    }

    /// Sleeps on the doorbell until `ready` holds, with the arm/re-check/sleep order.
    fn sleep_until(
        &mut self,
        op: &'static str,
        what: u32,
        deadline: Deadline,
        ready: impl Fn(&mut Self) -> bool,
    ) -> Result<()> {
        // A credit the peer stored since the last write is taken here, so `fits` sees it.
        let refresh = |s: &mut Self| -> Result<bool> {
            let credit = s.map.word64(s.peer(HEAD)).load(Ordering::SeqCst);
            s.writer.credit(credit)?;
            Ok(ready(s))
        };
        self.announce_sleep(what);
        let result = (|| loop {
            if refresh(self)? {
                return Ok(());
            }
            let watched = [(self.doorbell_fd(), libc::POLLIN), (self.liveness_fd(), liveness::EVENTS)];
            let [rung, gone] = sys::wait_for(op, watched, deadline)?;
            if gone {
                self.check_liveness()?;
            }
            // A readable doorbell is emptied whoever rang (rings a selector
            // left, a peer's stray ones), or the next poll would not sleep.
            self.ring_pending |= rung;
            self.end_sleep()?;
            if deadline.expired() && !refresh(self)? {
                return Err(deadline.timed_out(op));
            }
            self.announce_sleep(what);
        })();
        self.end_sleep()?;
        result
    }
}

impl ByteStream for ShmStream {
    /// Writes as much of `data` as the ring has room for; returns how much
    /// (0: would block until the reader returns credit).
    ///
    /// # Errors
    /// `Disconnected` once the peer has reset, died, or closed and took the
    /// one write it takes; a protocol violation when the peer's credit is
    /// impossible.
    fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        if !self.writable()? {
            return Ok(data.len());
        }
        let outgoing = &self.outgoing;
        let written = self.writer.write(data, 0, |at, bytes| outgoing.copy_in(at, bytes));
        self.written(written > 0, data.is_empty())?;
        Ok(written)
    }

    /// Urgent data is a record of its own in the ring (see `ring`), which the
    /// peer reads in line or drops, as its `SO_OOBINLINE` says.
    fn try_send_urgent(&mut self, byte: u8) -> Result<bool> {
        if !self.writable()? {
            return Ok(true);
        }
        let outgoing = &self.outgoing;
        let sent = self.writer.write_urgent(byte, 0, |at, bytes| outgoing.copy_in(at, bytes));
        self.written(sent, false)?;
        Ok(sent)
    }

    fn set_urgent_inline(&mut self, inline: bool) -> Result<()> {
        self.reader.set_urgent_inline(inline);
        Ok(())
    }

    /// Reads what the peer has published, up to `out.len()` bytes.
    ///
    /// # Errors
    /// A protocol violation when the peer wrote something the ring rules forbid.
    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        // Read the closed flag before the tail: a peer closes after its last write
        // (and a gone peer wrote its last before it died).
        let flag = self.map.word32(self.peer(CLOSED)).load(Ordering::Acquire);
        let closed = flag != 0 || self.peer_gone;
        let tail = self.map.word64(self.peer(TAIL)).load(Ordering::Acquire);
        self.reader.publish(tail)?;
        let n = self.reader.read(&self.incoming, out)?;
        if let Some(head) = self.reader.credit_due() {
            self.map.word64(self.own(HEAD)).store(head, Ordering::SeqCst);
            self.notify_peer(WAITS_CREDIT)?;
        }
        self.flush_end()?;
        Ok(match n {
            // What arrived before a reset is read first, as from a TCP socket.
            0 if flag & RESET != 0 && !self.reader.has_data() => return Err(Error::ConnectionReset),
            0 if self.reader.ended() || (closed && !self.reader.has_data()) => ReadOutcome::EndOfStream,
            0 => {
                self.idle_try()?;
                ReadOutcome::WouldBlock
            }
            n => ReadOutcome::Data(n),
        })
    }

    fn available(&mut self) -> Result<usize> {
        let tail = self.map.word64(self.peer(TAIL)).load(Ordering::Acquire);
        self.reader.publish(tail)?;
        Ok(self.reader.available(&self.incoming)?)
    }

    fn wait(&mut self, interest: Interest, deadline: Deadline) -> Result<()> {
        match interest {
            Interest::Write => self.sleep_until("shm write", WAITS_CREDIT, deadline, |s| {
                s.writer.fits(1) || s.peer_refuses_writes()
            }),
            Interest::Read => {
                self.sleep_until("shm read", WAITS_DATA, deadline, |s| s.incoming_moved() || s.reader.ended())
            }
        }
    }

    fn shutdown_output(&mut self) -> Result<()> {
        if !self.output_shut {
            self.output_shut = true;
            self.end_pending = true;
        }
        self.flush_end()
    }

    /// Closes as a TCP close does: bytes left unread reset the connection
    /// (the peer learns they were lost), else it ends after what was written.
    fn close(&mut self) {
        let unread = self.available().map_or(true, |unread| unread > 0);
        self.set_closed(if unread { RESET } else { CLOSED_CLEANLY });
    }

    /// The peer reads the end after what was written; bytes left unread
    /// when the stream goes reset the connection then (`set_released`).
    fn close_while_held(&mut self) {
        self.set_closed(CLOSED_CLEANLY);
    }

    fn abort(&mut self) {
        self.set_closed(RESET);
    }

    fn ready(&mut self, interest: u32) -> Result<u32> {
        self.flush_end()?;
        self.take_credit()?;
        let mut ready = 0;
        if self.incoming_moved() || self.reader.has_data() || self.reader.ended() {
            ready |= ops::READ;
        }
        if self.writer.fits(1) || self.output_shut || self.peer_refuses_writes() {
            ready |= ops::WRITE;
        }
        Ok(ready & interest)
    }

    fn arm(&mut self, interest: u32) -> Result<()> {
        let mut what = 0;
        if interest & ops::READ != 0 {
            what |= WAITS_DATA;
        }
        if interest & ops::WRITE != 0 {
            what |= WAITS_CREDIT;
        }
        self.announce_sleep(what);
        Ok(())
    }

    fn disarm(&mut self) -> Result<()> {
        self.end_sleep()
    }

    /// The doorbell's count is left as it is: each ring is an edge for the
    /// selector, and a read to clear it would cost a syscall per wake-up.
    fn disarm_watched(&mut self) -> Result<()> {
        let left = self.map.word32(self.own(SLEEPING)).swap(0, Ordering::SeqCst);
        self.ring_pending |= left != mem::take(&mut self.sleeping_for);
        Ok(())
    }

    fn sources(&self, _interest: u32) -> [WaitSource; 2] {
        [(self.doorbell_fd(), libc::POLLIN), (-1, 0)]
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.addresses.map(|(local, _)| local)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.addresses.map(|(_, peer)| peer)
    }

    fn liveness_fd(&self) -> RawFd {
        match &self.liveness {
            Some(end) if !self.peer_gone => end.as_raw_fd(),
            _ => -1,
        }
    }

    fn check_liveness(&mut self) -> Result<()> {
        if let Some(end) = &self.liveness {
            if !self.peer_gone && liveness::hung_up(end.as_raw_fd())? {
                log::debug!("shm peer gone without closing its stream");
                self.peer_gone = true;
            }
        }
        Ok(())
    }
}

impl Drop for ShmStream {
    fn drop(&mut self) {
        self.close();
        self.set_released();
        // Before the liveness end closes (a field, dropped after this): its
        // close tells a client that we released the region.
        match (mem::replace(&mut self.keep, Keep::Nothing), self.doorbells.take()) {
            (Keep::ByFile(file, pipes), Some(doorbells)) => {
                let map = mem::replace(&mut self.map, Mapping::none());
                shm_reuse::keep_mapping(
                    file,
                    map,
                    shm_reuse::KeptDoorbells { side: self.side, pipes, doorbells },
                );
            }
            (Keep::ForListener { region, link, listener }, Some(doorbells)) => {
                if let Some(last_peer) = self.liveness.take() {
                    let (config, map) = (self.config, mem::replace(&mut self.map, Mapping::none()));
                    shm_reuse::park(shm_reuse::Parked {
                        listener,
                        config,
                        link,
                        region,
                        map,
                        doorbells,
                        last_peer,
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::media::ring::Violation;
    use crate::sys::epoll::EpollSet;
    use std::thread;
    use std::time::Duration;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

    fn config() -> RingConfig {
        RingConfig::new(64 * 1024, 16 * 1024, 0xfeed).unwrap()
    }

    /// Deterministic test bytes: a xorshift stream.
    fn pattern(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_mebibyte_crosses_in_both_directions_at_once() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let mib = 1 << 20;
        let to_side1 = pattern(mib, 1);
        let to_side0 = pattern(mib, 2);
        let expected_at_1 = to_side1.clone();
        let expected_at_0 = to_side0.clone();
        let peer = thread::spawn(move || {
            let mut side1 = ShmStream::open(fds, 1).unwrap();
            let data = to_side0;
            // Interleave non-blocking writes and reads until both directions are done.
            let mut sent = 0;
            let mut got = Vec::with_capacity(mib);
            let mut buf = vec![0u8; 50_000];
            while sent < mib || got.len() < mib {
                if sent < mib {
                    sent += side1.try_write(&data[sent..]).unwrap();
                }
                if let ReadOutcome::Data(n) = side1.try_read(&mut buf).unwrap() {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            got
        });
        let mut sent = 0;
        let mut got = Vec::with_capacity(mib);
        let mut buf = vec![0u8; 30_000];
        while sent < mib || got.len() < mib {
            if sent < mib {
                sent += side0.try_write(&to_side1[sent..]).unwrap();
            }
            if let ReadOutcome::Data(n) = side0.try_read(&mut buf).unwrap() {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert!(got == expected_at_0, "side 0 received different bytes");
        assert!(peer.join().unwrap() == expected_at_1, "side 1 received different bytes");
    }

    fn rung(stream: &ShmStream) -> bool {
        sys::wait_readable("test", [stream.doorbell_fd()], Deadline::after(Some(Duration::ZERO))).is_ok()
    }

    /// A side asleep for data is not rung for the credit its peer hands back
    /// (it was, and woke for nothing on every message of a ping-pong), and a
    /// side asleep for credit is.
    #[test]
    fn a_sleeper_is_rung_only_for_what_it_waits_for() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        let mut buf = [0u8; 64];

        assert_eq!(side0.try_write(b"ping").unwrap(), 4);
        side0.arm(ops::READ).unwrap(); // waits for the answer
        assert!(matches!(side1.try_read(&mut buf).unwrap(), ReadOutcome::Data(4)));
        assert!(!rung(&side0), "the credit for ping does not ring a side waiting for data");
        assert_eq!(side1.try_write(b"pong").unwrap(), 4);
        assert!(rung(&side0), "the answer does");
        assert_eq!(side1.try_write(b"more").unwrap(), 4);
        side0.disarm().unwrap();
        assert!(!rung(&side0), "one ring per sleep, and the sleep's end consumed it");

        // A writer out of room sleeps for credit, and the reader's credit rings it.
        while side0.try_read(&mut buf).map(|outcome| !matches!(outcome, ReadOutcome::WouldBlock)).unwrap() {}
        let chunk = vec![7u8; 4096];
        while side0.try_write(&chunk).unwrap() > 0 {}
        side0.arm(ops::WRITE).unwrap();
        let mut sink = vec![0u8; 64 * 1024];
        while !rung(&side0) {
            assert!(
                matches!(side1.try_read(&mut sink).unwrap(), ReadOutcome::Data(_)),
                "credit came, no ring"
            );
        }
        side0.disarm().unwrap();
        assert!(!rung(&side0));
    }

    /// A selector's sleeps (an edge-triggered epoll set watches the doorbell,
    /// `disarm_watched` reads nothing) outnumber the bytes a pipe holds many
    /// times over: a ring must still wake the selector after every one of
    /// them. Once the pipe is full the ring's write fails with `EAGAIN`, and
    /// only the kernel's wake-up of a polled pipe's waiters on every write,
    /// full or not (Linux 5.14 on), makes the edge: this pins that.
    #[test]
    fn a_selector_is_woken_after_more_sleeps_than_its_doorbell_holds() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        let epoll = EpollSet::new().unwrap();
        epoll.watch(&[side1.doorbell_fd()], (libc::EPOLLIN | libc::EPOLLET) as u32, 1).unwrap();
        let mut events = Vec::new();
        let mut buf = [0u8; 8];
        for sleep in 0..150_000 {
            side1.arm(ops::READ).unwrap();
            assert_eq!(side1.ready(ops::READ).unwrap(), 0);
            assert_eq!(side0.try_write(b"x").unwrap(), 1);
            assert_eq!(epoll.wait(&mut events, 5_000).unwrap(), 1, "sleep {sleep} was never woken");
            side1.disarm_watched().unwrap();
            assert_eq!(side1.try_read(&mut buf).unwrap(), ReadOutcome::Data(1));
        }
    }

    /// A blocking wait after many selector sleeps (whose rings stay in the
    /// doorbell: `disarm_watched` reads nothing) sleeps, rather than finding
    /// the doorbell readable for ever and spinning: its first sleep's end
    /// empties the doorbell, however many rings it holds.
    #[test]
    fn a_blocking_wait_after_many_selector_sleeps_sleeps() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        let mut buf = [0u8; 8];
        for _ in 0..1_000 {
            side1.arm(ops::READ).unwrap();
            assert_eq!(side0.try_write(b"x").unwrap(), 1); // rings
            side1.disarm_watched().unwrap();
            assert_eq!(side1.try_read(&mut buf).unwrap(), ReadOutcome::Data(1));
        }
        let (done, ended) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let cpu = thread_cpu_time();
            let waited = side1.wait(Interest::Read, Deadline::after(Some(Duration::from_millis(300))));
            done.send((waited.map_err(|err| err.to_string()), thread_cpu_time() - cpu)).unwrap();
            drop(side0);
        });
        let (waited, cpu) =
            ended.recv_timeout(Duration::from_secs(10)).expect("the wait outlived its deadline");
        assert!(waited.as_ref().is_err_and(|err| err.contains("timed out")), "nothing was sent: {waited:?}");
        assert!(cpu < Duration::from_millis(100), "the wait spun: {cpu:?} of CPU in 300 ms");
    }

    /// CPU time this thread has used.
    fn thread_cpu_time() -> Duration {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to fill.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) }, 0);
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    /// The doorbell we sleep on came from the peer: a peer that kept a copy
    /// of it as it handed it over, cleared that copy's `O_NONBLOCK` and then
    /// claimed to have rung (cleared our sleep word) without ringing must not
    /// make the end of our sleep wait for good (it did with a shared eventfd:
    /// one open file for both).
    #[test]
    fn a_peer_that_makes_our_doorbell_blocking_cannot_hang_the_end_of_a_sleep() {
        let (side0, fds) = ShmStream::create(config()).unwrap();
        let kept = fds.doorbells[1].try_clone().unwrap(); // side 1's doorbell, as side 1 sleeps on it
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        // SAFETY: fcntl on an fd we hold; no memory is passed.
        assert_eq!(unsafe { libc::fcntl(kept.as_raw_fd(), libc::F_SETFL, 0) }, 0);
        side1.arm(ops::READ).unwrap();
        side0.map.word32(side1.own(SLEEPING)).store(0, Ordering::SeqCst); // "rang"
        let (done, ended) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let disarmed = side1.disarm().map_err(|err| err.to_string());
            done.send(disarmed).unwrap();
        });
        let disarmed =
            ended.recv_timeout(Duration::from_secs(5)).expect("the end of the sleep waited on the doorbell");
        disarmed.unwrap();
    }

    /// The doorbell we ring is the peer's: a peer that kept a copy of it as it
    /// handed it over, cleared that copy's `O_NONBLOCK` and filled the
    /// doorbell must not make our ring wait for good (it did with a shared
    /// eventfd: one open file for both).
    #[test]
    fn a_peer_that_fills_its_doorbell_cannot_hang_our_ring() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let kept = fds.doorbells[0].try_clone().unwrap(); // side 0's doorbell, as side 1 rings it
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        let set_flags = |flags: libc::c_int| {
            // SAFETY: fcntl on an fd we hold; no memory is passed.
            assert_eq!(unsafe { libc::fcntl(kept.as_raw_fd(), libc::F_SETFL, flags) }, 0);
        };
        set_flags(libc::O_NONBLOCK);
        let most = (u64::MAX - 1).to_ne_bytes();
        // SAFETY: writing a live 8-byte buffer, until the doorbell is full.
        while unsafe { libc::write(kept.as_raw_fd(), most.as_ptr().cast(), 8) } == 8 {}
        set_flags(0);
        side0.arm(ops::READ).unwrap(); // side 0 asks to be rung for data
        let (done, rang) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let written = side1.try_write(b"x");
            done.send(written.map_err(|err| err.to_string())).unwrap();
        });
        let written =
            rang.recv_timeout(Duration::from_secs(5)).expect("ringing the peer's full doorbell waited");
        assert_eq!(written.unwrap(), 1);
    }

    /// A peer that died asleep (its sleep word asks for a ring) has no read
    /// end of its doorbell left: our ring must still succeed, not fail with
    /// `EPIPE` (nor raise `SIGPIPE`, which ends a process that does not ignore it).
    #[test]
    fn ringing_a_peer_that_died_asleep_fails_nothing() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        side0.arm(ops::READ).unwrap();
        // Side 0's process dies: the kernel closes its fds, no close of the stream runs.
        // SAFETY: closing side 0's doorbell; `forget` below keeps it from being closed again.
        assert_eq!(unsafe { libc::close(side0.doorbell_fd()) }, 0);
        std::mem::forget(side0);
        assert_eq!(side1.try_write(b"x").unwrap(), 1);
    }

    #[test]
    fn blocking_reads_and_writes_wake_each_other() {
        let (mut side0, fds) = ShmStream::create(RingConfig::new(4096, 1000, 7).unwrap()).unwrap();
        let data = pattern(300_000, 3); // many times the ring: the writer must sleep for credit
        let expected = data.clone();
        let reader = thread::spawn(move || {
            let mut side1 = ShmStream::open(fds, 1).unwrap();
            let mut got = vec![0u8; expected.len()];
            side1.read_exact(&mut got, TIMEOUT).unwrap();
            assert!(got == expected, "the stream differs");
            let mut rest = [0u8; 16];
            assert_eq!(side1.read(&mut rest, TIMEOUT).unwrap(), 0, "end of stream after the writer closed");
        });
        side0.write_all(&data, TIMEOUT).unwrap();
        drop(side0);
        reader.join().unwrap();
    }

    #[test]
    fn a_silent_peer_makes_read_time_out() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let _side1 = ShmStream::open(fds, 1).unwrap();
        let mut buf = [0u8; 8];
        let err = side0.read(&mut buf, Some(Duration::from_millis(50))).unwrap_err();
        assert!(matches!(err, Error::TimedOut { op: "shm read", .. }), "{err}");
    }

    /// As over TCP: a closed peer takes one write (its kernel would answer
    /// it with a reset), one that reset takes none.
    #[test]
    fn a_closed_peer_takes_one_write_and_one_that_reset_none() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        drop(ShmStream::open(fds, 1).unwrap());
        assert_eq!(side0.try_write(b"xy").unwrap(), 2);
        assert!(matches!(side0.try_write(b"x"), Err(Error::Disconnected)));
        let mut buf = [0u8; 8];
        assert_eq!(side0.try_read(&mut buf).unwrap(), ReadOutcome::EndOfStream);

        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let side1 = ShmStream::open(fds, 1).unwrap();
        assert_eq!(side0.try_write(b"unread").unwrap(), 6);
        drop(side1);
        assert!(matches!(side0.try_write(b"x"), Err(Error::Disconnected)));
    }

    /// A peer closed while a selector still holds its stream takes writes
    /// until its ring is full, as a TCP socket that only shut its output
    /// down; its stream gone with them unread, it has reset.
    #[test]
    fn a_closed_peer_still_held_takes_writes_till_its_ring_is_full() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        side1.close();
        let chunk = [7u8; 4096];
        let mut taken = 0;
        while side0.try_write(&chunk).unwrap() > 0 {
            taken += 1;
            assert!(taken < 1000, "the ring never filled");
        }
        assert_eq!(side0.ready(ops::WRITE).unwrap(), 0, "a full ring to a held peer is not writable");
        drop(side1);
        assert_eq!(side0.ready(ops::WRITE).unwrap(), ops::WRITE);
        assert!(matches!(side0.try_write(b"x"), Err(Error::Disconnected)));
    }

    #[test]
    fn a_tail_beyond_the_ring_is_a_violation() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let side1 = ShmStream::open(fds, 1).unwrap();
        // Side 1 misbehaves: claims more data than its ring holds.
        side1.map.word64(side1.own(TAIL)).store(1 << 40, Ordering::SeqCst);
        let mut buf = [0u8; 8];
        match side0.try_read(&mut buf) {
            Err(Error::Violation(Violation::TailBeyondCapacity { .. })) => {}
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    /// shm's records carry no CRC (two passes over every byte, and nothing a
    /// torn write could need: see `RingConfig::without_crc`), while the
    /// reader's other rules still hold against the peer.
    #[test]
    fn records_carry_no_crc_and_a_forged_sequence_still_ends_the_stream() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        let region = fds.region.try_clone().unwrap();
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        let word = |at: usize| {
            let mut bytes = [0u8; 4];
            // SAFETY: reading into a live buffer from an fd we hold.
            let read =
                unsafe { libc::pread(region.as_raw_fd(), bytes.as_mut_ptr().cast(), 4, at as libc::off_t) };
            assert_eq!(read, 4);
            u32::from_le_bytes(bytes)
        };
        // Side 0 writes the ring at CONTROL_LEN; a record's check is its header's fifth word.
        assert_eq!(side0.try_write(b"hello").unwrap(), 5);
        assert_eq!(word(CONTROL_LEN + 16), 0, "the record carries a CRC");
        let mut buf = [0u8; 16];
        assert_eq!(side1.try_read(&mut buf).unwrap(), ReadOutcome::Data(5));
        assert_eq!(&buf[..5], b"hello");

        assert_eq!(side0.try_write(b"again").unwrap(), 5);
        let second_seq = CONTROL_LEN + crate::media::ring::record_len(5) + 4;
        assert_eq!(word(second_seq), 1);
        // SAFETY: writing a live buffer to an fd we hold: the peer forges the record.
        unsafe {
            assert_eq!(
                libc::pwrite(region.as_raw_fd(), [9u8, 0, 0, 0].as_ptr().cast(), 4, second_seq as i64),
                4
            )
        };
        match side1.try_read(&mut buf) {
            Err(Error::Violation(Violation::Sequence { seq: 9, expected: 1, .. })) => {}
            other => panic!("expected a sequence violation, got {other:?}"),
        }
    }

    /// A new memfd of `len` bytes, sealed against shrinking when `sealed`.
    fn memfd(len: usize, sealed: bool) -> OwnedFd {
        // SAFETY: a static name; a fresh fd or -1.
        let fd = unsafe { libc::memfd_create(c"test".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: fd is new and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sizing and sealing our own memfd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }, 0);
        if sealed {
            // SAFETY: as above.
            assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) }, 0);
        }
        fd
    }

    #[test]
    fn a_peer_cannot_shrink_the_region_under_our_mapping() {
        let (mut side0, fds) = ShmStream::create(config()).unwrap();
        // What a peer holding the region's fd would do to make our next access fault (SIGBUS).
        // SAFETY: ftruncate of an fd we hold.
        let shrunk = unsafe { libc::ftruncate(fds.region.as_raw_fd(), 0) } == 0;
        if shrunk {
            std::mem::forget(side0); // its close would touch the vanished pages
            panic!("the peer shrank the region");
        }
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        let mut side1 = ShmStream::open(fds, 1).unwrap();
        assert_eq!(side0.try_write(b"still here").unwrap(), 10);
        let mut buf = [0u8; 16];
        assert_eq!(side1.try_read(&mut buf).unwrap(), ReadOutcome::Data(10));
    }

    #[test]
    fn a_region_the_peer_could_shrink_is_refused() {
        let (_side0, fds) = ShmStream::create(config()).unwrap();
        // The same header and size in a memfd without the seal.
        let len = CONTROL_LEN + 2 * config().capacity();
        let unsealed = memfd(len, false);
        let mut header = [0u8; 64];
        // SAFETY: reading and writing live buffers at offset 0 of fds we hold.
        unsafe {
            assert_eq!(libc::pread(fds.region.as_raw_fd(), header.as_mut_ptr().cast(), 64, 0), 64);
            assert_eq!(libc::pwrite(unsealed.as_raw_fd(), header.as_ptr().cast(), 64, 0), 64);
        }
        let fds = ShmFds { region: unsealed, doorbells: fds.doorbells };
        let err = ShmStream::open(fds, 1).err().expect("an unsealed region opened");
        assert!(err.to_string().contains("not sealed against shrinking"), "{err}");
    }

    #[test]
    fn foreign_regions_are_refused() {
        let fds =
            ShmFds { region: memfd(8192, true), doorbells: [sys::pipe().unwrap().1, sys::pipe().unwrap().0] };
        let err = ShmStream::open(fds, 1).err().expect("a foreign region opened");
        assert!(err.to_string().contains("not an rdma-nio shm region"), "{err}");
    }
}
