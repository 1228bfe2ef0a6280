//! The one access rule for reading documents.
//!
//! A principal may read a document of its own tenant whose ACL names its
//! subject or one of its groups; nothing else (an empty ACL admits nobody).
//! [`AccessScope`] is that rule for one principal, built once per request;
//! every store translates it into its own terms (Tantivy term queries,
//! Qdrant payload conditions, SQL), and [`AccessScope::admits`] states it
//! in Rust for whatever is checked after the fact. The names under which
//! the stores keep a chunk's tenant and ACL are in [`fields`], once.

use crate::{Acl, Principal};

/// Field and payload names of a chunk's access facts, the same in the
/// lexical index and both vector stores.
pub mod fields {
    pub const TENANT: &str = "tenant";
    pub const ACL_GROUPS: &str = "acl_groups";
    pub const ACL_USERS: &str = "acl_users";
}

/// What one principal may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessScope {
    tenant: String,
    subject: String,
    groups: Vec<String>,
}

impl AccessScope {
    pub fn of(p: &Principal) -> Self {
        Self {
            tenant: p.tenant.clone(),
            subject: p.subject.clone(),
            groups: p.groups.clone(),
        }
    }

    /// The only tenant whose documents are in scope.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Admitted where an ACL lists this user…
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// …or any of these groups.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Whether a document of `tenant` under `acl` is in scope.
    pub fn admits(&self, tenant: &str, acl: &Acl) -> bool {
        self.tenant == tenant
            && (acl.users.contains(&self.subject)
                || acl.groups.iter().any(|g| self.groups.contains(g)))
    }
}

impl From<&Principal> for AccessScope {
    fn from(p: &Principal) -> Self {
        Self::of(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tenant: &str, subject: &str, groups: &[&str]) -> AccessScope {
        AccessScope {
            tenant: tenant.into(),
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn tenant_and_one_of_subject_or_group() {
        let acl = Acl {
            groups: vec!["board".into()],
            users: vec!["ann".into()],
        };
        assert!(scope("t", "ann", &[]).admits("t", &acl));
        assert!(scope("t", "bob", &["staff", "board"]).admits("t", &acl));
        assert!(!scope("t", "bob", &["staff"]).admits("t", &acl));
        assert!(
            !scope("u", "ann", &["board"]).admits("t", &acl),
            "another tenant"
        );
        assert!(
            !scope("t", "ann", &["board"]).admits("t", &Acl::default()),
            "an empty ACL admits nobody"
        );
    }
}
