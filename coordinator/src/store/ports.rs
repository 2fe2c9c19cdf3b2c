//! Which workspace ports have public previews.

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

impl Store {
    /// Makes a workspace port's preview public (or owner-only again).
    pub async fn set_port_public(&self, workspace: &str, port: u16, public: bool) -> Result<()> {
        let q = if public {
            "INSERT INTO public_ports (workspace_id, port) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM public_ports WHERE workspace_id = $1 AND port = $2"
        };
        sqlx::query(q)
            .bind(workspace)
            .bind(i64::from(port))
            .audited(self)
            .await?;
        Ok(())
    }

    /// A workspace's public ports, ascending.
    pub async fn public_ports(&self, workspace: &str) -> Result<Vec<u16>> {
        let rows =
            sqlx::query("SELECT port FROM public_ports WHERE workspace_id = $1 ORDER BY port")
                .bind(workspace)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("port")? as u16))
            .collect()
    }

    /// Whether anyone may open the preview of `port`.
    pub async fn port_is_public(&self, workspace: &str, port: u16) -> Result<bool> {
        let row =
            sqlx::query("SELECT 1 AS one FROM public_ports WHERE workspace_id = $1 AND port = $2")
                .bind(workspace)
                .bind(i64::from(port))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }
}
