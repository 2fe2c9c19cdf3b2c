//! Teams: a member's role, and what it allows on the team's workspaces.

use crate::error::{Error, Result};

/// A member's role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads the team's workspaces (lists them, sees their state, backups,
    /// previews); acts on none.
    Viewer,
    /// Reads and acts on them (start, stop, exec, terminal, SSH, ports).
    Member,
    /// A member who also manages the team's members.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Role::Viewer, Role::Member, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Whether the role allows `need` on the team's workspaces.
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Read => true,
            Need::Act => self >= Role::Member,
        }
    }
}

/// What a request needs of a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Act,
}

/// A team's name: a DNS label of at most 40 characters.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_team",
            format!("invalid team name {name:?}: 1 to 40 of a-z, 0-9 and '-', not at either end"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_read_members_and_admins_act() {
        assert!(Role::Viewer.allows(Need::Read) && !Role::Viewer.allows(Need::Act));
        assert!(Role::Member.allows(Need::Act) && Role::Admin.allows(Need::Act));
        assert_eq!(Role::parse("viewer"), Some(Role::Viewer));
        assert_eq!(Role::parse("owner"), None);
        assert!(check_name("web-team").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"x".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
