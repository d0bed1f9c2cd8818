//! Group commit: every write of the SQLite store goes through one task, which holds the writing
//! connection and commits the writes waiting at that moment together, in one transaction.
//!
//! SQLite lets one transaction write at a time. Writers that each took the lock would queue on it
//! (its busy handler sleeps, which makes for long tails) and pay a commit each (with
//! `synchronous=FULL`, a disk sync each). Here they queue in a bounded channel instead, and under
//! load one commit carries many of them. Each write's answer is sent only once its transaction is
//! committed, so an answered write is as durable as the commit.
//!
//! The writes of one transaction stand or fall together: when one fails (a full disk, most
//! likely), the transaction is rolled back and every write in it gets the error; nothing of any of
//! them was written, and each caller is free to try again.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{failed, Counts, Delta};
use crate::jobs::store::StoreError;

/// Writes committed together at most.
const MAX_BATCH: usize = 128;

/// Writes waiting at most; past it, writers wait for room.
const QUEUE: usize = 1024;

/// What a write answers, before it is known to be its type again.
type Answer = Box<dyn Any + Send>;

/// A write's statements, run inside the group's transaction: its answer and how it changes the
/// counts.
type Work = Box<
    dyn for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> Pin<
            Box<dyn Future<Output = Result<(Answer, Delta), sqlx::Error>> + Send + 'c>,
        > + Send,
>;

/// One write waiting for its transaction.
struct Op {
    work: Work,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The handle on the writing task.
#[derive(Debug)]
pub(super) struct Writer {
    /// Where writes queue; taken at close, which lets the task finish what is queued and end.
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    /// The task, awaited at close.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the task that writes through `pool` (of one connection) and keeps `counts` in
    /// commit order. Must be called inside a tokio runtime.
    pub(super) fn spawn(pool: SqlitePool, counts: Arc<Mutex<Counts>>) -> Self {
        let (ops, queue) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(pool, counts, queue));
        Self {
            ops: Mutex::new(Some(ops)),
            task: Mutex::new(Some(task)),
        }
    }

    /// Runs `work` in the next group transaction; answers what it answered once that transaction
    /// is committed (and its count changes applied).
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut SqliteConnection,
            ) -> Pin<
                Box<dyn Future<Output = Result<(T, Delta), sqlx::Error>> + Send + 'c>,
            > + Send
            + 'static,
    {
        let closed = || StoreError::unavailable("the job store is closed");
        let ops = lock(&self.ops).clone().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |conn| {
            Box::pin(async move {
                let (value, delta) = work(conn).await?;
                Ok((Box::new(value) as Answer, delta))
            })
        });
        ops.send(Op { work, reply }).await.map_err(|_| closed())?;
        let value = answer.await.map_err(|_| closed())??;
        value
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| StoreError::unavailable("the job store's writer answered another type"))
    }

    /// Lets the task commit what is queued, then waits for it to end.
    pub(super) async fn close(&self) {
        drop(lock(&self.ops).take());
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The handle's locks hold an `Option` taken in one step, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the writes waiting at each moment (up to [`MAX_BATCH`]) and commits them together.
async fn run(pool: SqlitePool, counts: Arc<Mutex<Counts>>, mut queue: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&pool, &counts, std::mem::take(&mut batch)).await;
    }
}

/// Commits `batch` in one transaction and answers each write.
async fn commit(pool: &SqlitePool, counts: &Mutex<Counts>, batch: Vec<Op>) {
    let (works, replies): (Vec<Work>, Vec<_>) =
        batch.into_iter().map(|op| (op.work, op.reply)).unzip();
    let result = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut total = Delta::default();
        let mut answers = Vec::with_capacity(works.len());
        for work in works {
            let (answer, delta) = work(&mut tx).await?;
            total = total.add(delta);
            answers.push(answer);
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>((answers, total))
    }
    .await;
    match result {
        Ok((answers, total)) => {
            total.apply(&mut lock(counts));
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(error) => {
            let error = failed(error);
            tracing::debug!(%error, writes = replies.len(), "a group of writes failed");
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
