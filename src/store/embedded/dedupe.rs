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

impl Run {
    fn build_index(entries: &[Entry]) -> (Vec<u64>, Vec<u64>) {
        let blocks = (entries.len() * BITS_PER_ENTRY).div_ceil(512).max(1);
        let mut bloom = vec![0u64; blocks * BLOCK_WORDS];
        for e in entries {
            let (block, bits) = bloom_slots(&e.digest, blocks);
            for bit in bits {
                bloom[block * BLOCK_WORDS + (bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        let fences = entries
            .iter()
            .step_by(FENCE_EVERY)
            .map(|e| prefix(&e.digest))
            .collect();
        (bloom, fences)
    }

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

    /// All entries, checked against their checksum.
    fn entries(&self) -> std::io::Result<Vec<Entry>> {
        let mut buf = vec![0u8; self.count * ENTRY];
        self.file.read_exact_at(&mut buf, HEADER as u64)?;
        if crc32fast::hash(&buf) != self.body_crc {
            return Err(corrupt(&self.path, "checksum mismatch in the entries"));
        }
        Ok(decode(&buf))
    }

    fn file_bytes(&self) -> u64 {
        (HEADER + self.count * ENTRY + (self.bloom.len() + self.fences.len()) * 8) as u64
    }
}

fn decode(body: &[u8]) -> Vec<Entry> {
    body.chunks_exact(ENTRY)
        .map(|e| Entry {
            digest: e[..16].try_into().unwrap_or_default(),
            received_at: i64::from_be_bytes(e[16..].try_into().unwrap_or_default()),
        })
        .collect()
}

fn file_name(level: u32, id: u64) -> String {
    format!("run-{level}-{id:016x}.dd")
}

fn parse_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("run-")?.strip_suffix(".dd")?;
    let (level, id) = rest.split_once('-')?;
    Some((level.parse().ok()?, u64::from_str_radix(id, 16).ok()?))
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
                    tracing::error!(error = %e, "inbound dedupe run unreadable, set aside");
                    std::fs::rename(&path, path.with_extension("corrupt"))?;
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
        entries.sort_unstable_by(|a, b| {
            a.digest
                .cmp(&b.digest)
                .then(b.received_at.cmp(&a.received_at))
        });
        // One entry per digest: the latest receipt, so that it is forgotten last.
        entries.dedup_by(|a, b| a.digest == b.digest);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(file_name(level, id));
        let tmp = path.with_extension("tmp");
        let (bloom, fences) = Run::build_index(&entries);
        let mut body = Vec::with_capacity(entries.len() * ENTRY);
        for e in &entries {
            body.extend_from_slice(&e.digest);
            body.extend_from_slice(&e.received_at.to_be_bytes());
        }
        let index = encode_index(&bloom, &fences);
        let oldest = entries.iter().map(|e| e.received_at).min().unwrap_or(0);
        let newest = entries.iter().map(|e| e.received_at).max().unwrap_or(0);
        let body_crc = crc32fast::hash(&body);
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&(entries.len() as u64).to_be_bytes());
        header[16..24].copy_from_slice(&oldest.to_be_bytes());
        header[24..32].copy_from_slice(&newest.to_be_bytes());
        header[32..36].copy_from_slice(&body_crc.to_be_bytes());
        header[36..40].copy_from_slice(&crc32fast::hash(&index).to_be_bytes());
        header[40..48].copy_from_slice(&(bloom.len() as u64).to_be_bytes());
        header[48..56].copy_from_slice(&(fences.len() as u64).to_be_bytes());
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(&body)?;
            f.write_all(&index)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        super::journal::sync_dir(&self.dir)?;
        Ok(Run {
            level,
            body_crc,
            id,
            file: File::open(&path)?,
            path,
            count: entries.len(),
            oldest,
            newest,
            bloom,
            fences,
        })
    }

    /// Takes a run whose entries fail their checksum out of the index, renamed `*.corrupt`:
    /// its records are lost (a redelivery of one of those events would be taken as new), the
    /// rest of the index is not.
    fn set_aside(&self, run: &Arc<Run>, error: &std::io::Error) -> std::io::Result<()> {
        tracing::error!(error = %error, "inbound dedupe run unreadable, set aside");
        self.runs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r.id != run.id);
        std::fs::rename(&run.path, run.path.with_extension("corrupt"))?;
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
            let mut merged = Vec::with_capacity(inputs.iter().map(|r| r.count).sum());
            let mut unreadable = None;
            for run in &inputs {
                match run.entries() {
                    Ok(entries) => merged.extend(entries),
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        unreadable = Some((run.clone(), e));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some((run, e)) = unreadable {
                self.set_aside(&run, &e)?;
                continue;
            }
            let run = self.write(level + 1, merged)?;
            self.replace(&inputs, Some(run))?;
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
            let entries = match run.entries() {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    removed += run.count;
                    self.set_aside(&run, &e)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let before = entries.len();
            let kept: Vec<Entry> = entries
                .into_iter()
                .filter(|e| e.received_at >= cutoff)
                .collect();
            removed += before - kept.len();
            let new = self.write(run.level, kept)?;
            self.replace(std::slice::from_ref(&run), Some(new))?;
        }
        Ok(removed)
    }
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
        let (bloom, fences) = Run::build_index(&entries);
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
