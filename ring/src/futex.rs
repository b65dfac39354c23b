//! Shared (inter-process) futex wait and wake on a 32-bit word in the ring
//! header.
//!
//! Never `FUTEX_PRIVATE_FLAG`: the two sides are different processes, and a
//! private futex keys on the virtual address, so wake-ups would be lost.
//! Under loom the futex is modelled by a mutex and a condition variable with
//! the same contract (compare-and-sleep atomically with respect to wake), and
//! timeouts are ignored so that a lost wake-up shows up as a deadlock.

use crate::sync::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, for at most `timeout`. Returns on a
/// wake, a changed value, a signal or the timeout: callers always re-check.
#[cfg(not(any(loom, miri)))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    use rustix::thread::futex;
    let timeout = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // Every outcome (woken, EAGAIN for a changed value, EINTR, ETIMEDOUT) means
    // "look again"; the caller's loop does exactly that.
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&timeout));
}

/// Wakes every thread sleeping on `word`, in any process that maps it.
#[cfg(not(any(loom, miri)))]
pub(crate) fn wake(word: &AtomicU32) {
    use rustix::thread::futex;
    // A failure here (EFAULT is impossible for a live reference) cannot be
    // acted on; the waiter's bounded sleep is the backstop.
    let _ = futex::wake(word, futex::Flags::empty(), u32::MAX);
}

#[cfg(loom)]
mod model {
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        pub(super) static ref PARKING: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }
}

#[cfg(loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, _timeout: Duration) {
    use crate::sync::Ordering;
    let (lock, condvar) = &*model::PARKING;
    let guard = lock.lock().unwrap();
    if word.load(Ordering::SeqCst) == expected {
        drop(condvar.wait(guard).unwrap());
    }
}

#[cfg(loom)]
pub(crate) fn wake(_word: &AtomicU32) {
    let (lock, condvar) = &*model::PARKING;
    let _guard = lock.lock().unwrap();
    condvar.notify_all();
}

// Under miri: rustix's libc backend passes the atomic to the variadic
// `syscall(SYS_futex, ..)`, which miri rejects. Every wait in the ring is
// bounded and followed by a re-check (a wake-up is only a hint), so a short
// sleep and a no-op wake keep the in-process tests correct under miri; the
// real futex is exercised by the multi-process tests and loom's model.
#[cfg(all(miri, not(loom)))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    use crate::sync::Ordering;
    if word.load(Ordering::Acquire) == expected {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
    }
}

#[cfg(all(miri, not(loom)))]
pub(crate) fn wake(_word: &AtomicU32) {}
