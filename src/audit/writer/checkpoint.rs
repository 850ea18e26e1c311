//! The WAL checkpointer: a thread that copies the store's WAL into the database file off the
//! writer's commit path, and flags the writer to start the WAL over past its size limit.

use super::{AuditError, BUSY_TIMEOUT, Counters};
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the checkpointer copies the WAL into the database file: often enough that the WAL
/// stays short under load (each commit appends about 11 pages).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The WAL size past which the writer restarts the WAL (holding its commits back meanwhile).
/// The file itself is cut back to twice this when it starts over (`journal_size_limit`).
pub const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// A thread that checkpoints the store's WAL off the writer's commit path, every
/// [`CHECKPOINT_EVERY`], until its handle is dropped (then once more, waited for).
///
/// `PASSIVE` never waits for readers or writers. The WAL starts over from its beginning only
/// when a commit finds it wholly copied, which under steady commits never happens: each
/// checkpoint ends behind the commits made while it ran, and the WAL grew by gigabytes a minute
/// under load. So once the WAL passes the limit, the checkpointer flags it and the writer runs a
/// `RESTART` checkpoint on its own connection before its next commit
/// ([`super::SqliteSink::restart_wal_if_due`]), and the writer's next commit starts the WAL over. A
/// restart run from this thread instead raced the writer for the lock and lost for seconds.
///
/// Commits wait while the restart runs, so this thread leaves it as little as it can (see
/// [`Checkpoints::run`]). Paired figures are in BENCHMARKS.md, under 3360e84.
pub(super) struct Checkpointer {
    /// Dropping it wakes the thread and ends it.
    pub(super) stop: Option<std::sync::mpsc::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Checkpointer {
    pub(super) fn start(
        path: &Path,
        counters: Arc<Counters>,
        wal_limit_bytes: i64,
    ) -> Result<Checkpointer, AuditError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let db_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(AuditError::Start)?;
        let mut checkpoints = Checkpoints {
            conn,
            db_file,
            limit_frames: wal_limit_bytes / page_size.max(1),
            copied: 0,
            counters,
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    checkpoints.run();
                }
                checkpoints.run();
            })
            .map_err(AuditError::Start)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The checkpointer thread's state.
pub(super) struct Checkpoints {
    pub(super) conn: Connection,
    /// The database file, to sync what a passive checkpoint copied into it.
    pub(super) db_file: std::fs::File,
    /// WAL frames (pages) past which the writer is asked to restart the WAL.
    pub(super) limit_frames: i64,
    /// Frames of the WAL copied as of the last checkpoint: a change means the next one wrote.
    pub(super) copied: i64,
    pub(super) counters: Arc<Counters>,
}

impl Checkpoints {
    /// One round: a passive checkpoint; past the limit, a second one and the restart flag.
    ///
    /// The writer's restart holds commits back while it syncs the WAL written since this
    /// thread's last sync, copies the frames this thread has not, and syncs the database file.
    /// Three things keep that short (paired runs at 64 clients: p99 85-86 ms without them,
    /// 17-24 ms with them, against 9-11 ms with no restarts at all):
    /// - [`Self::passive`] syncs the database file after every copy;
    /// - the second checkpoint leaves the restart only what came in while it ran;
    /// - the WAL file is cut back only past twice the limit (`journal_size_limit`), so the
    ///   commit that starts it over does not first free the blocks of its tail.
    pub(super) fn run(&mut self) {
        if self
            .passive()
            .is_some_and(|frames| frames > self.limit_frames)
        {
            self.passive();
            self.counters.wal_over_limit.store(true, Ordering::Release);
        }
    }

    /// A passive checkpoint, then a sync of the database file if it copied anything; returns
    /// the frames in the WAL.
    ///
    /// SQLite syncs the database file only when a checkpoint finds that no commit came in while
    /// it copied, which under steady commits only the writer's restart does: it then synced
    /// every page the passive checkpoints had written since the last restart (38-56 ms).
    pub(super) fn passive(&mut self) -> Option<i64> {
        match wal_checkpoint(&self.conn, "PASSIVE") {
            Ok((_, frames, copied)) => {
                if copied != self.copied {
                    self.copied = copied;
                    if let Err(e) = self.db_file.sync_data() {
                        tracing::warn!(error = %e, "audit database sync failed");
                    }
                }
                Some(frames)
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit WAL checkpoint failed");
                self.counters
                    .failed_checkpoints
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// `PRAGMA wal_checkpoint(mode)`: (1 if it could not finish for a lock, frames in the WAL,
/// frames of it copied into the database file).
pub(super) fn wal_checkpoint(
    conn: &Connection,
    mode: &str,
) -> Result<(i64, i64, i64), rusqlite::Error> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}
