//! The workspace state machine. Pure: the current record and one event in,
//! the next record and the commands to send out. The caller persists the
//! record, then sends the commands (each carrying the record's generation,
//! which agents use to refuse stale ones).
//!
//! ```text
//! pending ─placed─► scheduled ─accepted─► starting ─observed running─► running
//!                                                                        │ stop
//! deleted ◄─observed absent─ deleting ◄─delete─ stopped ◄─observed stopped─ stopping
//! any placed state ─node lost─► unknown ─node back, observed X─► X (then toward desired)
//! pending/scheduled/starting ─timeout or agent failure─► failed
//! stopped/unknown/failed ─move─► pending (another node, filled from a backup)
//! ```
//!
//! A workspace in `unknown` is never started again elsewhere on its own: its
//! node may still run it. It leaves `unknown` on what its node reports, or
//! by a move, which the caller makes only when a backup holds all of it
//! (`domain::backup::may_move`).

pub use berth_proto::api::{Desired, State};

/// What an agent says a workspace is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Running,
    /// Created or stopped: it exists and does not run.
    Stopped,
    /// The node has no such workspace.
    Absent,
    Failed(String),
}

/// Something that happened to a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The scheduler chose a node.
    Placed(String),
    /// No node fits now.
    Unplaceable(String),
    /// The agent acknowledged the create command.
    Accepted,
    /// An agent report (also the inventory of a node that came back).
    Observed(Observed),
    StartRequested,
    StopRequested,
    /// The idle policy stops a running workspace: why, shown as its reason
    /// until it starts again.
    IdleStop(String),
    /// Start it on another node from its backup (its node is gone, drained
    /// or it failed there): why, shown until it is placed.
    Move(String),
    DeleteRequested,
    /// The node missed its heartbeats for longer than the grace period.
    NodeLost,
    /// A transient state lasted longer than its deadline.
    Timeout,
    /// The node refused a command for a reason that may pass (a registry
    /// down): the command is sent again; the reason is shown meanwhile.
    Retrying(String),
}

/// A command for the workspace's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Create,
    Start,
    Stop,
    Delete,
}

/// What the caller must do after persisting the new record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the scheduler for a node.
    Schedule,
    /// Send a command to `node` with `generation`.
    Send {
        command: Command,
        node: String,
        generation: u64,
    },
}

/// The lifecycle part of a workspace's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub state: State,
    pub desired: Desired,
    pub node: Option<String>,
    /// Bumped on every change of intent; commands carry it.
    pub generation: u64,
    /// Why the workspace is pending or failed.
    pub reason: Option<String>,
}

/// An event that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} is not possible while the workspace is {state:?}")]
pub struct Invalid {
    pub state: State,
    pub event: Event,
}

impl Workspace {
    /// A freshly requested workspace (the create is acknowledged once this is stored).
    pub fn new(start: bool) -> Self {
        Self {
            state: State::Pending,
            desired: if start {
                Desired::Running
            } else {
                Desired::Stopped
            },
            node: None,
            generation: 1,
            reason: None,
        }
    }

    /// Sets the desired state; a change of intent is a new generation.
    fn want(&mut self, desired: Desired) {
        if self.desired != desired {
            self.desired = desired;
            self.generation += 1;
        }
    }

    /// Whether nothing more will happen without a new request.
    pub fn settled(&self) -> bool {
        matches!(
            (self.state, self.desired),
            (State::Running, Desired::Running)
                | (State::Stopped, Desired::Stopped)
                | (State::Deleted, _)
                | (State::Failed, _)
        )
    }
}

/// The command a workspace in its current state waits on, if any: the
/// dispatcher (re)sends it until the node's answer moves the state on, so a
/// command lost to a crash or a cut link is simply sent again. Agents apply
/// commands idempotently and refuse stale generations.
pub fn pending_command(ws: &Workspace) -> Option<Command> {
    ws.node.as_ref()?;
    match ws.state {
        State::Scheduled => Some(Command::Create),
        State::Starting => Some(Command::Start),
        State::Stopping => Some(Command::Stop),
        State::Deleting => Some(Command::Delete),
        _ => None,
    }
}

fn send(ws: &Workspace, command: Command) -> Vec<Action> {
    match &ws.node {
        Some(node) => vec![Action::Send {
            command,
            node: node.clone(),
            generation: ws.generation,
        }],
        None => Vec::new(),
    }
}

