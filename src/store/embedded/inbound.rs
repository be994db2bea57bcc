//! The inbound event log: each WhatsApp event recorded once, in arrival order, until handled.
//!
//! Inbound events are the webhook's hot path, so they do not go through sled: they are appended
//! to a journal of segment files (format in [`super::journal`]) by one writer thread that
//! group-commits — every batch is one `write` and one `fdatasync`, shared by all the requests
//! that arrived meanwhile. An event is handed to the runtime (the release hook) only once it is
//! on disk, in the order it was recorded, so nothing the runtime does can get ahead of the record
//! it is acting on.
//!
//! Deduplication looks a 128-bit digest of the dedupe key (the message id; the message id and
//! status for a status) up in memory for the last minute's events and in immutable sorted files
//! of digests ([`super::dedupe`], the directory `dedupe`) for older ones: the checkpoint moves
//! digests there once their events are on disk, a minute's worth at a time, so memory stays
//! flat however long the server runs. Only the digest is looked up — a redelivery is recognised
//! whatever `timestamp` WhatsApp puts on it — and each record keeps our receive time, so that
//! records expire 7 days after we received the event (WhatsApp's retry period). A sled tree
//! (`inbound-dedupe`, after what it held until 0.7) records how far the moves have got and the
//! oldest unhandled event, so a start-up reads only the journal segments after both, not the
//! whole retention period.
//!
//! An event counts as handled once the runtime says so *and* sled has since been flushed (the
//! checkpoint, every second), so a "handled" mark never reaches disk before the effects of
//! handling it. A crash replays at most the last second's events; the runtime's handling is
//! idempotent (`last_inbound`, forward-only statuses, outbox ids derived from the sequence
//! number).
//!
//! The same journal carries the redo records of store writes ([`super::redo`]): a session step
//! and the events around it share one `fdatasync`. The checkpoint also records how far sled has
//! those on disk, and a start re-applies the later ones before anything else reads the database.
//! A closed segment is deleted by the checkpoint as soon as a start no longer needs it (events
//! handled, digests moved, redo records flushed). Segments close by size or age whether or not
//! they hold events: store writes alone (API calls, no webhook event) would otherwise grow one
//! segment without bound. A segment without events closes at a batch without events, and the
//! next is named one sequence number later (a number never given to an event), so names stay
//! distinct and ordered and event locations keep naming their files.
//!
//! Records are sealed at rest: a customer's message may be the code they were sent.

use super::dedupe::{DedupeRuns, Entry};
use super::journal::{self, Record};
use super::StoreError;
use crate::domain::InboundEvent;
use crate::otp::RecordSealer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A segment is closed once it holds this many bytes …
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// … or is this old, so that expired events can go a segment at a time (the store's options
/// may choose others).
pub const SEGMENT_AGE: Duration = Duration::from_secs(3600);
/// How often the writer wakes when idle (the checkpoint's period is the store's option).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Most sequence numbers in one "handled" record.
const HANDLED_PER_RECORD: usize = 4096;
/// Dedupe digests stay in memory this long (WhatsApp's quick retries), then move to a run …
const RECENT_SECS: i64 = 60;
/// … or sooner when memory holds more than this many.
const RECENT_MAX: usize = 131_072;
/// A run is written once this many digests are due to move, or the oldest of them has waited
/// this long.
const RUN_MIN: usize = 65_536;
const RUN_EVERY_SECS: i64 = 60;
/// Keys of the tree `inbound-dedupe`, named for what it held until 0.7.
const MOVED_THROUGH: &[u8] = b"\xffmoved-through";
const HANDLED_FLOOR: &[u8] = b"\xffhandled-floor";
/// The layout of the dedupe tree (absent: the timestamp-keyed layout of earlier versions).
const FORMAT: &[u8] = b"\xffformat";
/// The tree holds no dedupe record: they are in runs ([`super::dedupe`]).
const FORMAT_RUNS: &[u8] = &[3];
/// The last redo record sled is known to hold on disk, and the segment the journal was writing
/// when it was taken (no later record is in an earlier segment): see [`super::redo`].
const REDO_THROUGH: &[u8] = b"\xffredo-through";
/// The key of the `redo-applied` tree: the last redo record whose writes to the trees written
/// straight to sled sled holds (the OTP ledger's, in stores written by 0.5 and earlier).
const APPLIED_THROUGH: &[u8] = b"through";
/// Its key for the overlaid trees ([`super::redo::OVERLAID`]): every record up to it is in sled,
/// stored by the checkpoint that moved their write-back layers there. Absent (a store written
/// before the layers existed): [`APPLIED_THROUGH`] says it for every tree.
const OVERLAY_THROUGH: &[u8] = b"overlay-through";
/// Dedupe records removed per sled batch when moving them out of an earlier version's tree …
const BATCH_RECORDS: usize = 10_000;
/// … and records per run written from it.
const EXPORT_CHUNK: usize = 1_000_000;

/// The outcome of recording an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time seen; handle it. The sequence number orders events by arrival.
    New { seq: u64 },
    /// Seen before; acknowledge and do nothing.
    Duplicate,
}

/// An event as kept in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Unix seconds when we received it.
    pub received_at: i64,
    pub event: InboundEvent,
}

#[derive(Serialize)]
struct StoredEventRef<'a> {
    received_at: i64,
    event: &'a InboundEvent,
}

/// Called with each newly recorded event once it is on disk, in recording order.
pub type Release = Arc<dyn Fn(u64, InboundEvent) + Send + Sync>;

type Waiter = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Where an event's record is.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    /// Latest receive time of its events (`i64::MIN` while it has none; the file's
    /// modification time for a segment not read at start-up).
    newest: i64,
    events: usize,
    bytes: u64,
    opened: Instant,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(tree
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes))
}

/// An event appended to the buffer, not yet written.
struct Unwritten {
    seq: u64,
    received_at: i64,
    event: InboundEvent,
    offset: usize,
    len: u32,
}

struct State {
    next_seq: u64,
    /// Digests of recent events (older ones are in the dedupe tree) …
    dedupe: HashSet<[u8; 16]>,
    /// … in recording order, for moving them.
    recent: VecDeque<Recent>,
    /// How many times digests have been moved from memory to the tree: a recorder that saw
    /// this change between its two looks must look in the tree again.
    moves: u64,
    /// Every event up to this sequence number is on disk in the journal.
    written_through: Option<u64>,
    /// A rotation asked for by an operator or a test.
    rotate: bool,
    /// The last handled floor put in the dedupe tree.
    floor_written: Option<u64>,
    /// Events not yet handled; the location is known once written.
    pending: BTreeMap<u64, Option<Location>>,
    buffer: Vec<u8>,
    unwritten: Vec<Unwritten>,
    /// Bytes ever appended to the buffer, and how many of them are on disk.
    appended: u64,
    synced: u64,
    waiters: Vec<(u64, Waiter)>,
    /// Handled in memory; marked on disk at the next checkpoint.
    handled: Vec<u64>,
    /// Set when a write or sync failed: the journal then refuses everything (a restart
    /// re-reads what is on disk).
    failed: Option<String>,
    segments: Vec<Segment>,
    closing: bool,
    /// The redo record number last stored as checkpointed, and the segment stored with it.
    redo_checkpointed: u64,
    redo_segment: u64,
    /// The segment stored with the checkpoint before that one: that checkpoint is on disk (a
    /// flush came after it), so segments before this one hold no record a start would replay.
    redo_segment_durable: u64,
}

pub(super) struct Shared {
    dir: PathBuf,
    /// Where the journal keeps its positions (and, in stores before 0.8, the dedupe records).
    index: sled::Tree,
    /// Dedupe digests of events older than [`RECENT_SECS`].
    runs: DedupeRuns,
    sealer: Arc<RecordSealer>,
    state: Mutex<State>,
    wake: Condvar,
    release: Mutex<Option<Release>>,
    /// The next redo record number; held while a logged write is applied and appended.
    redo: Mutex<u64>,
    /// The number of the last logged write applied to sled (tree `redo-applied`).
    applied: sled::Tree,
    /// The write-back layers of the overlaid trees, by tree name ([`super::overlay`]).
    overlays: Mutex<Vec<(Vec<u8>, super::overlay::Overlay)>>,
    /// Bytes the layers hold, all trees together: past [`LAYER_BYTES`], writers wait for the
    /// checkpoint, which runs at once.
    layer_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// When the current segment is closed: this many bytes, or this age.
    segment_bytes: u64,
    segment_age: Duration,
}

