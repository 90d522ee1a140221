//! A reloaded configuration applied to the running graph ([`super::super::reload`] prepared it):
//! - a service not in it any more stops (as `svc down` does) and disappears from the status;
//! - a new one is added to the graph and starts once its dependencies are satisfied;
//! - a changed one (anything in its definition but its list of dependents) stops and starts again
//!   with its new definition (as `svc restart` does; one down by request stays down, with the new
//!   definition for its next `up`);
//! - an unchanged one is not touched: same process, same restart count.
//!
//! - an added database gets its restore and replicate nodes; a removed one's replicate node gets its
//!   stop order (the final sync), then the database leaves the set (and the status).
//!
//! SIGHUP asks for the same reload as `litevisor reload`; its outcome is only logged.

use std::path::PathBuf;

use super::super::reload::{NewDatabase, Plan};
use super::super::status::ServiceEntry;
use super::life::{Life, Want};
use super::{Fresh, Node, Orchestrator, Slot};
use crate::control::svc::Message;

impl Orchestrator {
    pub(super) fn reload_on_sighup(&self) {
        let Some(trigger) = &self.reload_trigger else {
            return;
        };
        tracing::info!("SIGHUP received: reloading the configuration");
        let (reply, answer) = tokio::sync::oneshot::channel();
        if trigger.send(Message::Reload(reply)).is_ok() {
            tokio::spawn(async move {
                if let Ok(Ok(done)) = answer.await {
                    tracing::info!("reload: {done}");
                }
                // A refusal is logged where it is decided.
            });
        }
    }

    /// Applies a reload, `register` or `unregister`; answers on `reply` what changed (for
    /// `unregister`: once the final sync is over).
    pub(super) fn apply(
        &mut self,
        plan: Plan,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    ) {
        let wait = plan.wait_final_sync;
        let removed = plan.removed_databases.first().cloned();
        let answer = self.apply_plan(plan);
        if wait && answer.is_ok() {
            let node =
                removed.and_then(|p| self.leaving.iter().find(|(_, l)| *l == p).map(|(n, _)| *n));
            match node {
                Some(node) => self.waiting.push((node, reply)),
                // Nothing ran for it: there was nothing to sync.
                None => {
                    let _ = reply.send(Ok("0".to_owned()));
                }
            }
            return;
        }
        let _ = reply.send(answer);
    }

