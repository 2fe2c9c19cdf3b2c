//! Values taken once before a deadline, kept in this coordinator's memory:
//! sign-in links, OIDC logins under way and the CLI's one-time codes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Key → (value, deadline), at most `max` of them.
#[derive(Debug)]
pub struct OneTime<V> {
    m: Arc<Mutex<HashMap<String, (V, Instant)>>>,
    max: usize,
}

impl<V> Clone for OneTime<V> {
    fn clone(&self) -> Self {
        Self {
            m: self.m.clone(),
            max: self.max,
        }
    }
}

impl<V> OneTime<V> {
    pub fn new(max: usize) -> Self {
        Self {
            m: Arc::default(),
            max,
        }
    }

    /// Keeps `v` under `key` until `until`; the expired go first, then, past
    /// `max`, the one nearest its deadline.
    pub fn put(&self, key: String, v: V, until: Instant, now: Instant) {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, u)| *u > now);
        if m.len() >= self.max {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(key, (v, until));
    }

    /// The value under `key` if its deadline has not passed; each is taken
    /// once (an expired one is dropped too).
    pub fn take(&self, key: &str, now: Instant) -> Option<V> {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        match m.remove(key) {
            Some((v, until)) if until > now => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_value_is_taken_once_before_its_deadline_and_the_oldest_go_past_max() {
        let now = Instant::now();
        let later = |s| now + Duration::from_secs(s);
        let o = OneTime::new(2);
        o.put("a".into(), 1, later(10), now);
        o.put("b".into(), 2, later(20), now);
        o.put("c".into(), 3, later(30), now);
        assert_eq!(o.take("a", now), None, "the oldest went past max");
        assert_eq!(o.take("b", now), Some(2));
        assert_eq!(o.take("b", now), None, "taken once");
        assert_eq!(o.take("c", later(31)), None, "expired");
    }
}
