//! Per-user settings.

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

impl Store {
    /// User `user`'s dotfiles repository, if set.
    pub async fn dotfiles(&self, user: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT dotfiles FROM user_settings WHERE user_name = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get::<String, _>("dotfiles"))
            .transpose()?
            .filter(|d| !d.is_empty()))
    }

    /// Sets (empty: clears) user `user`'s dotfiles repository.
    pub async fn set_dotfiles(&self, user: &str, url: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_settings (user_name, dotfiles) VALUES ($1, $2) \
             ON CONFLICT (user_name) DO UPDATE SET dotfiles = excluded.dotfiles",
        )
        .bind(user)
        .bind(url)
        .audited(self)
        .await?;
        Ok(())
    }
}
