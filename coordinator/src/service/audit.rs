//! The audit log: the scope an audited request runs in, its entry when it
//! changed nothing, the listing and the chain's verification.

use super::Service;
use crate::domain::audit::{Entry, Verifier};
use crate::error::Result;
use crate::store::{AuditFilter, Scope};
use berth_proto::api::{AuditEntry, AuditVerification};
use std::sync::Arc;

/// Entries read per page while verifying.
const VERIFY_PAGE: i64 = 2_000;

impl Service {
    /// The scope of an audited request whose entry is `entry`.
    pub fn audit_scope(&self, entry: Entry) -> Arc<Scope> {
        Scope::new(self.inner.sealer.audit_key(), entry)
    }

    /// Records `scope`'s request with its answer if no transaction did (a
    /// request that changed nothing, or failed after its change). A store
    /// that fails here is logged: the answer is already on its way.
    pub async fn finish_audit(&self, scope: &Scope, status: i64, error_code: &str) {
        if let Err(e) = self
            .inner
            .store
            .append_audit(scope, status, error_code)
            .await
        {
            tracing::warn!(error = %e, "audit entry not written");
        }
    }

    /// Audit entries `f` selects, oldest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        Ok(self
            .inner
            .store
            .audit_entries(f)
            .await?
            .into_iter()
            .map(|(e, mac)| AuditEntry {
                seq: e.seq,
                at_ms: e.at_ms,
                actor: e.actor,
                token_id: e.token_id,
                role: e.role,
                source_ip: e.source_ip,
                user_agent: e.user_agent,
                action: e.action,
                resource: e.resource,
                status: e.status,
                error_code: e.error_code,
                request_id: e.request_id,
                diff: e.diff,
                mac,
            })
            .collect())
    }

    /// Walks the whole chain against the key and the head.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        let store = &self.inner.store;
        // The head first: entries written after it are not checked.
        let (head_seq, head_mac) = store.audit_head().await?;
        let mut v = Verifier::new(self.inner.sealer.audit_key());
        let mut after = 0;
        loop {
            let page = store
                .audit_entries(&AuditFilter {
                    after,
                    until_seq: Some(head_seq),
                    limit: VERIFY_PAGE,
                    ..AuditFilter::default()
                })
                .await?;
            for (e, mac) in &page {
                v.next(e, mac);
            }
            match page.last() {
                Some((e, _)) if v.broken.is_none() && page.len() as i64 == VERIFY_PAGE => {
                    after = e.seq
                }
                _ => break,
            }
        }
        let checked = v.last();
        let broken = v.finish(head_seq, &head_mac);
        Ok(AuditVerification {
            ok: broken.is_none(),
            checked,
            written: head_seq,
            broken_at: broken.as_ref().map(|b| b.at()),
            problem: broken.map(|b| b.to_string()),
        })
    }
}
