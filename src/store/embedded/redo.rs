//! The redo log of store writes: how a store write becomes durable without a sled flush.
//!
//! Every write to the trees a request's answer depends on (`runtime`, `stats`, and the OTP
//! ledger's trees and audit log) goes through a [`LoggedTree`] or a [`Redo::transact`]: it is
//! applied and, in the same critical section, its exact puts and removes are appended as one
//! *redo record* to the inbound journal (format in [`super::journal`]). The journal's writer
//! group-commits them with the events: one `write` and one `fdatasync` make a whole batch of
//! events and session steps durable, and [`super::Store::logged`] waits for exactly that. sled
//! itself is written and flushed in the background (the journal's checkpoint, every second),
//! never per request.
//!
//! Where a write is applied, and how a start knows which records to re-apply:
//!
//! - **The overlaid trees** ([`OVERLAID`]: every tree written while handling a request) take
//!   their writes in memory, in write-back layers in front of sled ([`super::overlay`]). The
//!   checkpoint freezes the layers under the lock that numbers the records, syncs the journal,
//!   applies the frozen layers to sled and stores the number of the last record they hold
//!   (`overlay-through` in tree `redo-applied`) before flushing: sled never holds a write of
//!   these trees whose record could be lost, and whatever prefix of the checkpoint's writes
//!   sled recovers, the records after the stored number rebuild the rest.
//! - **Any other logged tree** is written to sled at once; right after each write, under the
//!   same lock, its number is stored in sled itself (`through` in tree `redo-applied`). sled
//!   recovers a prefix of its writes after a crash, so the number it recovers says exactly
//!   where the journal takes over for them. (Stores written by 0.5 and earlier kept the OTP
//!   ledger this way.)
//!
//! The OTP ledger's changes are transactions over several trees ([`Redo::transact`]): they run
//! one at a time under the ledger's own lock, read through their own writes, and commit all
//! their writes as one record, or nothing. A checkpoint freezes the layers under the record
//! lock, so it holds all of a transaction or none of it; a start re-applies whole records.
//!
//! A start re-applies, in order and before anything else reads the database, each record's
//! writes to the trees whose number it is after (putting the same whole values again changes
//! nothing). The checkpoint then stores how far the records are in sled on disk and which
//! segment the journal was writing: segments before that hold nothing a start replays, and are
//! deleted. Segments close by size or age even when they hold no event, so a stream of store
//! writes alone keeps the journal at about one segment.
//!
//! A write is applied before it is logged. A crash between the two loses a write that nobody
//! was told about (the request had no answer yet), exactly like a crash before the
//! `fdatasync`.

use super::inbound::Shared;
use super::overlay::{Iter, Overlay};
use std::cell::RefCell;
use std::sync::Arc;

/// Kinds of operation in a redo record.
const PUT: u8 = 1;
const REMOVE: u8 = 0;

/// Appends one encoded operation to `ops`.
fn put_op(ops: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    ops.push(if value.is_some() { PUT } else { REMOVE });
    ops.extend_from_slice(&(key.len() as u32).to_le_bytes());
    ops.extend_from_slice(key);
    if let Some(value) = value {
        ops.extend_from_slice(&(value.len() as u32).to_le_bytes());
        ops.extend_from_slice(value);
    }
}

/// Appends a section (one tree's operations) to a record body.
fn put_section(body: &mut Vec<u8>, tree: &[u8], ops: &[u8]) {
    let name_len = u8::try_from(tree.len()).expect("tree names are short");
    body.push(name_len);
    body.extend_from_slice(tree);
    body.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    body.extend_from_slice(ops);
}

/// One decoded operation of a redo record.
pub(super) struct Op<'a> {
    pub tree: &'a [u8],
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn take_u32(b: &mut &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
}

/// Decodes a record body into its operations, in order; `None` when it is malformed.
pub(super) fn decode(mut body: &[u8]) -> Option<Vec<Op<'_>>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let name_len = usize::from(*take(&mut body, 1)?.first()?);
        let tree = take(&mut body, name_len)?;
        let ops_len = take_u32(&mut body)?;
        let mut ops = take(&mut body, ops_len)?;
        while !ops.is_empty() {
            let kind = *take(&mut ops, 1)?.first()?;
            let key_len = take_u32(&mut ops)?;
            let key = take(&mut ops, key_len)?;
            let value = match kind {
                PUT => {
                    let len = take_u32(&mut ops)?;
                    Some(take(&mut ops, len)?)
                }
                REMOVE => None,
                _ => return None,
            };
            out.push(Op { tree, key, value });
        }
    }
    Some(out)
}

