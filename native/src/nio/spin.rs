//! When a waiter should spin before it sleeps, and when spinning would only
//! take a core that someone else needs.
//!
//! A selector or a blocking operation that finds nothing ready may poll
//! shared memory for a while before it sleeps: an answer that comes within
//! that time costs no syscall and no wake-up. But a spin that runs out has
//! burnt its whole length and sleeps anyway, and on a host whose cores are all
//! taken it burns the very core the peer needs to answer (a Hybster cluster,
//! four JVMs on two cores, took twice the JDK's time per request with a fixed
//! 50 us spin). So an adaptive
//! waiter spins only while spinning pays, as Aeron's backoff and HotSpot's
//! adaptive spinning do:
//!
//! - it learns how often a spinning wait ends within the spin and spins only
//!   while most do; when they stop doing so it rests from spinning for a
//!   number of waits that doubles with every try that fails again;
//! - it does not spin while more threads are runnable than there are cores
//!   (`/proc/loadavg`, sampled by the process at most every `PRESSURE_EVERY`
//!   and averaged).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::sys;

/// How often the process looks at the host's runnable threads.
const PRESSURE_EVERY: Duration = Duration::from_millis(2);
/// Each sample of them moves their average by 1/`PRESSURE_SMOOTHING` of the difference.
const PRESSURE_SMOOTHING: u64 = 4;
/// The share of recent waits that ended within the spin's length, in 1/`WHOLE`.
const WHOLE: u32 = 1024;
/// Each wait moves the share by 1/`SMOOTHING` of the difference.
const SMOOTHING: u32 = 8;

/// The spin of an adaptive waiter: at most `max`, while spinning pays.
#[derive(Debug)]
pub(crate) struct AdaptiveSpin {
    max: Duration,
    /// The recent share of spinning waits that ended within their spin
    /// (starts whole: the first waits spin, and teach).
    within: u32,
    /// While not spinning: waits left before it tries a spin again.
    resting: u32,
    /// How many waits the next rest lasts: doubles with each spin that
    /// fails again, back to `FIRST_REST` once spinning pays.
    next_rest: u32,
}

/// Waits without a spin after spinning stopped paying, at first.
const FIRST_REST: u32 = 8;
/// At most: a host that stays loaded costs a try (two spins) per this many
/// waits; a JVM warming up (its compiler threads busy beside two spinning
/// peers) gets back to spinning within as many.
const LONGEST_REST: u32 = 64;

impl AdaptiveSpin {
    pub(crate) fn new(max: Duration) -> AdaptiveSpin {
        // The load sample's file opens with the first socket or selector (no
        // syscall after that), not at the first sample amid a program's work.
        let _ = sys::load_file();
        AdaptiveSpin { max, within: WHOLE, resting: 0, next_rest: FIRST_REST }
    }

    /// How long the wait about to start (`now`) may spin: `max` while most waits
    /// end within it and the host's cores are not oversubscribed, else zero.
    pub(crate) fn budget(&self, now: Instant) -> Duration {
        if self.max.is_zero() || self.resting > 0 || cores_oversubscribed(now) {
            Duration::ZERO
        } else {
            self.max
        }
    }

    /// A wait that was allowed to spin `budget` ended after `waited`, because
    /// something became ready (`found`) or with nothing (its timeout).
    ///
    /// Only waits that spun teach: a sleeper answered soon says nothing of a
    /// spinner, whose spin may be what kept the peer from answering.
    pub(crate) fn waited(&mut self, budget: Duration, waited: Duration, found: bool) {
        if budget.is_zero() {
            self.resting = self.resting.saturating_sub(1);
            return;
        }
        if !found && waited < budget {
            return; // a short timeout: says nothing of the peer
        }
        let target = if found && waited <= budget { WHOLE } else { 0 };
        self.within = self.within - self.within / SMOOTHING + target / SMOOTHING;
        if 8 * self.within >= 7 * WHOLE {
            self.next_rest = FIRST_REST;
        } else if 4 * self.within < WHOLE {
            // Three in four spins ran out: rest, then try again with a
            // little credit (two more that run out end the try).
            self.resting = self.next_rest;
            self.next_rest = (2 * self.next_rest).min(LONGEST_REST);
            self.within = WHOLE / 4 + WHOLE / 16;
        }
    }
}

