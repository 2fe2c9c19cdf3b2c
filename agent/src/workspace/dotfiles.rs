//! A user's dotfiles repository (docs/repositories.md, "Dotfiles"), the
//! Codespaces and Coder convention: after a create, in the background and
//! inside the workspace as its user (git runs in the sandbox, never on the
//! node), the repository is cloned into `~/.dotfiles`; the first of its
//! install scripts that exists runs, and without one its dotfiles are
//! linked into the home directory (an existing file is never replaced).
//! The outcome is the init step `dotfiles`, its output in the init log.
//! Applied once: a home that has `~/.dotfiles` (a restart, a workspace
//! restored from its backup) is left alone.

use super::repo::WORKSPACE;
use super::run::{InitCommand, InitLog, Ran};
use super::{ms, Manager};
use crate::init::state::{InitState, Phase};
use std::collections::BTreeMap;
use std::time::Instant;

/// Runs in the workspace with the URL in `BERTH_DOTFILES` (never in the
/// script's text).
const SCRIPT: &str = r#"set -eu
d="$HOME/.dotfiles"
if [ -e "$d" ]; then echo "dotfiles: $d is there already"; exit 0; fi
command -v git >/dev/null || { echo "dotfiles: git is not in the image" >&2; exit 127; }
git -c credential.helper= -c core.askPass= clone --depth 1 -- "$BERTH_DOTFILES" "$d"
cd "$d"
for f in install.sh install bootstrap.sh bootstrap script/bootstrap setup.sh setup script/setup; do
  if [ -f "$f" ]; then echo "dotfiles: running $f"; chmod +x "$f"; exec "./$f"; fi
done
for f in .[!.]* ..?*; do
  case "$f" in .git|.github|.gitignore|.gitmodules|'.[!.]*'|'..?*') continue ;; esac
  if [ -e "$HOME/$f" ] || [ -L "$HOME/$f" ]; then echo "dotfiles: ~/$f exists, kept"; continue; fi
  ln -s "$d/$f" "$HOME/$f" && echo "dotfiles: linked ~/$f"
done
"#;

impl Manager {
    /// Applies dotfiles repository `url` to running workspace `name` in the
    /// background.
    pub(super) fn apply_dotfiles(&self, name: &str, url: String) {
        let me = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            if let Err(e) = me.dotfiles(&name, &url).await {
                tracing::warn!(workspace = %name, error = %e, "dotfiles not applied");
            }
        });
    }

    async fn dotfiles(&self, name: &str, url: &str) -> crate::error::Result<()> {
        let log = InitLog::open(&self.init_log_dir(), name, false)?;
        if !self
            .dotfiles_step(name, |st| st.phase = Phase::Running)
            .await?
        {
            return Ok(());
        }
        log.note(&format!("dotfiles: {url}"));
        let t = Instant::now();
        let ran = self
            .run_init(
                name,
                InitCommand {
                    argv: vec!["sh".into(), "-c".into(), SCRIPT.into()],
                    root: false,
                    env: BTreeMap::from([("BERTH_DOTFILES".to_string(), url.to_string())]),
                    cwd: WORKSPACE,
                    timeout: Self::timeout(self.inner.cfg.file.workspace.clone_timeout_seconds),
                },
                Some(&log),
            )
            .await?;
        let failed = (ran.timed_out || ran.code != 0).then_some(&ran);
        if failed.is_some() {
            log.note(&format!("dotfiles failed (exit status {})", ran.code));
        }
        self.dotfiles_step(name, |st| st.end_command(ms(t), Ran::failure(failed)))
            .await?;
        Ok(())
    }

    /// Changes workspace `name`'s `dotfiles` step (an init state is made
    /// for a workspace from an image); false if the workspace is gone.
    async fn dotfiles_step(
        &self,
        name: &str,
        change: impl FnOnce(&mut crate::init::state::StepState),
    ) -> crate::error::Result<bool> {
        let _guard = self.lock(name).await;
        let Some(mut r) = self.inner.records.get(name)? else {
            return Ok(false);
        };
        let st = r.init.get_or_insert_with(|| InitState {
            folder: WORKSPACE.into(),
            ..Default::default()
        });
        change(st.step("dotfiles"));
        self.inner.records.put(&r)?;
        let _ = self.inner.changes.send(name.to_string());
        Ok(true)
    }
}
