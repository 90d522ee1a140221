//! One node's life cycle, as s6-supervise keeps it: where the node is ([`Life`]), what it is wanted
//! to do ([`Want`]), and the one function that moves it ([`Orchestrator::step`]), whose table lists
//! every legal transition. The orchestrator decides *when* to take a step; this file says *what*
//! a step means, and mirrors each one on the status board, so `litevisor status` shows exactly the
//! state the orchestrator acts on. (Within `Running`, a service's own restart loop publishes its
//! `restarting` pauses: the orchestrator's view does not change while its unit restarts a process.)
//!
//! ```text
//!             Start                 Ready             Stop
//!   Pending ─────────▶ Running ─────────▶ ready ─────────▶ stopping
//!      ▲  │                  └──────── End ─────────┴────────┘
//!      │  │ Abandon                     │
//!      │  └──────────────▶ Ended ◀──────┘
//!      └──── Respawn ────────┘
//! ```

use super::Orchestrator;
use crate::init::ExitStatus;
use crate::supervisor::unit::NodeState;

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// Holds a unit that waits for its dependencies.
    Pending,
    /// Its unit runs. `ready`: its dependents may start. `stopping`: its stop order was sent.
    Running { ready: bool, stopping: bool },
    /// No unit runs: it ended, or never started. `satisfied`: it had been ready (a oneshot that
    /// succeeded), so dependents still waiting for it may start.
    Ended { satisfied: bool },
}

/// A transition of [`Life`].
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// Pending → Running: its unit starts; `stopping` when its first order is already the stop
    /// (a replicator started during the shutdown).
    Start { stopping: bool },
    /// Running → ready: dependents may start.
    Ready,
    /// Running → stopping: the stop (or kill) order was sent. Repeating it is harmless.
    Stop,
    /// Running → Ended: its unit returned.
    End(Option<ExitStatus>),
    /// Pending → Ended: it will never start (a shutdown, `svc down`, a reload removed it, or a
    /// dependency ended without being ready).
    Abandon,
    /// Ended → Pending: it holds a fresh unit (`svc up`, a restart, a reload).
    Respawn,
}

/// What a node is wanted to do: its supervision target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// Run (and be restarted by its own policy).
    Up,
    /// `svc down` (its own or a dependency's): stopped, not started by anything until `svc up`.
    Down,
    /// Stopped, then started again (`svc restart`, a definition changed by a reload).
    Restart,
    /// Gone from the configuration (a reload, `unregister`): stopped, never started again, not
    /// shown. Final.
    Gone,
}

impl Life {
    /// The state after `step`, or `None` when `step` is not legal from here.
    pub(super) fn after(self, step: Step) -> Option<Life> {
        use Life::{Ended, Pending, Running};
        Some(match (self, step) {
            (Pending, Step::Start { stopping }) => Running {
                ready: false,
                stopping,
            },
            (Running { stopping, .. }, Step::Ready) => Running {
                ready: true,
                stopping,
            },
            (Running { ready, .. }, Step::Stop) => Running {
                ready,
                stopping: true,
            },
            (Running { ready, .. }, Step::End(_)) => Ended { satisfied: ready },
            (Pending, Step::Abandon) => Ended { satisfied: false },
            (Ended { .. }, Step::Respawn) => Pending,
            _ => return None,
        })
    }

    pub(super) fn pending(self) -> bool {
        self == Life::Pending
    }

    pub(super) fn running(self) -> bool {
        matches!(self, Life::Running { .. })
    }

    pub(super) fn stopping(self) -> bool {
        matches!(self, Life::Running { stopping: true, .. })
    }

    pub(super) fn ended(self) -> bool {
        matches!(self, Life::Ended { .. })
    }

    /// Dependents may start: it is ready, or it ended after being ready.
    pub(super) fn satisfied(self) -> bool {
        matches!(
            self,
            Life::Running { ready: true, .. } | Life::Ended { satisfied: true }
        )
    }

    /// As `litevisor status` shows it.
    fn shown(self) -> NodeState {
        match self {
            Life::Pending => NodeState::Pending,
            Life::Running { stopping: true, .. } => NodeState::Stopping,
            Life::Running { ready: true, .. } => NodeState::Running,
            Life::Running { ready: false, .. } => NodeState::Starting,
            Life::Ended { .. } => NodeState::Ended,
        }
    }
}

