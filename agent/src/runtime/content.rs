//! Content and images: what a pull writes and an image names.

use super::*;

impl Containerd {
    /// Whether the content store holds `digest`.
    pub async fn content_exists(&self, digest: &str) -> Result<bool> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        match c
            .info(self.req(
                svc::InfoRequest {
                    digest: digest.into(),
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(AgentError::containerd("content info")(s)),
        }
    }

    /// Reads a whole blob from the content store.
    pub async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let mut s = c
            .read(self.req(
                svc::ReadContentRequest {
                    digest: digest.into(),
                    offset: 0,
                    size: 0,
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("read {digest}")))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend(
                chunk
                    .map_err(AgentError::containerd(format!("read {digest}")))?
                    .data,
            );
        }
        Ok(out)
    }

    /// Streams `chunks` into the content store as `expected`; containerd
    /// refuses the commit unless size and digest match.
    pub async fn write_content<S>(
        &self,
        lease: &str,
        reference: &str,
        expected: &str,
        total: i64,
        labels: HashMap<String, String>,
        chunks: S,
    ) -> Result<()>
    where
        S: Stream<Item = Vec<u8>> + Send + 'static,
    {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let (r, e) = (reference.to_string(), expected.to_string());
        let mut offset = 0i64;
        let writes = chunks.map(move |data| {
            let req = svc::WriteContentRequest {
                action: svc::WriteAction::Write as i32,
                r#ref: r.clone(),
                total,
                expected: e.clone(),
                offset,
                data,
                labels: HashMap::new(),
            };
            offset += req.data.len() as i64;
            req
        });
        let commit = svc::WriteContentRequest {
            action: svc::WriteAction::Commit as i32,
            r#ref: reference.into(),
            total,
            expected: expected.into(),
            // containerd truncates an ingest written at offset 0: commit at the end.
            offset: total,
            data: Vec::new(),
            labels,
        };
        let stream = writes.chain(futures::stream::once(async move { commit }));
        let already = |s: &tonic::Status| s.code() == tonic::Code::AlreadyExists;
        let mut responses = match c.write(self.req(stream, Some(lease))).await {
            Ok(r) => r.into_inner(),
            // Another pull stored it first: the content is what we wanted.
            Err(s) if already(&s) => return Ok(()),
            Err(s) => return Err(AgentError::containerd(format!("write {expected}"))(s)),
        };
        while let Some(r) = responses.next().await {
            match r {
                Ok(_) => {}
                Err(s) if already(&s) => return Ok(()),
                Err(s) => return Err(AgentError::containerd(format!("write {expected}"))(s)),
            }
        }
        Ok(())
    }

    /// Drops an unfinished write (idempotent).
    pub async fn abort_write(&self, reference: &str) {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let _ = c
            .abort(self.req(
                svc::AbortRequest {
                    r#ref: reference.into(),
                },
                None,
            ))
            .await;
    }

    /// Sets labels on a blob (e.g. the GC reference to its unpacked snapshot).
    pub async fn label_content(&self, digest: &str, labels: HashMap<String, String>) -> Result<()> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = svc::Info {
            digest: digest.into(),
            labels,
            ..Default::default()
        };
        c.update(self.req(
            svc::UpdateRequest {
                info: Some(info),
                update_mask: Some(prost_types::FieldMask { paths }),
            },
            None,
        ))
        .await
        .map_err(AgentError::containerd(format!("label {digest}")))?;
        Ok(())
    }

    // ---- images ----

    /// The target descriptor of image `name`, if containerd has it.
    pub async fn get_image(&self, name: &str) -> Result<Option<Descriptor>> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        match c
            .get(self.req(svc::GetImageRequest { name: name.into() }, None))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target)),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(AgentError::containerd("get image")(s)),
        }
    }

    /// Deletes image `name`, collecting what only it held (gone already is fine).
    pub async fn delete_image(&self, name: &str) -> Result<()> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        match c
            .delete(self.req(
                svc::DeleteImageRequest {
                    name: name.into(),
                    sync: true,
                    ..Default::default()
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(AgentError::containerd("delete image")(s)),
        }
    }

    /// Names of every image in the namespace.
    pub async fn list_images(&self) -> Result<Vec<String>> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        let r = c
            .list(self.req(svc::ListImagesRequest { filters: vec![] }, None))
            .await
            .map_err(AgentError::containerd("list images"))?;
        Ok(r.into_inner().images.into_iter().map(|i| i.name).collect())
    }

    /// Creates or updates image `name` to point at `target`.
    pub async fn put_image(&self, lease: &str, name: &str, target: Descriptor) -> Result<()> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        let image = svc::Image {
            name: name.into(),
            target: Some(target),
            ..Default::default()
        };
        let created = c
            .create(self.req(
                svc::CreateImageRequest {
                    image: Some(image.clone()),
                    ..Default::default()
                },
                Some(lease),
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                c.update(self.req(
                    svc::UpdateImageRequest {
                        image: Some(image),
                        ..Default::default()
                    },
                    Some(lease),
                ))
                .await
                .map_err(AgentError::containerd("update image"))?;
                Ok(())
            }
            Err(s) => Err(AgentError::containerd("create image")(s)),
        }
    }
}
