//! `litevisor svc ...` applied to the graph, as s6-rc does it:
//! - `down`: the service's dependents (transitively) are stopped first, then the service; all of them
//!   stay down (no restart, not started by anything) until `up`. Stopping the main service this way
//!   ends litevisor as the main service's exit would (its exit status is litevisor's exit code).
//! - `up`: the service's dependencies (transitively) are brought up first, then the service; it is
//!   supervised normally again. Dependents it brought down stay down until their own `up`.
//! - `once`: as `up`, but its process is not restarted when it ends.
//! - `restart`: the service alone is stopped (its stop signal, `stop_grace`, SIGKILL of its group)
//!   and started again; its dependents keep running. A service not running is brought up.
//! - `kill SIGNAL`: the signal goes to the service's process group; nothing else changes.
//!
//! Stops by request use the service's stop sequence with `shutdown_timeout` as their deadline.
//! During a shutdown every request is refused.

use tokio::time::Instant;

use super::{Orchestrator, State};
use crate::control::svc::Verb;
use crate::init::signal_name;
use crate::supervisor::unit::{Command, Ended, NodeState, Why};

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
                    let slot = &mut self.slots[j];
                    slot.want_down = true;
                    slot.restart_after = false;
                    if slot.state == State::Pending {
                        slot.state = State::Ended;
                        slot.unit = None;
                        self.board.set_ended(j, None);
                    }
                    self.board.set_down(j, true);
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
                if self.slots[i].state != State::Running {
                    self.bring_up(i);
                    return Ok(format!("{name:?} was not running: bringing it up"));
                }
                tracing::info!("svc restart {name:?}");
                self.slots[i].restart_after = true;
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
            let slot = &mut self.slots[j];
            if slot.database || slot.fresh.is_none() {
                continue;
            }
            let was_down = std::mem::replace(&mut slot.want_down, false);
            self.board.set_down(j, false);
            let oneshot = slot.fresh.as_ref().is_some_and(|f| f.oneshot);
            // A oneshot that did its job stays done unless it was brought down.
            if slot.state == State::Ended && (was_down || !oneshot || !slot.satisfied) {
                self.respawn(j);
            } else if slot.state == State::Running && slot.stop_sent && was_down {
                // Still stopping from a `down`: it starts again once it has stopped.
                slot.restart_after = true;
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
        let slot = &mut self.slots[i];
        let Some(fresh) = &slot.fresh else {
            return;
        };
        slot.unit = Some((fresh.make)());
        slot.state = State::Pending;
        slot.satisfied = false;
        slot.stop_sent = false;
        slot.command = None;
        self.board.set_state(i, NodeState::Pending);
    }

    /// Sends the stop order to every running node wanted down whose dependents are down, and to
    /// every node to restart.
    pub(super) fn stop_requested(&mut self) {
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        for i in (0..self.slots.len()).rev() {
            let slot = &self.slots[i];
            if slot.state != State::Running || slot.stop_sent {
                continue;
            }
            if !(slot.restart_after || (slot.want_down && !self.dependent_running(i))) {
                continue;
            }
            let slot = &mut self.slots[i];
            slot.stop_sent = true;
            if let Some(command) = &slot.command {
                let _ = command.send(Command::Stop {
                    deadline: deadline.into_std(),
                });
                self.board.set_state(i, NodeState::Stopping);
            }
        }
    }

    /// A node stopped by request has ended: it stays down, or starts again (restart), and the
    /// next stops by request may go. False when the end is not a requested one (the main service
    /// brought down ends litevisor as its exit does: the usual path handles it).
    pub(super) fn ended_by_request(&mut self, i: usize, ended: &Ended) -> bool {
        let slot = &mut self.slots[i];
        if !(slot.want_down || slot.restart_after) || (slot.main && slot.want_down) {
            return false;
        }
        slot.state = State::Ended;
        slot.command = None;
        self.board.set_ended(i, ended.status);
        if slot.removed {
            slot.want_down = false;
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
        if std::mem::replace(&mut slot.restart_after, false) && !slot.want_down {
            tracing::info!("service {:?} stopped for its restart ({how})", slot.name);
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
