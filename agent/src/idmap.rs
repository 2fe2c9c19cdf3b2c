//! User-namespace id maps. Every workspace has a range of node ids of its
//! own: uid/gid `n` inside workspace `i` is `base + i * size + n` on the
//! node. Image layers stay as unpacked (shared by every workspace, and with
//! any other client of containerd); each workspace sees them through
//! idmapped mounts (`mount`) made for its own range when its task starts,
//! so root inside one workspace is an unprivileged id on the node that owns
//! nothing of any other workspace.

pub mod mount;

/// One contiguous mapping of container ids onto node ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    /// The node id of container id 0.
    pub host_base: u32,
    /// How many ids are mapped (container ids `0..size`).
    pub size: u32,
}

impl IdMap {
    /// The node id of container id `id`, or None when `id` is not mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.host_base + id)
    }

    /// The container id of node id `id`, or None outside the range.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        id.checked_sub(self.host_base).filter(|n| *n < self.size)
    }

    /// The OCI `uidMappings` / `gidMappings` entry.
    pub fn oci(&self) -> Vec<oci_spec::runtime::LinuxIdMapping> {
        // The builder has nothing to refuse: every field is given.
        let m = oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(self.host_base)
            .size(self.size)
            .build()
            .unwrap_or_default();
        vec![m]
    }

    /// The line of /proc/PID/uid_map and gid_map.
    pub fn proc_line(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.size)
    }
}

/// The ranges of a node: `count` ranges of `size` ids from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranges {
    pub base: u32,
    pub size: u32,
}

impl Ranges {
    /// The `i`th range, or None past 2^32.
    pub fn nth(&self, i: u32) -> Option<IdMap> {
        let start = u64::from(self.base) + u64::from(i) * u64::from(self.size);
        (start + u64::from(self.size) <= 1 << 32).then_some(IdMap {
            host_base: start as u32,
            size: self.size,
        })
    }

    /// How many ranges fit below 2^32.
    pub fn count(&self) -> u64 {
        ((1u64 << 32) - u64::from(self.base)) / u64::from(self.size.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: IdMap = IdMap {
        host_base: 1_000_000,
        size: 65536,
    };

    #[test]
    fn maps_both_ways_within_the_range_only() {
        assert_eq!(MAP.to_host(0), Some(1_000_000));
        assert_eq!(MAP.to_host(65535), Some(1_065_535));
        assert_eq!(MAP.to_host(65536), None);
        assert_eq!(MAP.to_container(1_000_000), Some(0));
        assert_eq!(MAP.to_container(999_999), None);
        assert_eq!(MAP.to_container(1_065_536), None);
        assert_eq!(MAP.oci()[0].host_id(), 1_000_000);
        assert_eq!(MAP.proc_line(), "0 1000000 65536\n");
    }

    #[test]
    fn ranges_are_disjoint_and_stop_below_two_to_the_32() {
        let r = Ranges {
            base: 1_000_000,
            size: 65536,
        };
        assert_eq!(r.nth(0), Some(MAP));
        let (a, b) = (r.nth(7).unwrap(), r.nth(8).unwrap());
        assert_eq!(
            a.host_base + a.size,
            b.host_base,
            "adjacent, not overlapping"
        );
        let last = (r.count() - 1) as u32;
        assert!(r.nth(last).is_some());
        assert_eq!(r.nth(last + 1), None);
        assert_eq!(r.count(), 65520);
    }
}
