//! Which argument fields of a kind name a tenant's objects.

/// The kind of tenant-owned object an id in a job's arguments names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owned {
    Product,
    Account,
}

impl Owned {
    /// The table holding these objects, with their `tenant_id`.
    pub fn table(self) -> &'static str {
        match self {
            Self::Product => "products",
            Self::Account => "marketplace_accounts",
        }
    }
}

/// The argument fields of a public kind that name tenant-owned objects. The API refuses a
/// seller's job naming another tenant's object (404) from this list, so a public kind declares
/// it (no default) and `kinds::tests` checks no `*_id` field is left out.
pub trait Owns {
    const IDS: &'static [(&'static str, Owned)];
}
