//! Regions kept for the next shm connection between the same two processes.
//!
//! A new region costs an shm connect most of its time: the mapping, the
//! first touch of each page it uses, and above all the unmapping at close,
//! which flushes the TLB of every core that runs the process (an IPI each,
//! a VM exit under a hypervisor) and holds the process's mapping lock
//! against its other threads' page faults. So both sides keep a closed
//! connection's region, and the next connection between the two takes it:
//! - A client parks its region with the socket it handed it over on
//!   (`Parked`). That socket is connected to the listener's socket, the
//!   object, not its name: a handover sent on it reaches the listener the
//!   region was shared with, or fails once that listener closed, even if
//!   another took its port. So a region goes back only to the process that
//!   holds it already (and that could read it all along); a region made for
//!   one process is never shown to another. It is taken again once the
//!   listener released it: the liveness channel of its last connection says
//!   the listener's end closed, which its stream does after it let go of
//!   the mapping.
//! - A listener keeps its mapping by the region's file (`FileId`); the
//!   mapping holds the file, so no other file takes its inode meanwhile. A
//!   handover of the same file maps nothing. A region handed over while the
//!   listener still uses it (a client that sends one region twice) is
//!   mapped again, as any other.
//! - The doorbells go with the region: the client parks its pipes and hands
//!   the same ones over again; the listener keeps its own ends of them with
//!   the mapping, and takes them again when the pipes handed over are the
//!   ones it kept them for (else it opens the new ones, as for a new region).
//!   Each side first reads the rings left in its own.
//!
//! Each side keeps at most `KEPT` regions, none much longer than `IDLE`: a
//! thread that runs while anything is kept lets the old ones go, so a
//! process that stops connecting holds nothing after a while.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{const_mutex, Mutex};

use crate::media::ring::RingConfig;
use crate::media::shm::{Doorbells, Mapping, PipeIds};
use crate::sys::liveness;

/// How many regions each side keeps, at most.
const KEPT: usize = 16;
/// How long a region is kept unused.
const IDLE: Duration = Duration::from_secs(2);

/// A client's region between two connections to one listener.
pub(super) struct Parked {
    pub listener: SocketAddr,
    pub config: RingConfig,
    /// The socket the region went to the listener on, connected to it.
    pub link: UnixDatagram,
    /// The region's memfd, to hand over again, our mapping of it, and our doorbells.
    pub region: OwnedFd,
    pub map: Mapping,
    pub doorbells: Doorbells,
    /// Our end of the last connection's liveness channel: it signals once
    /// the listener's end closed.
    pub last_peer: OwnedFd,
}

/// A region's file, by its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    pub device: u64,
    pub inode: u64,
}

struct Kept<T> {
    what: T,
    since: Instant,
}

static PARKED: Mutex<Vec<Kept<Parked>>> = const_mutex(Vec::new());
/// A listener's doorbells kept with a region.
pub(super) struct KeptDoorbells {
    /// The listener's side of the region.
    pub side: usize,
    /// The pipes the client handed over, which the doorbells are ends of.
    pub pipes: PipeIds,
    pub doorbells: Doorbells,
}

static MAPPINGS: Mutex<Vec<Kept<(FileId, Mapping, KeptDoorbells)>>> = const_mutex(Vec::new());
/// Whether the thread that lets old regions go runs (`expire_while_kept`).
static EXPIRING: AtomicBool = AtomicBool::new(false);

/// Adds `what` to `kept`, making room; returns what goes, to be dropped
/// without the lock (an unmap is slow).
fn keep<T>(kept: &mut Vec<Kept<T>>, what: T) -> Vec<Kept<T>> {
    let mut gone = expire(kept);
    if kept.len() >= KEPT {
        gone.push(kept.remove(0)); // the oldest
    }
    kept.push(Kept { what, since: Instant::now() });
    if !EXPIRING.swap(true, Ordering::AcqRel) {
        let started =
            std::thread::Builder::new().name("rdma-nio shm regions".into()).spawn(expire_while_kept);
        if let Err(err) = started {
            // They still go as others are kept or taken.
            log::warn!("shm: no thread to let unused regions go: {err}");
            EXPIRING.store(false, Ordering::Release);
        }
    }
    gone
}

/// Lets regions kept longer than `IDLE` go, until none is kept.
fn expire_while_kept() {
    loop {
        std::thread::sleep(IDLE / 2);
        let parked = expire(&mut PARKED.lock());
        let mappings = expire(&mut MAPPINGS.lock());
        drop((parked, mappings));
        if PARKED.lock().is_empty() && MAPPINGS.lock().is_empty() {
            EXPIRING.store(false, Ordering::Release);
            // A region kept just now found the flag still set and started no thread.
            let kept_meanwhile = !PARKED.lock().is_empty() || !MAPPINGS.lock().is_empty();
            if !kept_meanwhile || EXPIRING.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }
}

/// Takes out what was kept longer than `IDLE`.
fn expire<T>(kept: &mut Vec<Kept<T>>) -> Vec<Kept<T>> {
    let now = Instant::now();
    let fresh = kept.iter().position(|k| now.duration_since(k.since) < IDLE).unwrap_or(kept.len());
    kept.drain(..fresh).collect()
}

/// Parks a client's region for the next connect to its listener.
pub(super) fn park(parked: Parked) {
    let gone = keep(&mut PARKED.lock(), parked);
    drop(gone);
}

/// A region parked for `listener` in rings of `config`'s shape that the
/// listener released, if there is one.
pub(super) fn take_parked(listener: SocketAddr, config: RingConfig) -> Option<Parked> {
    let config = config.without_crc();
    let mut parked = PARKED.lock();
    let gone = expire(&mut parked);
    let released = |p: &Parked| liveness::hung_up(p.last_peer.as_raw_fd()).unwrap_or(false);
    // The oldest first: the likeliest to be released (each look is a syscall).
    let found = parked
        .iter()
        .position(|k| k.what.listener == listener && k.what.config == config && released(&k.what))
        .map(|i| parked.remove(i).what);
    drop(parked);
    drop(gone);
    found
}

/// Keeps a listener's mapping of a region made by a peer, by its file, with its doorbells.
pub(super) fn keep_mapping(file: FileId, map: Mapping, doorbells: KeptDoorbells) {
    let gone = keep(&mut MAPPINGS.lock(), (file, map, doorbells));
    drop(gone);
}

/// The mapping kept for `file`, if there is one of `len` bytes, and its doorbells.
pub(super) fn take_mapping(file: FileId, len: usize) -> Option<(Mapping, KeptDoorbells)> {
    let mut kept = MAPPINGS.lock();
    let gone = expire(&mut kept);
    let found = kept.iter().position(|k| k.what.0 == file && k.what.1.len() == len).map(|i| {
        let (_, map, doorbells) = kept.remove(i).what;
        (map, doorbells)
    });
    drop(kept);
    drop(gone);
    found
}

/// Tests that count on what is kept take it, so that no other test's
/// regions crowd theirs out.
#[cfg(test)]
pub(super) static SERIAL: Mutex<()> = const_mutex(());

/// How many regions are kept (parked, mapped), and whether the thread that
/// lets them go runs.
#[cfg(test)]
pub(super) fn kept() -> (usize, usize, bool) {
    (PARKED.lock().len(), MAPPINGS.lock().len(), EXPIRING.load(Ordering::Acquire))
}
