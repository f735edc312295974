//! A listener's receive pool for its two-sided connections (see `send_stream`):
//! one shared receive queue over one registered region of slots, so what a
//! connection costs the listener is the few slots it is promised, not
//! buffers of its own.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::media::send_stream::SendOptions;
use crate::rdma::verbs::{Access, Device, MemoryRegion, ProtectionDomain, SharedReceiveQueue};

/// A listener's receive slots for all its two-sided connections: one shared
/// receive queue over one registered region, and the domain they all share.
pub(crate) struct ReceivePool {
    // Drop order: the SRQ, then its memory (each holds the domain).
    srq: SharedReceiveQueue,
    slots: MemoryRegion,
    /// Where the slots start, for reads that need no `&mut` of the region.
    base: *const u8,
    pub(crate) slot_len: usize,
    device: Device,
    /// Slots not promised to any connection.
    unreserved: Mutex<usize>,
}

// SAFETY: the SRQ is a thread-safe verbs object; a slot's bytes are read only
// by the stream whose completion named it, between that completion and the
// slot's repost, so no two threads touch one slot.
unsafe impl Send for ReceivePool {}
unsafe impl Sync for ReceivePool {}

impl ReceivePool {
    /// Registers `options.pool_slots` slots on `device` and posts them all.
    pub(crate) fn new(device: Device, options: &SendOptions) -> Result<ReceivePool> {
        options.check()?;
        let pd = Arc::new(ProtectionDomain::new(device)?);
        let slots = MemoryRegion::new(&pd, options.pool_slots * options.slot_len, Access::LocalWrite)?;
        let srq = SharedReceiveQueue::new(&pd, options.pool_slots as u32)?;
        let pool = ReceivePool {
            base: slots.bytes().as_ptr(),
            srq,
            slots,
            slot_len: options.slot_len,
            device,
            unreserved: Mutex::new(options.pool_slots),
        };
        for slot in 0..options.pool_slots {
            pool.repost(slot as u32)?;
        }
        log::debug!("receive pool: {} slots of {} bytes", options.pool_slots, options.slot_len);
        Ok(pool)
    }

    /// Whether connections from `device` can use this pool.
    pub(crate) fn serves(&self, device: Device) -> bool {
        self.device == device
    }

    /// The shared receive queue the connections' queue pairs take receives from.
    pub(crate) fn queue(&self) -> &SharedReceiveQueue {
        &self.srq
    }

    /// Gives slot `slot` back to the shared receive queue.
    pub(crate) fn repost(&self, slot: u32) -> Result<()> {
        let at = slot as usize * self.slot_len;
        self.srq.post(u64::from(slot), &self.slots, at, self.slot_len)
    }

    /// The first `len` bytes of slot `slot`, valid from the completion that
    /// named it to its repost, during which the caller owns the slot.
    pub(crate) fn slot(&self, slot: u32, len: usize) -> &[u8] {
        assert!((slot as usize + 1) * self.slot_len <= self.slots.bytes().len() && len <= self.slot_len);
        // SAFETY: in bounds (checked); the device wrote the slot before its
        // completion and leaves it alone until the repost.
        unsafe { std::slice::from_raw_parts(self.base.add(slot as usize * self.slot_len), len) }
    }

    /// Promises `count` slots to a connection, or refuses when the pool is spent.
    pub(crate) fn reserve(&self, count: usize) -> Result<()> {
        let mut unreserved = self.unreserved.lock();
        if *unreserved < count {
            return Err(Error::InvalidArgument(format!(
                "the listener's receive pool is spent ({} of its {} slots promised): raise SendOptions::pool_slots \
                 (-Drdmanio.sendPoolSlots in Java)",
                self.slots.bytes().len() / self.slot_len - *unreserved,
                self.slots.bytes().len() / self.slot_len
            )));
        }
        *unreserved -= count;
        Ok(())
    }

    pub(crate) fn release(&self, count: usize) {
        *self.unreserved.lock() += count;
    }
}
