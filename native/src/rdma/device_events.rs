//! What a device reports on its own (`ibv_get_async_event`), read by one
//! thread per device: a port whose link went down, a queue pair or the whole
//! device failed. Often it is the only news of the failure a connection gets:
//! a writer's requests fail once their retries run out, but an idle reader
//! has nothing posted that could fail, and a queue pair on a shared receive
//! queue has no receives of its own to flush.
//!
//! So every endpoint's queue pair is watched (`watch`), and on such an event
//! the watcher moves the queue pairs concerned to the error state and posts
//! each a drain marker (`DRAIN_WR_ID`): a send that completes at once,
//! flushed, as the kernel's `ib_drain_qp` posts one. Its completion wakes the
//! data path wherever it waits (a blocking call, the selector), and the data
//! path fails the connection with the reason (`Endpoint::flushed`).
//!
//! The same thread keeps idle connections alive, as TCP keepalive does. A
//! peer process that dies disconnects as its kernel destroys its identifier,
//! which sends one disconnect request and does not retry it: lost, the
//! survivor would never hear of the death while it only waits to read. So
//! every `KEEPALIVE_PERIOD` the watcher probes each established queue pair on
//! which nothing completed since its last look: a signaled zero-length RDMA
//! WRITE (`PROBE_WR_ID`), which the peer's queue pair acknowledges without a
//! completion of its own. A gone queue pair acknowledges nothing: the probe
//! fails once the transport's retries run out (6 retries of the ACK timeout,
//! `endpoint::conn_param`), and the data path fails the connection
//! (`Endpoint::probe_completed`). A dead peer is noticed within about two
//! periods and the retries (in the Soft-RoCE VM, 18-19 s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdma_sys::ibv_qp;

use crate::error::Error;
use crate::rdma::verbs::{AsyncEventKind, Device, QueuePair, SendRequest};
use crate::sys::{self, Deadline};

/// The `wr_id` of the drain marker. No data path uses it for its own
/// requests (their ids carry small counts and slot numbers).
pub(crate) const DRAIN_WR_ID: u64 = u64::MAX - 1;
/// The `wr_id` of a keepalive probe (likewise no data path's).
pub(crate) const PROBE_WR_ID: u64 = u64::MAX - 2;
/// How often the watcher looks for connections that went quiet.
const KEEPALIVE_PERIOD: Duration = Duration::from_secs(5);

/// An endpoint's queue pair as the watcher sees it.
pub(crate) struct Watched {
    device: Device,
    port: u8,
    /// The queue pair until its owner destroys it (then null), behind a lock
    /// so that the watcher never touches one being destroyed.
    qp: Mutex<QpPtr>,
    /// Why the watcher failed the queue pair, if it did.
    failure: OnceLock<String>,
    /// Established and not disconnected: only such a queue pair is probed.
    established: AtomicBool,
    /// The data path took a completion in since the watcher last looked.
    heard: AtomicBool,
    /// A probe was posted whose completion the data path has not yet taken.
    probing: AtomicBool,
}

/// A queue pair pointer, moved between threads under `Watched::qp`'s lock.
struct QpPtr(*mut ibv_qp);

// SAFETY: verbs calls on a queue pair may come from any thread; the pointer is
// only used under the lock, while its owner has not destroyed the queue pair.
unsafe impl Send for QpPtr {}

impl Watched {
    /// Why the device failed the queue pair, if it did.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Whether the queue pair is connected: probed while it is.
    pub(crate) fn set_established(&self, established: bool) {
        self.established.store(established, Ordering::Release);
    }

    /// The data path took completions in: the connection is not idle.
    pub(crate) fn heard(&self) {
        self.heard.store(true, Ordering::Relaxed);
    }

