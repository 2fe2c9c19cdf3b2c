//! What makes a workspace from a repository ready, in pure parts: its
//! `devcontainer.json`, the project detected without one, the lifecycle
//! commands' forms and the Dockerfile instructions the builder supports.
//! The workspace manager runs them (`workspace::repo`).

pub mod command;
pub mod detect;
pub mod devcontainer;
pub mod dockerfile;
pub mod feature;
pub mod git;
pub mod prebuild;
pub mod state;
