//! Parts made ahead of time: a "slot" is a network namespace on the bridge
//! (with its address) and a formatted, mounted volume, for one (size, uid,
//! gid). A create whose request matches takes a slot and skips the two
//! slowest steps of its start path; a background refill keeps `target` slots
//! of the most recently requested kind ready. Slots live in memory only: the
//! next agent removes leftover ones at start like any other stray.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// What a slot is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub disk_bytes: u64,
    pub uid: u32,
    pub gid: u32,
}

/// A ready volume + namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Name of its volume and netns files ("pool-…").
    pub id: String,
    pub ip: Ipv4Addr,
    pub key: SlotKey,
}

/// Prefix of every slot id (and so of their netns and volume names).
pub const SLOT_PREFIX: &str = "pool-";

/// The bookkeeping of slots (pure; the manager makes and removes them).
#[derive(Debug, Default)]
pub struct Prepared {
    target: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<Slot>,
    /// Slots being made, by key.
    making: Vec<SlotKey>,
    /// Addresses held by ready or in-flight slots, and by slots just taken
    /// until their workspace's record holds them.
    reserved: HashSet<Ipv4Addr>,
    wanted: Option<SlotKey>,
}

/// What the refill should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// Make one slot of this kind (its making is already counted).
    Make(SlotKey),
    /// Remove a slot of a kind no longer wanted.
    Drop(Slot),
    Idle,
}

impl Prepared {
    /// Keeps `target` slots ready (0 disables preparing).
    pub fn new(target: usize) -> Self {
        Self {
            target,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a ready slot for `key`, if any, and makes `key` the kind to keep ready.
    pub fn take(&self, key: SlotKey) -> Option<Slot> {
        if self.target == 0 {
            return None;
        }
        let mut s = self.state();
        s.wanted = Some(key);
        let i = s.ready.iter().position(|slot| slot.key == key)?;
        Some(s.ready.remove(i))
    }

    /// The next piece of refill work, counted as started.
    pub fn next_work(&self) -> Work {
        let mut s = self.state();
        let Some(wanted) = s.wanted else {
            return Work::Idle;
        };
        if let Some(i) = s.ready.iter().position(|slot| slot.key != wanted) {
            return Work::Drop(s.ready.remove(i));
        }
        let have = s.ready.len() + s.making.iter().filter(|k| **k == wanted).count();
        if have >= self.target {
            return Work::Idle;
        }
        s.making.push(wanted);
        Work::Make(wanted)
    }

    /// Reserves an address for a slot being made.
    pub fn reserve(&self, ip: Ipv4Addr) {
        self.state().reserved.insert(ip);
    }

    /// Addresses no workspace record holds but a slot does.
    pub fn reserved(&self) -> HashSet<Ipv4Addr> {
        self.state().reserved.clone()
    }

    /// Frees an address (its slot was dropped, failed, or its workspace's
    /// record now holds it).
    pub fn release(&self, ip: Ipv4Addr) {
        self.state().reserved.remove(&ip);
    }

    /// A slot finished making (or failed: `None`).
    pub fn made(&self, key: SlotKey, slot: Option<Slot>) {
        let mut s = self.state();
        if let Some(i) = s.making.iter().position(|k| *k == key) {
            s.making.remove(i);
        }
        if let Some(slot) = slot {
            s.ready.push(slot);
        }
    }

    /// Ids of the ready slots.
    pub fn ready_ids(&self) -> Vec<String> {
        self.state().ready.iter().map(|s| s.id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SlotKey = SlotKey {
        disk_bytes: 1 << 30,
        uid: 1000,
        gid: 1000,
    };
    const B: SlotKey = SlotKey {
        disk_bytes: 2 << 30,
        uid: 1000,
        gid: 1000,
    };

    fn slot(n: u8, key: SlotKey) -> Slot {
        Slot {
            id: format!("pool-{n}"),
            ip: Ipv4Addr::new(10, 0, 0, n),
            key,
        }
    }

    #[test]
    fn nothing_is_made_before_a_kind_is_wanted_nor_when_disabled() {
        let p = Prepared::new(2);
        assert_eq!(p.next_work(), Work::Idle);
        let off = Prepared::new(0);
        assert_eq!(off.take(A), None);
        assert_eq!(off.next_work(), Work::Idle);
    }

    #[test]
    fn keeps_target_slots_of_the_wanted_kind() {
        let p = Prepared::new(2);
        assert_eq!(p.take(A), None, "a miss makes A the wanted kind");
        assert_eq!(p.next_work(), Work::Make(A));
        assert_eq!(p.next_work(), Work::Make(A));
        assert_eq!(p.next_work(), Work::Idle, "two in flight is enough");
        p.made(A, Some(slot(1, A)));
        p.made(A, None);
        assert_eq!(p.next_work(), Work::Make(A), "a failed make is retried");
        p.made(A, Some(slot(2, A)));
        assert_eq!(p.take(A), Some(slot(1, A)));
        assert_eq!(p.ready_ids(), ["pool-2"]);
        assert_eq!(p.next_work(), Work::Make(A), "refill after a take");
    }

    #[test]
    fn a_new_kind_drops_the_old_slots() {
        let p = Prepared::new(1);
        p.take(A);
        assert_eq!(p.next_work(), Work::Make(A));
        p.made(A, Some(slot(1, A)));
        assert_eq!(p.take(B), None);
        assert_eq!(p.next_work(), Work::Drop(slot(1, A)));
        assert_eq!(p.next_work(), Work::Make(B));
    }

    #[test]
    fn reservations() {
        let p = Prepared::new(1);
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        p.reserve(ip);
        assert!(p.reserved().contains(&ip));
        p.release(ip);
        assert!(p.reserved().is_empty());
    }
}