/// Re-applies decoded operations to `db` (start-up replay), one sled batch per tree.
pub(super) fn replay(
    db: &sled::Db,
    trees: &mut std::collections::HashMap<Vec<u8>, sled::Tree>,
    ops: &[Op<'_>],
) -> Result<(), sled::Error> {
    let mut batches: Vec<(&[u8], sled::Batch)> = Vec::new();
    for op in ops {
        let batch = match batches.iter_mut().position(|(t, _)| *t == op.tree) {
            Some(i) => &mut batches[i].1,
            None => {
                batches.push((op.tree, sled::Batch::default()));
                &mut batches.last_mut().expect("just pushed").1
            }
        };
        match op.value {
            Some(v) => batch.insert(op.key, v),
            None => batch.remove(op.key),
        }
    }
    for (name, batch) in batches {
        let tree = match trees.get(name) {
            Some(t) => t.clone(),
            None => {
                let t = db.open_tree(name)?;
                trees.insert(name.to_vec(), t.clone());
                t
            }
        };
        tree.apply_batch(batch)?;
    }
    Ok(())
}

fn journal_error(e: super::StoreError) -> sled::Error {
    sled::Error::Io(std::io::Error::other(e.to_string()))
}

/// The handle writes are logged through. A handle without a journal (tools and tests that
/// open trees on a bare database) applies writes to sled only; their durability is then a
/// sled flush.
#[derive(Clone, Default)]
pub struct Redo(Option<Arc<Shared>>);

impl std::fmt::Debug for Redo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Redo(journal)"
        } else {
            "Redo(none)"
        })
    }
}

impl Redo {
    pub(super) fn journal(shared: Arc<Shared>) -> Redo {
        Redo(Some(shared))
    }

    /// A handle that logs nothing.
    pub fn none() -> Redo {
        Redo(None)
    }

    /// The write-back layers of tree `name`, if its writes are held in memory until the
    /// checkpoint: an overlaid tree ([`OVERLAID`]) logged to a journal.
    fn overlay(&self, name: &str) -> Option<Overlay> {
        let shared = self.0.as_ref()?;
        OVERLAID
            .contains(&name)
            .then(|| shared.overlay(name.as_bytes()))
    }

    /// Runs `apply` (the sled write) and logs the record `body` builds, under the lock that
    /// orders redo records like the writes they describe.
    fn logged<T>(
        &self,
        direct: bool,
        apply: impl FnOnce() -> Result<T, sled::Error>,
        body: impl FnOnce(&T, &mut Vec<u8>),
    ) -> Result<T, sled::Error> {
        let Some(shared) = &self.0 else {
            return apply();
        };
        if !direct {
            shared.wait_for_room();
        }
        let mut order = shared.redo_order();
        let out = apply()?;
        let mut record = Vec::new();
        body(&out, &mut record);
        if !record.is_empty() {
            shared
                .append_redo(&mut order, &record, direct)
                .map_err(journal_error)?;
        }
        Ok(out)
    }

