//! A table of the replicated state (sessions, locks, files...): an ordered
//! map that freezes in constant time, so a snapshot is serialized off the
//! node's thread while applies go on (`StateMachine::freeze`).
//!
//! A persistent B-tree (`imbl::OrdMap`) whose values sit behind `Arc`s:
//! freezing copies the root pointer; the first write after a freeze copies
//! one root-to-leaf path of nodes (each holding pointers, not values) and
//! the one value it changes. Without the `Arc`s, copying a leaf would
//! clone every value in it: 64 sessions with their response tables, or 64
//! files of up to a MiB.
//!
//! It serializes as a map, exactly as the `BTreeMap` it replaced did, so
//! snapshots on disk keep their format.

use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::ops::RangeBounds;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Table<K: Ord + Clone, V: Clone>(OrdMap<K, Arc<V>>);

impl<K: Ord + Clone, V: Clone> Default for Table<K, V> {
    fn default() -> Self {
        Table(OrdMap::new())
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.0.get(key).map(|v| &**v)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.0.contains_key(key)
    }

    /// The value to change in place; copied first if a frozen state
    /// shares it.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.0.get_mut(key).map(Arc::make_mut)
    }

    /// The value under `key`, a default one inserted if there is none.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        Arc::make_mut(self.0.entry(key).or_default())
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.0.insert(key, Arc::new(value));
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.0.remove(key).map(Arc::unwrap_or_clone)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, &**v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.values().map(|v| &**v)
    }

    pub fn range<R: RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> {
        self.0.range(range).map(|(k, v)| (k, &**v))
    }
}

impl<'a, K: Ord + Clone, V: Clone> IntoIterator for &'a Table<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Snapshots keep their format: a table encodes as the `BTreeMap`
    /// it replaced.
    #[test]
    fn a_table_encodes_as_the_btreemap_it_replaced() {
        let mut table: Table<String, (u64, Vec<u8>)> = Table::default();
        let mut map = BTreeMap::new();
        for (k, v) in [
            ("b", (2, vec![2])),
            ("a", (1, vec![])),
            ("c", (3, vec![3, 3])),
        ] {
            table.insert(k.to_string(), v.clone());
            map.insert(k.to_string(), v);
        }
        let bytes = postcard::to_allocvec(&table).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&map).unwrap());
        let back: Table<String, (u64, Vec<u8>)> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, table);
    }

    /// A frozen copy does not see later writes, and shares what they did
    /// not touch.
    #[test]
    fn a_clone_is_frozen_and_shares_what_later_writes_do_not_touch() {
        let mut table: Table<u64, Vec<u64>> = Table::default();
        for i in 0..1000 {
            table.insert(i, vec![i]);
        }
        let frozen = table.clone();
        table.get_mut(&7).unwrap().push(70);
        table.get_or_default(2000).push(1);
        assert_eq!(table.remove(&8), Some(vec![8]));
        assert_eq!(frozen.get(&7), Some(&vec![7]));
        assert_eq!(frozen.get(&8), Some(&vec![8]));
        assert!(!frozen.contains_key(&2000));
        assert_eq!(table.get(&7), Some(&vec![7, 70]));
        assert_eq!((table.len(), frozen.len()), (1000, 1000));
        let untouched = |t: &Table<u64, Vec<u64>>| Arc::as_ptr(t.0.get(&500).unwrap());
        assert_eq!(untouched(&table), untouched(&frozen), "copied, not shared");
        let range: Vec<u64> = table.range(5..=9).map(|(k, _)| *k).collect();
        assert_eq!(range, vec![5, 6, 7, 9]);
    }
}
