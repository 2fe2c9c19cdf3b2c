//! Pull-request workspaces (docs/prebuilds.md): a repository configured
//! with `pull_request_owner` gets a workspace per pull request, opened
//! when the pull request is, deleted when it is closed or merged. It
//! starts from the repository's newest prebuild (of the pull request's
//! branch if there is one, else of another branch, brought up to the
//! pull request's head).

use super::prebuilds::{bad_signature, ignored};
use super::Service;
use crate::domain::lifecycle::Event;
use crate::domain::pull_request::{self as pr, Action};
use crate::domain::webhook::{self, Source};
use crate::error::{Error, Result};
use berth_proto::api::{CreateWorkspace, Repo, WebhookResult};

impl Service {
    /// A pull-request event, checked against its repository's secret.
    pub(super) async fn pull_request_hook(
        &self,
        source: Source,
        signature: &str,
        body: &[u8],
    ) -> Result<WebhookResult> {
        let event = match pr::parse(source, body) {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Ok(ignored(
                    "a pull-request action its workspace does not follow".into(),
                ))
            }
            Err(e) => return Err(Error::invalid("invalid_webhook", e.to_string())),
        };
        let repo =
            webhook::repo_of(&self.inner.prebuilds, &event.urls).map_err(|_| bad_signature())?;
        if !webhook::verify(source, &repo.secret, body, signature) {
            return Err(bad_signature());
        }
        let Some(owner) = repo.pull_request_owner.as_deref() else {
            return Ok(ignored(
                "no pull-request workspaces for this repository (pull_request_owner is not set)"
                    .into(),
            ));
        };
        if event.from_fork {
            return Ok(ignored(format!(
                "pull request {} is from a fork: its branch is not in this repository",
                event.number
            )));
        }
        let name = pr::workspace_name(&repo.url, event.number);
        let done = |outcome: &str| WebhookResult {
            outcome: outcome.into(),
            reason: String::new(),
            prebuild: None,
            workspace: Some(name.clone()),
        };
        match event.action {
            Action::Open => {
                let req = CreateWorkspace {
                    name: name.clone(),
                    image: repo.image.clone(),
                    tier: repo.tier.clone(),
                    repo: Some(Repo {
                        url: repo.url.clone(),
                        branch: Some(event.branch.clone()),
                        commit: Some(event.commit.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                match self.create(owner, &req).await {
                    Ok(_) => Ok(done("workspace_created")),
                    Err(e) if e.code == "name_taken" => Ok(ignored(format!(
                        "{owner}'s workspace {name} exists already"
                    ))),
                    Err(e) => Err(e),
                }
            }
            Action::Update => Ok(ignored(format!(
                "new commits: the workspace {name} takes them with `berth sync`"
            ))),
            Action::Close => match self.intent(owner, &name, Event::DeleteRequested).await {
                Ok(_) => Ok(done("workspace_deleted")),
                Err(e) if e.code == "not_found" => {
                    Ok(ignored(format!("{owner} has no workspace {name}")))
                }
                Err(e) => Err(e),
            },
        }
    }
}
