//! Group commit: many writers share one `fsync`.
//!
//! This is the sled flush behind [`super::Store::durable`], for writes to trees that are not
//! logged in the journal (the templates' statuses, tools); logged writes wait for the journal
//! instead ([`super::redo`]).
//!
//! A request that has written to sled calls [`GroupCommit::durable`] and waits. One committer
//! thread takes every waiter queued so far, flushes sled once, and wakes them all; writers that
//! arrive during a flush are served by the next one. Every waiter registers *after* its writes
//! were applied, and every flush starts *after* its waiters registered, so a waiter woken with
//! `Ok` knows its own writes are on disk.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), Arc<sled::Error>>>;

/// What a flush did, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct FlushReport {
    pub waiters: usize,
    pub seconds: f64,
}

/// The committer thread. Dropping it lets the thread finish its last flush and joins it, so the
/// database is closed by the time the owner is gone.
#[derive(Debug)]
pub struct GroupCommit {
    queue: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl GroupCommit {
    /// Starts the committer thread for `db`; `observe` sees every flush (for metrics).
    /// Handled marks of inbound events taken before a flush are written after it.
    pub fn start(
        db: sled::Db,
        marks: Option<super::inbound::HandledMarks>,
        observe: impl Fn(FlushReport) + Send + 'static,
    ) -> GroupCommit {
        let (queue, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("waotp-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let started = Instant::now();
                    let flush = || db.flush().map(drop).map_err(Arc::new);
                    let result = match &marks {
                        Some(marks) => marks.around(flush),
                        None => flush(),
                    };
                    observe(FlushReport {
                        waiters: batch.len(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "flushing the database failed");
                    }
                    for waiter in batch {
                        // A waiter that went away (client disconnected) needs no answer.
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .expect("the OS can start a thread");
        GroupCommit {
            queue: Some(queue),
            thread: Some(thread),
        }
    }

    /// Resolves once everything written before this call is flushed to disk.
    pub async fn durable(&self) -> Result<(), Arc<sled::Error>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.queue.as_ref().map(|q| q.send(tx).is_ok());
        if sent != Some(true) {
            return Err(Arc::new(sled::Error::ReportableBug(
                "the commit thread has stopped".into(),
            )));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(sled::Error::ReportableBug(
                "the commit thread dropped a waiter".into(),
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open");
        let flushes = Arc::new(AtomicUsize::new(0));
        let counted = flushes.clone();
        let commit = Arc::new(GroupCommit::start(db.clone(), None, move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let (db, commit) = (db.clone(), commit.clone());
            tasks.push(tokio::spawn(async move {
                db.insert(i.to_be_bytes(), &b"v"[..]).expect("insert");
                commit.durable().await.expect("flush");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..=200).contains(&n));
        // Dropping the committer joins its thread and releases its database handle, so the
        // database can be reopened and holds every acknowledged write.
        drop(commit);
        drop(db);
        let db = super::super::open_waiting_for_lock(&sled::Config::new().path(dir.path()))
            .expect("reopen");
        assert_eq!(db.len(), 200);
    }
}
