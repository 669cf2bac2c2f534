//! The slowloris guard without a timer per request. hyper asks its timer for a deadline each
//! time it starts reading a request head (idle keep-alive waits included); tokio's timer
//! would insert an entry into its wheel and take it out again for every request. Here each
//! connection has one [`Alarm`] (a deadline and a waker), arming it is two stores, and one
//! task looks at every alarm once a second: a head is cut off 10 to 11 s after it began.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the alarms are looked at (the guard's resolution).
const TICK: Duration = Duration::from_secs(1);
/// A deadline that never comes: the alarm is off.
const OFF: u64 = u64::MAX;

/// Milliseconds on this process's clock.
fn millis(at: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(start).as_millis()).unwrap_or(OFF - 1)
}

/// One connection's deadline, and who to wake when it passes.
#[derive(Default)]
struct Alarm {
    deadline: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

/// Every connection's alarm; the ticker rings those past their deadline.
#[derive(Default)]
pub struct Alarms {
    list: Mutex<Vec<Weak<Alarm>>>,
    /// Set at shutdown: connections finish what they answer and close.
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Alarms {
    pub fn new() -> Arc<Alarms> {
        Arc::new(Alarms::default())
    }

    /// A timer for one connection (hand it to hyper's builder).
    pub fn timer(&self) -> HeadTimer {
        let alarm = Arc::new(Alarm { deadline: AtomicU64::new(OFF), waker: Mutex::new(None) });
        lock(&self.list).push(Arc::downgrade(&alarm));
        HeadTimer { alarm }
    }

    /// Whether the daemon is shutting down.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Acquire)
    }

    /// Shutdown: every connection is woken to see `stopping` (an idle one closes at once).
    pub fn stop(&self) {
        self.stopping.store(true, Release);
        self.ring_due(OFF);
    }

    /// Wakes the connections whose deadline passed and forgets closed ones; forever.
    pub async fn ring(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.ring_due(millis(Instant::now()));
        }
    }

    /// One look at every alarm at time `now` (ms); returns how many were rung.
    fn ring_due(&self, now: u64) -> usize {
        let mut due = Vec::new();
        lock(&self.list).retain(|weak| {
            let Some(alarm) = weak.upgrade() else { return false };
            if alarm.deadline.load(Acquire) <= now {
                due.push(alarm);
            }
            true
        });
        // Woken outside the list's lock: a woken connection may make a new timer.
        for alarm in &due {
            if let Some(w) = lock(&alarm.waker).take() {
                w.wake();
            }
        }
        due.len()
    }
}

/// hyper's timer for one connection: every sleep it makes is that connection's alarm.
pub struct HeadTimer {
    alarm: Arc<Alarm>,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep { alarm: Arc::clone(&self.alarm), deadline: millis(deadline) })
    }
}

/// A deadline hyper waits on; it arms the connection's alarm while it is waited on.
struct HeadSleep {
    alarm: Arc<Alarm>,
    deadline: u64,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if millis(Instant::now()) >= self.deadline {
            return Poll::Ready(());
        }
        {
            let mut waker = lock(&self.alarm.waker);
            match &mut *waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
        }
        self.alarm.deadline.store(self.deadline, Release);
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        // Only the sleep that armed the alarm turns it off.
        let _ = self.alarm.deadline.compare_exchange(self.deadline, OFF, AcqRel, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn an_armed_deadline_rings_once_past_it_and_a_dropped_one_never() {
        let alarms = Alarms::new();
        let timer = alarms.timer();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let now = Instant::now();
        let mut sleep = timer.sleep_until(now + Duration::from_secs(10));
        assert_eq!(sleep.as_mut().poll(&mut cx), Poll::Pending);
        let at = millis(now);
        assert_eq!(alarms.ring_due(at + 5_000), 0, "not yet");
        assert_eq!(alarms.ring_due(at + 10_001), 1);
        assert_eq!(count.0.load(SeqCst), 1, "woken");
        drop(sleep);
        assert_eq!(alarms.ring_due(at + 20_000), 0, "a dropped sleep turns its alarm off");
        // An expired deadline is ready at once.
        let mut past = timer.sleep_until(now);
        assert_eq!(past.as_mut().poll(&mut cx), Poll::Ready(()));
        drop(timer);
        drop(past);
        assert!(lock(&alarms.list).iter().any(|w| w.upgrade().is_none()));
        alarms.ring_due(at);
        assert!(lock(&alarms.list).is_empty(), "closed connections are forgotten");
    }
}
