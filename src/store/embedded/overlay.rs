//! Writes held in memory until the checkpoint: the write-back layer of the trees the runtime
//! writes on every step (`runtime`, `stats`).
//!
//! A logged write to such a tree ([`super::redo::LoggedTree`]) is durable once its redo record
//! is in the journal; sled does not need it before the next checkpoint. So instead of applying
//! it to sled at once (a copy of the sled leaf it lands in, a fragment in sled's log, sooner or
//! later a rewrite of the whole page), the write goes to an ordered map in memory that reads
//! consult before sled. A key written several times between two checkpoints (an outbox entry
//! queued, in flight and sent; the index keys a send adds and removes again) reaches sled once,
//! with its last value, or not at all.
//!
//! Two layers: `active` takes the writes; the checkpoint *freezes* it (under the lock that
//! numbers redo records, so the frozen layer holds exactly the writes of the records up to a
//! known number), applies the frozen layer to sled as one batch, flushes, and only then drops
//! it. Reads look in `active`, then `frozen`, then sled, so a value is visible in one place or
//! another at every moment. A crash loses the layers; the start replays the journal's records
//! after the number the last completed checkpoint stored (see [`super::redo`]).

use sled::IVec;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `None` is a removal: the key is gone whatever sled still holds.
type Layer = BTreeMap<IVec, Option<IVec>>;

#[derive(Default)]
struct Layers {
    active: Layer,
    frozen: Layer,
    /// Key prefixes (one byte each) whose keys and values are all kept in `resident`, sled's
    /// and the layers' together, and read from there alone.
    resident_prefixes: Vec<u8>,
    resident: BTreeMap<IVec, IVec>,
    /// Bytes of keys and values in `active` and `frozen`, shared with every tree's layers
    /// (what the checkpoint has yet to move to sled).
    held: Arc<AtomicUsize>,
    active_bytes: usize,
    frozen_bytes: usize,
}

fn size(key: &[u8], value: &Option<IVec>) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.len()) + 64
}

impl Layers {
    fn is_resident(&self, key: &[u8]) -> bool {
        key.first()
            .is_some_and(|p| self.resident_prefixes.contains(p))
    }

    /// The one resident prefix both bounds lie in, if any: the range is then all in memory.
    fn resident_range(&self, low: Bound<&[u8]>, high: Bound<&[u8]>) -> bool {
        let first = |b: Bound<&[u8]>| match b {
            Bound::Included(k) | Bound::Excluded(k) => Some(k.first().copied()),
            Bound::Unbounded => None,
        };
        match (first(low), first(high), high) {
            (Some(Some(p)), Some(Some(q)), _) if p == q => self.resident_prefixes.contains(&p),
            // `[p]..[p + 1]`: a whole prefix.
            (Some(Some(p)), Some(Some(q)), Bound::Excluded(h)) if h.len() == 1 && q == p + 1 => {
                self.resident_prefixes.contains(&p)
            }
            _ => false,
        }
    }

    /// Writes `value` (`None`: a removal) under `key`.
    fn put(&mut self, key: IVec, value: Option<IVec>) {
        if self.is_resident(&key) {
            match &value {
                Some(v) => {
                    self.resident.insert(key.clone(), v.clone());
                }
                None => {
                    self.resident.remove(&key);
                }
            }
        }
        let added = size(&key, &value);
        let replaced = self
            .active
            .insert(key.clone(), value)
            .map_or(0, |old| size(&key, &old));
        self.active_bytes = self.active_bytes + added - replaced;
        self.held.fetch_add(added, Ordering::Relaxed);
        self.held.fetch_sub(replaced, Ordering::Relaxed);
    }

    /// What the layers say of `key`: `None` when they say nothing (sled knows).
    fn lookup(&self, key: &[u8]) -> Option<Option<IVec>> {
        if self.is_resident(key) {
            return Some(self.resident.get(key).cloned());
        }
        self.active
            .get(key)
            .or_else(|| self.frozen.get(key))
            .cloned()
    }

