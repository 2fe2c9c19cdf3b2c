//! Containers, tasks, exec processes and events.

use super::*;

impl Containerd {
    /// Creates a container running `spec` on snapshot `snapshot_key`.
    pub async fn create_container(
        &self,
        id: &str,
        image: &str,
        snapshot_key: &str,
        spec: &oci_spec::runtime::Spec,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut c = svc::containers_client::ContainersClient::new(self.channel.clone());
        let container = svc::Container {
            id: id.into(),
            labels,
            image: image.into(),
            runtime: Some(svc::container::Runtime {
                name: self.runtime.clone(),
                options: self.runtime_options.clone(),
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(spec).unwrap_or_default(),
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: snapshot_key.into(),
            ..Default::default()
        };
        c.create(self.req(
            svc::CreateContainerRequest {
                container: Some(container),
            },
            None,
        ))
        .await
        .map_err(AgentError::containerd(format!("create container {id}")))?;
        Ok(())
    }

    /// Ids and labels of the containers matching `filter`.
    pub async fn list_containers(
        &self,
        filter: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let mut c = svc::containers_client::ContainersClient::new(self.channel.clone());
        let r = c
            .list(self.req(
                svc::ListContainersRequest {
                    filters: vec![filter.into()],
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("list containers"))?;
        Ok(r.into_inner()
            .containers
            .into_iter()
            .map(|c| (c.id, c.labels))
            .collect())
    }

    /// Deletes a container (idempotent).
    pub async fn delete_container(&self, id: &str) -> Result<()> {
        let mut c = svc::containers_client::ContainersClient::new(self.channel.clone());
        match c
            .delete(self.req(svc::DeleteContainerRequest { id: id.into() }, None))
            .await
        {
            Err(s) if !is_not_found(&s) => {
                Err(AgentError::containerd(format!("delete container {id}"))(s))
            }
            _ => Ok(()),
        }
    }

    // ---- tasks ----

    pub(super) fn tasks(&self) -> svc::tasks_client::TasksClient<Channel> {
        svc::tasks_client::TasksClient::new(self.channel.clone())
    }

    /// Creates the task (init process) of container `id`, its output going to `log`.
    pub async fn create_task(&self, id: &str, rootfs: Vec<Mount>, log: &str) -> Result<u32> {
        let uri = format!("file://{log}");
        let r = self
            .tasks()
            .create(self.req(
                svc::CreateTaskRequest {
                    container_id: id.into(),
                    rootfs,
                    stdout: uri.clone(),
                    stderr: uri,
                    ..Default::default()
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("create task {id}")))?;
        Ok(r.into_inner().pid)
    }

    /// Starts the init process (empty `exec_id`) or an exec'd process.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let r = self
            .tasks()
            .start(self.req(
                svc::StartRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("start {id} {exec_id}")))?;
        Ok(r.into_inner().pid)
    }

    /// The init process of container `id`, if it has a task.
    pub async fn get_task(&self, id: &str) -> Result<Option<Process>> {
        match self
            .tasks()
            .get(self.req(
                svc::GetRequest {
                    container_id: id.into(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(AgentError::containerd(format!("get task {id}"))(s)),
        }
    }

    /// All tasks in the namespace.
    pub async fn list_tasks(&self) -> Result<Vec<Process>> {
        let r = self
            .tasks()
            .list(self.req(svc::ListTasksRequest::default(), None))
            .await
            .map_err(AgentError::containerd("list tasks"))?;
        Ok(r.into_inner().tasks)
    }

    /// Sends `signal` to a process (to all of the container's with `all`).
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let r = self
            .tasks()
            .kill(self.req(
                svc::KillRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    signal,
                    all,
                },
                None,
            ))
            .await;
        match r {
            Err(s) if !is_not_found(&s) => Err(AgentError::containerd(format!("kill {id}"))(s)),
            _ => Ok(()),
        }
    }

    /// Waits for a process to exit and returns its exit status.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        let r = self
            .tasks()
            .wait(self.req(
                svc::WaitRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("wait {id} {exec_id}")))?;
        Ok(r.into_inner().exit_status)
    }

    /// Deletes the (exited) task of container `id`; returns its exit status if it had one.
    pub async fn delete_task(&self, id: &str) -> Result<Option<u32>> {
        match self
            .tasks()
            .delete(self.req(
                svc::DeleteTaskRequest {
                    container_id: id.into(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(Some(r.into_inner().exit_status)),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(AgentError::containerd(format!("delete task {id}"))(s)),
        }
    }

    /// Adds a process to a running task; its stdio are FIFO paths.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: [String; 3],
        tty: bool,
    ) -> Result<()> {
        let [stdin, stdout, stderr] = stdio;
        let spec = Any {
            type_url: PROCESS_TYPE_URL.into(),
            value: serde_json::to_vec(process).unwrap_or_default(),
        };
        self.tasks()
            .exec(self.req(
                svc::ExecProcessRequest {
                    container_id: id.into(),
                    stdin,
                    stdout,
                    stderr,
                    terminal: tty,
                    spec: Some(spec),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("exec in {id}")))?;
        Ok(())
    }

    /// Resizes an exec'd process's terminal.
    pub async fn resize(&self, id: &str, exec_id: &str, cols: u32, rows: u32) -> Result<()> {
        self.tasks()
            .resize_pty(self.req(
                svc::ResizePtyRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    width: cols,
                    height: rows,
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("resize pty"))?;
        Ok(())
    }

    /// Closes the stdin of an exec'd process.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.tasks()
            .close_io(self.req(
                svc::CloseIoRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    stdin: true,
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("close stdin"))?;
        Ok(())
    }

    /// Removes an exited exec'd process (idempotent).
    pub async fn delete_process(&self, id: &str, exec_id: &str) -> Result<()> {
        let r = self
            .tasks()
            .delete_process(self.req(
                svc::DeleteProcessRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await;
        match r {
            Err(s) if !is_not_found(&s) => Err(AgentError::containerd("delete process")(s)),
            _ => Ok(()),
        }
    }

    // ---- events ----

    /// Subscribes to this namespace's events matching `topics`.
    pub async fn subscribe(
        &self,
        topics: &[&str],
    ) -> Result<tonic::Streaming<containerd_client::types::Envelope>> {
        let mut c = svc::events_client::EventsClient::new(self.channel.clone());
        let filters = event_filters(&self.namespace, topics);
        let r = c
            .subscribe(Request::new(svc::SubscribeRequest { filters }))
            .await
            .map_err(AgentError::containerd("subscribe to events"))?;
        Ok(r.into_inner())
    }
}
