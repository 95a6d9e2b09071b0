//! What the daemon's tasks share: the engine behind its mutex, the connection limits, and
//! the channel of exited processes. Every other daemon module depends on this one, none on
//! each other's state.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::engine::Engine;

pub struct Shared {
    pub engine: Mutex<Engine>,
    pub connections: Arc<Semaphore>,
    /// Open connections per non-root uid, and the most one uid may hold
    /// (`limits.max-connections-per-user`).
    pub per_user: Mutex<HashMap<u32, UserConnections>>,
    pub max_per_user: usize,
    /// How long a connection may go without a complete request line, and how long a reply
    /// may wait for the client to read it.
    pub idle_timeout: Duration,
    /// For checks that need /proc but not the engine.
    pub proc: crate::procfs::Procfs,
    /// Exited processes, forgotten in batches by one task (see `watch::forget_exits`).
    pub exits: tokio::sync::mpsc::UnboundedSender<u32>,
}

impl Shared {
    /// Runs `f` on the engine off the runtime's thread (file I/O and fsync inside). A panic in
    /// `f` is logged and goes on unwinding in the caller's task; the engine stays usable.
    pub async fn with_engine<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> T {
        match self.try_with_engine(f).await {
            Ok(v) => v,
            Err(Panicked(message)) => std::panic::resume_unwind(Box::new(message)),
        }
    }

    /// Runs `f` on the engine as `with_engine` does, catching a panic inside it: it is logged
    /// (a request's reply then says `internal`), and since it is caught with the lock still
    /// held, the mutex is not poisoned, so no later call carries on unaware.
    pub async fn try_with_engine<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let me = self.clone();
        let joined = tokio::task::spawn_blocking(move || run_caught(&me.engine, f)).await;
        // The closure catches `f`'s panics; only cancellation at shutdown is left.
        joined.unwrap_or_else(|e| Err(Panicked(format!("engine task: {e}"))))
    }
}

/// How many times `try_with_engine_here` yields to other tasks while the engine is busy
/// before it hands the call to the blocking pool.
const INLINE_TRIES: usize = 4;

impl Shared {
    /// Runs a short engine call (a move, a read) on the calling task when the engine is
    /// free, or becomes free within a few yields: no hand-off to the blocking pool and back
    /// (two thread switches, more than the call itself). Held longer by someone (a reload,
    /// a batch of events), the call goes to the blocking pool as `try_with_engine` does, so
    /// the runtime's one thread, which serves every connection, never waits for the lock.
    pub async fn try_with_engine_here<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        for _ in 0..INLINE_TRIES {
            let busy = match self.engine.try_lock() {
                Ok(guard) => return run_caught_locked(guard, f),
                // Poisoned: `run_caught` clears it, on the blocking pool.
                Err(std::sync::TryLockError::Poisoned(_)) => false,
                Err(std::sync::TryLockError::WouldBlock) => true,
            };
            if !busy {
                break;
            }
            tokio::task::yield_now().await;
        }
        self.try_with_engine(f).await
    }
}

/// The connections of one uid.
#[derive(Debug, Default)]
pub struct UserConnections {
    pub(super) open: usize,
    /// A refusal was logged since the last connection of this uid closed: one warning per
    /// episode, not one per attempt.
    pub(super) warned: bool,
}

/// Runs `f` on what `m` holds, catching a panic inside while the lock is held: the mutex is
/// not poisoned by it, and the panic is logged and returned.
pub(super) fn run_caught<E, T>(m: &Mutex<E>, f: impl FnOnce(&mut E) -> T) -> Result<T, Panicked> {
    let e = m.lock().unwrap_or_else(|p| {
        // Only a panic outside `catch_unwind` below could poison it.
        tracing::error!("the engine's lock was poisoned by a panic; carrying on");
        m.clear_poison();
        p.into_inner()
    });
    run_caught_locked(e, f)
}

/// `run_caught` with the lock already taken.
fn run_caught_locked<E, T>(
    mut e: std::sync::MutexGuard<'_, E>,
    f: impl FnOnce(&mut E) -> T,
) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(|| f(&mut e))).map_err(|p| {
        let message = panic_message(p.as_ref());
        tracing::error!(
            "an engine call panicked: {message}; the changes it made so far stay (the state \
             file holds what was saved before it)"
        );
        Panicked(message)
    })
}

/// An engine call panicked; the message of the panic.
#[derive(Debug)]
pub struct Panicked(pub String);

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside an engine call is reported, and the next call finds the engine usable
    /// and its lock not poisoned (it used to be taken over silently).
    #[test]
    fn a_panic_in_an_engine_call_is_caught_and_does_not_poison() {
        let m = Mutex::new(1);
        let r: Result<(), Panicked> = run_caught(&m, |n| {
            *n = 2;
            panic!("boom {}", *n);
        });
        assert_eq!(r.unwrap_err().0, "boom 2");
        assert!(!m.is_poisoned());
        assert_eq!(run_caught(&m, |n| *n).unwrap(), 2);
    }
}