    /// Every change the layers hold within the bounds, the newer layer winning, in key order.
    fn changes(&self, low: Bound<&[u8]>, high: Bound<&[u8]>) -> VecDeque<(IVec, Option<IVec>)> {
        if self.frozen.is_empty() {
            return self
                .active
                .range::<[u8], _>((low, high))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        let mut merged: BTreeMap<&IVec, &Option<IVec>> =
            self.frozen.range::<[u8], _>((low, high)).collect();
        merged.extend(self.active.range::<[u8], _>((low, high)));
        merged
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One tree's write-back layers (cheap to clone: every clone is the same layers).
#[derive(Clone, Default)]
pub(super) struct Overlay(Arc<RwLock<Layers>>);

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = self.read();
        write!(
            f,
            "Overlay({} active, {} frozen)",
            l.active.len(),
            l.frozen.len()
        )
    }
}

impl Overlay {
    /// Layers whose size counts in `held` (with every other tree's that shares it).
    pub fn counted(held: Arc<AtomicUsize>) -> Overlay {
        Overlay(Arc::new(RwLock::new(Layers {
            held,
            ..Layers::default()
        })))
    }

    fn read(&self) -> RwLockReadGuard<'_, Layers> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Layers> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<IVec>> {
        // Held across the sled read: a checkpoint drops the frozen layer only after sled has
        // it, and never while a reader is between the two.
        let layers = self.read();
        match layers.lookup(key) {
            Some(value) => Ok(value),
            None => tree.get(key),
        }
    }

    /// Writes `ops` in order (the caller holds the redo order: [`super::redo`]).
    pub fn put_all(&self, ops: Vec<(IVec, Option<IVec>)>) {
        let mut layers = self.write();
        for (key, value) in ops {
            layers.put(key, value);
        }
    }

    /// Sets `key` to `value` (`None`: removes it) and returns what it was.
    pub fn swap(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: Option<IVec>,
    ) -> sled::Result<Option<IVec>> {
        let mut layers = self.write();
        let old = match layers.lookup(key) {
            Some(v) => v,
            None => tree.get(key)?,
        };
        layers.put(IVec::from(key), value);
        Ok(old)
    }

