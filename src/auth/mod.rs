//! Authorization (DESIGN §7): API keys, roles, and what a verified key may do.

pub mod keys;

use crate::domain::ids::{AccountId, KeyId, ProjectRef};
use crate::store::{Role, StoreError};

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key that was presented.
    pub key_id: KeyId,
    /// The key's account (`_root` for the root key).
    pub account: AccountId,
    /// The key's role.
    pub role: Role,
    /// `org/project` pairs an executor key is limited to; `None` means all.
    pub projects: Option<Vec<String>>,
}

impl Principal {
    /// True for the root key.
    pub fn is_root(&self) -> bool {
        self.account.is_root()
    }

    /// May manage everything in `account` (admin of it, or root).
    pub fn can_manage(&self, account: &AccountId) -> bool {
        self.is_root() || (self.role == Role::Admin && &self.account == account)
    }

    /// May fire triggers and read status in `project`.
    pub fn can_execute(&self, project: &ProjectRef) -> bool {
        if self.is_root() {
            return true;
        }
        if self.account != project.account {
            return false;
        }
        match (&self.role, &self.projects) {
            (Role::Admin, _) | (Role::Executor, None) => true,
            (Role::Executor, Some(list)) => {
                let wanted = format!("{}/{}", project.org, project.project);
                list.iter().any(|p| p == &wanted)
            }
        }
    }
}

/// Why a key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Malformed, unknown, revoked, expired, wrong account, or wrong secret: all look the same
    /// to the caller.
    #[error("invalid or expired API key")]
    InvalidKey,
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::Identifier;

    fn principal(account: &str, role: Role, projects: Option<Vec<&str>>) -> Principal {
        Principal {
            key_id: KeyId::generate(),
            account: AccountId::parse(account).unwrap(),
            role,
            projects: projects.map(|p| p.into_iter().map(String::from).collect()),
        }
    }

    fn project(acc: &str, org: &str, proj: &str) -> ProjectRef {
        ProjectRef {
            account: AccountId::parse(acc).unwrap(),
            org: Identifier::parse(org, "org").unwrap(),
            project: Identifier::parse(proj, "project").unwrap(),
        }
    }

    #[test]
    fn executor_keys_cannot_manage() {
        let p = principal("acc", Role::Executor, None);
        assert!(!p.can_manage(&AccountId::parse("acc").unwrap()));
        assert!(p.can_execute(&project("acc", "default", "p")));
    }

    #[test]
    fn executor_project_list_limits_execution() {
        let p = principal("acc", Role::Executor, Some(vec!["default/p1"]));
        assert!(p.can_execute(&project("acc", "default", "p1")));
        assert!(!p.can_execute(&project("acc", "default", "p2")));
    }

    #[test]
    fn keys_never_cross_accounts_but_root_does() {
        let admin = principal("acc", Role::Admin, None);
        assert!(!admin.can_execute(&project("other", "default", "p")));
        assert!(!admin.can_manage(&AccountId::parse("other").unwrap()));
        let root = principal("_root", Role::Admin, None);
        assert!(root.can_execute(&project("other", "default", "p")));
        assert!(root.can_manage(&AccountId::parse("other").unwrap()));
    }
}
