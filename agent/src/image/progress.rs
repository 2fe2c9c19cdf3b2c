//! How far a pull got, for whoever waits on it (the CLI, through the
//! coordinator): bytes and layers fetched, then layers unpacked. Reports
//! are at most every `EVERY` apart within a phase; a new phase, a finished
//! blob and the end are always reported.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one report this often while bytes flow.
const EVERY: Duration = Duration::from_millis(250);

/// A pull's state, as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pulling {
    /// "fetching" or "unpacking".
    pub phase: &'static str,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub done_layers: u32,
    pub total_layers: u32,
}

/// Where a pull reports to.
pub type OnProgress = Arc<dyn Fn(Pulling) + Send + Sync>;

/// Counts one pull's progress and reports it, rate-limited.
pub struct Tracker {
    on: Option<OnProgress>,
    total_bytes: u64,
    total_layers: u32,
    done_bytes: AtomicU64,
    done_layers: AtomicU32,
    last: Mutex<Option<Instant>>,
}

impl Tracker {
    /// A pull of `total_layers` blobs of `total_bytes` together.
    pub fn new(on: Option<OnProgress>, total_bytes: u64, total_layers: u32) -> Self {
        Self {
            on,
            total_bytes,
            total_layers,
            done_bytes: AtomicU64::new(0),
            done_layers: AtomicU32::new(0),
            last: Mutex::new(None),
        }
    }

    /// `n` more bytes arrived.
    pub fn bytes(&self, n: u64) {
        self.done_bytes.fetch_add(n, Ordering::Relaxed);
        self.report("fetching", false);
    }

    /// A blob is complete (fetched, or there already with `already_here`
    /// bytes); a layer's counts among the layers, the config's does not.
    pub fn blob_done(&self, layer: bool, already_here: Option<u64>) {
        if let Some(b) = already_here {
            self.done_bytes.fetch_add(b, Ordering::Relaxed);
        }
        if layer {
            self.done_layers.fetch_add(1, Ordering::Relaxed);
        }
        self.report("fetching", layer);
    }

    /// Unpacking layer `i` (from 0) starts; `i == total` is the end.
    pub fn unpacking(&self, i: u32) {
        self.done_layers.store(i, Ordering::Relaxed);
        self.report("unpacking", true);
    }

    fn report(&self, phase: &'static str, always: bool) {
        let Some(on) = &self.on else { return };
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if !always && last.is_some_and(|t| now.duration_since(t) < EVERY) {
                return;
            }
            *last = Some(now);
        }
        on(Pulling {
            phase,
            done_bytes: self
                .done_bytes
                .load(Ordering::Relaxed)
                .min(self.total_bytes),
            total_bytes: self.total_bytes,
            done_layers: self.done_layers.load(Ordering::Relaxed),
            total_layers: self.total_layers,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_rate_limited_completions_are_not() {
        let seen: Arc<Mutex<Vec<Pulling>>> = Arc::default();
        let s = seen.clone();
        let t = Tracker::new(Some(Arc::new(move |p| s.lock().unwrap().push(p))), 100, 2);
        t.bytes(10);
        t.bytes(10); // within EVERY of the first: not reported
        t.blob_done(true, None);
        t.blob_done(true, Some(80));
        t.unpacking(0);
        let seen = seen.lock().unwrap();
        let got: Vec<(&str, u64, u32)> = seen
            .iter()
            .map(|p| (p.phase, p.done_bytes, p.done_layers))
            .collect();
        assert_eq!(
            got,
            [
                ("fetching", 10, 0),
                ("fetching", 20, 1),
                ("fetching", 100, 2),
                ("unpacking", 100, 0)
            ]
        );
        assert!(seen
            .iter()
            .all(|p| p.total_bytes == 100 && p.total_layers == 2));
        // Nobody listening: nothing to do.
        Tracker::new(None, 1, 1).bytes(1);
    }
}