    /// Runs `run` over `trees` as one transaction. It runs under `turn`, the lock every
    /// transaction on these trees takes (so they run one at a time and none sees another
    /// half-done), and reads through its own writes. When it returns `Ok`, all its writes are
    /// applied at once, under the lock that numbers redo records, and logged as one record;
    /// when it returns `Err`, nothing is written. Without a journal the writes go to sled in
    /// one sled transaction.
    pub fn transact<T, E, const N: usize>(
        &self,
        turn: &std::sync::Mutex<()>,
        trees: [&LoggedTree; N],
        run: impl FnOnce(&[TxTree<'_>; N]) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sled::Error>,
    {
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        let writes = RefCell::new(Vec::new());
        let views = std::array::from_fn(|index| TxTree {
            index,
            tree: trees[index],
            writes: &writes,
        });
        let out = run(&views)?;
        let writes = writes.into_inner();
        if !writes.is_empty() {
            self.commit(&trees, writes)?;
        }
        Ok(out)
    }

    /// Applies and logs the writes of one transaction on `trees`.
    fn commit(&self, trees: &[&LoggedTree], writes: Vec<TxWrite>) -> Result<(), sled::Error> {
        let mut per_tree: Vec<Vec<(sled::IVec, Option<sled::IVec>)>> =
            trees.iter().map(|_| Vec::new()).collect();
        for (index, key, value) in writes {
            per_tree[index].push((key, value));
        }
        if self.0.is_none() {
            use sled::transaction::TransactionError;
            use sled::Transactional;
            let sled_trees: Vec<&sled::Tree> = trees.iter().map(|t| &t.tree).collect();
            return sled_trees
                .as_slice()
                .transaction(|txs| {
                    for (tx, writes) in txs.iter().zip(&per_tree) {
                        for (key, value) in writes {
                            match value {
                                Some(v) => tx.insert(key, v.clone())?,
                                None => tx.remove(key)?,
                            };
                        }
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<()>| match e {
                    TransactionError::Storage(e) => e,
                    TransactionError::Abort(()) => {
                        sled::Error::ReportableBug("a write-only transaction aborted".into())
                    }
                });
        }
        let mut record = Vec::new();
        for (tree, writes) in trees.iter().zip(&per_tree) {
            if writes.is_empty() {
                continue;
            }
            let mut ops = Vec::new();
            for (key, value) in writes {
                put_op(&mut ops, key, value.as_deref());
            }
            tree.section(&ops, &mut record);
        }
        let direct = trees.iter().any(|t| t.direct());
        self.logged(
            direct,
            || {
                for (tree, writes) in trees.iter().zip(per_tree) {
                    if writes.is_empty() {
                        continue;
                    }
                    match &tree.overlay {
                        Some(o) => o.put_all(writes),
                        None => tree.tree.apply_batch(Batch::into_sled(writes))?,
                    }
                }
                Ok(())
            },
            |_, r| r.extend_from_slice(&record),
        )
    }
}

/// A write of a transaction: the index of its tree, the key, the new value (`None`: removed).
type TxWrite = (usize, sled::IVec, Option<sled::IVec>);

/// One tree as a [`Redo::transact`] transaction sees it: its own writes first, then the tree.
#[derive(Debug)]
pub struct TxTree<'t> {
    index: usize,
    tree: &'t LoggedTree,
    writes: &'t RefCell<Vec<TxWrite>>,
}

impl TxTree<'_> {
    pub fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, sled::Error> {
        let own = self
            .writes
            .borrow()
            .iter()
            .rev()
            .find(|(index, k, _)| *index == self.index && k.as_ref() == key)
            .map(|(_, _, value)| value.clone());
        match own {
            Some(value) => Ok(value),
            None => self.tree.get(key),
        }
    }

    pub fn insert(&self, key: &[u8], value: Vec<u8>) {
        self.writes
            .borrow_mut()
            .push((self.index, key.into(), Some(value.into())));
    }

    pub fn remove(&self, key: &[u8]) {
        self.writes
            .borrow_mut()
            .push((self.index, key.into(), None));
    }
}

/// A batch of writes to one [`LoggedTree`], applied atomically (like `sled::Batch`).
#[derive(Default, Debug)]
pub struct Batch {
    writes: Vec<(sled::IVec, Option<sled::IVec>)>,
    ops: Vec<u8>,
}

impl Batch {
    pub fn insert<K: Into<sled::IVec>, V: Into<sled::IVec>>(&mut self, key: K, value: V) {
        let (key, value) = (key.into(), value.into());
        put_op(&mut self.ops, &key, Some(&value));
        self.writes.push((key, Some(value)));
    }

    pub fn remove<K: Into<sled::IVec>>(&mut self, key: K) {
        let key = key.into();
        put_op(&mut self.ops, &key, None);
        self.writes.push((key, None));
    }

    fn into_sled(writes: Vec<(sled::IVec, Option<sled::IVec>)>) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        batch
    }
}

/// The trees whose logged writes are held in memory until the checkpoint
/// ([`super::overlay`]): the ones written while handling a request (sessions, outbox, stats,
/// the OTP ledger and its audit log).
pub(super) const OVERLAID: &[&str] = &[
    "runtime",
    "stats",
    "otp_codes",
    "otp_customers",
    "otp_global",
    "otp_outgoing",
    "audit",
];

/// A sled tree whose writes are logged. Reads see every write at once, whether it is still in
/// memory ([`super::overlay`]) or already in sled.
#[derive(Clone, Debug)]
pub struct LoggedTree {
    tree: sled::Tree,
    redo: Redo,
    /// The write-back layers of an overlaid tree logged to a journal; `None`: writes go
    /// straight to sled.
    overlay: Option<Overlay>,
}

impl LoggedTree {
    pub fn open(db: &sled::Db, name: &str, redo: Redo) -> Result<LoggedTree, sled::Error> {
        let overlay = redo.overlay(name);
        Ok(LoggedTree {
            tree: db.open_tree(name)?,
            redo,
            overlay,
        })
    }

    /// The same tree, logged through `redo`.
    pub fn with_redo(self, redo: Redo) -> LoggedTree {
        let overlay = redo.overlay(&String::from_utf8_lossy(&self.tree.name()));
        LoggedTree {
            redo,
            overlay,
            ..self
        }
    }

    /// Keeps every key of the one-byte `prefixes` in memory, read from there alone: for
    /// small, hot key ranges scanned again and again (the outbox's queue). No effect on a tree
    /// without layers.
    pub fn keep_resident(&self, prefixes: &[u8]) -> Result<(), sled::Error> {
        match &self.overlay {
            Some(o) => o.keep_resident(&self.tree, prefixes),
            None => Ok(()),
        }
    }

    fn section(&self, ops: &[u8], record: &mut Vec<u8>) {
        put_section(record, &self.tree.name(), ops);
    }

    fn direct(&self) -> bool {
        self.overlay.is_none()
    }

    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Option<sled::IVec>, sled::Error> {
        match &self.overlay {
            Some(o) => o.get(&self.tree, key.as_ref()),
            None => self.tree.get(key),
        }
    }

    pub fn contains_key<K: AsRef<[u8]>>(&self, key: K) -> Result<bool, sled::Error> {
        Ok(self.get(key)?.is_some())
    }

    pub fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(&self, range: R) -> Iter {
        let owned = |b: std::ops::Bound<&K>| match b {
            std::ops::Bound::Included(k) => std::ops::Bound::Included(k.as_ref().to_vec()),
            std::ops::Bound::Excluded(k) => std::ops::Bound::Excluded(k.as_ref().to_vec()),
            std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
        };
        let (low, high) = (owned(range.start_bound()), owned(range.end_bound()));
        match &self.overlay {
            Some(o) => o.range(&self.tree, low, high),
            None => Iter::plain(self.tree.range((low, high))),
        }
    }

    pub fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        let prefix = prefix.as_ref();
        match &self.overlay {
            Some(o) => o.range(
                &self.tree,
                std::ops::Bound::Included(prefix.to_vec()),
                super::overlay::prefix_end(prefix),
            ),
            None => Iter::plain(self.tree.scan_prefix(prefix)),
        }
    }

    pub fn iter(&self) -> Iter {
        self.scan_prefix([])
    }

    pub fn apply_batch(&self, batch: Batch) -> Result<(), sled::Error> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let Batch { writes, ops } = batch;
        self.redo.logged(
            self.direct(),
            || match &self.overlay {
                Some(o) => {
                    o.put_all(writes);
                    Ok(())
                }
                None => self.tree.apply_batch(Batch::into_sled(writes)),
            },
            |_, r| self.section(&ops, r),
        )
    }

