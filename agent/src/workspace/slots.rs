//! Prepared slots: volumes and namespaces made ahead of demand, taken
//! by a create of the same kind.

use super::*;

impl Manager {
    /// Keeps prepared slots ready for the most recently requested kind of
    /// workspace. Runs until dropped.
    pub async fn refill_prepared(&self) {
        loop {
            match self.inner.prepared.next_work() {
                Work::Idle => self.inner.refill.notified().await,
                Work::Drop(slot) => self.drop_slot(&slot).await,
                Work::Make(key) => {
                    let made = self.make_slot(key).await;
                    let ok = made.is_some();
                    self.inner.prepared.made(key, made);
                    if !ok {
                        // Back off rather than spin on a broken node.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    pub(super) async fn make_slot(&self, key: SlotKey) -> Option<Slot> {
        let ip = {
            let _ipam = self.inner.ipam.lock().await;
            let ip = self.allocate_ip().ok()?;
            self.inner.prepared.reserve(ip);
            ip
        };
        let slot = Slot {
            id: format!("{SLOT_PREFIX}{:012x}", rand::random::<u64>() >> 16),
            ip,
            key,
        };
        let map = match self.userns_of(ip) {
            Ok(map) => map,
            Err(_) => {
                self.inner.prepared.release(ip);
                return None;
            }
        };
        let t = Instant::now();
        let made = tokio::try_join!(
            self.make_volume(&slot.id, key.disk_bytes, (key.uid, key.gid), map),
            self.inner.net.create(&slot.id, ip, map),
        );
        match made {
            Ok(_) => {
                tracing::debug!(slot = %slot.id, ms = ms(t), "prepared slot ready");
                Some(slot)
            }
            Err(e) => {
                tracing::warn!(slot = %slot.id, error = %e, "preparing a slot failed");
                self.drop_slot(&slot).await;
                None
            }
        }
    }

    pub(super) async fn drop_slot(&self, slot: &Slot) {
        if let Err(e) = self.inner.net.remove(&slot.id).await {
            tracing::warn!(slot = %slot.id, error = %e, "removing a slot's namespace");
        }
        if let Err(e) = self.inner.volumes.remove(&slot.id).await {
            tracing::warn!(slot = %slot.id, error = %e, "removing a slot's volume");
        }
        self.inner.prepared.release(slot.ip);
    }

    /// Ids of the prepared slots ready now (their parts are not strays).
    pub(crate) fn prepared_ids(&self) -> Vec<String> {
        self.inner.prepared.ready_ids()
    }
}
