//! Maps with one entry per spec, packed.
//!
//! A `BTreeMap` filled by inserting keys in ascending order (as a scan of the spec dir, sorted
//! by name, does) splits each full node in two and leaves it about half full for good: its
//! nodes cost twice its entries. Built at once from a sorted sequence (`collect`), it fills
//! every node. With 10,000 specs each such map is megabytes, so the agent packs the ones it
//! keeps between passes.

use std::collections::BTreeMap;

/// `map` with full nodes: the same entries, in about half the node memory.
pub fn packed<K: Ord, V>(map: BTreeMap<K, V>) -> BTreeMap<K, V> {
    // Sorted already: `collect` sorts stably (linear on sorted input), then bulk-builds.
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_every_entry_in_order() {
        let map: BTreeMap<String, usize> = (0..1000).map(|i| (format!("s{i:05}"), i)).collect();
        let mut grown = BTreeMap::new();
        for (k, v) in &map {
            grown.insert(k.clone(), *v);
        }
        let p = packed(grown);
        assert_eq!(p, map);
        assert!(p.values().copied().eq(0..1000));
    }
}