    pub fn insert<K: AsRef<[u8]>, V: Into<sled::IVec>>(
        &self,
        key: K,
        value: V,
    ) -> Result<Option<sled::IVec>, sled::Error> {
        self.write(key.as_ref(), value.into(), true)
    }

    /// Like [`LoggedTree::insert`] without reading what the key held: for writes whose caller
    /// has no use for it (a key held only in sled would otherwise cost a lookup in sled).
    pub fn put<K: AsRef<[u8]>, V: Into<sled::IVec>>(
        &self,
        key: K,
        value: V,
    ) -> Result<(), sled::Error> {
        self.write(key.as_ref(), value.into(), false).map(drop)
    }

    /// Writes and logs `value` under `key`; returns what the key held when `read_old` (else
    /// `None` from the write-back layers, which then skip the lookup).
    fn write(
        &self,
        key: &[u8],
        value: sled::IVec,
        read_old: bool,
    ) -> Result<Option<sled::IVec>, sled::Error> {
        let mut ops = Vec::new();
        put_op(&mut ops, key, Some(&value));
        self.redo.logged(
            self.direct(),
            || match &self.overlay {
                Some(o) if read_old => o.swap(&self.tree, key, Some(value.clone())),
                Some(o) => {
                    o.put_all(vec![(sled::IVec::from(key), Some(value.clone()))]);
                    Ok(None)
                }
                None => self.tree.insert(key, value.clone()),
            },
            |_, r| self.section(&ops, r),
        )
    }

    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> Result<Option<sled::IVec>, sled::Error> {
        self.redo.logged(
            self.direct(),
            || match &self.overlay {
                Some(o) => o.swap(&self.tree, key.as_ref(), None),
                None => self.tree.remove(key.as_ref()),
            },
            |old, r| {
                if old.is_some() {
                    let mut ops = Vec::new();
                    put_op(&mut ops, key.as_ref(), None);
                    self.section(&ops, r);
                }
            },
        )
    }

