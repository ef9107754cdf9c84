//! The timer hyper arms on every connection of the edge (the 10 s allowed for a request's
//! head), kept coarse: a deadline is a number in the sleep, and one thread looks every
//! [`TICK`] for the ones that passed. Re-arming it for each kept-alive request costs two
//! atomic stores — with tokio's timer each re-arm could wake the worker's event loop (a
//! system call and an extra turn of the loop per request).

use futures_util::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How often passed deadlines are looked for: a timeout fires up to this late.
pub const TICK: Duration = Duration::from_millis(250);

/// A deadline's value once it has fired.
const FIRED: u64 = u64::MAX;

/// Milliseconds since the first use of the timer, rounded up: deadlines fit in an atomic,
/// and none fires early.
fn millis(at: Instant) -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    at.saturating_duration_since(*EPOCH)
        .as_nanos()
        .div_ceil(1_000_000) as u64
}

struct Armed {
    deadline: AtomicU64,
    waker: AtomicWaker,
}

/// Every sleep alive, looked at by the ticking thread (started with the first sleep).
static ARMED: LazyLock<Mutex<Vec<Weak<Armed>>>> = LazyLock::new(|| {
    let spawned = std::thread::Builder::new()
        .name("edge-timer".into())
        .spawn(tick);
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the edge's timeout thread did not start; request heads have no deadline");
    }
    Mutex::new(Vec::new())
});

fn tick() {
    loop {
        std::thread::sleep(TICK);
        let now = millis(Instant::now());
        let mut due = Vec::new();
        if let Ok(mut armed) = ARMED.lock() {
            armed.retain(|weak| {
                let Some(a) = weak.upgrade() else {
                    return false;
                };
                let deadline = a.deadline.load(Ordering::Acquire);
                if deadline <= now
                    && a.deadline
                        .compare_exchange(deadline, FIRED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    due.push(a);
                }
                true
            });
        }
        // Woken outside the lock: a woken task may arm another sleep at once.
        for a in due {
            a.waker.wake();
        }
    }
}

/// hyper's [`Timer`] over the ticking thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseTimer;

/// A sleep of [`CoarseTimer`].
pub struct CoarseSleep(Arc<Armed>);

impl Sleep for CoarseSleep {}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.deadline.load(Ordering::Acquire) == FIRED {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        // Fired between the look and the registration: the wake may have gone to the
        // previous waker.
        if self.0.deadline.load(Ordering::Acquire) == FIRED {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let armed = Arc::new(Armed {
            deadline: AtomicU64::new(millis(deadline)),
            waker: AtomicWaker::new(),
        });
        if let Ok(mut all) = ARMED.lock() {
            all.push(Arc::downgrade(&armed));
        }
        Box::pin(CoarseSleep(armed))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(s) => s.0.deadline.store(millis(new_deadline), Ordering::Release),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_sleeps() -> usize {
        ARMED
            .lock()
            .map(|a| a.iter().filter(|w| w.strong_count() == 0).count())
            .unwrap_or(usize::MAX)
    }

    #[tokio::test]
    async fn a_sleep_ends_at_its_deadline_a_reset_moves_it_and_a_dropped_one_is_forgotten() {
        let t = CoarseTimer;
        let started = Instant::now();
        t.sleep(Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));

        // Re-armed further out before it fired: it ends at the new deadline, not the old.
        let mut s = t.sleep(Duration::from_millis(50));
        let started = Instant::now();
        t.reset(&mut s, Instant::now() + Duration::from_millis(600));
        s.await;
        assert!(started.elapsed() >= Duration::from_millis(600));

        // Dropped long before its deadline (nothing waits for it): the ticking thread lets
        // go of it.
        drop(t.sleep_until(Instant::now() + Duration::from_secs(3600)));
        std::thread::sleep(TICK * 3);
        assert_eq!(dead_sleeps(), 0);
    }
}
