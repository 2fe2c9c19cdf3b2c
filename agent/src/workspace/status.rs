//! Status of workspaces, and the changes containerd reports (exits, OOM kills).

use super::*;

impl Manager {
    /// The status of one workspace.
    pub async fn status(&self, name: &str) -> Result<pb::WorkspaceStatus> {
        let r = self.record(name)?;
        self.status_of(&r).await
    }

    /// The status of every workspace on the node.
    pub async fn list(&self) -> Result<pb::WorkspaceList> {
        let mut workspaces = Vec::new();
        for r in self.inner.records.all()? {
            workspaces.push(self.status_of(&r).await?);
        }
        Ok(pb::WorkspaceList { workspaces })
    }

    pub(super) async fn status_of(&self, r: &Record) -> Result<pb::WorkspaceStatus> {
        let task = self.inner.ctd.get_task(&r.name).await?;
        let (state, pid, exit) = match &task {
            Some(p)
                if p.status == TaskStatus::Running as i32
                    || p.status == TaskStatus::Paused as i32 =>
            {
                (pb::State::Running, p.pid, None)
            }
            Some(p) if p.status == TaskStatus::Stopped as i32 => {
                (pb::State::Stopped, 0, Some(p.exit_status as i32))
            }
            _ if r.started_at_ms == 0 => (pb::State::Created, 0, None),
            _ => (pb::State::Stopped, 0, r.last_exit),
        };
        Ok(self.status_with(r, state, pid, exit))
    }

    /// A workspace's status given its task's state; usage from its cgroup.
    pub(super) fn status_with(
        &self,
        r: &Record,
        state: pb::State,
        pid: u32,
        exit: Option<i32>,
    ) -> pb::WorkspaceStatus {
        let cg = self.cgroups_path(&r.name);
        let usage = (state == pb::State::Running).then(|| self.inner.cgroups.usage(&cg));
        let oom_kills = r.oom_kills.max(self.inner.cgroups.oom_kills(&cg));
        pb::WorkspaceStatus {
            name: r.name.clone(),
            image: r.image.clone(),
            state: state as i32,
            pid,
            exit_code: exit.unwrap_or(0),
            oom_kills: oom_kills as u32,
            started_at_ms: r.started_at_ms,
            usage,
            ip: r.ip.to_string(),
            generation: r.generation,
            tunnels: self.inner.activity.of(&r.name),
            init: r.init.as_ref().map(|st| st.report(&r.image)),
            idle: if state == pb::State::Running {
                self.idle_verdict(&r.name)
            } else {
                None
            },
        }
    }

    /// Records an OOM kill reported by containerd.
    pub(crate) async fn note_oom(&self, name: &str) {
        let _guard = self.lock(name).await;
        if let Ok(Some(mut r)) = self.inner.records.get(name) {
            r.oom_kills += 1;
            let _ = self.inner.records.put(&r);
            let _ = self.inner.changes.send(name.to_string());
        }
    }

    /// Records the exit of a workspace's init process reported by containerd.
    pub(crate) async fn note_exit(&self, name: &str, code: u32) {
        let _guard = self.lock(name).await;
        if let Ok(Some(mut r)) = self.inner.records.get(name) {
            if r.last_exit != Some(code as i32) {
                r.last_exit = Some(code as i32);
                let _ = self.inner.records.put(&r);
                let _ = self.inner.changes.send(name.to_string());
            }
        }
    }

    /// Records the exits of every workspace whose init process has ended, so
    /// an exit event missed while not subscribed is not lost.
    pub(crate) async fn sweep_exits(&self) {
        let Ok(records) = self.inner.records.all() else {
            return;
        };
        for r in records.iter().filter(|r| r.phase == Phase::Ready) {
            if let Ok(Some(p)) = self.inner.ctd.get_task(&r.name).await {
                if p.status == TaskStatus::Stopped as i32 {
                    self.note_exit(&r.name, p.exit_status).await;
                }
            }
        }
    }
}