/// Whether more threads are runnable on the host than the process has cores,
/// on average over the last few samples: a spinner would then keep someone
/// off a core. Sampled at most every `PRESSURE_EVERY` by whichever thread
/// asks first. `now` is the caller's reading of the clock (see `Deadline::after_from`).
pub(crate) fn cores_oversubscribed(now: Instant) -> bool {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static CORES: OnceLock<u32> = OnceLock::new();
    static SAMPLED_AT_MICROS: AtomicU64 = AtomicU64::new(0);
    /// The average of the samples, in 1/`WHOLE` of a thread.
    static RUNNABLE: AtomicU64 = AtomicU64::new(0);
    static OVERSUBSCRIBED: AtomicBool = AtomicBool::new(false);
    let epoch = *EPOCH.get_or_init(|| now);
    let now = now.saturating_duration_since(epoch).as_micros() as u64 + 1;
    let last = SAMPLED_AT_MICROS.load(Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= PRESSURE_EVERY.as_micros() as u64)
        && SAMPLED_AT_MICROS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        // Unknown (no /proc): as if idle, spinning as configured.
        let sample = u64::from(sys::runnable_threads().unwrap_or(0)) * u64::from(WHOLE);
        let average = RUNNABLE.load(Ordering::Relaxed);
        let average = average - average / PRESSURE_SMOOTHING + sample / PRESSURE_SMOOTHING;
        RUNNABLE.store(average, Ordering::Relaxed);
        // Half a thread over on average: most samples saw someone waiting
        // for a core (one sample, a thread that ran for a moment, does not
        // stop the spin).
        OVERSUBSCRIBED.store(2 * average > (2 * u64::from(cores) + 1) * u64::from(WHOLE), Ordering::Relaxed);
    }
    OVERSUBSCRIBED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    /// Whether `spin` would spin on an idle host.
    fn spins(spin: &AdaptiveSpin) -> bool {
        spin.resting == 0
    }

    /// One wait of `spin` that ended after `waited` micros, found.
    fn wait(spin: &mut AdaptiveSpin, waited: u64) {
        let budget = if spins(spin) { MAX } else { Duration::ZERO };
        spin.waited(budget, Duration::from_micros(waited), true);
    }

    #[test]
    fn spins_that_run_out_stop_spinning_for_longer_each_time() {
        let mut spin = AdaptiveSpin::new(MAX);
        assert!(spins(&spin), "a new waiter spins");
        let (mut rests, mut spun) = (Vec::new(), 0);
        for _ in 0..1000 {
            let was_spinning = spins(&spin);
            wait(&mut spin, 400);
            if was_spinning {
                spun += 1;
                if !spins(&spin) {
                    rests.push(spin.resting);
                }
            }
        }
        assert_eq!(rests[..5], [8, 16, 32, 64, 64], "each failed try rests twice as long, up to a limit");
        assert!(spun < 60, "a loaded peer still saw {spun} spins of 1000 waits");
    }

    #[test]
    fn spinning_comes_back_when_answers_are_fast_again() {
        let mut spin = AdaptiveSpin::new(MAX);
        for _ in 0..200 {
            wait(&mut spin, 400);
        }
        for _ in 0..LONGEST_REST + 10 {
            wait(&mut spin, 3);
        }
        assert!(spins(&spin), "fast answers: it spins again");
        assert_eq!(spin.next_rest, FIRST_REST, "and a later slow spell rests briefly first");
    }

    #[test]
    fn one_slow_answer_among_fast_ones_keeps_the_spin() {
        let mut spin = AdaptiveSpin::new(MAX);
        for round in 0..1000 {
            wait(&mut spin, if round % 4 == 0 { 1000 } else { 3 });
            assert!(spins(&spin), "stopped at wait {round}");
        }
    }

    #[test]
    fn short_timeouts_teach_nothing_and_long_empty_waits_count_against() {
        let mut spin = AdaptiveSpin::new(MAX);
        for _ in 0..50 {
            spin.waited(MAX, Duration::from_micros(10), false);
        }
        assert_eq!(spin.within, WHOLE);
        for _ in 0..20 {
            spin.waited(MAX, Duration::from_millis(1), false);
        }
        assert!(!spins(&spin));
    }

    #[test]
    fn a_zero_spin_never_spins() {
        assert_eq!(AdaptiveSpin::new(Duration::ZERO).budget(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn pressure_is_sampled_from_this_host() {
        assert!(sys::runnable_threads().unwrap() >= 1, "this test's thread runs");
    }
}
