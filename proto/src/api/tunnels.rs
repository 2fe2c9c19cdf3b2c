//! Tunnels: their activity, and who may open a workspace's ports.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Tunnel activity of a workspace, as its agent counts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Activity {
    pub workspace: String,
    /// One entry per kind of tunnel used since the agent started.
    pub tunnels: Vec<TunnelActivity>,
}

/// Sessions and bytes of one kind of tunnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TunnelActivity {
    /// ssh, port, preview or terminal.
    pub kind: String,
    /// Sessions open now.
    pub open: u64,
    /// Sessions opened in all.
    pub sessions: u64,
    /// Bytes from the user to the workspace.
    pub bytes_in: u64,
    /// Bytes from the workspace to the user.
    pub bytes_out: u64,
    /// When bytes last moved or a session opened or closed (Unix ms).
    pub last_active_ms: u64,
}

/// Whether a port's preview is public.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Visibility {
    /// true: anyone with the link may open the preview; false: the owner only.
    pub public: bool,
}

/// A port and its visibility.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PortVisibility {
    pub port: u16,
    pub public: bool,
}