    /// Like sled's: `f` may run more than once; the resulting value is logged.
    pub fn update_and_fetch<K: AsRef<[u8]>, V: Into<sled::IVec>>(
        &self,
        key: K,
        f: impl FnMut(Option<&[u8]>) -> Option<V>,
    ) -> Result<Option<sled::IVec>, sled::Error> {
        self.redo.logged(
            self.direct(),
            || match &self.overlay {
                Some(o) => o.update(&self.tree, key.as_ref(), f),
                None => self.tree.update_and_fetch(key.as_ref(), f),
            },
            |new, r| {
                let mut ops = Vec::new();
                put_op(&mut ops, key.as_ref(), new.as_deref());
                self.section(&ops, r);
            },
        )
    }

    /// Removes `key` if it still holds `expected`; whether it did.
    pub fn remove_if(&self, key: &[u8], expected: &sled::IVec) -> Result<bool, sled::Error> {
        self.redo.logged(
            self.direct(),
            || match &self.overlay {
                Some(o) => o.remove_if(&self.tree, key, expected),
                None => self
                    .tree
                    .compare_and_swap(key, Some(expected), None::<&[u8]>)
                    .map(|r| r.is_ok()),
            },
            |removed, r| {
                if *removed {
                    let mut ops = Vec::new();
                    put_op(&mut ops, key, None);
                    self.section(&ops, r);
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_to_their_operations_in_order() {
        let mut body = Vec::new();
        let mut ops = Vec::new();
        put_op(&mut ops, b"k1", Some(b"v1"));
        put_op(&mut ops, b"k2", None);
        put_section(&mut body, b"runtime", &ops);
        let mut ops = Vec::new();
        put_op(&mut ops, b"", Some(b""));
        put_section(&mut body, b"otp_codes", &ops);
        let decoded = decode(&body).expect("decodes");
        let seen: Vec<_> = decoded
            .iter()
            .map(|o| (o.tree.to_vec(), o.key.to_vec(), o.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            seen,
            vec![
                (b"runtime".to_vec(), b"k1".to_vec(), Some(b"v1".to_vec())),
                (b"runtime".to_vec(), b"k2".to_vec(), None),
                (b"otp_codes".to_vec(), vec![], Some(vec![])),
            ]
        );
        // The second section: its name's length, its name, its operations' length, and one
        // put of an empty key and value (kind, two lengths).
        let first = body.len() - (1 + b"otp_codes".len() + 4 + (1 + 4 + 4));
        for cut in 1..body.len() {
            // A cut body is refused, never misread (the journal's checksum catches it first):
            // only a cut right after the first section is a whole record, of its two puts.
            assert_eq!(
                decode(&body[..cut]).map(|ops| ops.len()),
                (cut == first).then_some(2),
                "cut at {cut}"
            );
        }
    }
}