    /// The data path took the probe's completion: another may follow.
    pub(crate) fn probe_completed(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// The owner is about to destroy the queue pair: never touch it again.
    pub(crate) fn forget(&self) {
        self.qp.lock().0 = std::ptr::null_mut();
    }

    /// Moves the queue pair to the error state and posts the drain marker,
    /// unless its owner destroyed it already.
    fn fail(&self, why: &str) {
        let qp = self.qp.lock();
        if qp.0.is_null() {
            return;
        }
        let _ = self.failure.set(why.to_owned());
        log::warn!("{why}: failing queue pair");
        // SAFETY: the queue pair is live: its owner forgets it (under this
        // lock) before destroying it.
        let queue_pair = unsafe { QueuePair::from_ptr(qp.0) };
        if let Err(err) = queue_pair.fail() {
            log::error!("{why}: {err}");
        }
        // The send queue has a slot set aside for the marker (`Endpoint::open`).
        if let Err(err) = queue_pair.post_send(&SendRequest::send(DRAIN_WR_ID).signaled(true)) {
            log::error!("{why}: posting the drain marker: {err}");
        }
    }

    /// Probes the queue pair if it is established, no probe of ours is in
    /// flight and nothing completed since the last look.
    fn probe_if_idle(&self) {
        if !self.established.load(Ordering::Acquire)
            || self.heard.swap(false, Ordering::Relaxed)
            || self.probing.load(Ordering::Acquire)
        {
            return;
        }
        let qp = self.qp.lock();
        if qp.0.is_null() {
            return;
        }
        self.probing.store(true, Ordering::Release);
        // SAFETY: as in `fail`.
        let queue_pair = unsafe { QueuePair::from_ptr(qp.0) };
        // The send queue has a slot set aside for it too.
        if let Err(err) = queue_pair.post_send(&SendRequest::empty_write(PROBE_WR_ID).signaled(true)) {
            // A queue pair disconnected meanwhile (its owner stops the probes next).
            log::debug!("keepalive probe: {err}");
            self.probing.store(false, Ordering::Release);
        }
    }
}

/// Every watched queue pair, and the devices that have a watcher thread.
struct Registry {
    watched: Vec<Weak<Watched>>,
    devices: Vec<Device>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { watched: Vec::new(), devices: Vec::new() });

/// Watches `qp`, on `port` of `device`, starting the device's watcher thread
/// with its first queue pair. The owner calls `Watched::forget` before it
/// destroys the queue pair.
pub(crate) fn watch(device: Device, port: u8, qp: *mut ibv_qp) -> Arc<Watched> {
    let watched = Arc::new(Watched {
        device,
        port,
        qp: Mutex::new(QpPtr(qp)),
        failure: OnceLock::new(),
        established: AtomicBool::new(false),
        heard: AtomicBool::new(false),
        probing: AtomicBool::new(false),
    });
    let mut registry = REGISTRY.lock();
    registry.watched.retain(|entry| entry.strong_count() > 0);
    registry.watched.push(Arc::downgrade(&watched));
    if !registry.devices.contains(&device) {
        let started = std::thread::Builder::new()
            .name(format!("rdmanio-{}-events", device.name()))
            .spawn(move || watch_device(device));
        match started {
            Ok(_) => registry.devices.push(device),
            // The connection still works; it only hears of a dead port later.
            Err(err) => log::error!("cannot start the event thread of {}: {err}", device.name()),
        }
    }
    watched
}

/// The watcher thread of `device`: for the life of the process, as the device
/// context is. It reads the device's events and probes idle connections.
fn watch_device(device: Device) {
    let mut next_probes = Instant::now() + KEEPALIVE_PERIOD;
    loop {
        if Instant::now() >= next_probes {
            probe_idle(device);
            next_probes = Instant::now() + KEEPALIVE_PERIOD;
        }
        let until_probes = next_probes.saturating_duration_since(Instant::now());
        let event = match sys::wait_readable(
            "device events",
            [device.async_fd()],
            Deadline::after(Some(until_probes)),
        ) {
            Ok(_) => device.next_async_event(),
            Err(Error::TimedOut { .. }) => continue,
            Err(err) => Err(err),
        };
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                log::error!("{}: {err}; no longer watching the device", device.name());
                REGISTRY.lock().devices.retain(|known| *known != device);
                return;
            }
        };
        let kind = event.kind();
        let name = event.name();
        log::debug!("{}: {name}", device.name());
        match kind {
            AsyncEventKind::PortDown(port) => fail_each(
                |watched| watched.device == device && watched.port == port,
                &format!("port {port} of RDMA device {} went down", device.name()),
            ),
            // Held unacknowledged (`event`) meanwhile: the queue pair cannot
            // be destroyed and its address reused under the comparison.
            AsyncEventKind::QueuePairFailed(qp) => fail_each(
                |watched| watched.qp.lock().0 == qp,
                &format!("RDMA device {} failed the queue pair ({name})", device.name()),
            ),
            AsyncEventKind::DeviceFatal => fail_each(
                |watched| watched.device == device,
                &format!("RDMA device {} failed ({name})", device.name()),
            ),
            AsyncEventKind::Other => {}
        }
        drop(event);
    }
}

/// Probes the idle established queue pairs of `device`.
fn probe_idle(device: Device) {
    let chosen: Vec<Arc<Watched>> = REGISTRY
        .lock()
        .watched
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|watched| watched.device == device)
        .collect();
    for watched in chosen {
        watched.probe_if_idle();
    }
}

/// Fails every live watched queue pair that `which` picks.
fn fail_each(which: impl Fn(&Watched) -> bool, why: &str) {
    let chosen: Vec<Arc<Watched>> =
        REGISTRY.lock().watched.iter().filter_map(Weak::upgrade).filter(|watched| which(watched)).collect();
    for watched in chosen {
        watched.fail(why);
    }
}
