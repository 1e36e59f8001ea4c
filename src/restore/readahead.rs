//! Fetching the next few stored blocks while the current one is decoded and written.
//!
//! A restore worker walks its chunk of a file in order, so it knows which objects it needs
//! next. Waiting for each read only when it is needed left the CPUs idle a fifth of the time
//! on the bench restore (iowait in /proc/stat); starting the next few reads ahead hides that
//! latency, for local files and object stores alike. Memory stays bounded by `window`
//! compressed objects per worker.

use std::collections::VecDeque;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Starts the task for one key.
type Starter<K, T> = Box<dyn Fn(&K) -> JoinHandle<T> + Send>;

/// Results of `start(key)` for a known sequence of keys, delivered in order, with at most
/// `window` started and not yet taken.
pub struct ReadAhead<K, T> {
    upcoming: std::vec::IntoIter<K>,
    in_flight: VecDeque<(K, JoinHandle<T>)>,
    window: usize,
    start: Starter<K, T>,
}

impl<K, T> ReadAhead<K, T> {
    pub fn new(
        keys: Vec<K>,
        window: usize,
        start: impl Fn(&K) -> JoinHandle<T> + Send + 'static,
    ) -> ReadAhead<K, T> {
        let mut ra = ReadAhead {
            upcoming: keys.into_iter(),
            in_flight: VecDeque::new(),
            window: window.max(1),
            start: Box::new(start),
        };
        ra.top_up();
        ra
    }

    fn top_up(&mut self) {
        while self.in_flight.len() < self.window {
            let Some(k) = self.upcoming.next() else { break };
            let h = (self.start)(&k);
            self.in_flight.push_back((k, h));
        }
    }

    /// The next key and its result, waiting for it on `rt` (call from a blocking thread);
    /// `None` once every key was taken. A task that panicked is reported as an error.
    pub fn next(&mut self, rt: &Handle) -> Option<(K, Result<T, tokio::task::JoinError>)> {
        let (k, h) = self.in_flight.pop_front()?;
        self.top_up();
        Some((k, rt.block_on(h)))
    }
}

impl<K, T> Drop for ReadAhead<K, T> {
    /// A worker that stops early (an error) does not leave reads running behind it.
    fn drop(&mut self) {
        for (_, h) in &self.in_flight {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Results come back in key order whatever order the tasks finish in, and no more than
    /// `window` are ever started ahead of what was taken.
    #[test]
    fn in_order_and_bounded() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let h = rt.handle().clone();
        let mut ra = ReadAhead::new((0..10u64).collect(), 3, move |&k| {
            s.fetch_add(1, Ordering::SeqCst);
            h.spawn(async move {
                // Later keys finish first.
                tokio::time::sleep(std::time::Duration::from_millis(10 - k)).await;
                k * 2
            })
        });
        assert_eq!(started.load(Ordering::SeqCst), 3);
        for k in 0..10u64 {
            let (key, r) = ra.next(rt.handle()).unwrap();
            assert_eq!((key, r.unwrap()), (k, k * 2));
            assert!(started.load(Ordering::SeqCst) <= (k as usize + 1 + 3).min(10));
        }
        assert!(ra.next(rt.handle()).is_none());
    }
}
