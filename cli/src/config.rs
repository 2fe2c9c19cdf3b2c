//! Where the CLI finds the coordinator and its token: flags, then the
//! environment (`BERTH_URL`, `BERTH_TOKEN`), then the config file
//! (`$BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth/config.toml`, else
//! `~/.config/berth/config.toml`), then the default URL.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The coordinator the local `make up` serves.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The config file's contents.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Base URL of the coordinator's API, e.g. `http://127.0.0.1:8080`.
    pub url: Option<String>,
    /// API token (`bt_...`).
    pub token: Option<String>,
    /// The CA certificate (PEM) `url`'s HTTPS certificate must chain to,
    /// pinned by `berth login`; unset: the machine's usual roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// The config file's path.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CONFIG") {
        return Some(p.into());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("berth").join("config.toml"))
}

/// Reads the config file; a missing file is an empty one.
pub fn load(path: &Path) -> anyhow::Result<File> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("config {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(e).with_context(|| format!("read config {}", path.display())),
    }
}

/// Writes the config file, readable by its owner only (it holds a token).
pub fn save(path: &Path, file: &File) -> anyhow::Result<()> {
    berth_proto::files::write_private(path, toml::to_string(file)?.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// The URL and token in effect.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub url: String,
    pub token: Option<String>,
    /// The CA to trust for `url` (PEM): `--ca-file`, else the config file's
    /// when `url` is the one it was pinned for.
    pub ca: Option<String>,
}

/// Merges the sources: `flag_*` already include the environment (clap's `env`).
pub fn resolve(
    flag_url: Option<String>,
    flag_token: Option<String>,
    flag_ca_file: Option<&Path>,
    file: &File,
) -> anyhow::Result<Resolved> {
    let url = flag_url
        .or_else(|| file.url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let url = url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("coordinator URL {url:?} must start with http:// or https://");
    }
    let pinned_for = file.url.as_deref().map(|u| u.trim_end_matches('/'));
    let ca = match flag_ca_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("read --ca-file {}", p.display()))?,
        ),
        None if pinned_for == Some(url.as_str()) => file.ca.clone(),
        None => None,
    };
    Ok(Resolved {
        url,
        token: flag_token.or_else(|| file.token.clone()),
        ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_default_applies() {
        let file = File {
            url: Some("http://file:1/".into()),
            token: Some("bt_file".into()),
            ca: Some("PINNED".into()),
        };
        let r = resolve(Some("http://flag:2".into()), None, None, &file).unwrap();
        assert_eq!(r.url, "http://flag:2");
        assert_eq!(r.token.as_deref(), Some("bt_file"));
        assert_eq!(r.ca, None, "the pinned CA is the saved URL's only");
        let r = resolve(None, Some("bt_flag".into()), None, &file).unwrap();
        assert_eq!(r.url, "http://file:1");
        assert_eq!(r.token.as_deref(), Some("bt_flag"));
        assert_eq!(r.ca.as_deref(), Some("PINNED"));
        let r = resolve(None, None, None, &File::default()).unwrap();
        assert_eq!(r.url, DEFAULT_URL);
        assert!(r.token.is_none());
        assert!(resolve(Some("ftp://x".into()), None, None, &file).is_err());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "FROM FILE").unwrap();
        let r = resolve(None, None, Some(&ca), &file).unwrap();
        assert_eq!(r.ca.as_deref(), Some("FROM FILE"), "--ca-file wins");
        assert!(resolve(None, None, Some(&dir.path().join("none")), &file).is_err());
    }

    #[test]
    fn save_then_load_round_trips_with_owner_only_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/config.toml");
        assert_eq!(load(&p).unwrap(), File::default());
        let f = File {
            url: Some("http://127.0.0.1:8080".into()),
            token: Some("bt_x_y".into()),
            ca: None,
        };
        save(&p, &f).unwrap();
        assert_eq!(load(&p).unwrap(), f);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&p, "url = 3").unwrap();
        assert!(load(&p).is_err());
    }
}