impl Shared {
    /// Whether the runs hold `digest` (an event received a minute or more ago).
    fn in_runs(&self, digest: &[u8; 16]) -> Result<bool, StoreError> {
        self.runs
            .contains(digest)
            .map_err(|e| StoreError::Journal(format!("reading the dedupe runs: {e}")))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock that orders logged writes ([`super::redo`]).
    pub(super) fn redo_order(&self) -> MutexGuard<'_, u64> {
        self.redo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The write-back layers of tree `name`: one for all its handles.
    pub(super) fn overlay(&self, name: &[u8]) -> super::overlay::Overlay {
        let mut overlays = self.overlays.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, o)) = overlays.iter().find(|(n, _)| n == name) {
            return o.clone();
        }
        let o = super::overlay::Overlay::counted(self.layer_bytes.clone());
        overlays.push((name.to_vec(), o.clone()));
        o
    }

    /// Whether the layers hold more than the checkpoint should let them.
    fn layers_full(&self, share: usize) -> bool {
        self.layer_bytes.load(std::sync::atomic::Ordering::Relaxed) > LAYER_BYTES / share
    }

    /// Holds a writer back while the layers are full, so that a burst the checkpoint cannot
    /// keep up with (sled takes a second's writes more slowly than memory does) waits rather
    /// than filling memory. Gives up after a few seconds (no checkpoint running: tests, tools).
    pub(super) fn wait_for_room(&self) {
        let mut waited = 0;
        while self.layers_full(1) && waited < 400 {
            std::thread::sleep(Duration::from_millis(5));
            waited += 1;
        }
    }

    fn overlays(&self) -> Vec<(Vec<u8>, super::overlay::Overlay)> {
        self.overlays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Appends a redo record with the next number (the caller holds `order`). Durable once
    /// the journal's next `fdatasync` is: [`InboundLog::durable`]. `direct`: its writes went
    /// straight to sled (not to write-back layers).
    pub(super) fn append_redo(
        &self,
        order: &mut u64,
        body: &[u8],
        direct: bool,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        if let Some(failed) = &st.failed {
            return Err(StoreError::Journal(failed.clone()));
        }
        // Set right after the write it numbers (both under `order`): whatever prefix of its
        // writes sled recovers after a crash, this says where the journal's records take over
        // (a replay from one record earlier at most re-applies a value sled already has).
        // Writes held in layers reach sled at the checkpoint, which says so itself.
        if direct {
            self.applied
                .insert(APPLIED_THROUGH, &order.to_be_bytes())
                .map_err(StoreError::from)?;
        }
        let before = st.buffer.len();
        journal::put_redo(&mut st.buffer, *order, body);
        st.appended += (st.buffer.len() - before) as u64;
        *order += 1;
        Ok(())
    }
}

/// Handle to the inbound journal. Dropping it checkpoints, writes what is buffered and joins
/// its threads.
pub struct InboundLog {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<(mpsc::Sender<mpsc::Sender<()>>, std::thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for InboundLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundLog")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for InboundLog {
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.checkpointer.take() {
            drop(tx);
            let _ = thread.join();
        }
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.writer.take() {
            let _ = thread.join();
        }
    }
}

