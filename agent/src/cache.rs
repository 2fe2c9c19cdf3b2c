//! The node's cache of prebuild layers under a disk budget, pure: which
//! layers go when the cache is over it. The least recently used go first;
//! one a workspace uses never goes.

/// A cached layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub bytes: u64,
    /// Unix milliseconds it was last mounted (or made).
    pub last_used_ms: i64,
    /// A workspace on the node uses it.
    pub in_use: bool,
}

/// The keys to remove so that what is left fits in `budget`, least
/// recently used first, never one in use (so what is left may still be
/// over the budget when the layers in use are).
pub fn evict(entries: &[Entry], budget: u64) -> Vec<String> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut idle: Vec<&Entry> = entries.iter().filter(|e| !e.in_use).collect();
    idle.sort_by(|a, b| (a.last_used_ms, &a.key).cmp(&(b.last_used_ms, &b.key)));
    let mut out = Vec::new();
    for e in idle {
        if total <= budget {
            break;
        }
        total -= e.bytes;
        out.push(e.key.clone());
    }
    out
}

/// The budget when none is configured: a quarter of the file system.
pub fn default_budget(fs_bytes: u64) -> u64 {
    fs_bytes / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, bytes: u64, last: i64, in_use: bool) -> Entry {
        Entry {
            key: key.into(),
            bytes,
            last_used_ms: last,
            in_use,
        }
    }

    #[test]
    fn least_recently_used_idle_layers_go_until_the_rest_fits() {
        let cache = [
            e("old", 40, 1, false),
            e("used", 50, 0, true),
            e("mid", 30, 5, false),
            e("new", 20, 9, false),
        ];
        // (budget, removed)
        let table: [(u64, &[&str]); 6] = [
            (140, &[]),
            (139, &["old"]),
            (100, &["old"]),
            (99, &["old", "mid"]),
            (60, &["old", "mid", "new"]),
            // Over budget with only what is in use left: it stays.
            (0, &["old", "mid", "new"]),
        ];
        for (budget, want) in table {
            assert_eq!(evict(&cache, budget), want, "budget {budget}");
        }
        assert!(evict(&[], 0).is_empty());
        assert_eq!(default_budget(400), 100);
    }
}
