//! The embedded ledger's one writer: write transactions queue here and commit together.
//!
//! SQLite lets one writer in at a time, and a connection that finds the lock taken polls
//! for it with growing sleeps (up to 100 ms each), so under many uploads a
//! `CheckUpload` could wait hundreds of milliseconds behind chunk commits even while
//! the lock sat free. Here one thread owns the only writing connection. It takes every
//! transaction queued since its last commit, runs each inside a savepoint (a failing one
//! rolls back alone), and commits them together: those that need no sync first, in a
//! commit of their own, then the rest with one WAL sync for all of them; whoever queued
//! last waits for at most about one such round.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::ledger::LedgerError;

/// Most transactions committed together: bounds the time the first one waits.
const MAX_GROUP: usize = 256;

/// Runs a job's work in the group's transaction or, given `Err(why)`, only prepares
/// its answer (the work could not run).
type RunJob = Box<dyn FnOnce(Result<&Transaction<'_>, &str>) -> Ran + Send>;

/// Delivers a job's result, or the commit's error (`Some(why)`) if the commit failed.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// One queued write transaction.
struct Job {
    /// Whether its commit must reach the disk before it is answered.
    synced: bool,
    run: RunJob,
}

/// A job that has run inside the group's transaction, waiting for the commit.
struct Ran {
    failed: bool,
    answer: Answer,
}

/// The handle to the writer thread; dropping it lets the thread finish its queue and end.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`, which must be configured like every other
    /// connection to the ledger.
    pub(super) fn start(conn: Connection) -> Result<Self, LedgerError> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write_loop(conn, queue))
            .map_err(|e| LedgerError::Unavailable(format!("starting the ledger writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `work` in a write transaction and answers once it is committed; with
    /// `synced`, once the commit is on disk.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        synced: bool,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, answer) = oneshot::channel();
        let run = Box::new(move |tx: Result<&Transaction<'_>, &str>| {
            let result = match tx {
                Ok(tx) => work(tx),
                Err(why) => Err(LedgerError::Database(why.to_owned())),
            };
            Ran {
                failed: result.is_err(),
                answer: Box::new(move |commit_failed: Option<&str>| {
                    let _ = reply.send(match (result, commit_failed) {
                        (Ok(_), Some(why)) => Err(LedgerError::Database(why.to_owned())),
                        (result, _) => result,
                    });
                }),
            }
        });
        self.jobs
            .send(Job { synced, run })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> LedgerError {
    LedgerError::Unavailable("the ledger writer stopped before answering".into())
}

fn write_loop(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP
            && let Ok(next) = queue.try_recv()
        {
            group.push(next);
        }
        // Jobs that need not wait for the disk commit first, on their own, and are
        // answered at once: a new session's CheckUpload queued beside chunk commits would
        // otherwise wait for their sync. Every job in the group was waiting at once, so
        // no caller saw one of them end before another began: this order is one they
        // could have had anyway.
        let (synced, unsynced): (Vec<Job>, Vec<Job>) = group.into_iter().partition(|j| j.synced);
        for (jobs, synced) in [(unsynced, false), (synced, true)] {
            if !jobs.is_empty() {
                commit_group(&mut conn, jobs, synced);
            }
        }
    }
}

/// Runs every job of `group` in one transaction, each in a savepoint, and commits; with
/// `synced`, the commit reaches the disk before anyone is answered.
fn commit_group(conn: &mut Connection, group: Vec<Job>, synced: bool) {
    let begun = conn
        .pragma_update(None, "synchronous", if synced { "FULL" } else { "NORMAL" })
        .and_then(|()| conn.transaction_with_behavior(TransactionBehavior::Immediate));
    let tx = match begun {
        Ok(tx) => tx,
        Err(e) => {
            let why = e.to_string();
            for job in group {
                (refused(job, &why).answer)(None);
            }
            return;
        }
    };
    let mut ran = Vec::with_capacity(group.len());
    for job in group {
        ran.push(run_in_savepoint(&tx, job));
    }
    let committed = tx.commit().map_err(|e| e.to_string());
    let commit_failed = committed.as_ref().err().map(String::as_str);
    for job in ran {
        (job.answer)(commit_failed);
    }
}

/// Runs one job; its changes are undone if it fails, and the group's stay.
fn run_in_savepoint(tx: &Transaction<'_>, job: Job) -> Ran {
    if let Err(e) = tx.execute_batch("SAVEPOINT job") {
        return refused(job, &e.to_string());
    }
    // A panic in one job must not take the writer (and every later write) down with it.
    let ran = catch_unwind(AssertUnwindSafe(|| (job.run)(Ok(tx)))).unwrap_or_else(|_| Ran {
        failed: true,
        answer: Box::new(|_| {}),
    });
    let undo = if ran.failed {
        "ROLLBACK TO job; RELEASE job"
    } else {
        "RELEASE job"
    };
    match tx.execute_batch(undo) {
        Ok(()) => ran,
        // The savepoint cannot be closed: fail this job; the commit then tells the rest.
        Err(e) => {
            let why = e.to_string();
            (ran.answer)(Some(&why));
            Ran {
                failed: true,
                answer: Box::new(|_| {}),
            }
        }
    }
}

/// Answers a job that could not run with `why`, without running it.
fn refused(job: Job, why: &str) -> Ran {
    (job.run)(Err(why))
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::time::Duration;

    use super::super::db_error;
    use super::*;

    fn writer_on_a_fresh_file() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER)")
            .unwrap();
        (dir, Writer::start(conn).unwrap())
    }

    fn insert(tx: &Transaction<'_>, n: i64) -> Result<(), LedgerError> {
        tx.execute("INSERT INTO t (n) VALUES (?1)", [n])
            .map(drop)
            .map_err(db_error)
    }

    #[tokio::test]
    async fn a_failing_write_is_undone_alone_and_the_writes_beside_it_commit() {
        let (_dir, writer) = writer_on_a_fresh_file();
        // The first holds the writer while the next three queue: they commit in the next round.
        let first = writer.write(true, |tx| {
            std::thread::sleep(Duration::from_millis(100));
            insert(tx, 1)
        });
        let before = writer.write(true, |tx| insert(tx, 2));
        let failing = writer.write(false, |tx| {
            insert(tx, 3)?;
            Err::<(), _>(LedgerError::Database("refused".into()))
        });
        let after = writer.write(false, |tx| insert(tx, 4));
        let (first, before, failing, after) = tokio::join!(first, before, failing, after);
        assert!(first.is_ok() && before.is_ok() && after.is_ok());
        assert!(matches!(failing, Err(LedgerError::Database(why)) if why == "refused"));

        let rows = writer
            .write(false, |tx| {
                let mut select = tx.prepare("SELECT n FROM t ORDER BY n").map_err(db_error)?;
                let rows = select.query_map([], |row| row.get::<_, i64>(0));
                rows.and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(db_error)
            })
            .await
            .unwrap();
        assert_eq!(rows, [1, 2, 4]);
    }

    #[tokio::test]
    async fn a_write_that_need_not_sync_commits_ahead_of_synced_writes_queued_beside_it() {
        let (dir, writer) = writer_on_a_fresh_file();
        let path = dir.path().join("ledger.db");
        // The first write holds the writer until a synced and an unsynced write have
        // both queued behind it, so those two form the next group.
        let (entered, running) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let first = writer.write(true, move |tx| {
            let _ = entered.send(());
            let _ = released.recv();
            insert(tx, 1)
        });
        let synced = writer.write(true, move |tx| {
            // Another connection sees only what is committed.
            let other = Connection::open(&path).map_err(db_error)?;
            let seen = other
                .query_row("SELECT count(*) FROM t WHERE n = 3", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(db_error)?;
            insert(tx, 2)?;
            Ok(seen)
        });
        let unsynced = writer.write(false, |tx| insert(tx, 3));
        let (mut first, mut synced, mut unsynced) = (pin!(first), pin!(synced), pin!(unsynced));
        // Polling a write queues it.
        assert!(futures::poll!(first.as_mut()).is_pending());
        tokio::task::spawn_blocking(move || running.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(futures::poll!(synced.as_mut()).is_pending());
        assert!(futures::poll!(unsynced.as_mut()).is_pending());
        release.send(()).unwrap();
        let (first, synced, unsynced) = tokio::join!(first, synced, unsynced);
        assert!(first.is_ok() && unsynced.is_ok());
        assert_eq!(
            synced.unwrap(),
            1,
            "the unsynced write should be committed before the synced one runs"
        );
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let (_dir, writer) = writer_on_a_fresh_file();
        let panicked = writer
            .write(true, |_tx| -> Result<(), LedgerError> { panic!("boom") })
            .await;
        assert!(panicked.is_err());
        writer.write(true, |tx| insert(tx, 1)).await.unwrap();
    }
}