/// The additional authenticated data of an event's seal (the key the record had in the sled
/// layout before the journal, so migrated records keep their seals).
fn seal_slot(seq: u64) -> [u8; 9] {
    let mut k = [b'l'; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// A recent event's dedupe record, in memory until it moves to the tree.
#[derive(Debug, Clone, Copy)]
struct Recent {
    seq: u64,
    digest: [u8; 16],
    received_at: i64,
}

/// Moves the dedupe records a sled tree held in earlier versions into a run, then deletes them
/// from the tree. Two layouts: keyed by WhatsApp's timestamp and the digest (24 bytes, first
/// byte 0 for any real timestamp), and keyed by `d` and the digest with a second key `e`, the
/// receive time and the digest (0.3 to 0.7); the value of the first key is our receive time in
/// both. The run is written before anything is deleted and the format mark is set by the last
/// batch, so an interrupted move is done again at the next start (the same digest twice in the
/// runs is harmless).
fn export_dedupe_tree(index: &sled::Tree, runs: &DedupeRuns) -> Result<(), StoreError> {
    if index.get(FORMAT)?.as_deref() == Some(FORMAT_RUNS) {
        return Ok(());
    }
    // A run (and a batch of removals) per million records, so that a large tree does not
    // have to fit in memory.
    let mut moved = 0;
    loop {
        let mut entries = Vec::new();
        let mut doomed = Vec::new();
        let mut done = true;
        for item in index.iter() {
            let (k, v) = item?;
            let digest = match (k.first(), k.len()) {
                (Some(0), 24) => k.get(8..),
                (Some(b'd'), 17) => k.get(1..),
                (Some(b'e'), 25) => None,
                _ => continue,
            };
            if let Some(Ok(digest)) = digest.map(<[u8; 16]>::try_from) {
                let received_at = <[u8; 8]>::try_from(v.as_ref()).map_or(0, i64::from_be_bytes);
                entries.push(Entry {
                    digest,
                    received_at,
                });
            }
            doomed.push(k);
            if doomed.len() == EXPORT_CHUNK {
                done = false;
                break;
            }
        }
        moved += entries.len();
        runs.add(entries)
            .map_err(|e| StoreError::Journal(format!("writing the dedupe runs: {e}")))?;
        for chunk in doomed.chunks(BATCH_RECORDS) {
            let mut batch = sled::Batch::default();
            for k in chunk {
                batch.remove(k);
            }
            index.apply_batch(batch)?;
        }
        if done {
            break;
        }
    }
    index.insert(FORMAT, FORMAT_RUNS)?;
    index.flush()?;
    if moved > 0 {
        tracing::info!(records = moved, "inbound dedupe records moved out of sled");
    }
    Ok(())
}

fn digest(dedupe_key: &[u8]) -> [u8; 16] {
    let full = Sha256::digest(dedupe_key);
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Journal(format!("{what} {}: {e}", path.display()))
}

impl InboundLog {
    /// Opens the journal in `dir`, importing the events of an older sled-based log from `db`
    /// the first time, and starts its writer and checkpoint threads. A segment is closed once
    /// it holds `segment_bytes` or is `segment_age` old ([`SEGMENT_BYTES`], [`SEGMENT_AGE`]).
    pub(super) fn open(
        db: &sled::Db,
        sealer: Arc<RecordSealer>,
        dir: &Path,
        checkpoint_every: Option<Duration>,
        (segment_bytes, segment_age): (u64, Duration),
    ) -> Result<InboundLog, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let mut listed =
            journal::list_segments(dir).map_err(|e| io_error("cannot list", dir, e))?;
        if listed.is_empty() {
            migrate(db, &sealer, dir)?;
            listed = journal::list_segments(dir).map_err(|e| io_error("cannot list", dir, e))?;
        } else if db.tree_names().iter().any(|n| n.as_ref() == b"inbound") {
            // Imported by an earlier start that stopped before removing the old tree.
            db.drop_tree("inbound")?;
        }
        let index = db.open_tree("inbound-dedupe")?;
        let runs_dir = dir.join("dedupe");
        let runs =
            DedupeRuns::open(&runs_dir).map_err(|e| io_error("cannot open", &runs_dir, e))?;
        export_dedupe_tree(&index, &runs)?;
        let moved_through = read_u64(&index, MOVED_THROUGH)?;
        let floor = read_u64(&index, HANDLED_FLOOR)?.unwrap_or(0);
        // Records up to this number are in sled on disk; later ones are replayed below. No
        // checkpoint yet: every record is replayed, from the first segment.
        let (redo_through, redo_segment) = match index.get(REDO_THROUGH)? {
            Some(v) if v.len() == 16 => (
                u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
                u64::from_be_bytes(v[8..].try_into().unwrap_or_default()),
            ),
            _ => (0, 0),
        };
        // The last logged write sled recovered: replay starts after it (exact, where the
        // checkpoint's position may lag a second behind).
        let applied = db.open_tree("redo-applied")?;
        let checkpointed = redo_through;
        let direct_through = read_u64(&applied, APPLIED_THROUGH)?.unwrap_or(redo_through);
        let overlay_stored = read_u64(&applied, OVERLAY_THROUGH)?;
        let overlay_through = overlay_stored.unwrap_or(direct_through);
        // Records at or before both are in sled for every tree.
        let redo_through = direct_through.min(overlay_through);
        let mut next_redo = direct_through.max(overlay_through).max(checkpointed) + 1;
        let (mut replayed, mut replay_error) = (0usize, None::<StoreError>);
        let mut replay_trees = HashMap::new();
        // Older events are all handled and their digests are in the tree: their segments
        // need not be read.
        let read_from = floor.min(moved_through.map_or(0, |m| m + 1));
        let mut state = State {
            next_seq: moved_through.map_or(0, |m| m + 1).max(floor),
            dedupe: Default::default(),
            recent: Default::default(),
            moves: 0,
            written_through: None,
            rotate: false,
            floor_written: None,
            pending: BTreeMap::new(),
            buffer: Vec::new(),
            unwritten: Vec::new(),
            appended: 0,
            synced: 0,
            waiters: Vec::new(),
            handled: Vec::new(),
            failed: None,
            segments: Vec::new(),
            closing: false,
            redo_checkpointed: redo_through,
            redo_segment,
            redo_segment_durable: redo_segment,
        };
        let last = listed.len().saturating_sub(1);
        let ends: Vec<u64> = listed.iter().skip(1).map(|(first, _)| *first).collect();
        for (i, (first, path)) in listed.into_iter().enumerate() {
            if i != last
                && ends
                    .get(i)
                    .is_some_and(|end| *end <= read_from && *end <= redo_segment)
            {
                let meta =
                    std::fs::metadata(&path).map_err(|e| io_error("cannot stat", &path, e))?;
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(i64::MAX, |d| d.as_secs() as i64);
                state.segments.push(Segment {
                    first,
                    path,
                    newest: modified,
                    events: 0,
                    bytes: meta.len(),
                    opened: Instant::now(),
                });
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| io_error("cannot read", &path, e))?;
            let mut segment = Segment {
                first,
                path: path.clone(),
                newest: i64::MIN,
                events: 0,
                bytes: 0,
                opened: Instant::now(),
            };
            let sound = journal::read_segment(&bytes, |record| match record {
                Record::Event {
                    seq,
                    received_at,
                    dedupe_key,
                    offset,
                    len,
                    ..
                } => {
                    if moved_through.map_or(true, |m| seq > m) {
                        let d = digest(dedupe_key);
                        state.dedupe.insert(d);
                        state.recent.push_back(Recent {
                            seq,
                            digest: d,
                            received_at,
                        });
                    }
                    if seq >= floor {
                        state.pending.insert(
                            seq,
                            Some(Location {
                                segment: first,
                                offset,
                                len,
                            }),
                        );
                    }
                    segment.events += 1;
                    segment.newest = segment.newest.max(received_at);
                    state.next_seq = state.next_seq.max(seq + 1);
                }
                Record::Handled(seqs) => {
                    for seq in seqs {
                        state.pending.remove(&seq);
                    }
                }
                Record::Redo { seq, body } => {
                    if seq <= redo_through || replay_error.is_some() {
                        return;
                    }
                    next_redo = next_redo.max(seq + 1);
                    // Each write is replayed where sled does not hold it yet: the overlaid
                    // trees' after the last checkpoint that moved them, the others' after
                    // the last one sled recovered.
                    let wanted = |tree: &[u8]| {
                        let overlaid = super::redo::OVERLAID.iter().any(|t| t.as_bytes() == tree);
                        seq > if overlaid {
                            overlay_through
                        } else {
                            direct_through
                        }
                    };
                    let done = match super::redo::decode(body) {
                        Some(mut ops) => {
                            ops.retain(|op| wanted(op.tree));
                            super::redo::replay(db, &mut replay_trees, &ops)
                                .and_then(|()| {
                                    applied
                                        .insert(APPLIED_THROUGH, &seq.to_be_bytes())
                                        .map(drop)
                                })
                                .map_err(StoreError::from)
                        }
                        None => Err(StoreError::Corrupt(format!(
                            "redo record {seq} is malformed"
                        ))),
                    };
                    match done {
                        Ok(()) => replayed += 1,
                        Err(e) => replay_error = Some(e),
                    }
                }
            });
            if let Some(e) = replay_error.take() {
                return Err(e);
            }
            segment.bytes = sound as u64;
            if sound < bytes.len() {
                if i == last {
                    // The tail of the newest segment was being written when the process
                    // stopped; nothing in it was acknowledged.
                    tracing::warn!(segment = %path.display(), kept = sound, dropped = bytes.len() - sound, "inbound journal: torn tail cut off");
                    repair_tail(&path, sound)?;
                    segment.bytes = sound.max(journal::MAGIC.len()) as u64;
                } else {
                    tracing::error!(segment = %path.display(), at = sound, "inbound journal: damaged segment; records after this point are unreadable");
                }
            }
            state.next_seq = state.next_seq.max(first);
            state.segments.push(segment);
        }
        if replayed > 0 {
            // Made part of sled's own state at once, so that no later start replays them
            // again over writes made after this one (a tool's, say).
            let through = next_redo - 1;
            let segment = state.segments.last().map_or(0, |s| s.first);
            applied.insert(APPLIED_THROUGH, &through.to_be_bytes())?;
            applied.insert(OVERLAY_THROUGH, &through.to_be_bytes())?;
            db.flush()?;
            let mut value = through.to_be_bytes().to_vec();
            value.extend_from_slice(&segment.to_be_bytes());
            index.insert(REDO_THROUGH, value)?;
            db.flush()?;
            state.redo_checkpointed = through;
            state.redo_segment = segment;
            state.redo_segment_durable = segment;
            tracing::info!(
                records = replayed,
                "store writes not yet flushed to the database replayed from the journal"
            );
        } else if overlay_stored.is_none() {
            // A new store, or one from before the write-back layers: sled holds every record
            // so far. Said on disk before any write can go to the layers, whose records a
            // start must then replay (without it, the fallback above would take the last
            // record written straight to sled for the layers' position too).
            applied.insert(OVERLAY_THROUGH, &(next_redo - 1).to_be_bytes())?;
            db.flush()?;
        }
        let current = state
            .segments
            .last()
            .map(|s| s.path.clone())
            .ok_or_else(|| StoreError::Journal("the journal has no segment".into()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&current)
            .map_err(|e| io_error("cannot open", &current, e))?;
        state.written_through = state.next_seq.checked_sub(1);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            index,
            runs,
            sealer,
            state: Mutex::new(state),
            wake: Condvar::new(),
            release: Mutex::new(None),
            redo: Mutex::new(next_redo),
            applied,
            overlays: Mutex::new(Vec::new()),
            layer_bytes: Default::default(),
            segment_bytes,
            segment_age,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("waotp-journal".into())
                .spawn(move || write_loop(&shared, file))
                .map_err(|e| StoreError::Journal(format!("cannot start the writer: {e}")))?
        };
        let checkpointer = {
            let (tx, rx) = mpsc::channel::<mpsc::Sender<()>>();
            let (shared, db) = (shared.clone(), db.clone());
            let thread = std::thread::Builder::new()
                .name("waotp-checkpoint".into())
                .spawn(move || {
                    let mut last = Instant::now();
                    loop {
                        // Every `every`, and at once whenever the write-back layers hold
                        // half of what they may.
                        let next = match checkpoint_every {
                            Some(every) => rx.recv_timeout(LAYER_POLL.min(every)),
                            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                        };
                        let asked = match next {
                            Ok(done) => Some(done),
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                let due = checkpoint_every.is_some_and(|e| last.elapsed() >= e);
                                if !due && !shared.layers_full(2) {
                                    continue;
                                }
                                None
                            }
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                checkpoint(&shared, &db, true);
                                return;
                            }
                        };
                        last = Instant::now();
                        checkpoint(&shared, &db, asked.is_some());
                        if let Some(done) = asked {
                            let _ = done.send(());
                        }
                    }
                })
                .map_err(|e| StoreError::Journal(format!("cannot start the checkpointer: {e}")))?;
            (tx, thread)
        };
        Ok(InboundLog {
            shared,
            writer: Some(writer),
            checkpointer: Some(checkpointer),
        })
    }

    /// Sets the hook that receives each new event once it is on disk.
    pub fn on_durable(&self, release: Option<Release>) {
        *self
            .shared
            .release
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = release;
    }

    /// Records `event` unless an event with the same dedupe key was recorded before. Not yet
    /// durable: await [`InboundLog::durable`] before acknowledging.
    pub fn record(&self, event: &InboundEvent, now: i64) -> Result<Recorded, StoreError> {
        let key = event.dedupe_key();
        let digest = digest(key.as_bytes());
        let plain = serde_json::to_vec(&StoredEventRef {
            received_at: now,
            event,
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Recent digests are in memory, older ones in the tree. The tree is read without the
        // lock, so that a read missing sled's cache stalls no other request. A recorded digest
        // is always in one of the two: the checkpoint writes it to the tree before dropping it
        // from memory, under the lock, and counts each such move.
        let moves_seen = {
            let st = self.shared.lock();
            if let Some(failed) = &st.failed {
                return Err(StoreError::Journal(failed.clone()));
            }
            if st.dedupe.contains(&digest) {
                return Ok(Recorded::Duplicate);
            }
            st.moves
        };
        if self.shared.in_runs(&digest)? {
            return Ok(Recorded::Duplicate);
        }
        let mut st = self.shared.lock();
        if let Some(failed) = &st.failed {
            return Err(StoreError::Journal(failed.clone()));
        }
        // The same event may have been recorded by a concurrent delivery meanwhile…
        if st.dedupe.contains(&digest) {
            return Ok(Recorded::Duplicate);
        }
        // …and, rarely, moved to the tree after the look there: then look again, under the
        // lock, which no further move can pass.
        if st.moves != moves_seen && self.shared.in_runs(&digest)? {
            return Ok(Recorded::Duplicate);
        }
        let event_ts = event.timestamp();
        let seq = st.next_seq;
        st.next_seq += 1;
        let sealed = self.shared.sealer.seal(&plain, &seal_slot(seq));
        let offset = st.buffer.len();
        journal::put_event(
            &mut st.buffer,
            seq,
            (now, event_ts),
            key.as_bytes(),
            &sealed,
        );
        let len = st.buffer.len() - offset;
        st.appended += len as u64;
        st.dedupe.insert(digest);
        st.recent.push_back(Recent {
            seq,
            digest,
            received_at: now,
        });
        st.pending.insert(seq, None);
        st.unwritten.push(Unwritten {
            seq,
            received_at: now,
            event: event.clone(),
            offset,
            len: len as u32,
        });
        Ok(Recorded::New { seq })
    }

    /// Resolves once everything recorded before the call is on disk (at once when it already
    /// is).
    pub async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.wait_for_sync(Box::new(move |r| {
            let _ = tx.send(r);
        }))? {
            return Ok(());
        }
        match rx.await {
            Ok(result) => result.map_err(StoreError::Journal),
            Err(_) => Err(StoreError::Journal("the journal writer stopped".into())),
        }
    }

    /// Like [`InboundLog::durable`], blocking the calling thread.
    pub fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        if !self.wait_for_sync(Box::new(move |r| {
            let _ = tx.send(r);
        }))? {
            return Ok(());
        }
        match rx.recv() {
            Ok(result) => result.map_err(StoreError::Journal),
            Err(_) => Err(StoreError::Journal("the journal writer stopped".into())),
        }
    }

    /// Registers `waiter` for the current end of the journal; false when nothing is unwritten.
    fn wait_for_sync(&self, waiter: Waiter) -> Result<bool, StoreError> {
        let mut st = self.shared.lock();
        if let Some(failed) = &st.failed {
            return Err(StoreError::Journal(failed.clone()));
        }
        if st.synced >= st.appended {
            return Ok(false);
        }
        let target = st.appended;
        st.waiters.push((target, waiter));
        drop(st);
        self.shared.wake.notify_one();
        Ok(true)
    }

    /// Makes handled marks and buffered records durable now (shutdown, tests).
    pub fn checkpoint_now(&self) -> Result<(), StoreError> {
        if let Some((tx, _)) = &self.checkpointer {
            let (done, wait) = mpsc::channel();
            if tx.send(done).is_ok() {
                let _ = wait.recv();
            }
        }
        self.sync()
    }

    /// The handle store writes are logged through ([`super::redo`]).
    pub(super) fn redo(&self) -> super::redo::Redo {
        super::redo::Redo::journal(self.shared.clone())
    }

    /// The handle the sled group commit uses to write handled marks after each flush.
    pub fn handled_marks(&self) -> HandledMarks {
        HandledMarks(self.shared.clone())
    }

    /// The sequence number the next new event will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.lock().next_seq
    }

    /// Whether the journal still accepts writes.
    pub fn healthy(&self) -> bool {
        self.shared.lock().failed.is_none()
    }

    /// Whether an event with this dedupe key has been recorded (and not yet expired).
    pub fn seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let d = digest(dedupe_key.as_bytes());
        let st = self.shared.lock();
        Ok(st.dedupe.contains(&d) || self.shared.in_runs(&d)?)
    }

    /// Closes the current segment at the next write once it holds an event (operators, tests;
    /// a segment without events closes by size or age only).
    pub fn rotate(&self) {
        self.shared.lock().rotate = true;
    }

    /// Events recorded but not yet handled, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.sync()?;
        let located: Vec<(u64, Option<Location>)> = self
            .shared
            .lock()
            .pending
            .iter()
            .map(|(seq, at)| (*seq, *at))
            .collect();
        let mut out = Vec::with_capacity(located.len());
        let mut files: HashMap<u64, File> = HashMap::new();
        for (seq, at) in located {
            let Some(at) = at else { continue };
            let path = journal::segment_path(&self.shared.dir, at.segment);
            let file = match files.entry(at.segment) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(File::open(&path).map_err(|e| io_error("cannot open", &path, e))?)
                }
            };
            let mut framed = vec![0; at.len as usize];
            file.read_exact_at(&mut framed, at.offset)
                .map_err(|e| io_error("cannot read", &path, e))?;
            match journal::parse_one(&framed, at.offset) {
                Some(Record::Event {
                    seq: found, sealed, ..
                }) if found == seq => out.push((seq, self.decode(seq, sealed)?)),
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "inbound event {seq} is not where the journal said"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Whether event `seq` was handled: given out and no longer pending.
    pub fn is_handled(&self, seq: u64) -> bool {
        let st = self.shared.lock();
        seq < st.next_seq && !st.pending.contains_key(&seq)
    }

    /// Marks an event as handled: once its effects are flushed it will not be replayed.
    pub fn mark_handled(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = self.shared.lock();
        st.pending.remove(&seq);
        st.handled.push(seq);
        Ok(())
    }

    fn segment_paths(&self) -> Vec<PathBuf> {
        let st = self.shared.lock();
        st.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// Every logged event, oldest first (reads every segment: for tests and operators).
    pub fn all(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.sync()?;
        let mut out = Vec::new();
        for path in self.segment_paths() {
            let bytes = std::fs::read(&path).map_err(|e| io_error("cannot read", &path, e))?;
            let mut sealed = Vec::new();
            journal::read_segment(&bytes, |record| {
                if let Record::Event { seq, sealed: s, .. } = record {
                    sealed.push((seq, s));
                }
            });
            for (seq, s) in sealed {
                out.push((seq, self.decode(seq, s)?));
            }
        }
        Ok(out)
    }

    /// Number of logged events (reads every segment: for tests and operators).
    pub fn len(&self) -> usize {
        if self.sync().is_err() {
            return 0;
        }
        let mut n = 0;
        for path in self.segment_paths() {
            if let Ok(bytes) = std::fs::read(&path) {
                journal::read_segment(&bytes, |r| {
                    if matches!(r, Record::Event { .. }) {
                        n += 1;
                    }
                });
            }
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the journal's segments occupy.
    pub fn size_on_disk(&self) -> u64 {
        let segments: u64 = self.shared.lock().segments.iter().map(|s| s.bytes).sum();
        segments + self.shared.runs.bytes()
    }

    /// Number of events not yet handled.
    pub fn pending_len(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Forgets dedupe records of events received before `cutoff` (Unix seconds) and deletes
    /// closed segments whose events are all that old and handled. Returns how many records
    /// went.
    pub fn purge_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let mut st = self.shared.lock();
        let (expired, recent): (VecDeque<Recent>, VecDeque<Recent>) =
            std::mem::take(&mut st.recent)
                .into_iter()
                .partition(|r| r.received_at < cutoff);
        st.recent = recent;
        for r in &expired {
            st.dedupe.remove(&r.digest);
        }
        let mut removed = expired.len();
        let floor = st.pending.keys().next().copied().unwrap_or(st.next_seq);
        let redo_floor = st.redo_segment_durable;
        let segments = std::mem::take(&mut st.segments);
        let ends: Vec<u64> = segments.iter().skip(1).map(|s| s.first).collect();
        let (mut doomed, mut keep) = (Vec::new(), Vec::new());
        for (i, segment) in segments.into_iter().enumerate() {
            // The current segment (the last) is never deleted, nor one with unhandled events.
            // Nor one that may hold redo records a start would still replay.
            let closed_and_handled = ends
                .get(i)
                .is_some_and(|end| *end <= floor && *end <= redo_floor);
            if closed_and_handled && segment.newest < cutoff {
                doomed.push(segment);
            } else {
                keep.push(segment);
            }
        }
        st.segments = keep;
        drop(st);
        for segment in &doomed {
            std::fs::remove_file(&segment.path)
                .map_err(|e| io_error("cannot remove", &segment.path, e))?;
            removed += segment.events;
        }
        // Dedupe records of older events, in the runs.
        let runs_dir = self.shared.dir.join("dedupe");
        removed += self
            .shared
            .runs
            .expire(cutoff)
            .map_err(|e| io_error("cannot expire dedupe records in", &runs_dir, e))?;
        if !doomed.is_empty() {
            journal::sync_dir(&self.shared.dir)
                .map_err(|e| io_error("cannot sync", &self.shared.dir, e))?;
        }
        Ok(removed)
    }

    fn decode(&self, seq: u64, sealed: &[u8]) -> Result<StoredEvent, StoreError> {
        let plain = self
            .shared
            .sealer
            .open(sealed, &seal_slot(seq))
            .map_err(|_| {
                StoreError::Corrupt("an inbound record does not open with this OTP key".into())
            })?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// Cuts a segment back to its sound prefix (rewriting the magic if even that was torn).
fn repair_tail(path: &Path, sound: usize) -> Result<(), StoreError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error("cannot open", path, e))?;
    if sound < journal::MAGIC.len() {
        file.set_len(0)
            .and_then(|()| file.write_all_at(journal::MAGIC, 0))
            .map_err(|e| io_error("cannot repair", path, e))?;
    } else {
        file.set_len(sound as u64)
            .map_err(|e| io_error("cannot repair", path, e))?;
    }
    file.sync_all()
        .map_err(|e| io_error("cannot sync", path, e))
}

/// Creates a segment file holding `bytes` (after the magic) atomically: written to a temporary
/// name, synced, renamed into place.
fn create_segment(dir: &Path, first: u64, bytes: &[u8]) -> Result<File, StoreError> {
    let path = journal::segment_path(dir, first);
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp).map_err(|e| io_error("cannot create", &tmp, e))?;
        file.write_all(journal::MAGIC)
            .and_then(|()| file.write_all(bytes))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("cannot write", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io_error("cannot rename", &tmp, e))?;
    journal::sync_dir(dir).map_err(|e| io_error("cannot sync", dir, e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| io_error("cannot open", &path, e))
}

/// Starts the journal: imports the events of the sled-based log of earlier versions (keeping
/// their sequence numbers, seals and pending marks), or creates an empty first segment. New
/// sequence numbers continue above every id sled has handed out.
fn migrate(db: &sled::Db, sealer: &RecordSealer, dir: &Path) -> Result<(), StoreError> {
    let floor = db.generate_id()?;
    let old = db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == b"inbound")
        .then(|| db.open_tree("inbound"))
        .transpose()?;
    let mut bytes = Vec::new();
    let mut first = floor;
    if let Some(tree) = &old {
        let mut pending = std::collections::HashSet::new();
        for item in tree.range([b'p']..[b'q']) {
            let (k, _) = item?;
            if let Some(seq) = k.get(1..9).and_then(|b| b.try_into().ok()) {
                pending.insert(u64::from_be_bytes(seq));
            }
        }
        let mut handled = Vec::new();
        for item in tree.range([b'l']..[b'm']) {
            let (k, sealed) = item?;
            let Some(seq) = k.get(1..9).and_then(|b| b.try_into().ok()) else {
                continue;
            };
            let seq = u64::from_be_bytes(seq);
            let plain = sealer.open(&sealed, &seal_slot(seq)).map_err(|_| {
                StoreError::Corrupt("an inbound record does not open with this OTP key".into())
            })?;
            let stored: StoredEvent =
                serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let key = stored.event.dedupe_key();
            journal::put_event(
                &mut bytes,
                seq,
                (stored.received_at, stored.event.timestamp()),
                key.as_bytes(),
                &sealed,
            );
            if !pending.contains(&seq) {
                handled.push(seq);
            }
            first = first.min(seq);
        }
        for chunk in handled.chunks(HANDLED_PER_RECORD) {
            journal::put_handled(&mut bytes, chunk);
        }
    }
    create_segment(dir, first, &bytes)?;
    if old.is_some() {
        db.drop_tree("inbound")?;
    }
    Ok(())
}

/// Handled marks on their way to disk: taken before a sled flush, written to the journal after
/// it succeeded (so a mark never reaches disk before the effects of handling its event).
#[derive(Clone)]
pub struct HandledMarks(Arc<Shared>);

impl std::fmt::Debug for HandledMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandledMarks")
    }
}

