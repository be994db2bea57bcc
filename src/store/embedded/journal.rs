//! The on-disk format of the inbound journal: append-only segment files of framed, checksummed
//! records.
//!
//! A segment is `<first sequence number, 16 hex digits>.log` and starts with an 8-byte magic.
//! The number is that of its first event, or, for a segment opened when no event was waiting,
//! the next number an event would get: one after the previous segment's at least (a segment
//! without events that closes makes the next number skip one), so names are distinct and
//! sort in writing order.
//! Each record is `length: u32 LE | crc32: u32 LE | payload`, the checksum covering the payload.
//! A payload is one of:
//! - `1 | seq: u64 | received_at: i64 | WhatsApp's timestamp: i64 | key length: u16 | dedupe
//!   key | sealed event`;
//! - `2 | seq: u64 …`: events handled (their effects are on disk), not to be replayed;
//! - `3 | redo number: u64 | body`: the puts and removes of one store write, to re-apply after a
//!   crash if sled had not flushed them (body format in [`super::redo`]).
//!
//! A crash can tear only the last record of the last segment (records are acknowledged after the
//! `fdatasync` that covers them); [`read_segment`] stops there and reports how much is sound.

use std::path::{Path, PathBuf};

/// First bytes of every segment (format version 1).
pub const MAGIC: &[u8; 8] = b"WAOTPJ1\n";
const EVENT: u8 = 1;
const HANDLED: u8 = 2;
const REDO: u8 = 3;
/// Length and checksum in front of every payload.
pub const FRAME: usize = 8;

/// One record read back.
#[derive(Debug)]
pub enum Record<'a> {
    Event {
        seq: u64,
        received_at: i64,
        dedupe_key: &'a [u8],
        sealed: &'a [u8],
        /// Where the whole framed record starts in its segment, and its length.
        offset: u64,
        len: u32,
    },
    Handled(Vec<u64>),
    Redo {
        seq: u64,
        body: &'a [u8],
    },
}

/// Appends a framed event record to `out`.
pub fn put_event(
    out: &mut Vec<u8>,
    seq: u64,
    (received_at, event_ts): (i64, i64),
    key: &[u8],
    sealed: &[u8],
) {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let key = &key[..usize::from(key_len)];
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    out.push(EVENT);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&received_at.to_le_bytes());
    out.extend_from_slice(&event_ts.to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(sealed);
    seal_frame(out, start);
}

/// Appends a framed "handled" record for `seqs` to `out`.
pub fn put_handled(out: &mut Vec<u8>, seqs: &[u64]) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    out.push(HANDLED);
    for seq in seqs {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    seal_frame(out, start);
}

/// Appends a framed redo record (number `seq`, encoded `body`) to `out`.
pub fn put_redo(out: &mut Vec<u8>, seq: u64, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    out.push(REDO);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
    seal_frame(out, start);
}

fn seal_frame(out: &mut [u8], start: usize) {
    let payload = &out[start + FRAME..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + FRAME].copy_from_slice(&crc.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn parse_payload(payload: &[u8], offset: u64, len: u32) -> Option<Record<'_>> {
    match *payload.first()? {
        EVENT => {
            let seq = u64_at(payload, 1)?;
            let received_at = u64_at(payload, 9)? as i64;
            // Bytes 17..25 hold WhatsApp's timestamp of the event: written for operators
            // reading a segment by hand, not read back (deduplication is by id alone).
            u64_at(payload, 17)?;
            let key_len = usize::from(u16::from_le_bytes(payload.get(25..27)?.try_into().ok()?));
            let dedupe_key = payload.get(27..27 + key_len)?;
            let sealed = payload.get(27 + key_len..)?;
            Some(Record::Event {
                seq,
                received_at,
                dedupe_key,
                sealed,
                offset,
                len,
            })
        }
        HANDLED => {
            let body = payload.get(1..)?;
            if body.len() % 8 != 0 {
                return None;
            }
            Some(Record::Handled(
                body.chunks_exact(8)
                    .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
                    .collect(),
            ))
        }
        REDO => Some(Record::Redo {
            seq: u64_at(payload, 1)?,
            body: payload.get(9..)?,
        }),
        _ => None,
    }
}

/// Reads every sound record of a segment's bytes, in order. Returns the length of the sound
/// prefix: shorter than `bytes` when the tail is torn or damaged.
pub fn read_segment<'a>(bytes: &'a [u8], mut each: impl FnMut(Record<'a>)) -> usize {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return 0;
    }
    let mut at = MAGIC.len();
    loop {
        let Some(header) = bytes.get(at..at + FRAME) else {
            return at;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(at + FRAME..at + FRAME + len as usize) else {
            return at;
        };
        if crc32fast::hash(payload) != crc {
            return at;
        }
        let Some(record) = parse_payload(payload, at as u64, len + FRAME as u32) else {
            return at;
        };
        each(record);
        at += FRAME + len as usize;
    }
}

/// Parses one framed record read from `offset` (for looking an event up by location).
pub fn parse_one(framed: &[u8], offset: u64) -> Option<Record<'_>> {
    let header = framed.get(..FRAME)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = framed.get(FRAME..FRAME + len as usize)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    parse_payload(payload, offset, len + FRAME as u32)
}

