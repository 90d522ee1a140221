//! `litevisor svc ...` applied to the graph, as s6-rc does it:
//! - `down`: the service's dependents (transitively) are stopped first, then the service; all of them
//!   stay down (no restart, not started by anything) until `up`. Stopping the main service this way
//!   ends litevisor as the main service's exit would (its exit status is litevisor's exit code).
//! - `up`: the service's dependencies (transitively) are brought up first, then the service; it is
//!   supervised normally again. Dependents it brought down stay down until their own `up`.
//! - `once`: as `up`, but its process is not restarted when it ends.
//! - `restart`: the service alone is stopped (its stop signal, `stop_grace`, SIGKILL of its group)
//!   and started again; its dependents keep running. A service not running, or on its way down, is
//!   brought up.
//! - `kill SIGNAL`: the signal goes to the service's process group; nothing else changes.
//!
//! Stops by request use the service's stop sequence with `shutdown_timeout` as their deadline.
//! During a shutdown every request is refused.

use tokio::time::Instant;

use super::Orchestrator;
use super::life::{Step, Want};
use crate::control::svc::Verb;
use crate::init::signal_name;
use crate::supervisor::unit::{Command, Ended, Why};

impl Orchestrator {
    /// Applies one request; `Ok` says what was done.
    pub(super) fn on_request(&mut self, verb: Verb, name: &str) -> Result<String, String> {
        if self.deadline.is_some() {
            return Err("litevisor is shutting down".to_owned());
        }
        let Some(i) = self
            .slots
            .iter()
            .position(|s| !s.database && s.fresh.is_some() && s.name == name)
        else {
            let known: Vec<&str> = self
                .slots
                .iter()
                .filter(|s| !s.database)
                .map(|s| s.name.as_str())
                .collect();
            return Err(format!(
                "unknown service {name:?} (services: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        };
        match verb {
            Verb::Kill(signal) => {
                if self.board.deliver(i, signal) {
                    Ok(format!("sent {} to {name:?}", signal_name(signal)))
                } else {
                    Err(format!("service {name:?} is not running"))
                }
            }
            Verb::Down => {
                let set = self.closure(i, |s| &s.dependents);
                for &j in &set {
                    self.set_want(j, Want::Down);
                    self.abandon_if_pending(j);
                }
                tracing::info!("svc down {name:?}");
                self.stop_requested();
                Ok(with_others(
                    format!("bringing {name:?} down"),
                    "its dependents first",
                    self.names(&set, i),
                ))
            }
            Verb::Up | Verb::Once => {
                let set = self.bring_up(i);
                self.board.set_once(i, verb == Verb::Once);
                tracing::info!(
                    "svc {} {name:?}",
                    if verb == Verb::Once { "once" } else { "up" }
                );
                Ok(with_others(
                    format!("bringing {name:?} up"),
                    "its dependencies first",
                    self.names(&set, i),
                ))
            }
            Verb::Restart => {
                let slot = &self.slots[i];
                if !slot.life.running() {
                    self.bring_up(i);
                    return Ok(format!("{name:?} was not running: bringing it up"));
                }
                if slot.want == Want::Down {
                    // On its way down: a restart means it runs afterwards.
                    let stopping = slot.life.stopping();
                    self.bring_up(i);
                    return Ok(if stopping {
                        format!("{name:?} was stopping for a down: it starts again once stopped")
                    } else {
                        format!("{name:?} was waiting to go down: it stays up")
                    });
                }
                tracing::info!("svc restart {name:?}");
                self.set_want(i, Want::Restart);
                self.stop_requested();
                Ok(format!("restarting {name:?}"))
            }
        }
    }

    /// `up` for node `i`: it and its dependencies are wanted up, those that ended start again.
    /// Returns the nodes concerned.
    fn bring_up(&mut self, i: usize) -> Vec<usize> {
        let set = self.closure(i, |s| &s.deps);
        for &j in &set {
            let slot = &self.slots[j];
            if slot.database || slot.fresh.is_none() {
                continue;
            }
            if slot.want == Want::Restart {
                continue; // already stopping to start again: up is where it is going
            }
            let was_down = slot.want == Want::Down;
            let oneshot = slot.fresh.as_ref().is_some_and(|f| f.oneshot);
            let life = slot.life;
            self.set_want(j, Want::Up);
            // A oneshot that did its job stays done unless it was brought down.
            if life.ended() && (was_down || !oneshot || !life.satisfied()) {
                self.respawn(j);
            } else if life.stopping() && was_down {
                // Still stopping from a `down`: it starts again once it has stopped.
                self.set_want(j, Want::Restart);
            }
        }
        self.start_what_can_start();
        set
    }

    /// Node `i` and every node reachable from it through `next` (dependents or dependencies).
    fn closure(&self, i: usize, next: impl Fn(&super::Slot) -> &Vec<usize>) -> Vec<usize> {
        let mut seen = vec![false; self.slots.len()];
        let mut stack = vec![i];
        let mut out = Vec::new();
        while let Some(j) = stack.pop() {
            if std::mem::replace(&mut seen[j], true) {
                continue;
            }
            out.push(j);
            stack.extend(next(&self.slots[j]));
        }
        out
    }

    /// The service names of `set` other than `i`'s.
    fn names(&self, set: &[usize], i: usize) -> Vec<String> {
        set.iter()
            .filter(|&&j| j != i && !self.slots[j].database)
            .map(|&j| self.slots[j].name.clone())
            .collect()
    }

    /// Gives a fresh unit to node `i` (which has ended): it starts once its dependencies are
    /// satisfied.
    pub(super) fn respawn(&mut self, i: usize) {
        if self.slots[i].fresh.is_some() && self.step(i, Step::Respawn) {
            let slot = &mut self.slots[i];
            slot.unit = slot.fresh.as_ref().map(|fresh| (fresh.make)());
        }
    }

    /// Sends the stop order to every running node wanted down whose dependents are down, and to
    /// every node to restart.
    pub(super) fn stop_requested(&mut self) {
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        for i in (0..self.slots.len()).rev() {
            let slot = &self.slots[i];
            if !slot.life.running() || slot.life.stopping() {
                continue;
            }
            let stop = match slot.want {
                Want::Up => false,
                Want::Restart => true,
                Want::Down | Want::Gone => !self.dependent_running(i),
            };
            if stop {
                self.send(
                    i,
                    Command::Stop {
                        deadline: deadline.into_std(),
                    },
                );
            }
        }
    }

    /// A node stopped by request has ended: it stays down, or starts again (restart), and the
    /// next stops by request may go. False when the end is not a requested one (the main service
    /// brought down ends litevisor as its exit does: the usual path handles it).
    pub(super) fn ended_by_request(&mut self, i: usize, ended: &Ended) -> bool {
        let slot = &self.slots[i];
        let want = slot.want;
        if want == Want::Up || (slot.main && want == Want::Down) {
            return false;
        }
        self.step(i, Step::End(ended.status));
        let slot = &self.slots[i];
        if want == Want::Gone {
            match &ended.why {
                Why::FinalSyncFailed(why) => tracing::error!("{why}"),
                _ => tracing::info!("{:?}, removed by a reload, has stopped", slot.name),
            }
            if let Some(at) = self.leaving.iter().position(|(n, _)| *n == i) {
                let (_, path) = self.leaving.remove(at);
                let txid = self
                    .databases
                    .get(&path)
                    .map_or(0, |shared| shared.row().engine.replica_txid);
                self.databases.forget(&path);
                while let Some(at) = self.waiting.iter().position(|(n, _)| *n == i) {
                    let (_, reply) = self.waiting.remove(at);
                    let _ = reply.send(match &ended.why {
                        Why::FinalSyncFailed(why) => Err(why.clone()),
                        _ => Ok(txid.to_string()),
                    });
                }
            }
            self.stop_requested();
            self.check_all_ended();
            return true;
        }
        let how = ended
            .status
            .map_or_else(|| "ended".to_owned(), |s| s.to_string());
        if want == Want::Restart {
            tracing::info!("service {:?} stopped for its restart ({how})", slot.name);
            self.set_want(i, Want::Up);
            self.respawn(i);
            self.start_what_can_start();
        } else {
            tracing::info!("service {:?} is down by request ({how})", slot.name);
        }
        self.stop_requested();
        true
    }
}

/// `what`, followed by `(how: a, b)` when others are concerned.
fn with_others(what: String, how: &str, others: Vec<String>) -> String {
    if others.is_empty() {
        what
    } else {
        format!("{what} ({how}: {})", others.join(", "))
    }
}
