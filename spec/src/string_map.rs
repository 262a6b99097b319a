//! A spec's `env` and `labels`: names to values, sorted by name, in two allocations.
//!
//! An agent holds every spec it knows for as long as it runs (10,000 of them and more). A
//! `BTreeMap<String, String>` of two variables costs a 544-byte node plus a block per string
//! (about 700 bytes in all); this map keeps every name and value in one string and their ends
//! in one slice (under 100 bytes). It is written once when a spec is read and only looked up
//! after, so an insert rebuilds it (a crate's vec-backed map keeps a `String` per entry and spare
//! capacity, which is what this is for). It serialises as a map in name order: the same JSON
//! as the `BTreeMap` it replaces, so the recreate hash and `spec.json` are unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct StringMap {
    /// Each name followed by its value, in name order, without separators.
    text: Box<str>,
    /// Two per entry: where its name ends in `text`, then where its value ends.
    ends: Box<[usize]>,
}

impl StringMap {
    /// Empty: allocates nothing.
    pub fn new() -> Self {
        StringMap::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th entry in name order.
    fn entry(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 { 0 } else { self.ends[2 * i - 1] };
        let (name_end, value_end) = (self.ends[2 * i], self.ends[2 * i + 1]);
        (&self.text[start..name_end], &self.text[name_end..value_end])
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid).0.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| self.entry(i).1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Entries in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { map: self, next: 0 }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(_, v)| v)
    }

    /// Sets `name` to `value`, returning the value it replaces. Rebuilds the map: for building
    /// a spec, not for a hot path.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        let mut all = self.to_btree();
        let old = all.insert(name, value);
        *self = Self::from_sorted(&all);
        old
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let mut all = self.to_btree();
        let old = all.remove(name);
        *self = Self::from_sorted(&all);
        old
    }

    pub fn to_btree(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_sorted<K: AsRef<str>, V: AsRef<str>>(all: &BTreeMap<K, V>) -> Self {
        if all.is_empty() {
            return StringMap::new();
        }
        let len = all
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(2 * all.len());
        for (k, v) in all {
            text.push_str(k.as_ref());
            ends.push(text.len());
            text.push_str(v.as_ref());
            ends.push(text.len());
        }
        StringMap {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

pub struct Iter<'a> {
    map: &'a StringMap,
    next: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        (self.next < self.map.len()).then(|| {
            self.next += 1;
            self.map.entry(self.next - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.map.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a StringMap {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// As a `BTreeMap` collects: a name given twice keeps its last value.
impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for StringMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let all: BTreeMap<String, String> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_sorted(&all)
    }
}

impl From<BTreeMap<String, String>> for StringMap {
    fn from(all: BTreeMap<String, String>) -> Self {
        Self::from_sorted(&all)
    }
}

impl<const N: usize> From<[(&str, &str); N]> for StringMap {
    fn from(entries: [(&str, &str); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl fmt::Debug for StringMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for StringMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn empty_reads_empty() {
        let m = StringMap::new();
        assert!(m.is_empty());
        assert_eq!(m.len(), 0);
        assert_eq!(m.get(""), None);
        assert_eq!(m.iter().count(), 0);
        assert_eq!(m, StringMap::default());
        assert_eq!(serde_json::to_string(&m).unwrap(), "{}");
    }

    #[test]
    fn empty_names_and_values_are_entries() {
        let m = StringMap::from([("", "x"), ("A", ""), ("B", "")]);
        assert_eq!(m.get(""), Some("x"));
        assert_eq!(m.get("A"), Some(""));
        assert_eq!(m.get("B"), Some(""));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn insert_and_remove_keep_it_sorted() {
        let mut m = StringMap::from([("B", "2")]);
        assert_eq!(m.insert("A".into(), "1".into()), None);
        assert_eq!(m.insert("B".into(), "two".into()), Some("2".to_string()));
        assert_eq!(m.insert("C".into(), "3".into()), None);
        assert_eq!(m.remove("A"), Some("1".to_string()));
        assert_eq!(m.remove("A"), None);
        assert!(m.iter().eq([("B", "two"), ("C", "3")]));
    }

    proptest! {
        /// Whatever a BTreeMap holds, this holds, reads back and serialises the same: the JSON
        /// (so the recreate hash and spec.json) cannot tell them apart.
        #[test]
        fn it_is_a_btreemap(
            entries in proptest::collection::vec((".{0,6}", ".{0,6}"), 0..20),
            probe in ".{0,6}",
        ) {
            let tree: BTreeMap<String, String> = entries.iter().cloned().collect();
            let map: StringMap = entries.iter().cloned().collect();
            prop_assert_eq!(map.len(), tree.len());
            prop_assert!(map.iter().eq(tree.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
            for (k, v) in &tree {
                prop_assert_eq!(map.get(k), Some(v.as_str()));
            }
            prop_assert_eq!(map.get(&probe), tree.get(&probe).map(String::as_str));
            prop_assert_eq!(map.contains_key(&probe), tree.contains_key(&probe));
            let json = serde_json::to_string(&map).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&tree).unwrap());
            let back: StringMap = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &map);
            prop_assert_eq!(back.to_btree(), tree);
        }
    }
}