impl HandledMarks {
    /// Runs `flush` (a sled flush) and, if it succeeds, appends the marks of the events
    /// handled before it began; if it fails, they wait for the next one.
    ///
    /// The journal is synced first, so that what this flush settles (the handled marks, the
    /// redo position) never runs ahead of the records it relies on.
    pub fn around<T, E>(&self, flush: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let handled = std::mem::take(&mut self.0.lock().handled);
        if let Err(e) = sync_journal(&self.0) {
            tracing::error!(error = %e, "syncing the journal before a database flush failed");
        }
        let result = flush();
        let mut st = self.0.lock();
        if result.is_err() {
            st.handled.extend(handled);
        } else if !handled.is_empty() && st.failed.is_none() {
            let before = st.buffer.len();
            for chunk in handled.chunks(HANDLED_PER_RECORD) {
                journal::put_handled(&mut st.buffer, chunk);
            }
            // No wake-up: the marks ride with the next batch of events, or the idle write
            // within a second. An extra `fdatasync` per sled flush would double the disk's
            // work, and a mark lost in a crash only replays an event whose handling is
            // idempotent.
            st.appended += (st.buffer.len() - before) as u64;
        }
        result
    }
}

/// Waits until everything appended to the journal so far is on disk.
fn sync_journal(shared: &Shared) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    {
        let mut st = shared.lock();
        if let Some(failed) = &st.failed {
            return Err(failed.clone());
        }
        if st.synced >= st.appended {
            return Ok(());
        }
        let target = st.appended;
        st.waiters.push((
            target,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        ));
    }
    shared.wake.notify_one();
    rx.recv()
        .unwrap_or_else(|_| Err("the journal writer stopped".into()))
}