/// Applies `event` to `ws`.
pub fn step(ws: &Workspace, event: &Event) -> Result<(Workspace, Vec<Action>), Invalid> {
    use State as S;
    let mut next = ws.clone();
    let invalid = || Invalid {
        state: ws.state,
        event: event.clone(),
    };
    let to = |mut w: Workspace, state: State| {
        w.state = state;
        w
    };
    let out = match (ws.state, event) {
        // Deleted is final: every request on it is answered by its state.
        (S::Deleted, Event::DeleteRequested) => (next, vec![]),
        (S::Deleted, _) => return Err(invalid()),

        // ---- user intent ----
        (_, Event::DeleteRequested) => {
            next.desired = Desired::Deleted;
            next.generation += 1;
            match ws.state {
                // Never placed: nothing to undo.
                S::Pending => (to(next, S::Deleted), vec![]),
                // The node's answer is awaited first; the delete goes when it is back.
                S::Unknown => (next, vec![]),
                S::Failed if ws.node.is_none() => (to(next, S::Deleted), vec![]),
                _ => {
                    let a = send(&next, Command::Delete);
                    (to(next, S::Deleting), a)
                }
            }
        }
        (S::Deleting, Event::StartRequested | Event::StopRequested) => return Err(invalid()),
        (_, Event::StartRequested) => {
            next.want(Desired::Running);
            match ws.state {
                S::Stopped | S::Stopping => {
                    next.reason = None;
                    let a = send(&next, Command::Start);
                    (to(next, S::Starting), a)
                }
                S::Failed => {
                    // Start again from scratch, on whichever node fits.
                    next.reason = None;
                    next.node = None;
                    (to(next, S::Pending), vec![Action::Schedule])
                }
                _ => (next, vec![]),
            }
        }
        (_, Event::StopRequested) => {
            next.want(Desired::Stopped);
            match ws.state {
                S::Running | S::Starting => {
                    let a = send(&next, Command::Stop);
                    (to(next, S::Stopping), a)
                }
                // Not started yet: it is created stopped.
                _ => (next, vec![]),
            }
        }

        (S::Running, Event::IdleStop(why)) if ws.desired == Desired::Running => {
            next.want(Desired::Stopped);
            next.reason = Some(why.clone());
            let a = send(&next, Command::Stop);
            (to(next, S::Stopping), a)
        }
        (_, Event::IdleStop(_)) => return Err(invalid()),

        // Whether a backup holds what it needs is the caller's decision
        // (domain::backup::may_move); here, only states it can leave.
        (S::Stopped | S::Unknown | S::Failed, Event::Move(why))
            if ws.desired != Desired::Deleted =>
        {
            next.want(Desired::Running);
            // A new home is a new fencing epoch: the old node's copy is stale.
            next.generation += 1;
            next.node = None;
            next.reason = Some(why.clone());
            (to(next, S::Pending), vec![Action::Schedule])
        }
        (_, Event::Move(_)) => return Err(invalid()),

        // ---- scheduling ----
        (S::Pending, Event::Placed(node)) => {
            // A new placement is a new fencing epoch.
            next.generation += 1;
            next.node = Some(node.clone());
            next.reason = None;
            let a = send(&next, Command::Create);
            (to(next, S::Scheduled), a)
        }
        (S::Pending, Event::Unplaceable(why)) => {
            next.reason = Some(why.clone());
            (next, vec![])
        }
        (S::Scheduled | S::Starting, Event::Retrying(why)) => {
            next.reason = Some(why.clone());
            (next, vec![])
        }
        (S::Scheduled, Event::Accepted) => {
            // Created stopped: it stays scheduled until the node reports it.
            let state = if ws.desired == Desired::Running {
                S::Starting
            } else {
                S::Scheduled
            };
            (to(next, state), vec![])
        }

        // ---- what the node says ----
        (S::Unknown, Event::Observed(o)) => back_from_unknown(next, o),
        (_, Event::Observed(Observed::Failed(why))) => {
            next.reason = Some(why.clone());
            (to(next, S::Failed), vec![])
        }
        (
            S::Scheduled | S::Starting | S::Running | S::Stopping | S::Stopped,
            Event::Observed(o),
        ) => converge(next, o),
        (S::Deleting, Event::Observed(Observed::Absent)) => (to(next, S::Deleted), vec![]),
        (S::Deleting, Event::Observed(_)) => (next, vec![]),
        (S::Pending | S::Failed, Event::Observed(_)) => (next, vec![]),

        // ---- faults ----
        (S::Pending | S::Failed, Event::NodeLost) => (next, vec![]),
        (_, Event::NodeLost) => (to(next, S::Unknown), vec![]),
        (S::Pending | S::Scheduled | S::Starting, Event::Timeout) => {
            next.reason = Some(format!("timed out while {:?}", ws.state).to_lowercase());
            (to(next, S::Failed), vec![])
        }
        (S::Stopping, Event::Timeout) => {
            let a = send(&next, Command::Stop);
            (next, a)
        }
        (S::Deleting, Event::Timeout) => {
            let a = send(&next, Command::Delete);
            (next, a)
        }
        _ => return Err(invalid()),
    };
    Ok(out)
}

