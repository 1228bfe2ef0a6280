use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Sovra's roles. Each grants a small set of permissions; none implies another.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Search and ask.
    Reader,
    /// Write and delete documents.
    Ingester,
    /// Read, export and verify the audit trail.
    Auditor,
    /// Operate the gateway: audit retention and checkpoints, and reading the trail.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Ingester, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Ingester => "ingester",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// What a route needs. The table in [`Permission::roles`] is the whole policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See one's own principal (`GET /v1/whoami`): any authenticated caller.
    Whoami,
    /// Search and ask questions.
    Read,
    /// Write and delete documents.
    Ingest,
    /// List and open documents (visibility still by each document's ACL).
    Browse,
    /// Read, export and verify the audit trail.
    AuditRead,
    /// Prune the audit trail and sign checkpoints.
    AuditAdmin,
}

impl Permission {
    /// The roles that hold this permission; an empty slice means every
    /// authenticated principal.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Permission::Whoami => &[],
            Permission::Read => &[Role::Reader],
            Permission::Ingest => &[Role::Ingester],
            Permission::Browse => &[Role::Reader, Role::Ingester],
            Permission::AuditRead => &[Role::Auditor, Role::Admin],
            Permission::AuditAdmin => &[Role::Admin],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Whoami => "whoami",
            Permission::Read => "read",
            Permission::Ingest => "ingest",
            Permission::Browse => "browse",
            Permission::AuditRead => "audit_read",
            Permission::AuditAdmin => "audit_admin",
        }
    }
}

/// The caller, as the gateway sees it after authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Principal {
    pub subject: String,
    pub tenant: String,
    pub roles: BTreeSet<Role>,
    pub groups: Vec<String>,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Deny by default: true only when one of the permission's roles is held.
    pub fn can(&self, permission: Permission) -> bool {
        let needed = permission.roles();
        needed.is_empty() || needed.iter().any(|r| self.has_role(*r))
    }

    pub fn role_names(&self) -> Vec<&'static str> {
        self.roles.iter().map(|r| r.as_str()).collect()
    }
}

/// Who may see a document: members of any group, or any user listed, within
/// the document's tenant. An empty ACL admits nobody (deny by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
}

impl Acl {
    /// Sorted, deduplicated, blank entries dropped.
    pub fn normalized(mut self) -> Self {
        for list in [&mut self.groups, &mut self.users] {
            list.retain(|s| !s.trim().is_empty());
            list.sort();
            list.dedup();
        }
        self
    }
}

impl Principal {
    /// The ACL rule itself, for checks outside an index (catalog reads).
    pub fn may_see(&self, tenant: &str, acl: &Acl) -> bool {
        self.scope().admits(tenant, acl)
    }

    /// The access rule for this principal's reads.
    pub fn scope(&self) -> crate::AccessScope {
        crate::AccessScope::of(self)
    }

    /// The one rule for replacing and deleting an existing document: within
    /// its tenant, an ingester who wrote it or may read it, or the tenant's
    /// admin. Anyone else must learn nothing about it (the caller answers
    /// 404, exactly as for a document that does not exist).
    pub fn may_change(&self, tenant: &str, acl: &Acl, created_by: &str) -> bool {
        self.tenant == tenant
            && (self.has_role(Role::Admin)
                || (self.has_role(Role::Ingester)
                    && (created_by == self.subject || self.may_see(tenant, acl))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_needs_authorship_visibility_or_tenant_admin() {
        let acl = Acl {
            groups: vec!["board".into()],
            users: vec![],
        };
        let who = |subject: &str, tenant: &str, roles: &[Role], groups: &[&str]| Principal {
            subject: subject.into(),
            tenant: tenant.into(),
            roles: roles.iter().copied().collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        // The author, even after narrowing the ACL past themselves.
        assert!(who("ann", "t", &[Role::Ingester], &[]).may_change("t", &acl, "ann"));
        // An ingester who may read it.
        assert!(who("bob", "t", &[Role::Ingester], &["board"]).may_change("t", &acl, "ann"));
        // An ingester who may not read it.
        assert!(!who("eve", "t", &[Role::Ingester], &["staff"]).may_change("t", &acl, "ann"));
        // A reader who may read it but does not ingest.
        assert!(!who("rob", "t", &[Role::Reader], &["board"]).may_change("t", &acl, "ann"));
        // The tenant's admin; not another tenant's, nor the author elsewhere.
        assert!(who("root", "t", &[Role::Admin], &[]).may_change("t", &acl, "ann"));
        assert!(!who("root", "u", &[Role::Admin], &[]).may_change("t", &acl, "ann"));
        assert!(!who("ann", "u", &[Role::Ingester], &["board"]).may_change("t", &acl, "ann"));
    }

    fn p(roles: &[Role]) -> Principal {
        Principal {
            subject: "s".into(),
            tenant: "t".into(),
            roles: roles.iter().copied().collect(),
            groups: vec![],
        }
    }

    #[test]
    fn least_privilege() {
        assert!(p(&[]).can(Permission::Whoami));
        assert!(!p(&[]).can(Permission::Read));
        assert!(p(&[Role::Reader]).can(Permission::Read));
        assert!(!p(&[Role::Reader]).can(Permission::AuditRead));
        assert!(!p(&[Role::Reader]).can(Permission::Ingest));
        assert!(p(&[Role::Auditor]).can(Permission::AuditRead));
        assert!(!p(&[Role::Auditor]).can(Permission::AuditAdmin));
        assert!(!p(&[Role::Auditor]).can(Permission::Read));
        assert!(p(&[Role::Admin]).can(Permission::AuditAdmin));
        assert!(!p(&[Role::Admin]).can(Permission::Read));
        assert!(p(&[Role::Ingester]).can(Permission::Ingest));
    }
}