/// Moves the digests of events older than [`RECENT_SECS`] (and on disk) to a dedupe run, and
/// records in sled how far that has got and the oldest unhandled event. A run is written once a
/// minute's worth of digests is due, or [`RUN_MIN`] of them (at once when `explicit`), so that
/// runs are few and merging them is cheap.
fn move_dedupe(shared: &Shared, explicit: bool) -> Result<(), StoreError> {
    let now = unix_now();
    let (moving, floor) = {
        let mut st = shared.lock();
        let through = st.written_through;
        let excess = st.recent.len().saturating_sub(RECENT_MAX);
        let due = st
            .recent
            .iter()
            .enumerate()
            .take_while(|(i, r)| {
                (r.received_at <= now - RECENT_SECS || *i < excess)
                    && through.is_some_and(|t| r.seq <= t)
            })
            .count();
        let oldest_due = st.recent.front().map_or(now, |r| r.received_at);
        let write = due > 0
            && (explicit || due >= RUN_MIN || oldest_due <= now - RECENT_SECS - RUN_EVERY_SECS);
        let moving: Vec<Recent> = if write {
            st.recent.iter().take(due).copied().collect()
        } else {
            Vec::new()
        };
        let floor = st.pending.keys().next().copied().unwrap_or(st.next_seq);
        if moving.is_empty() && st.floor_written == Some(floor) {
            return Ok(());
        }
        st.floor_written = Some(floor);
        (moving, floor)
    };
    // Written while recorders go on: a digest is in memory until it is in a run.
    let entries = moving
        .iter()
        .map(|r| Entry {
            digest: r.digest,
            received_at: r.received_at,
        })
        .collect();
    if let Err(e) = shared.runs.add(entries) {
        shared.lock().floor_written = None;
        return Err(StoreError::Journal(format!("writing a dedupe run: {e}")));
    }
    let mut batch = sled::Batch::default();
    if let Some(r) = moving.last() {
        batch.insert(MOVED_THROUGH, &r.seq.to_be_bytes());
    }
    batch.insert(HANDLED_FLOOR, &floor.to_be_bytes());
    if let Err(e) = shared.index.apply_batch(batch) {
        shared.lock().floor_written = None;
        return Err(e.into());
    }
    if let Some(last) = moving.last() {
        let mut st = shared.lock();
        // In order, up to the last one moved: a purge may have taken some meanwhile.
        while st.recent.front().is_some_and(|r| r.seq <= last.seq) {
            if let Some(r) = st.recent.pop_front() {
                st.dedupe.remove(&r.digest);
            }
        }
        st.moves += 1;
    }
    Ok(())
}