/// A node's report on a placed workspace: adopt it as the state, then steer
/// toward what is desired.
fn converge(mut w: Workspace, o: &Observed) -> (Workspace, Vec<Action>) {
    match (o, w.desired) {
        (Observed::Running, Desired::Running) => {
            w.state = State::Running;
            (w, vec![])
        }
        (Observed::Stopped, Desired::Stopped) => {
            w.state = State::Stopped;
            (w, vec![])
        }
        (Observed::Running, Desired::Stopped) => {
            w.state = State::Stopping;
            let a = send(&w, Command::Stop);
            (w, a)
        }
        (Observed::Stopped, Desired::Running)
            if matches!(w.state, State::Scheduled | State::Starting) =>
        {
            // Created but not started yet (e.g. the node was seen mid-create
            // after a reconnect): start it, it never ran.
            w.state = State::Starting;
            let a = send(&w, Command::Start);
            (w, a)
        }
        (Observed::Stopped, Desired::Running) => {
            // A stop that happened on the node (crash, OOM): report it; a new start is the user's call.
            w.state = State::Stopped;
            w.desired = Desired::Stopped;
            (w, vec![])
        }
        (Observed::Absent, Desired::Deleted) => {
            w.state = State::Deleted;
            (w, vec![])
        }
        (Observed::Absent, _) => {
            // The node lost it (never created, or its disk is gone): fail, never guess.
            w.state = State::Failed;
            w.reason = Some("the node does not have this workspace".into());
            (w, vec![])
        }
        (_, Desired::Deleted) => {
            w.state = State::Deleting;
            let a = send(&w, Command::Delete);
            (w, a)
        }
        (Observed::Failed(why), _) => {
            w.state = State::Failed;
            w.reason = Some(why.clone());
            (w, vec![])
        }
    }
}

