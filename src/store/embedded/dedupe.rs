//! The dedupe index of inbound events older than a minute or two: immutable sorted files
//! ("runs") of message-id digests, each with a Bloom filter and a sparse index in memory.
//!
//! The index used to be a sled tree keyed by digest. Digests are random, so every insert landed
//! in another leaf, and sled kept tens of bytes of memory per key however small its page cache:
//! a server under steady traffic grew by the week. Here each key costs about 1.3 bytes of
//! memory (10 filter bits and a share of the sparse index) and 24 bytes of disk.
//!
//! - A run is written once, whole: a temporary file, `fdatasync`, rename, directory sync. A
//!   start ignores (and removes) temporary files, so a crash leaves whole runs or nothing.
//! - Runs are merged in the background like an LSM tree's levels: eight runs of one level
//!   become one run of the next, as long as the merged run spans at most a day of receive
//!   times, so that expiry rewrites little. That keeps the number of runs a lookup consults
//!   small (a few dozen for a week of traffic).
//! - Each entry holds the digest and our receive time. Expiry deletes runs that are wholly
//!   older than the cutoff and rewrites those that straddle it.
//! - Entries are a set: the same digest in two runs (a crash between writing a run and recording
//!   that it was written, a merge interrupted before its inputs were deleted) is harmless.
//!
//! File layout, integers big-endian: a 56-byte header (`WAOTPDD1`, entry count, oldest and
//! newest receive time, CRC-32 of the entries, CRC-32 of the filter and sparse index, their
//! lengths in 8-byte words), the entries sorted by digest (16 bytes of digest, 8 of receive
//! time in Unix seconds), then the filter and the sparse index. A start reads the header, the
//! filter and the index only — about 1.3 bytes per record, not 24 — and the entries' checksum
//! is checked whenever they are read whole (merges, expiry).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

const MAGIC: &[u8; 8] = b"WAOTPDD1";
const HEADER: usize = 56;
const ENTRY: usize = 24;
/// One digest prefix in memory per this many entries.
const FENCE_EVERY: usize = 64;
/// Filter bits per entry: about 1% false positives with six bits set in one 512-bit block.
const BITS_PER_ENTRY: usize = 10;
const BLOCK_WORDS: usize = 8;
const PROBES: u32 = 6;
/// Runs of one level merged at once.
const FAN_IN: usize = 8;
/// Runs are not merged beyond this span of receive times.
const MAX_SPAN_SECS: i64 = 24 * 3600;

/// One dedupe record: the digest of an event's dedupe key and when we received the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub digest: [u8; 16],
    pub received_at: i64,
}

struct Run {
    level: u32,
    body_crc: u32,
    id: u64,
    path: PathBuf,
    file: File,
    count: usize,
    oldest: i64,
    newest: i64,
    bloom: Vec<u64>,
    /// The first 8 bytes of the digest of every [`FENCE_EVERY`]th entry.
    fences: Vec<u64>,
}