    fn apply_plan(&mut self, plan: Plan) -> Result<String, String> {
        if self.deadline.is_some() {
            return Err("litevisor is shutting down".to_owned());
        }
        let Plan {
            services: plan,
            added_databases,
            removed_databases,
            ..
        } = plan;
        let databases = self.apply_databases(added_databases, &removed_databases);
        let Some(plan) = plan else {
            self.start_what_can_start();
            self.stop_requested();
            return Ok(databases.trim_start_matches("; ").to_owned());
        };
        let live = |o: &Self, name: &str| {
            o.slots
                .iter()
                .position(|s| !s.database && s.fresh.is_some() && s.name == name)
        };
        let (mut added, mut changed, mut removed, mut unchanged) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        // Removed: in the graph, not in the plan.
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.database || slot.fresh.is_none() {
                continue;
            }
            if plan.iter().any(|n| n.name == slot.name) {
                continue;
            }
            removed.push(slot.name.clone());
            let slot = &mut self.slots[i];
            slot.main = false;
            slot.fresh = None;
            self.set_want(i, Want::Gone);
            self.abandon_if_pending(i);
        }
        let mut wiring = Vec::new();
        let mut restart = Vec::new();
        for new in plan {
            let fresh = Fresh {
                oneshot: new.oneshot,
                key: new.key.clone(),
                make: new.make,
            };
            let i = match live(self, &new.name) {
                Some(i)
                    if self.slots[i]
                        .fresh
                        .as_ref()
                        .is_some_and(|f| f.key == new.key) =>
                {
                    unchanged += 1;
                    i
                }
                Some(i) => {
                    changed.push(new.name.clone());
                    restart.push(i);
                    let slot = &mut self.slots[i];
                    slot.main = new.main;
                    slot.lingers = new.lingers;
                    slot.fresh = Some(fresh);
                    i
                }
                None => {
                    added.push(new.name.clone());
                    // Pending: it starts once its dependencies (wired below) are satisfied.
                    let unit = (fresh.make)();
                    self.push_slot(Node {
                        name: new.name.clone(),
                        deps: Vec::new(),
                        main: new.main,
                        database: false,
                        final_sync: false,
                        unit,
                        lingers: new.lingers,
                        revive: None,
                        fresh: Some(fresh),
                    })
                }
            };
            wiring.push((i, new.depends_on, new.databases));
        }
        // The dependencies, by the new names (every new service has its slot now).
        for (i, depends_on, paths) in wiring {
            let deps: Vec<usize> = depends_on
                .iter()
                .filter_map(|d| live(self, d))
                .chain(paths.iter().filter_map(|p| {
                    self.database_nodes
                        .iter()
                        .find(|(d, _)| d == p)
                        .map(|(_, n)| *n)
                }))
                .collect();
            self.slots[i].deps = deps;
        }
        for slot in &mut self.slots {
            slot.dependents.clear();
        }
        for i in 0..self.slots.len() {
            for d in self.slots[i].deps.clone() {
                self.slots[d].dependents.push(i);
            }
        }
        for i in restart {
            let slot = &self.slots[i];
            // One down by request stays down, with its new definition for its next `up`.
            let down = slot.want == Want::Down;
            match slot.life {
                Life::Running { .. } if !down => self.set_want(i, Want::Restart),
                Life::Running { .. } => {}
                Life::Pending => {
                    // Not started yet: it starts with its new definition.
                    self.abandon_if_pending(i);
                    self.respawn(i);
                }
                Life::Ended { .. } if !down => self.respawn(i),
                Life::Ended { .. } => {}
            }
        }
        self.publish_entries();
        self.stop_requested();
        self.start_what_can_start();
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let done = format!(
            "added: {}; removed: {}; changed (restarting): {}; unchanged: {unchanged}{databases}",
            list(&added),
            list(&removed),
            list(&changed)
        );
        tracing::info!("configuration reloaded: {done}");
        Ok(done)
    }

    /// Adds the nodes of the added databases (they restore if needed, then replicate) and takes the
    /// removed ones down (their final sync runs); says what was done, if anything.
    fn apply_databases(&mut self, added: Vec<NewDatabase>, removed: &[PathBuf]) -> String {
        let mut out = String::new();
        for path in removed {
            let Some(at) = self.database_nodes.iter().position(|(p, _)| p == path) else {
                continue;
            };
            let (_, replicate) = self.database_nodes.remove(at);
            // Its restore node is its one dependency.
            let nodes: Vec<usize> = std::iter::once(replicate)
                .chain(self.slots[replicate].deps.iter().copied())
                .collect();
            for i in nodes {
                self.set_want(i, Want::Gone);
                self.abandon_if_pending(i);
            }
            if self.slots[replicate].life.ended() {
                self.databases.forget(path);
            } else {
                self.leaving.push((replicate, path.clone()));
            }
            out.push_str(&format!(
                "; database removed (final sync): {}",
                path.display()
            ));
        }
        for db in added {
            let restore = self.push_slot(Node {
                name: format!("restore:{}", db.name),
                deps: Vec::new(),
                main: false,
                database: true,
                final_sync: false,
                unit: db.restore,
                lingers: false,
                revive: None,
                fresh: None,
            });
            let replicate = self.push_slot(Node {
                name: format!("replicate:{}", db.name),
                deps: vec![restore],
                main: false,
                database: true,
                final_sync: true,
                unit: db.replicate,
                lingers: false,
                revive: Some(db.revive),
                fresh: None,
            });
            self.slots[restore].dependents.push(replicate);
            self.database_nodes.push((db.path.clone(), replicate));
            out.push_str(&format!("; database added: {}", db.path.display()));
        }
        out
    }

    /// Adds a node to the graph (and the status board); returns its index.
    fn push_slot(&mut self, node: Node) -> usize {
        self.board.push();
        self.slots.push(Slot::new(node));
        self.slots.len() - 1
    }

    /// The services `litevisor status` shows, after a reload.
    fn publish_entries(&self) {
        let entries: Vec<ServiceEntry> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.database && s.fresh.is_some())
            .map(|(index, s)| ServiceEntry {
                index,
                name: s.name.clone(),
                kind: if s.fresh.as_ref().is_some_and(|f| f.oneshot) {
                    "oneshot"
                } else {
                    "longrun"
                },
                main: s.main,
            })
            .collect();
        *self.entries.lock().unwrap_or_else(|p| p.into_inner()) = entries;
    }
}
