//! What a repository workspace's record keeps of its init: the repository,
//! the configuration applied, and each step's state, reported in its
//! status. Pure.

use super::command::Command;
use berth_proto::agent as pb;
use serde::{Deserialize, Serialize};

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Skipped => "skipped",
        }
    }
}

/// One step: the clone, the configuration, a lifecycle command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub name: String,
    pub phase: Phase,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub tail: String,
    #[serde(default)]
    pub code: String,
}

impl StepState {
    pub fn pending(name: &str) -> Self {
        Self {
            name: name.into(),
            phase: Phase::Pending,
            command: String::new(),
            exit_code: 0,
            duration_ms: 0,
            tail: String::new(),
            code: String::new(),
        }
    }

    /// Ends the step after `duration_ms`: done, or failed with the error's
    /// stable code and message.
    pub fn end(&mut self, duration_ms: u64, failure: Option<(&str, String)>) {
        self.duration_ms = duration_ms;
        match failure {
            None => self.phase = Phase::Done,
            Some((code, tail)) => {
                self.phase = Phase::Failed;
                self.code = code.into();
                self.tail = tail;
            }
        }
    }

    /// Ends a command's step after `duration_ms`: done, or failed with the
    /// command's (exit code, output, whether it timed out).
    pub fn end_command(&mut self, duration_ms: u64, failure: Option<(i32, &str, bool)>) {
        self.exit_code = failure.map_or(0, |f| f.0);
        self.end(
            duration_ms,
            failure.map(|(_, output, timed_out)| {
                let code = if timed_out { "timeout" } else { "exit_status" };
                (code, super::git::tail(output, 20))
            }),
        );
    }
}

/// A repository workspace's init, as its record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InitState {
    pub repo_url: String,
    pub branch: String,
    pub commit: String,
    pub folder: String,
    pub source: String,
    pub steps: Vec<StepState>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub ports: Vec<(u16, String)>,
    /// Run again on every start.
    #[serde(default)]
    pub post_start: Option<Command>,
    /// The hash of the configuration applied (`prebuild::config_hash`).
    #[serde(default)]
    pub config_hash: String,
    /// The prebuild it was asked to start from, and what came of it.
    #[serde(default)]
    pub prebuild: Option<super::prebuild::Used>,
}

impl InitState {
    /// The step named `name`, added (pending) if it is not there yet.
    pub fn step(&mut self, name: &str) -> &mut StepState {
        let i = match self.steps.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.steps.push(StepState::pending(name));
                self.steps.len() - 1
            }
        };
        &mut self.steps[i]
    }

    /// Whether no step is pending or running any more.
    pub fn settled(&self) -> bool {
        self.steps
            .iter()
            .all(|s| !matches!(s.phase, Phase::Pending | Phase::Running))
    }

    /// Steps left running by an agent that stopped: failed, with why.
    pub fn interrupted(&mut self) -> bool {
        let mut any = false;
        for s in &mut self.steps {
            if s.phase == Phase::Running {
                s.phase = Phase::Failed;
                s.code = "interrupted".into();
                s.tail = "the agent restarted while this step ran".into();
                any = true;
            }
        }
        any
    }

    /// The report a status carries.
    pub fn report(&self, image: &str) -> pb::InitReport {
        pb::InitReport {
            repo_url: self.repo_url.clone(),
            branch: self.branch.clone(),
            commit: self.commit.clone(),
            folder: self.folder.clone(),
            source: self.source.clone(),
            steps: self
                .steps
                .iter()
                .map(|s| pb::InitStep {
                    name: s.name.clone(),
                    state: s.phase.as_str().into(),
                    command: s.command.clone(),
                    exit_code: s.exit_code,
                    duration_ms: s.duration_ms,
                    tail: s.tail.clone(),
                    code: s.code.clone(),
                })
                .collect(),
            warnings: self.warnings.clone(),
            ports: self
                .ports
                .iter()
                .map(|(port, label)| pb::ForwardPort {
                    port: u32::from(*port),
                    label: label.clone(),
                })
                .collect(),
            image: image.into(),
            prebuild: self.prebuild.as_ref().map(|p| pb::PrebuildUse {
                key: p.key.clone(),
                commit: p.commit.clone(),
                built_at_ms: p.built_at_ms,
                outcome: p.outcome.clone(),
                note: p.note.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_settle_and_interruptions_fail() {
        let mut s = InitState::default();
        s.step("clone").phase = Phase::Done;
        s.step("postStartCommand").phase = Phase::Running;
        assert!(!s.settled());
        assert!(s.interrupted());
        assert!(s.settled());
        assert_eq!(s.steps[1].code, "interrupted");
        let r = s.report("img");
        assert_eq!(r.steps[1].state, "failed");
        assert_eq!(r.image, "img");
        assert_eq!(s.steps.len(), 2);
        s.step("clone");
        assert_eq!(s.steps.len(), 2, "an existing step is found, not added");
    }
}