impl Orchestrator {
    /// Moves node `i` by `step` and publishes its new state; returns whether the step was legal
    /// (an illegal one is a litevisor bug: it is logged and the node stays where it is).
    pub(super) fn step(&mut self, i: usize, step: Step) -> bool {
        let slot = &mut self.slots[i];
        let Some(next) = slot.life.after(step) else {
            tracing::error!(
                "{}: no transition {step:?} from {:?} (a litevisor bug, please report it)",
                slot.name,
                slot.life
            );
            debug_assert!(
                false,
                "illegal life-cycle step {step:?} from {:?}",
                slot.life
            );
            return false;
        };
        let before = std::mem::replace(&mut slot.life, next);
        match step {
            Step::End(status) => {
                slot.command = None;
                self.board.set_ended(i, status);
            }
            Step::Abandon => {
                slot.unit = None;
                self.board.set_ended(i, None);
            }
            Step::Start { .. } | Step::Ready | Step::Stop | Step::Respawn => {}
        }
        if next != before && !next.ended() {
            self.board.set_state(i, next.shown());
        }
        true
    }

    /// Abandons node `i` if it is still waiting to start.
    pub(super) fn abandon_if_pending(&mut self, i: usize) {
        if self.slots[i].life.pending() {
            self.step(i, Step::Abandon);
        }
    }

    /// Sets what node `i` is wanted to do (a node gone from the configuration stays gone), and
    /// shows a `down` by request on the status board.
    pub(super) fn set_want(&mut self, i: usize, want: Want) {
        let slot = &mut self.slots[i];
        if slot.want == Want::Gone {
            return;
        }
        slot.want = want;
        self.board.set_down(i, want == Want::Down);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [Life; 7] = [
        Life::Pending,
        Life::Running {
            ready: false,
            stopping: false,
        },
        Life::Running {
            ready: true,
            stopping: false,
        },
        Life::Running {
            ready: false,
            stopping: true,
        },
        Life::Running {
            ready: true,
            stopping: true,
        },
        Life::Ended { satisfied: false },
        Life::Ended { satisfied: true },
    ];

    fn steps() -> [Step; 7] {
        [
            Step::Start { stopping: false },
            Step::Start { stopping: true },
            Step::Ready,
            Step::Stop,
            Step::End(None),
            Step::Abandon,
            Step::Respawn,
        ]
    }

    #[test]
    fn a_unit_runs_only_between_start_and_end() {
        for from in ALL_STATES {
            for step in steps() {
                let Some(to) = from.after(step) else { continue };
                let starts = matches!(step, Step::Start { .. });
                let ends = matches!(step, Step::End(_));
                assert_eq!(
                    to.running(),
                    (from.running() && !ends) || starts,
                    "{from:?} --{step:?}--> {to:?}"
                );
            }
        }
    }

    #[test]
    fn only_a_ready_node_satisfies_its_dependents_and_ending_keeps_that() {
        let ready = Life::Pending
            .after(Step::Start { stopping: false })
            .and_then(|l| l.after(Step::Ready))
            .unwrap();
        assert!(ready.satisfied());
        assert!(ready.after(Step::End(None)).unwrap().satisfied());
        let unready = Life::Pending
            .after(Step::Start { stopping: false })
            .unwrap();
        assert!(!unready.satisfied());
        assert!(!unready.after(Step::End(None)).unwrap().satisfied());
        assert!(!Life::Pending.after(Step::Abandon).unwrap().satisfied());
        // A respawned node must be ready again before its dependents may start.
        let respawned = Life::Ended { satisfied: true }
            .after(Step::Respawn)
            .unwrap();
        assert!(!respawned.satisfied());
    }

    #[test]
    fn illegal_steps_are_refused() {
        let running = Life::Running {
            ready: true,
            stopping: false,
        };
        assert_eq!(running.after(Step::Start { stopping: false }), None);
        assert_eq!(running.after(Step::Abandon), None);
        assert_eq!(running.after(Step::Respawn), None);
        assert_eq!(Life::Pending.after(Step::End(None)), None);
        assert_eq!(Life::Pending.after(Step::Ready), None);
        assert_eq!(Life::Pending.after(Step::Stop), None);
        let ended = Life::Ended { satisfied: false };
        assert_eq!(ended.after(Step::Ready), None);
        assert_eq!(ended.after(Step::End(None)), None);
        assert_eq!(ended.after(Step::Start { stopping: false }), None);
    }

    #[test]
    fn the_status_shows_each_state() {
        let shown: Vec<&str> = ALL_STATES.iter().map(|l| l.shown().as_str()).collect();
        assert_eq!(
            shown,
            [
                "pending", "starting", "running", "stopping", "stopping", "ended", "ended"
            ]
        );
    }
}