/// Flushes sled in the background: marks handled events on disk once sled holds their
/// effects, and records how far the redo records are in sled on disk (see [`super::redo`]).
/// `explicit` (shutdown, [`InboundLog::checkpoint_now`]): the redo position is flushed too.
fn checkpoint(shared: &Arc<Shared>, db: &sled::Db, explicit: bool) {
    // A journal that failed holds back everything: events handled since may have effects
    // whose redo records never reached the disk, so neither their handled floor nor a redo
    // position may be stored, nor a segment deleted. The next start replays them.
    if shared.lock().failed.is_some() {
        return;
    }
    if let Err(e) = move_dedupe(shared, explicit) {
        tracing::error!(error = %e, "checkpoint: moving dedupe records failed");
    }
    // Every record up to `through` has been applied: to sled, or to the write-back layers,
    // which are frozen here, under the lock that applies and numbers the records, so the
    // frozen layers hold exactly the writes of records up to `through`.
    // Also what the flush below settles: events before `settled` are handled (their effects
    // are in sled, or in records the journal keeps until a checkpoint moves them there) and
    // their dedupe digests are in the tree.
    let overlays = shared.overlays();
    let (through, segment, settled) = {
        let order = shared.redo_order();
        let st = shared.lock();
        let moved = st.recent.front().map_or(st.next_seq, |r| r.seq);
        for (_, overlay) in &overlays {
            overlay.freeze();
        }
        (
            order.saturating_sub(1),
            st.segments.last().map_or(0, |s| s.first),
            st.floor_written.unwrap_or(0).min(moved),
        )
    };
    let redo_moved = {
        let st = shared.lock();
        let moved = st.redo_checkpointed < through || st.redo_segment != segment;
        if st.handled.is_empty() && !moved {
            return;
        }
        moved
    };
    if redo_moved {
        // The frozen layers go to sled only once their records are on disk: sled may write
        // them out at any moment, and must never hold a write the journal could lose.
        if let Err(e) = sync_journal(shared) {
            tracing::error!(error = %e, "checkpoint: syncing the journal failed");
            return;
        }
        if let Err(e) = move_layers(shared, db, &overlays, through) {
            tracing::error!(error = %e, "checkpoint: moving writes to the database failed");
            return;
        }
    }
    // sled's flush writes its log without an fsync; what a redo position or a segment's
    // deletion relies on must survive a power loss, not only a killed process.
    let flush_to_disk = || -> sled::Result<usize> {
        let flushed = db.flush()?;
        sync_sled_file(&shared.dir).map_err(sled::Error::Io)?;
        Ok(flushed)
    };
    if let Err(e) = HandledMarks(shared.clone()).around(flush_to_disk) {
        tracing::error!(error = %e, "checkpoint: flushing the database failed");
        return;
    }
    // sled holds the frozen layers on disk: reads find them there now.
    for (_, overlay) in &overlays {
        overlay.thaw();
    }
    if redo_moved {
        // Stored after the flush, so it never claims more than is on disk; the next flush
        // makes it durable, and until then a start replays a little more than it must.
        let mut value = through.to_be_bytes().to_vec();
        value.extend_from_slice(&segment.to_be_bytes());
        if let Err(e) = shared.index.insert(REDO_THROUGH, value) {
            tracing::error!(error = %e, "checkpoint: recording the redo position failed");
            return;
        }
        let durable = explicit && flush_to_disk().is_ok();
        let mut st = shared.lock();
        st.redo_checkpointed = through;
        st.redo_segment_durable = if durable { segment } else { st.redo_segment };
        st.redo_segment = segment;
    }
    let bound = settled.min(shared.lock().redo_segment_durable);
    if let Err(e) = drop_settled_segments(shared, bound) {
        tracing::error!(error = %e, "checkpoint: deleting settled journal segments failed");
    }
}

/// What the write-back layers may hold before writers wait for the checkpoint: about eight
/// seconds of the heaviest load measured (a second holds ~8 MB at 400 verifications/s).
const LAYER_BYTES: usize = 64 * 1024 * 1024;

/// How often the checkpointer looks at the layers between its regular runs.
const LAYER_POLL: Duration = Duration::from_millis(50);

/// Applies the frozen write-back layers to sled, one write at a time, and records that sled
/// holds the overlaid trees' writes up to record `through` (on disk with the flush after it).
///
/// Not in sled batches: a batch takes sled's database-wide write lock, which stops every read
/// of every tree (each request's) while it lasts, and one batch of a second's writes (a burst:
/// 100,000 sessions seeded in two seconds) held gigabytes until it ended. The checkpoint's
/// writes need not reach sled together: a start re-applies every record after the position
/// stored once they all have.
fn move_layers(
    shared: &Shared,
    db: &sled::Db,
    overlays: &[(Vec<u8>, super::overlay::Overlay)],
    through: u64,
) -> sled::Result<()> {
    for (name, overlay) in overlays {
        let writes = overlay.frozen_writes();
        if writes.is_empty() {
            continue;
        }
        let tree = db.open_tree(name)?;
        for (key, value) in writes {
            match value {
                Some(v) => tree.insert(key, v)?,
                None => tree.remove(key)?,
            };
        }
    }
    shared
        .applied
        .insert(OVERLAY_THROUGH, &through.to_be_bytes())?;
    Ok(())
}

/// Makes sled's log file durable (`fsync`): sled's own flush writes it and asks the kernel to
/// write it back, without forcing the file's size or the device's cache. The journal lives in
/// `<data>/inbound`; sled's log is `<data>/db`.
fn sync_sled_file(journal_dir: &Path) -> std::io::Result<()> {
    let data = journal_dir
        .parent()
        .ok_or_else(|| std::io::Error::other("the journal directory has no parent"))?;
    File::open(data.join("db"))?.sync_all()
}

/// Deletes the closed segments that hold nothing a start needs: every record in them is of an
/// event before `bound` (handled, its digest in the dedupe tree, all on disk) or a redo record
/// sled has on disk. Redo records make the journal grow with every store write, so segments go
/// as soon as they are settled rather than after the 7 days of the dedupe records.
fn drop_settled_segments(shared: &Shared, bound: u64) -> Result<(), StoreError> {
    let doomed = {
        let mut st = shared.lock();
        let ends: Vec<u64> = st.segments.iter().skip(1).map(|s| s.first).collect();
        let settled = ends.iter().take_while(|end| **end <= bound).count();
        if settled == 0 {
            return Ok(());
        }
        st.segments.drain(..settled).collect::<Vec<_>>()
    };
    for segment in &doomed {
        std::fs::remove_file(&segment.path)
            .map_err(|e| io_error("cannot remove", &segment.path, e))?;
    }
    journal::sync_dir(&shared.dir).map_err(|e| io_error("cannot sync", &shared.dir, e))
}