fn back_from_unknown(w: Workspace, o: &Observed) -> (Workspace, Vec<Action>) {
    match (o, w.desired) {
        (Observed::Stopped, Desired::Running) => {
            // It was meant to run and the node has it stopped: start it there.
            let mut w = w;
            w.state = State::Starting;
            let a = send(&w, Command::Start);
            (w, a)
        }
        _ => converge(w, o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;

    fn run(events: &[Event]) -> (Workspace, Vec<Action>) {
        let mut ws = Workspace::new(true);
        let mut actions = Vec::new();
        for e in events {
            let (next, mut a) = step(&ws, e).unwrap_or_else(|err| panic!("{err}"));
            ws = next;
            actions.append(&mut a);
        }
        (ws, actions)
    }

    fn placed() -> Vec<Event> {
        vec![
            E::Placed("n1".into()),
            E::Accepted,
            E::Observed(Observed::Running),
        ]
    }

    #[test]
    fn seen_created_before_started_is_started_not_given_up() {
        let ws = Workspace::new(true);
        let (ws, _) = step(&ws, &E::Placed("n".into())).unwrap();
        let (ws, a) = step(&ws, &E::Observed(Observed::Stopped)).unwrap();
        assert_eq!((ws.state, ws.desired), (State::Starting, Desired::Running));
        assert_eq!(
            a,
            vec![Action::Send {
                command: Command::Start,
                node: "n".into(),
                generation: ws.generation
            }]
        );
    }

    #[test]
    fn happy_path_create_stop_start_delete() {
        let (ws, a) = run(&placed());
        assert_eq!(
            (ws.state, ws.node.as_deref(), ws.generation),
            (State::Running, Some("n1"), 2)
        );
        // The placement is a new fencing epoch: the create carries generation 2.
        assert_eq!(
            a,
            vec![Action::Send {
                command: Command::Create,
                node: "n1".into(),
                generation: 2
            }]
        );
        assert!(ws.settled());
        let mut evs = placed();
        evs.extend([
            E::StopRequested,
            E::Observed(Observed::Stopped),
            E::StartRequested,
            E::Observed(Observed::Running),
        ]);
        evs.extend([E::DeleteRequested, E::Observed(Observed::Absent)]);
        let (ws, a) = run(&evs);
        assert_eq!(ws.state, State::Deleted);
        let sent: Vec<(Command, u64)> = a
            .iter()
            .map(|x| match x {
                Action::Send {
                    command,
                    generation,
                    ..
                } => (*command, *generation),
                Action::Schedule => panic!("no reschedule"),
            })
            .collect();
        assert_eq!(
            sent,
            [
                (Command::Create, 2),
                (Command::Stop, 3),
                (Command::Start, 4),
                (Command::Delete, 5)
            ]
        );
    }

    #[test]
    fn transitions_table() {
        let cases: Vec<(Vec<Event>, State)> = vec![
            (vec![E::Unplaceable("full".into())], State::Pending),
            (vec![E::Timeout], State::Failed),
            (vec![E::DeleteRequested], State::Deleted),
            (
                vec![
                    E::StopRequested,
                    E::Placed("n".into()),
                    E::Accepted,
                    E::Observed(Observed::Stopped),
                ],
                State::Stopped,
            ),
            (
                vec![
                    E::Placed("n".into()),
                    E::Accepted,
                    E::Observed(Observed::Failed("oom".into())),
                ],
                State::Failed,
            ),
            (
                vec![E::Placed("n".into()), E::Accepted, E::Timeout],
                State::Failed,
            ),
            (vec![E::Placed("n".into()), E::NodeLost], State::Unknown),
            (
                vec![
                    E::Placed("n".into()),
                    E::Accepted,
                    E::Observed(Observed::Running),
                    E::Observed(Observed::Stopped),
                ],
                State::Stopped,
            ),
            (
                vec![
                    E::Placed("n".into()),
                    E::Accepted,
                    E::Observed(Observed::Absent),
                ],
                State::Failed,
            ),
        ];
        for (events, want) in cases {
            assert_eq!(run(&events).0.state, want, "{events:?}");
        }
    }

    #[test]
    fn a_lost_node_never_gets_its_workspace_started_elsewhere() {
        let mut evs = placed();
        evs.push(E::NodeLost);
        let (ws, a) = run(&evs);
        assert_eq!(ws.state, State::Unknown);
        assert_eq!(a.len(), 1, "nothing sent beyond the original create");
        // Requests while unknown change intent but send nothing and schedule nothing.
        for e in [
            E::StartRequested,
            E::StopRequested,
            E::StartRequested,
            E::Timeout,
        ] {
            let r = step(&ws, &e);
            if let Ok((w, a)) = r {
                assert!(
                    a.iter().all(|x| !matches!(x, Action::Schedule)),
                    "{e:?} rescheduled"
                );
                assert!(
                    matches!(w.state, State::Unknown),
                    "{e:?} left unknown without the node"
                );
            }
        }
        // The node comes back with it still running: one copy, adopted.
        let (back, a) = step(&ws, &E::Observed(Observed::Running)).unwrap();
        assert_eq!(
            (back.state, back.node.as_deref()),
            (State::Running, Some("n1"))
        );
        assert!(a.is_empty());
    }

    #[test]
    fn intent_changed_while_unknown_is_applied_when_the_node_returns() {
        let mut evs = placed();
        evs.extend([E::NodeLost, E::StopRequested]);
        let (ws, _) = run(&evs);
        let (w, a) = step(&ws, &E::Observed(Observed::Running)).unwrap();
        assert_eq!(w.state, State::Stopping);
        assert_eq!(
            a,
            vec![Action::Send {
                command: Command::Stop,
                node: "n1".into(),
                generation: ws.generation
            }]
        );
        let mut evs = placed();
        evs.extend([E::NodeLost, E::DeleteRequested]);
        let (ws, a) = run(&evs);
        assert_eq!(
            (ws.state, a.len()),
            (State::Unknown, 1),
            "the delete waits for the node"
        );
        let (w, a) = step(&ws, &E::Observed(Observed::Stopped)).unwrap();
        assert_eq!(w.state, State::Deleting);
        assert!(matches!(
            a[0],
            Action::Send {
                command: Command::Delete,
                ..
            }
        ));
        let (w, _) = step(&ws, &E::Observed(Observed::Absent)).unwrap();
        assert_eq!(w.state, State::Deleted);
    }

    #[test]
    fn an_idle_stop_stops_only_a_workspace_meant_to_run_and_says_why_until_started() {
        let (ws, _) = run(&placed());
        let (stopping, a) = step(&ws, &E::IdleStop("idle for 30 min".into())).unwrap();
        assert_eq!(
            (stopping.state, stopping.desired),
            (State::Stopping, Desired::Stopped)
        );
        assert_eq!(stopping.reason.as_deref(), Some("idle for 30 min"));
        assert!(matches!(
            a[..],
            [Action::Send {
                command: Command::Stop,
                ..
            }]
        ));
        let (stopped, _) = step(&stopping, &E::Observed(Observed::Stopped)).unwrap();
        assert_eq!(stopped.state, State::Stopped);
        assert_eq!(stopped.reason.as_deref(), Some("idle for 30 min"));
        let (woken, _) = step(&stopped, &E::StartRequested).unwrap();
        assert_eq!(woken.reason, None);
        // A user's stop in between wins; an idle stop never starts anything.
        for w in [&stopping, &stopped, &Workspace::new(true)] {
            assert!(step(w, &E::IdleStop("late".into())).is_err(), "{w:?}");
        }
    }

    #[test]
    fn generation_only_grows_and_deleted_is_final() {
        let evs = [
            E::Placed("n".into()),
            E::Accepted,
            E::Observed(Observed::Running),
            E::StopRequested,
            E::StopRequested,
            E::Observed(Observed::Stopped),
            E::StartRequested,
            E::NodeLost,
            E::Observed(Observed::Stopped),
            E::DeleteRequested,
            E::Timeout,
            E::Observed(Observed::Absent),
        ];
        let mut ws = Workspace::new(true);
        for e in &evs {
            let (next, _) = step(&ws, e).unwrap();
            assert!(next.generation >= ws.generation, "{e:?}");
            ws = next;
        }
        assert_eq!(ws.state, State::Deleted);
        assert!(
            step(&ws, &E::DeleteRequested).is_ok(),
            "deleting twice is fine"
        );
        for e in [
            E::StartRequested,
            E::StopRequested,
            E::Placed("n".into()),
            E::Observed(Observed::Running),
        ] {
            assert_eq!(step(&ws, &e).unwrap_err().state, State::Deleted);
        }
    }

    #[test]
    fn every_request_reaches_a_settled_state_on_the_agent_s_answers() {
        // Drive each request with the answer an agent gives for it, from every settled state.
        let answer = |c: Command| match c {
            Command::Create | Command::Start => vec![E::Accepted, E::Observed(Observed::Running)],
            Command::Stop => vec![E::Observed(Observed::Stopped)],
            Command::Delete => vec![E::Observed(Observed::Absent)],
        };
        for req in [E::StartRequested, E::StopRequested, E::DeleteRequested] {
            for setup in [vec![], vec![E::StopRequested]] {
                let mut ws = Workspace::new(true);
                let mut queue: Vec<Event> = setup.clone();
                queue.extend([
                    E::Placed("n".into()),
                    E::Accepted,
                    E::Observed(Observed::Running),
                ]);
                queue.push(req.clone());
                let mut steps = 0;
                while let Some(e) = queue.first().cloned() {
                    queue.remove(0);
                    let Ok((next, actions)) = step(&ws, &e) else {
                        continue;
                    };
                    ws = next;
                    for a in actions {
                        match a {
                            Action::Send { command, .. } => queue.extend(answer(command)),
                            Action::Schedule => queue.push(E::Placed("n".into())),
                        }
                    }
                    steps += 1;
                    assert!(steps < 50, "no convergence for {req:?}");
                }
                assert!(ws.settled(), "{req:?} after {setup:?} ended {ws:?}");
            }
        }
    }
}