fn prefix(digest: &[u8; 16]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// The filter block and bit positions of a digest (the digest is already uniformly random).
fn bloom_slots(digest: &[u8; 16], blocks: usize) -> (usize, impl Iterator<Item = u32>) {
    let h1 = prefix(digest);
    let h2 = u64::from_le_bytes(digest[8..].try_into().unwrap_or_default());
    let block = ((u128::from(h1) * blocks as u128) >> 64) as usize;
    (
        block,
        (0..PROBES).map(move |i| ((h2 >> (9 * i)) & 511) as u32),
    )
}

/// Filter words for `entries` records (at least one block).
fn empty_bloom(entries: usize) -> Vec<u64> {
    vec![0u64; (entries * BITS_PER_ENTRY).div_ceil(512).max(1) * BLOCK_WORDS]
}

fn bloom_insert(bloom: &mut [u64], digest: &[u8; 16]) {
    let (block, bits) = bloom_slots(digest, bloom.len() / BLOCK_WORDS);
    for bit in bits {
        bloom[block * BLOCK_WORDS + (bit / 64) as usize] |= 1 << (bit % 64);
    }
}

impl Run {
    fn may_contain(&self, digest: &[u8; 16]) -> bool {
        let (block, mut bits) = bloom_slots(digest, self.bloom.len() / BLOCK_WORDS);
        bits.all(|bit| {
            self.bloom[block * BLOCK_WORDS + (bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    fn contains(&self, digest: &[u8; 16]) -> std::io::Result<bool> {
        if self.count == 0 || !self.may_contain(digest) {
            return Ok(false);
        }
        // The groups that may hold this prefix: from the last one starting below it to the
        // first one starting above it.
        let p = prefix(digest);
        let first = self.fences.partition_point(|f| *f < p).saturating_sub(1);
        let end = self.fences.partition_point(|f| *f <= p);
        let (from, to) = (first * FENCE_EVERY, (end * FENCE_EVERY).min(self.count));
        if from >= to {
            return Ok(false);
        }
        let mut buf = vec![0u8; (to - from) * ENTRY];
        self.file
            .read_exact_at(&mut buf, (HEADER + from * ENTRY) as u64)?;
        Ok(buf.chunks_exact(ENTRY).any(|e| &e[..16] == digest))
    }

    /// Its entries in order, checked against their checksum as they are read.
    fn reader(&self) -> RunEntries<'_> {
        RunEntries {
            run: self,
            buf: Vec::new(),
            at: 0,
            read: 0,
            crc: Some(crc32fast::Hasher::new()),
        }
    }

    fn file_bytes(&self) -> u64 {
        (HEADER + self.count * ENTRY + (self.bloom.len() + self.fences.len()) * 8) as u64
    }
}

fn file_name(level: u32, id: u64) -> String {
    format!("run-{level}-{id:016x}.dd")
}

fn parse_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("run-")?.strip_suffix(".dd")?;
    let (level, id) = rest.split_once('-')?;
    Some((level.parse().ok()?, u64::from_str_radix(id, 16).ok()?))
}

/// Renames a damaged run `*.corrupt`, logging why.
fn set_aside_file(path: &Path, error: &std::io::Error) -> std::io::Result<()> {
    tracing::error!(error = %error, "inbound dedupe run unreadable, set aside");
    std::fs::rename(path, path.with_extension("corrupt"))
}

fn corrupt(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// The runs of one directory.
pub(super) struct DedupeRuns {
    dir: PathBuf,
    /// Oldest first (by id).
    runs: RwLock<Vec<Arc<Run>>>,
    next_id: AtomicU64,
    /// Held by whatever changes the runs (the checkpoint adding and merging, the purge
    /// expiring), so that no two of them work on the same run.
    changing: Mutex<()>,
}

impl DedupeRuns {
    /// Opens the runs in `dir` (created if missing), reading each to build its filter. A
    /// temporary file is an unfinished run and goes; a run that fails its checksum is renamed
    /// `*.corrupt` and logged: its records are lost (a redelivery of one of those events would
    /// be taken as new), the rest of the index is not.
    pub fn open(dir: &Path) -> std::io::Result<DedupeRuns> {
        std::fs::create_dir_all(dir)?;
        let mut runs = Vec::new();
        let mut next_id = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path)?;
                continue;
            }
            let Some((level, id)) = parse_name(name) else {
                continue;
            };
            next_id = next_id.max(id + 1);
            match read_run(&path, level, id) {
                Ok(run) => runs.push(Arc::new(run)),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    set_aside_file(&path, &e)?;
                }
                Err(e) => return Err(e),
            }
        }
        runs.sort_by_key(|r| r.id);
        Ok(DedupeRuns {
            dir: dir.to_owned(),
            runs: RwLock::new(runs),
            next_id: AtomicU64::new(next_id),
            changing: Mutex::new(()),
        })
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<Run>>> {
        self.runs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any run holds `digest`.
    pub fn contains(&self, digest: &[u8; 16]) -> std::io::Result<bool> {
        for run in self.read().iter().rev() {
            if run.contains(digest)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bytes of all run files.
    pub fn bytes(&self) -> u64 {
        self.read().iter().map(|r| r.file_bytes()).sum()
    }

    /// Entries in all runs (duplicates across runs counted once each time).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.read().iter().map(|r| r.count).sum()
    }

    /// How many runs there are.
    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.read().len()
    }

    /// Writes `entries` as a new run, durably, then merges runs if a level is full (a merge
    /// that fails is logged and tried again at the next run: the new run is in place).
    pub fn add(&self, entries: Vec<Entry>) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let _changing = self.changing();
        let run = self.write(0, entries)?;
        self.runs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(run));
        if let Err(e) = self.compact() {
            tracing::error!(error = %e, "merging inbound dedupe runs failed");
        }
        Ok(())
    }

    /// Writes a run of `entries` at `level` (not yet in the list).
    fn write(&self, level: u32, mut entries: Vec<Entry>) -> std::io::Result<Run> {
        entries.sort_unstable_by_key(|e| e.digest);
        let mut out = self.writer(level, entries.len())?;
        for e in entries {
            out.push(e)?;
        }
        out.finish(&self.dir)
    }

    fn writer(&self, level: u32, capacity: usize) -> std::io::Result<RunWriter> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        RunWriter::create(&self.dir, level, id, capacity)
    }

    /// Takes a run whose entries fail their checksum out of the index, renamed `*.corrupt`:
    /// its records are lost (a redelivery of one of those events would be taken as new), the
    /// rest of the index is not.
    fn set_aside(&self, run: &Arc<Run>, error: &std::io::Error) -> std::io::Result<()> {
        self.runs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r.id != run.id);
        set_aside_file(&run.path, error)?;
        super::journal::sync_dir(&self.dir)
    }

    /// Replaces the runs `old` by `new` in the list, then deletes their files.
    fn replace(&self, old: &[Arc<Run>], new: Option<Run>) -> std::io::Result<()> {
        {
            let mut runs = self.runs.write().unwrap_or_else(|p| p.into_inner());
            runs.retain(|r| !old.iter().any(|o| o.id == r.id));
            if let Some(new) = new {
                runs.push(Arc::new(new));
                runs.sort_by_key(|r| r.id);
            }
        }
        for run in old {
            match std::fs::remove_file(&run.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if !old.is_empty() {
            super::journal::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Merges [`FAN_IN`] consecutive runs of one level into one of the next, while some level
    /// has that many within [`MAX_SPAN_SECS`].
    fn compact(&self) -> std::io::Result<()> {
        loop {
            let chosen = {
                let runs = self.read();
                let mut levels: Vec<u32> = runs.iter().map(|r| r.level).collect();
                levels.sort_unstable();
                levels.dedup();
                levels.into_iter().find_map(|level| {
                    let of_level: Vec<Arc<Run>> =
                        runs.iter().filter(|r| r.level == level).cloned().collect();
                    of_level
                        .windows(FAN_IN)
                        .find(|w| {
                            let oldest = w.iter().map(|r| r.oldest).min().unwrap_or(0);
                            let newest = w.iter().map(|r| r.newest).max().unwrap_or(0);
                            newest - oldest <= MAX_SPAN_SECS
                        })
                        .map(|w| (level, w.to_vec()))
                })
            };
            let Some((level, inputs)) = chosen else {
                return Ok(());
            };
            self.rewrite(&inputs, level + 1, |_| true)?;
        }
    }

    /// Writes the entries of `inputs` that `keep` accepts as one run at `level`, in their
    /// place; returns how many it holds. An input found damaged is set aside instead, and
    /// nothing else changes (`None`).
    fn rewrite(
        &self,
        inputs: &[Arc<Run>],
        level: u32,
        keep: impl Fn(&Entry) -> bool,
    ) -> std::io::Result<Option<usize>> {
        let out = self.writer(level, inputs.iter().map(|r| r.count).sum())?;
        match merge(inputs, out, keep) {
            Ok(out) => {
                let run = out.finish(&self.dir)?;
                let count = run.count;
                self.replace(inputs, Some(run))?;
                Ok(Some(count))
            }
            Err((Some(i), e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.set_aside(&inputs[i], &e)?;
                Ok(None)
            }
            Err((_, e)) => Err(e),
        }
    }

    /// Forgets the entries received before `cutoff`: whole runs, and the older part of runs
    /// that straddle it. Returns how many entries went.
    pub fn expire(&self, cutoff: i64) -> std::io::Result<usize> {
        let _changing = self.changing();
        let affected: Vec<Arc<Run>> = self
            .read()
            .iter()
            .filter(|r| r.oldest < cutoff)
            .cloned()
            .collect();
        let mut removed = 0;
        for run in affected {
            if run.newest < cutoff {
                removed += run.count;
                self.replace(std::slice::from_ref(&run), None)?;
                continue;
            }
            // A damaged run is set aside whole.
            let kept = self.rewrite(std::slice::from_ref(&run), run.level, |e| {
                e.received_at >= cutoff
            })?;
            removed += run.count - kept.unwrap_or(0);
        }
        Ok(removed)
    }
}

/// Entries read from a run in chunks.
struct RunEntries<'a> {
    run: &'a Run,
    buf: Vec<u8>,
    /// Next entry in `buf`, and entries read from the file so far.
    at: usize,
    read: usize,
    /// Over the entries read so far; taken when the end is checked.
    crc: Option<crc32fast::Hasher>,
}

/// Entries read from the file at a time.
const READ_ENTRIES: usize = 2730;

impl RunEntries<'_> {
    fn next(&mut self) -> std::io::Result<Option<Entry>> {
        if self.at * ENTRY == self.buf.len() {
            let n = READ_ENTRIES.min(self.run.count - self.read);
            if n == 0 {
                if self
                    .crc
                    .take()
                    .is_some_and(|crc| crc.finalize() != self.run.body_crc)
                {
                    return Err(corrupt(&self.run.path, "checksum mismatch in the entries"));
                }
                return Ok(None);
            }
            self.buf.resize(n * ENTRY, 0);
            self.run
                .file
                .read_exact_at(&mut self.buf, (HEADER + self.read * ENTRY) as u64)?;
            if let Some(crc) = &mut self.crc {
                crc.update(&self.buf);
            }
            self.read += n;
            self.at = 0;
        }
        let e = &self.buf[self.at * ENTRY..(self.at + 1) * ENTRY];
        self.at += 1;
        Ok(Some(Entry {
            digest: e[..16].try_into().unwrap_or_default(),
            received_at: i64::from_be_bytes(e[16..].try_into().unwrap_or_default()),
        }))
    }
}

/// Writes a run entry by entry, in digest order, to a temporary file renamed when finished.
struct RunWriter {
    level: u32,
    id: u64,
    tmp: PathBuf,
    out: std::io::BufWriter<File>,
    crc: crc32fast::Hasher,
    count: usize,
    oldest: i64,
    newest: i64,
    bloom: Vec<u64>,
    fences: Vec<u64>,
    /// The last entry pushed, written once the next one has another digest.
    pending: Option<Entry>,
}

impl RunWriter {
    /// A writer for at most `capacity` entries (the filter's size).
    fn create(dir: &Path, level: u32, id: u64, capacity: usize) -> std::io::Result<RunWriter> {
        let tmp = dir.join(file_name(level, id)).with_extension("tmp");
        let mut out = std::io::BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        out.write_all(&[0u8; HEADER])?;
        Ok(RunWriter {
            level,
            id,
            tmp,
            out,
            crc: crc32fast::Hasher::new(),
            count: 0,
            oldest: i64::MAX,
            newest: i64::MIN,
            bloom: empty_bloom(capacity),
            fences: Vec::new(),
            pending: None,
        })
    }

    /// Adds `e`, whose digest is not below the last one's. The same digest twice (a record in
    /// two merged runs) is kept once, with the later receipt, so that it is forgotten last.
    fn push(&mut self, e: Entry) -> std::io::Result<()> {
        match &mut self.pending {
            Some(p) if p.digest == e.digest => {
                p.received_at = p.received_at.max(e.received_at);
                Ok(())
            }
            pending => match pending.replace(e) {
                Some(p) => self.emit(p),
                None => Ok(()),
            },
        }
    }

    fn emit(&mut self, e: Entry) -> std::io::Result<()> {
        if self.count % FENCE_EVERY == 0 {
            self.fences.push(prefix(&e.digest));
        }
        bloom_insert(&mut self.bloom, &e.digest);
        let mut bytes = [0u8; ENTRY];
        bytes[..16].copy_from_slice(&e.digest);
        bytes[16..].copy_from_slice(&e.received_at.to_be_bytes());
        self.crc.update(&bytes);
        self.out.write_all(&bytes)?;
        self.count += 1;
        self.oldest = self.oldest.min(e.received_at);
        self.newest = self.newest.max(e.received_at);
        Ok(())
    }

    /// Writes the filter, index and header, makes the file durable under its final name.
    fn finish(mut self, dir: &Path) -> std::io::Result<Run> {
        let result = self.complete(dir);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    fn complete(&mut self, dir: &Path) -> std::io::Result<Run> {
        if let Some(p) = self.pending.take() {
            self.emit(p)?;
        }
        if self.count == 0 {
            (self.oldest, self.newest) = (0, 0);
        }
        let index = encode_index(&self.bloom, &self.fences);
        self.out.write_all(&index)?;
        self.out.flush()?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&(self.count as u64).to_be_bytes());
        header[16..24].copy_from_slice(&self.oldest.to_be_bytes());
        header[24..32].copy_from_slice(&self.newest.to_be_bytes());
        let body_crc = self.crc.clone().finalize();
        header[32..36].copy_from_slice(&body_crc.to_be_bytes());
        header[36..40].copy_from_slice(&crc32fast::hash(&index).to_be_bytes());
        header[40..48].copy_from_slice(&(self.bloom.len() as u64).to_be_bytes());
        header[48..56].copy_from_slice(&(self.fences.len() as u64).to_be_bytes());
        let file = self.out.get_ref();
        file.write_all_at(&header, 0)?;
        file.sync_data()?;
        let path = dir.join(file_name(self.level, self.id));
        std::fs::rename(&self.tmp, &path)?;
        super::journal::sync_dir(dir)?;
        Ok(Run {
            level: self.level,
            body_crc,
            id: self.id,
            file: File::open(&path)?,
            path,
            count: self.count,
            oldest: self.oldest,
            newest: self.newest,
            bloom: std::mem::take(&mut self.bloom),
            fences: std::mem::take(&mut self.fences),
        })
    }

    /// Gives up: the temporary file goes.
    fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Merges the entries of `inputs` that `keep` accepts into `out` in digest order, reading a
/// chunk of each input at a time. An error says which input it came from, if one did.
fn merge(
    inputs: &[Arc<Run>],
    mut out: RunWriter,
    keep: impl Fn(&Entry) -> bool,
) -> Result<RunWriter, (Option<usize>, std::io::Error)> {
    use std::cmp::Reverse;
    let mut readers: Vec<RunEntries<'_>> = inputs.iter().map(|r| r.reader()).collect();
    let mut heap = std::collections::BinaryHeap::with_capacity(inputs.len());
    let fail = |out: RunWriter, at: Option<usize>, e: std::io::Error| {
        out.abandon();
        Err((at, e))
    };
    for (i, reader) in readers.iter_mut().enumerate() {
        match reader.next() {
            Ok(Some(e)) => heap.push(Reverse((e.digest, e.received_at, i))),
            Ok(None) => {}
            Err(e) => return fail(out, Some(i), e),
        }
    }
    while let Some(Reverse((digest, received_at, i))) = heap.pop() {
        let entry = Entry {
            digest,
            received_at,
        };
        if keep(&entry) {
            if let Err(e) = out.push(entry) {
                return fail(out, None, e);
            }
        }
        match readers[i].next() {
            Ok(Some(e)) => heap.push(Reverse((e.digest, e.received_at, i))),
            Ok(None) => {}
            Err(e) => return fail(out, Some(i), e),
        }
    }
    Ok(out)
}

fn encode_index(bloom: &[u64], fences: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity((bloom.len() + fences.len()) * 8);
    for w in bloom.iter().chain(fences) {
        out.extend_from_slice(&w.to_be_bytes());
    }
    out
}

/// Opens a run from its header, filter and sparse index (not its entries).
fn read_run(path: &Path, level: u32, id: u64) -> std::io::Result<Run> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut header = [0u8; HEADER];
    if len < HEADER as u64 {
        return Err(corrupt(path, "shorter than a dedupe run's header"));
    }
    file.read_exact_at(&mut header, 0)?;
    if &header[..8] != MAGIC {
        return Err(corrupt(path, "not a dedupe run"));
    }
    let field = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let crc = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap_or_default());
    let (count, bloom_words, fence_words) = (field(8), field(40), field(48));
    let sizes = count.checked_mul(ENTRY as u64).zip(
        bloom_words
            .checked_add(fence_words)
            .and_then(|w| w.checked_mul(8)),
    );
    let Some((body_len, index_len)) = sizes else {
        return Err(corrupt(path, "impossible lengths in the header"));
    };
    if Some(len)
        != (HEADER as u64)
            .checked_add(body_len)
            .and_then(|l| l.checked_add(index_len))
        || bloom_words == 0
        || bloom_words % BLOCK_WORDS as u64 != 0
    {
        return Err(corrupt(path, "length does not match the header"));
    }
    let mut index = vec![0u8; index_len as usize];
    file.read_exact_at(&mut index, HEADER as u64 + body_len)?;
    if crc32fast::hash(&index) != crc(36) {
        return Err(corrupt(path, "checksum mismatch in the filter"));
    }
    let mut words = index
        .chunks_exact(8)
        .map(|w| u64::from_be_bytes(w.try_into().unwrap_or_default()));
    let bloom: Vec<u64> = words.by_ref().take(bloom_words as usize).collect();
    let fences: Vec<u64> = words.collect();
    Ok(Run {
        level,
        body_crc: crc(32),
        id,
        file,
        path: path.to_owned(),
        count: count as usize,
        oldest: field(16) as i64,
        newest: field(24) as i64,
        bloom,
        fences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn random_entries(n: usize, received_at: i64) -> Vec<Entry> {
        let mut rng = rand::thread_rng();
        (0..n)
            .map(|_| {
                let mut digest = [0u8; 16];
                rng.fill_bytes(&mut digest);
                Entry {
                    digest,
                    received_at,
                }
            })
            .collect()
    }

    #[test]
    fn finds_every_entry_and_few_others_across_merges_and_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all = Vec::new();
        {
            let runs = DedupeRuns::open(dir.path()).expect("open");
            for i in 0..20 {
                let batch = random_entries(1000 + i * 37, 1_000 + i as i64);
                all.extend_from_slice(&batch);
                runs.add(batch).expect("add");
            }
            // 20 runs of level 0 became two of level 1 and four of level 0.
            assert_eq!(runs.runs(), 6);
            assert_eq!(runs.len(), all.len());
            for e in &all {
                assert!(runs.contains(&e.digest).expect("lookup"));
            }
        }
        let runs = DedupeRuns::open(dir.path()).expect("reopen");
        assert_eq!(runs.runs(), 6);
        for e in &all {
            assert!(runs.contains(&e.digest).expect("lookup"));
        }
        let strangers = random_entries(10_000, 0);
        let found = strangers
            .iter()
            .filter(|e| runs.contains(&e.digest).expect("lookup"))
            .count();
        assert_eq!(found, 0, "random digests are not found");
    }

    #[test]
    fn the_filter_lets_few_strangers_through() {
        let entries = random_entries(50_000, 0);
        let mut bloom = empty_bloom(entries.len());
        for e in &entries {
            bloom_insert(&mut bloom, &e.digest);
        }
        let fences = Vec::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x");
        std::fs::write(&path, b"").expect("write");
        let run = Run {
            level: 0,
            body_crc: 0,
            id: 0,
            file: File::open(&path).expect("open"),
            path,
            count: entries.len(),
            oldest: 0,
            newest: 0,
            bloom,
            fences,
        };
        assert!(entries.iter().all(|e| run.may_contain(&e.digest)));
        let passed = random_entries(100_000, 0)
            .iter()
            .filter(|e| run.may_contain(&e.digest))
            .count();
        assert!(
            passed < 2_500,
            "{passed} of 100000 strangers passed the filter"
        );
    }

    #[test]
    fn expiry_drops_old_runs_and_rewrites_straddling_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = DedupeRuns::open(dir.path()).expect("open");
        let old = random_entries(100, 100);
        let mut mixed = random_entries(50, 150);
        let young = random_entries(50, 300);
        mixed.extend_from_slice(&young);
        runs.add(old.clone()).expect("add");
        runs.add(mixed).expect("add");
        assert_eq!(runs.expire(200).expect("expire"), 150);
        assert_eq!(runs.len(), 50);
        assert!(old
            .iter()
            .all(|e| !runs.contains(&e.digest).expect("lookup")));
        assert!(young
            .iter()
            .all(|e| runs.contains(&e.digest).expect("lookup")));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_torn_or_damaged_run_is_set_aside_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (random_entries(100, 1), random_entries(100, 2));
        let mut c = random_entries(50, 3);
        c.extend(random_entries(50, 10));
        {
            let runs = DedupeRuns::open(dir.path()).expect("open");
            runs.add(a.clone()).expect("add");
            runs.add(b.clone()).expect("add");
            runs.add(c.clone()).expect("add");
        }
        let flip = |path: &Path, at: usize| {
            let mut bytes = std::fs::read(path).expect("read");
            bytes[at] ^= 1;
            std::fs::write(path, bytes).expect("write");
        };
        // An unfinished write; a flipped bit in the second run's filter, found at the start; one
        // in the third run's entries, found when they are read whole.
        std::fs::write(dir.path().join("run-0-00000000000000ff.tmp"), b"partial").expect("tmp");
        let (second, third) = (
            dir.path().join(file_name(0, 1)),
            dir.path().join(file_name(0, 2)),
        );
        let len = std::fs::metadata(&second).expect("stat").len() as usize;
        flip(&second, len - 3);
        flip(&third, HEADER + 5);
        let runs = DedupeRuns::open(dir.path()).expect("reopen");
        assert_eq!(runs.runs(), 2);
        assert!(!dir.path().join("run-0-00000000000000ff.tmp").exists());
        assert!(second.with_extension("corrupt").exists());
        // `c` straddles the cutoff, so its entries are read.
        assert_eq!(
            runs.expire(4).expect("expire"),
            200,
            "a's 100, and c's set aside"
        );
        assert!(third.with_extension("corrupt").exists());
        assert_eq!(runs.runs(), 0);
        let runs = DedupeRuns::open(dir.path()).expect("reopen");
        runs.add(a.clone()).expect("add");
        assert!(a.iter().all(|e| runs.contains(&e.digest).expect("lookup")));
    }

    #[test]
    fn a_run_found_damaged_by_a_merge_is_set_aside_and_the_others_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = DedupeRuns::open(dir.path()).expect("open");
        let batches: Vec<Vec<Entry>> = (0..FAN_IN).map(|i| random_entries(500, i as i64)).collect();
        for batch in &batches[..FAN_IN - 1] {
            runs.add(batch.clone()).expect("add");
        }
        let damaged = dir.path().join(file_name(0, 2));
        let mut bytes = std::fs::read(&damaged).expect("read");
        bytes[HEADER + 100] ^= 1;
        std::fs::write(&damaged, bytes).expect("write");
        // The eighth run starts a merge, which meets the damage.
        runs.add(batches[FAN_IN - 1].clone()).expect("add");
        assert!(damaged.with_extension("corrupt").exists());
        assert_eq!(runs.runs(), FAN_IN - 1, "the others are left as they were");
        for (i, batch) in batches.iter().enumerate() {
            let found = batch
                .iter()
                .filter(|e| runs.contains(&e.digest).expect("lookup"))
                .count();
            assert_eq!(found, if i == 2 { 0 } else { batch.len() }, "batch {i}");
        }
        let leftovers = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| e.as_ref().expect("entry").path().extension() == Some("tmp".as_ref()))
            .count();
        assert_eq!(leftovers, 0, "the unfinished merge left no file");
    }

    #[test]
    fn runs_spanning_more_than_a_day_are_not_merged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = DedupeRuns::open(dir.path()).expect("open");
        for i in 0..FAN_IN as i64 {
            runs.add(random_entries(10, i * 4 * 3600)).expect("add");
        }
        assert_eq!(runs.runs(), FAN_IN, "28 hours apart: kept apart");
        runs.add(random_entries(10, FAN_IN as i64 * 4 * 3600))
            .expect("add");
        assert_eq!(runs.runs(), FAN_IN + 1, "no eight of them lie within a day");
    }
}