/// The file name of the segment whose first sequence number is `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:016x}.log"))
}

/// Segments in `dir`, oldest first, as (first sequence number, path).
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| n.len() == 16)
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Makes a directory entry change (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        put_event(
            &mut bytes,
            7,
            (1_700_000_000, 1_699_999_990),
            b"m\0wamid.a",
            b"sealed-a",
        );
        put_handled(&mut bytes, &[3, 7]);
        put_event(&mut bytes, 8, (-1, 0), b"", b"");
        put_redo(&mut bytes, 5, b"body");
        bytes
    }

    #[test]
    fn records_read_back_in_order() {
        let bytes = sample();
        let mut seen = Vec::new();
        let sound = read_segment(&bytes, |r| seen.push(format!("{r:?}")));
        assert_eq!(sound, bytes.len());
        assert_eq!(seen.len(), 4);
        assert!(seen[0].contains("seq: 7") && seen[0].contains("received_at: 1700000000"));
        assert_eq!(seen[1], "Handled([3, 7])");
        assert!(seen[2].contains("seq: 8") && seen[2].contains("received_at: -1"));
        assert_eq!(seen[3], "Redo { seq: 5, body: [98, 111, 100, 121] }");
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_sound_prefix() {
        let bytes = sample();
        let mut first_len = 0;
        read_segment(&bytes, |r| {
            if let Record::Event { seq: 7, len, .. } = r {
                first_len = len as usize;
            }
        });
        let first_end = MAGIC.len() + first_len;
        // Every cut inside the second record keeps exactly the first one.
        for cut in first_end..first_end + 20 {
            let mut n = 0;
            assert_eq!(read_segment(&bytes[..cut], |_| n += 1), first_end);
            assert_eq!(n, 1);
        }
        // A flipped bit in the second record's payload is caught by its checksum.
        let mut damaged = bytes.clone();
        damaged[first_end + FRAME + 2] ^= 0x10;
        let mut n = 0;
        assert_eq!(read_segment(&damaged, |_| n += 1), first_end);
        assert_eq!(n, 1);
        // Not a segment at all.
        assert_eq!(read_segment(b"garbage!", |_| n += 1), 0);
    }

    #[test]
    fn one_record_parses_at_its_location() {
        let bytes = sample();
        let mut located = None;
        read_segment(&bytes, |r| {
            if let Record::Event {
                seq: 7,
                offset,
                len,
                ..
            } = r
            {
                located = Some((offset as usize, len as usize));
            }
        });
        let (offset, len) = located.expect("event 7");
        match parse_one(&bytes[offset..offset + len], offset as u64) {
            Some(Record::Event { seq, sealed, .. }) => {
                assert_eq!(seq, 7);
                assert_eq!(sealed, b"sealed-a");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Rec {
            Event(u64, i64, Vec<u8>, Vec<u8>),
            Handled(Vec<u64>),
        }

        fn rec() -> impl Strategy<Value = Rec> {
            prop_oneof![
                (
                    any::<u64>(),
                    any::<i64>(),
                    proptest::collection::vec(any::<u8>(), 0..40),
                    proptest::collection::vec(any::<u8>(), 0..200)
                )
                    .prop_map(|(s, t, k, v)| Rec::Event(s, t, k, v)),
                proptest::collection::vec(any::<u64>(), 0..10).prop_map(Rec::Handled),
            ]
        }

        fn encode(records: &[Rec]) -> (Vec<u8>, Vec<usize>) {
            let mut bytes = MAGIC.to_vec();
            let mut ends = Vec::new();
            for r in records {
                match r {
                    Rec::Event(seq, t, k, v) => put_event(&mut bytes, *seq, (*t, *t), k, v),
                    Rec::Handled(seqs) => put_handled(&mut bytes, seqs),
                }
                ends.push(bytes.len());
            }
            (bytes, ends)
        }

        proptest! {
            /// Whatever the bytes, reading never panics and reports a sound prefix.
            #[test]
            fn arbitrary_bytes_are_refused_without_panic(
                tail in proptest::collection::vec(any::<u8>(), 0..2000)
            ) {
                let mut bytes = MAGIC.to_vec();
                bytes.extend_from_slice(&tail);
                let sound = read_segment(&bytes, |_| {});
                prop_assert!(sound <= bytes.len());
                prop_assert!(sound >= MAGIC.len());
            }

            /// Cut anywhere, a segment reads back exactly the records written before the cut.
            #[test]
            fn a_cut_keeps_exactly_the_whole_records_before_it(
                records in proptest::collection::vec(rec(), 0..12),
                cut in any::<proptest::sample::Index>()
            ) {
                let (bytes, ends) = encode(&records);
                let at = MAGIC.len() + cut.index(bytes.len() - MAGIC.len() + 1);
                let whole = ends.iter().filter(|e| **e <= at).count();
                let mut n = 0;
                let sound = read_segment(&bytes[..at], |_| n += 1);
                prop_assert_eq!(n, whole);
                prop_assert_eq!(sound, if whole == 0 { MAGIC.len() } else { ends[whole - 1] });
            }
        }
    }
}