    /// Like sled's `update_and_fetch`: `f` sees the current value and returns the new one.
    pub fn update<V: Into<IVec>>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        mut f: impl FnMut(Option<&[u8]>) -> Option<V>,
    ) -> sled::Result<Option<IVec>> {
        let mut layers = self.write();
        let old = match layers.lookup(key) {
            Some(v) => v,
            None => tree.get(key)?,
        };
        let new = f(old.as_deref()).map(Into::into);
        layers.put(IVec::from(key), new.clone());
        Ok(new)
    }

    /// Removes `key` if it holds `expected`; whether it did.
    pub fn remove_if(&self, tree: &sled::Tree, key: &[u8], expected: &IVec) -> sled::Result<bool> {
        let mut layers = self.write();
        let current = match layers.lookup(key) {
            Some(v) => v,
            None => tree.get(key)?,
        };
        if current.as_ref() != Some(expected) {
            return Ok(false);
        }
        layers.put(IVec::from(key), None);
        Ok(true)
    }

    /// The keys and values within the bounds, the layers' over sled's.
    pub fn range(&self, tree: &sled::Tree, low: Bound<Vec<u8>>, high: Bound<Vec<u8>>) -> Iter {
        let layers = self.read();
        if layers.resident_range(as_ref(&low), as_ref(&high)) {
            let items = layers
                .resident
                .range::<[u8], _>((as_ref(&low), as_ref(&high)))
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            return Iter {
                changes: items,
                sled: None,
                front: None,
                back: None,
            };
        }
        let changes = layers.changes(as_ref(&low), as_ref(&high));
        // Taken while the layers cannot change, like the changes: a checkpoint moving the
        // frozen layer into sled meanwhile shows its values in both, never in neither.
        let sled = tree.range((low, high));
        drop(layers);
        Iter::new(changes, sled)
    }

    /// Keeps every key of the one-byte `prefixes` in memory from now on, read from sled and
    /// the layers once (the first handle of the tree does it; later calls change nothing).
    pub fn keep_resident(&self, tree: &sled::Tree, prefixes: &[u8]) -> sled::Result<()> {
        let mut layers = self.write();
        if !layers.resident_prefixes.is_empty() || prefixes.is_empty() {
            return Ok(());
        }
        let mut resident = BTreeMap::new();
        for p in prefixes {
            for item in tree.scan_prefix([*p]) {
                let (k, v) = item?;
                resident.insert(k, v);
            }
            for (k, v) in layers.changes(Bound::Included(&[*p][..]), as_ref(&prefix_end(&[*p]))) {
                match v {
                    Some(v) => resident.insert(k, v),
                    None => resident.remove(&k),
                };
            }
        }
        layers.resident = resident;
        layers.resident_prefixes = prefixes.to_vec();
        Ok(())
    }

    /// Starts a checkpoint: the active layer becomes the frozen one (merged into it when an
    /// earlier checkpoint could not finish). Called under the redo order.
    pub fn freeze(&self) {
        let mut layers = self.write();
        if layers.frozen.is_empty() {
            let Layers { active, frozen, .. } = &mut *layers;
            std::mem::swap(active, frozen);
        } else {
            let active = std::mem::take(&mut layers.active);
            layers.frozen.extend(active);
        }
        // The merge may have dropped values the active layer replaced: count what is held now.
        let frozen_bytes: usize = layers.frozen.iter().map(|(k, v)| size(k, v)).sum();
        let before = layers.active_bytes + layers.frozen_bytes;
        layers.active_bytes = 0;
        layers.frozen_bytes = frozen_bytes;
        layers.held.fetch_add(frozen_bytes, Ordering::Relaxed);
        layers.held.fetch_sub(before, Ordering::Relaxed);
    }

    /// The frozen layer's writes, in key order (cheap: values are shared, not copied).
    pub fn frozen_writes(&self) -> Vec<(IVec, Option<IVec>)> {
        let layers = self.read();
        layers
            .frozen
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Ends a checkpoint: sled holds the frozen layer on disk.
    pub fn thaw(&self) {
        let mut layers = self.write();
        layers.frozen.clear();
        let bytes = std::mem::take(&mut layers.frozen_bytes);
        layers.held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Writes held in memory (both layers).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let layers = self.read();
        layers.active.len() + layers.frozen.len()
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first key after every key that starts with `prefix` (`Unbounded` when there is none).
pub(super) fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// sled's keys and values merged with the layers' changes, in key order either way.
pub struct Iter {
    changes: VecDeque<(IVec, Option<IVec>)>,
    /// `None`: the range is all in `changes` (a resident prefix).
    sled: Option<sled::Iter>,
    /// sled's next item from each end, once read.
    front: Option<(IVec, IVec)>,
    back: Option<(IVec, IVec)>,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Iter({} changes over sled)", self.changes.len())
    }
}

impl Iter {
    fn new(changes: VecDeque<(IVec, Option<IVec>)>, sled: sled::Iter) -> Iter {
        Iter {
            changes,
            sled: Some(sled),
            front: None,
            back: None,
        }
    }

    /// An iterator over sled alone (a tree without layers).
    pub(super) fn plain(sled: sled::Iter) -> Iter {
        Iter::new(VecDeque::new(), sled)
    }
}

impl Iterator for Iter {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.front.is_none() {
                match self.sled.as_mut().and_then(Iterator::next) {
                    Some(Ok(kv)) => self.front = Some(kv),
                    Some(Err(e)) => return Some(Err(e)),
                    // What the other end read is all sled has left.
                    None => self.front = self.back.take(),
                }
            }
            let order = match (self.changes.front(), &self.front) {
                (None, None) => return None,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some((changed, _)), Some((stored, _))) => changed.cmp(stored),
            };
            if order == std::cmp::Ordering::Greater {
                return self.front.take().map(Ok);
            }
            if order == std::cmp::Ordering::Equal {
                self.front = None;
            }
            if let Some((key, Some(value))) = self.changes.pop_front() {
                return Some(Ok((key, value)));
            }
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            if self.back.is_none() {
                match self.sled.as_mut().and_then(DoubleEndedIterator::next_back) {
                    Some(Ok(kv)) => self.back = Some(kv),
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.back = self.front.take(),
                }
            }
            let order = match (self.changes.back(), &self.back) {
                (None, None) => return None,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some((changed, _)), Some((stored, _))) => changed.cmp(stored),
            };
            if order == std::cmp::Ordering::Less {
                return self.back.take().map(Ok);
            }
            if order == std::cmp::Ordering::Equal {
                self.back = None;
            }
            if let Some((key, Some(value))) = self.changes.pop_back() {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(iter: impl Iterator<Item = sled::Result<(IVec, IVec)>>) -> Vec<(Vec<u8>, Vec<u8>)> {
        iter.map(|r| {
            let (k, v) = r.expect("item");
            (k.to_vec(), v.to_vec())
        })
        .collect()
    }

    proptest! {
        /// Whatever mix of writes is in sled, in the frozen layer and in the active one, reads
        /// and ranges (both directions) see exactly what one map given the same writes in the
        /// same order holds.
        #[test]
        fn layers_over_sled_read_like_one_map(
            writes in proptest::collection::vec(
                (0u8..3, proptest::collection::vec(0u8..4, 0..3), proptest::option::of(0u8..50)),
                0..60,
            ),
            low in proptest::collection::vec(0u8..4, 0..2),
            high in proptest::collection::vec(0u8..5, 0..2),
        ) {
            let db = sled::Config::new().temporary(true).open().expect("db");
            let tree = db.open_tree("t").expect("tree");
            // Two keys in sled before the start, one of them under the resident prefix.
            tree.insert([1u8, 3], &[7u8]).expect("insert");
            tree.insert([2u8], &[8u8]).expect("insert");
            let held = Arc::new(AtomicUsize::new(0));
            let overlay = Overlay::counted(held.clone());
            // Keys under 1 are all kept in memory.
            overlay.keep_resident(&tree, &[1]).expect("resident");
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            model.insert(vec![1, 3], vec![7]);
            model.insert(vec![2], vec![8]);
            for (layer, key, value) in &writes {
                // 0: straight to sled (an earlier checkpoint); 1: then frozen; 2: active.
                if *layer == 1 {
                    overlay.freeze();
                }
                let value = value.map(|v| vec![v]);
                match layer {
                    0 => {
                        // sled only ever receives what the layers no longer shadow.
                        if overlay.read().lookup(key).is_some() {
                            continue;
                        }
                        match &value {
                            Some(v) => { tree.insert(key.as_slice(), v.as_slice()).expect("insert"); }
                            None => { tree.remove(key.as_slice()).expect("remove"); }
                        }
                    }
                    _ => overlay.put_all(vec![(IVec::from(key.as_slice()), value.clone().map(IVec::from))]),
                }
                match value {
                    Some(v) => { model.insert(key.clone(), v); }
                    None => { model.remove(key); }
                }
            }
            for (key, value) in &model {
                prop_assert_eq!(overlay.get(&tree, key).expect("get").map(|v| v.to_vec()), Some(value.clone()));
            }
            for key in [vec![], vec![0], vec![3, 3], vec![1, 2]] {
                prop_assert_eq!(overlay.get(&tree, &key).expect("get").map(|v| v.to_vec()), model.get(&key).cloned());
            }
            let (lo, hi) = (Bound::Included(low.clone()), Bound::Excluded(high.clone()));
            let expected: Vec<(Vec<u8>, Vec<u8>)> = if low <= high {
                model.range::<Vec<u8>, _>((lo.clone(), hi.clone())).map(|(k, v)| (k.clone(), v.clone())).collect()
            } else {
                Vec::new()
            };
            if low <= high {
                prop_assert_eq!(keys(overlay.range(&tree, lo.clone(), hi.clone())), expected.clone());
                let mut backwards = keys(overlay.range(&tree, lo, hi).rev());
                backwards.reverse();
                prop_assert_eq!(backwards, expected);
            }
            let all: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(keys(overlay.range(&tree, Bound::Unbounded, Bound::Unbounded)), all);
            // The resident prefix, whole and in part, read from memory alone.
            let under = |lo: &[u8], hi: Option<&[u8]>| -> Vec<(Vec<u8>, Vec<u8>)> {
                model
                    .iter()
                    .filter(|(k, _)| k.as_slice() >= lo && hi.map_or(k.first() == Some(&1), |h| k.as_slice() < h))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            prop_assert_eq!(keys(overlay.range(&tree, Bound::Included(vec![1]), prefix_end(&[1]))), under(&[1], None));
            prop_assert_eq!(keys(overlay.range(&tree, Bound::Included(vec![1]), Bound::Excluded(vec![1, 2]))), under(&[1], Some(&[1, 2])));
            // A checkpoint: the frozen layer into sled, then dropped; nothing read changes.
            overlay.freeze();
            for (k, v) in overlay.frozen_writes() {
                match v {
                    Some(v) => tree.insert(k, v).expect("insert"),
                    None => tree.remove(k).expect("remove"),
                };
            }
            overlay.thaw();
            let after: Vec<(Vec<u8>, Vec<u8>)> = keys(tree.iter());
            let all: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
            prop_assert_eq!(after, all);
            prop_assert_eq!(overlay.len(), 0);
            prop_assert_eq!(held.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn prefix_ends_skip_full_bytes() {
        assert_eq!(prefix_end(b"ab"), Bound::Excluded(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Bound::Excluded(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), Bound::Unbounded);
        assert_eq!(prefix_end(b""), Bound::Unbounded);
    }
}