/// The writer thread: takes everything appended so far, writes it with one `write` and one
/// `fdatasync`, wakes the requests waiting for it and releases the new events to the runtime.
fn write_loop(shared: &Shared, mut file: File) {
    let mut st = shared.lock();
    loop {
        if st.buffer.is_empty() {
            if st.closing {
                return;
            }
            st = shared
                .wake
                .wait_timeout(st, CHECKPOINT_EVERY)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            continue;
        }
        let batch = std::mem::take(&mut st.buffer);
        let unwritten = std::mem::take(&mut st.unwritten);
        let target = st.appended;
        // A segment is named by the sequence number of its first event. One that holds events
        // closes when full or old (or when asked to); the next is named by the next event.
        // One without events — only redo records and handled marks, as when store writes come
        // from the API and no webhook event arrives — closes when full or old too, provided
        // this batch brings no event (else that event goes in it, and the next batch closes
        // it): the next segment is then named one sequence number later, which no event will
        // have, so it sorts after it and the checkpoint can delete it like any other.
        let full = st.segments.last().is_some_and(|s| {
            s.bytes >= shared.segment_bytes || s.opened.elapsed() >= shared.segment_age
        });
        let (rotate, next_first) = match st.segments.last() {
            Some(s) if s.events > 0 && (st.rotate || full) => {
                st.rotate = false;
                (true, unwritten.first().map_or(st.next_seq, |u| u.seq))
            }
            Some(s) if s.events == 0 && full && unwritten.is_empty() => {
                let first = st.next_seq.max(s.first + 1);
                // Numbers before the new segment's are never handed out: its name says so on
                // disk (a start resumes at or after the first number of the last segment).
                st.next_seq = first;
                (true, first)
            }
            _ => (false, unwritten.first().map_or(st.next_seq, |u| u.seq)),
        };
        let path = match st.segments.last() {
            Some(current) if !rotate => current.path.clone(),
            _ => journal::segment_path(&shared.dir, next_first),
        };
        let base = if rotate {
            journal::MAGIC.len() as u64
        } else {
            st.segments.last().map_or(0, |s| s.bytes)
        };
        let failed = st.failed.is_some();
        drop(st);

        let written = if failed {
            Err("the journal failed earlier".to_owned())
        } else {
            (|| -> Result<(), StoreError> {
                if rotate {
                    file = create_segment(&shared.dir, next_first, &[])?;
                }
                file.write_all(&batch)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| io_error("cannot write", &path, e))
            })()
            .map_err(|e| e.to_string())
        };

        st = shared.lock();
        let done: Vec<Waiter>;
        match &written {
            Ok(()) => {
                if rotate {
                    st.segments.push(Segment {
                        first: next_first,
                        path: path.clone(),
                        newest: i64::MIN,
                        events: 0,
                        bytes: journal::MAGIC.len() as u64,
                        opened: Instant::now(),
                    });
                }
                let segment_first = st.segments.last().map_or(0, |s| s.first);
                if let Some(segment) = st.segments.last_mut() {
                    segment.bytes += batch.len() as u64;
                    segment.events += unwritten.len();
                    for u in &unwritten {
                        segment.newest = segment.newest.max(u.received_at);
                    }
                }
                if let Some(last) = unwritten.last() {
                    st.written_through = Some(last.seq);
                }
                for u in &unwritten {
                    if let Some(slot) = st.pending.get_mut(&u.seq) {
                        *slot = Some(Location {
                            segment: segment_first,
                            offset: base + u.offset as u64,
                            len: u.len,
                        });
                    }
                }
                st.synced = target;
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiters)
                    .into_iter()
                    .partition(|(t, _)| *t <= target);
                st.waiters = waiting;
                done = ready.into_iter().map(|(_, w)| w).collect();
            }
            Err(e) => {
                if st.failed.is_none() {
                    tracing::error!(error = %e, "inbound journal write failed; refusing new events until restart");
                    st.failed = Some(e.clone());
                }
                done = std::mem::take(&mut st.waiters)
                    .into_iter()
                    .map(|(_, w)| w)
                    .collect();
            }
        }
        drop(st);
        for waiter in done {
            waiter(written.clone());
        }
        if written.is_ok() {
            let release = shared
                .release
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(release) = release {
                for u in unwritten {
                    release(u.seq, u.event);
                }
            }
        }
        st = shared.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{InboundMessage, MessageContent, MessageId, WaId};
    use crate::store::embedded::Store;

    fn text(id: &str) -> InboundEvent {
        InboundEvent::Message(InboundMessage {
            id: MessageId::parse(id).expect("id"),
            from: WaId::parse("15550001111").expect("wa id"),
            user_id: None,
            profile_name: None,
            timestamp: 1,
            phone_number_id: None,
            context: None,
            content: MessageContent::Text { body: "hi".into() },
            errors: vec![],
        })
    }

    fn text_at(id: &str, timestamp: i64) -> InboundEvent {
        let InboundEvent::Message(mut m) = text(id) else {
            unreachable!()
        };
        m.timestamp = timestamp;
        InboundEvent::Message(m)
    }

    #[test]
    fn a_redelivery_with_another_timestamp_is_a_duplicate_long_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = unix_now();
        {
            let store = Store::open(dir.path(), |_| {}).expect("open");
            let log = store.inbound();
            // Received two minutes ago: the checkpoint moves its digest out of memory.
            assert!(matches!(
                log.record(&text_at("wamid.t", 1_700_000_000), now - 120)
                    .expect("record"),
                Recorded::New { .. }
            ));
            log.sync().expect("sync");
            log.checkpoint_now().expect("checkpoint");
            assert!(log.shared.lock().dedupe.is_empty(), "memory stays flat");
            // WhatsApp delivers the same message id again with another timestamp.
            assert_eq!(
                log.record(&text_at("wamid.t", 1_700_000_090), now)
                    .expect("again"),
                Recorded::Duplicate
            );
            assert_eq!(
                log.record(&text_at("wamid.t", 0), now).expect("again"),
                Recorded::Duplicate
            );
        }
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        assert_eq!(
            store
                .inbound()
                .record(&text_at("wamid.t", 1_800_000_000), now)
                .expect("after restart"),
            Recorded::Duplicate
        );
        assert!(store
            .inbound()
            .seen(&text("wamid.t").dedupe_key())
            .expect("seen"));
    }

    #[test]
    fn each_event_is_new_once_while_checkpoints_move_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let log = store.inbound();
        let now = unix_now();
        let ids: Vec<String> = (0..600).map(|i| format!("wamid.race.{i}")).collect();
        let news = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // Checkpoints keep moving digests (received two minutes ago) to the tree…
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    log.checkpoint_now().expect("checkpoint");
                }
            });
            // …while three deliveries of every event race each other, each with another
            // timestamp.
            let recorders: Vec<_> = (0..3)
                .map(|t| {
                    let (ids, news) = (&ids, &news);
                    s.spawn(move || {
                        for id in ids {
                            if let Recorded::New { .. } =
                                log.record(&text_at(id, t), now - 120).expect("record")
                            {
                                news.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                    })
                })
                .collect();
            for r in recorders {
                r.join().expect("recorder");
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(news.into_inner(), ids.len());
        log.checkpoint_now().expect("checkpoint");
        for id in &ids {
            assert_eq!(
                log.record(&text_at(id, 9), now).expect("again"),
                Recorded::Duplicate
            );
        }
    }

    #[test]
    fn dedupe_expires_seven_days_after_receipt_whatever_the_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let log = store.inbound();
        let now = unix_now();
        let week = 7 * 24 * 3600;
        // Received 8 days ago but stamped far in the future; received 6 days ago but stamped
        // in 1970: only the receive time counts.
        log.record(&text_at("wamid.old", i64::MAX / 2), now - 8 * 24 * 3600)
            .expect("record");
        log.record(&text_at("wamid.young", 0), now - 6 * 24 * 3600)
            .expect("record");
        log.sync().expect("sync");
        log.checkpoint_now().expect("checkpoint");
        log.purge_before(now - week).expect("purge");
        assert!(!log.seen(&text("wamid.old").dedupe_key()).expect("seen"));
        assert!(log.seen(&text("wamid.young").dedupe_key()).expect("seen"));
        assert_eq!(
            log.record(&text_at("wamid.young", 5), now).expect("again"),
            Recorded::Duplicate
        );
        assert!(matches!(
            log.record(&text_at("wamid.old", 5), now).expect("again"),
            Recorded::New { .. }
        ));
    }

    /// Writes a dedupe record of `id`, received an hour ago, into the tree the way `write` lays
    /// it out (an earlier version's layout), reopens the store and checks the record moved to
    /// the runs: a redelivery with another timestamp is a duplicate, the tree keeps only the
    /// journal's positions, and a purge forgets the record.
    fn legacy_record_moves_to_runs(id: &str, write: impl Fn(&sled::Tree, [u8; 16], i64)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = unix_now();
        {
            let store = Store::open(dir.path(), |_| {}).expect("open");
            let index = store.db().open_tree("inbound-dedupe").expect("tree");
            write(&index, digest(text(id).dedupe_key().as_bytes()), now - 3600);
            store.db().flush().expect("flush");
        }
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        let log = store.inbound();
        assert_eq!(
            log.record(&text_at(id, 1_700_000_777), now).expect("again"),
            Recorded::Duplicate
        );
        let index = store.db().open_tree("inbound-dedupe").expect("tree");
        assert!(
            index
                .iter()
                .keys()
                .all(|k| k.expect("key").first() == Some(&0xff)),
            "only the journal's positions are left in the tree"
        );
        log.purge_before(now).expect("purge");
        assert!(!log.seen(&text(id).dedupe_key()).expect("seen"));
    }

    #[test]
    fn dedupe_records_of_the_timestamp_keyed_layout_are_carried_over() {
        // The first layout: WhatsApp's timestamp, then the digest; the value is our receive
        // time. No format mark.
        legacy_record_moves_to_runs("wamid.legacy", |index, d, received_at| {
            let mut k = [0u8; 24];
            k[..8].copy_from_slice(&1_700_000_000i64.to_be_bytes());
            k[8..].copy_from_slice(&d);
            index.insert(k, &received_at.to_be_bytes()).expect("insert");
            index.remove(FORMAT).expect("remove");
        });
    }

    #[test]
    fn dedupe_records_of_the_digest_keyed_tree_move_to_runs() {
        // The layout of 0.3 to 0.7: `d` and the digest (value: our receive time), and `e`, the
        // receive time and the digest.
        legacy_record_moves_to_runs("wamid.tree", |index, d, received_at| {
            let mut seen = [b'd'; 17];
            seen[1..].copy_from_slice(&d);
            let mut expiry = [b'e'; 25];
            expiry[1..9].copy_from_slice(&received_at.to_be_bytes());
            expiry[9..].copy_from_slice(&d);
            index
                .insert(seen, &received_at.to_be_bytes())
                .expect("insert");
            index.insert(expiry, &[]).expect("insert");
            index.insert(FORMAT, &[2]).expect("format");
        });
    }

    #[test]
    fn records_once_and_keeps_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let log = store.inbound();
        let Recorded::New { seq: a } = log.record(&text("wamid.a"), 100).expect("record") else {
            panic!("new")
        };
        assert_eq!(
            log.record(&text("wamid.a"), 101).expect("again"),
            Recorded::Duplicate
        );
        let Recorded::New { seq: b } = log.record(&text("wamid.b"), 102).expect("record") else {
            panic!("new")
        };
        assert!(a < b);
        let pending: Vec<u64> = log
            .pending()
            .expect("pending")
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(pending, vec![a, b]);
        log.mark_handled(a).expect("handled");
        assert_eq!(log.pending_len(), 1);
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn survives_reopen_with_dedupe_pending_and_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = {
            let store = Store::open(dir.path(), |_| {}).expect("open");
            let log = store.inbound();
            let Recorded::New { seq: a } = log.record(&text("wamid.a"), 100).expect("r") else {
                panic!("new")
            };
            let Recorded::New { seq: b } = log.record(&text("wamid.b"), 101).expect("r") else {
                panic!("new")
            };
            log.sync().expect("sync");
            log.mark_handled(a).expect("handled");
            log.checkpoint_now().expect("checkpoint");
            (a, b)
        };
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        let log = store.inbound();
        assert!(log.seen(&text("wamid.a").dedupe_key()).expect("seen"));
        assert_eq!(
            log.record(&text("wamid.b"), 200).expect("again"),
            Recorded::Duplicate
        );
        let pending = log.pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, b);
        assert_eq!(pending[0].1.event, text("wamid.b"));
        let Recorded::New { seq: c } = log.record(&text("wamid.c"), 201).expect("r") else {
            panic!("new")
        };
        assert!(
            c > b && b > a,
            "sequence numbers keep growing across restarts"
        );
        assert_eq!(log.len(), 3);
        assert_eq!(log.all().expect("all").len(), 3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_events_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), |_| {}).expect("open");
            store.inbound().record(&text("wamid.a"), 1).expect("r");
            store.inbound().sync().expect("sync");
        }
        let segments = journal::list_segments(&dir.path().join("inbound")).expect("list");
        let (_, path) = segments.last().expect("segment");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open");
        file.write_all(&[0x55; 23]).expect("torn bytes");
        drop(file);
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        assert_eq!(store.inbound().len(), 1);
        store.inbound().record(&text("wamid.b"), 2).expect("r");
        store.inbound().sync().expect("sync");
        drop(store);
        let store = Store::open(dir.path(), |_| {}).expect("reopen again");
        assert_eq!(store.inbound().all().expect("all").len(), 2);
    }

    #[test]
    fn purge_removes_only_old_handled_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let log = store.inbound();
        let Recorded::New { seq: old } = log.record(&text("wamid.old"), 10).expect("r") else {
            panic!("new")
        };
        let Recorded::New { seq: old_pending } =
            log.record(&text("wamid.old-pending"), 11).expect("r")
        else {
            panic!("new")
        };
        log.sync().expect("sync");
        log.mark_handled(old).expect("handled");
        log.rotate();
        log.record(&text("wamid.new"), 1_000).expect("r");
        log.checkpoint_now().expect("checkpoint");
        // Old dedupe records go; the old segment stays, as it holds an unhandled event.
        log.purge_before(500).expect("purge");
        assert!(!log.seen(&text("wamid.old").dedupe_key()).expect("seen"));
        assert!(log.seen(&text("wamid.new").dedupe_key()).expect("seen"));
        assert_eq!(log.len(), 3);
        assert_eq!(log.pending_len(), 2);

        log.mark_handled(old_pending).expect("handled");
        log.checkpoint_now().expect("checkpoint");
        log.purge_before(500).expect("purge");
        assert!(!log.seen(&text("wamid.old").dedupe_key()).expect("seen"));
        assert!(!log
            .seen(&text("wamid.old-pending").dedupe_key())
            .expect("seen"));
        assert!(log.seen(&text("wamid.new").dedupe_key()).expect("seen"));
        assert_eq!(log.len(), 1);
        // After purge the old message would be accepted again, as WhatsApp stops retrying
        // after 7 days anyway.
        assert!(matches!(
            log.record(&text("wamid.old"), 1_001).expect("r"),
            Recorded::New { .. }
        ));
    }

    #[test]
    fn a_restart_needs_only_segments_with_unhandled_or_unmoved_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let last = {
            let store = Store::open(dir.path(), |_| {}).expect("open");
            let log = store.inbound();
            for i in 0..5 {
                let Recorded::New { seq } =
                    log.record(&text(&format!("wamid.{i}")), 100).expect("r")
                else {
                    panic!("new")
                };
                log.sync().expect("sync");
                log.mark_handled(seq).expect("handled");
            }
            log.checkpoint_now().expect("checkpoint");
            log.rotate();
            let Recorded::New { seq } = log.record(&text("wamid.late"), 100).expect("r") else {
                panic!("new")
            };
            log.sync().expect("sync");
            seq
        };
        // The first segment holds nothing a start needs (its events handled, their digests
        // in the tree, no store write sled lacks): the closing checkpoint deleted it.
        let segments = journal::list_segments(&dir.path().join("inbound")).expect("list");
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].0, last, "the segment left is the late event's");
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        let log = store.inbound();
        for i in 0..5 {
            assert!(log
                .seen(&text(&format!("wamid.{i}")).dedupe_key())
                .expect("seen"));
            // Found by recording too, through the tree (the digests moved out of memory).
            assert_eq!(
                log.record(&text(&format!("wamid.{i}")), 300)
                    .expect("again"),
                Recorded::Duplicate
            );
        }
        let pending = log.pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, last);
        let Recorded::New { seq } = log.record(&text("wamid.next"), 100).expect("r") else {
            panic!("new")
        };
        assert!(seq > last);
    }

    #[test]
    fn segments_without_events_close_by_size_with_distinct_ordered_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = crate::store::StoreOptions {
            checkpoint_every: None,
            segment_bytes: 4096,
            ..Default::default()
        };
        let (first, second) = {
            let store = Store::open_with_options(dir.path(), |_| {}, None, options).expect("open");
            let log = store.inbound();
            let tree =
                super::super::redo::LoggedTree::open(store.db(), "t", store.redo()).expect("tree");
            let Recorded::New { seq: first } = log.record(&text("wamid.a"), 100).expect("r") else {
                panic!("new")
            };
            log.sync().expect("sync");
            log.mark_handled(first).expect("handled");
            // Store writes alone, well past the segment size, checkpointed as they go.
            for i in 0u32..200 {
                tree.insert(i.to_be_bytes(), vec![7u8; 200])
                    .expect("insert");
                log.sync().expect("sync");
                if i % 10 == 0 {
                    log.checkpoint_now().expect("checkpoint");
                }
            }
            log.checkpoint_now().expect("checkpoint");
            let segments = journal::list_segments(&dir.path().join("inbound")).expect("list");
            assert!(segments.len() <= 2, "{segments:?}");
            assert!(log.size_on_disk() <= 3 * 4096, "{}", log.size_on_disk());
            let Recorded::New { seq: second } = log.record(&text("wamid.b"), 100).expect("r")
            else {
                panic!("new")
            };
            log.sync().expect("sync");
            assert!(
                second > first + 1,
                "closed segments without events skip numbers"
            );
            let pending = log.pending().expect("pending");
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].0, second);
            (first, second)
        };
        let segments = journal::list_segments(&dir.path().join("inbound")).expect("list");
        assert!(segments.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(segments.iter().all(|(s, _)| *s > first));
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        let log = store.inbound();
        let pending = log.pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending[0].0, second,
            "the event's location names its segment"
        );
        let tree = store.db().open_tree("t").expect("tree");
        assert_eq!(tree.len(), 200);
        let Recorded::New { seq } = log.record(&text("wamid.c"), 100).expect("r") else {
            panic!("new")
        };
        assert!(seq > second);
    }

    #[test]
    fn imports_the_sled_log_of_earlier_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = crate::otp::OtpKey::load_or_create(dir.path(), None).expect("key");
        let sealer = RecordSealer::new(&key);
        {
            let db = sled::open(dir.path()).expect("sled");
            let tree = db.open_tree("inbound").expect("tree");
            for (seq, id, pending) in [(5u64, "wamid.x", false), (9, "wamid.y", true)] {
                let plain = serde_json::to_vec(&StoredEvent {
                    received_at: 50,
                    event: text(id),
                })
                .expect("json");
                tree.insert(seal_slot(seq), sealer.seal(&plain, &seal_slot(seq)))
                    .expect("l");
                if pending {
                    let mut p = [b'p'; 9];
                    p[1..].copy_from_slice(&seq.to_be_bytes());
                    tree.insert(p, &[]).expect("p");
                }
            }
            db.flush().expect("flush");
        }
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let log = store.inbound();
        assert_eq!(log.len(), 2);
        assert!(log.seen(&text("wamid.x").dedupe_key()).expect("seen"));
        let pending = log.pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, 9);
        let Recorded::New { seq } = log.record(&text("wamid.z"), 60).expect("r") else {
            panic!("new")
        };
        assert!(seq > 9);
        assert!(!store
            .db()
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"inbound"));
    }
}
