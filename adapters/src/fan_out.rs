//! One waker for two tasks: a connection has one registration with the
//! reactor, and tokio's `AsyncFd` remembers only the waker of the last task
//! that polled it. An adapter that one task reads while another writes
//! (`tokio::io::split`, `StreamExt::split`) would lose the first task's
//! wake-up. So the adapter polls the connection with a waker that wakes
//! both the reading and the writing task; each re-checks its own condition
//! (a wake-up is a hint), so the extra wake costs one poll.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// Which task a waker belongs to.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    /// The task waiting for a frame.
    Recv = 0,
    /// The task waiting for room.
    Send = 1,
}

/// The wakers of the reading and the writing task.
#[derive(Default)]
struct Slots {
    wakers: Mutex<[Option<Waker>; 2]>,
}

impl Wake for Slots {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let [recv, send] = {
            let mut slots = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            [slots[0].take(), slots[1].take()]
        };
        match (recv, send) {
            // One task reading and writing (tarpc's dispatch, a stream not
            // split): woken once.
            (Some(recv), Some(send)) if recv.will_wake(&send) => recv.wake(),
            (recv, send) => {
                for waker in [recv, send].into_iter().flatten() {
                    waker.wake();
                }
            }
        }
    }
}

/// A waker that wakes whichever tasks last waited in either direction.
pub(crate) struct FanOut {
    slots: Arc<Slots>,
    waker: Waker,
}

impl FanOut {
    pub(crate) fn new() -> FanOut {
        let slots = Arc::new(Slots::default());
        let waker = Waker::from(Arc::clone(&slots));
        FanOut { slots, waker }
    }

    /// Records `waker` as the task waiting in `direction`, and returns the
    /// waker to poll the connection with.
    pub(crate) fn register(&self, direction: Direction, waker: &Waker) -> &Waker {
        let mut slots = self.slots.wakers.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut slots[direction as usize];
        match slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        &self.waker
    }
}
