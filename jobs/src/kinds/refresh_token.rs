//! `refresh_token`: refresh one marketplace account's OAuth access token ahead of expiry and store
//! the (possibly rotated) refresh token atomically ([`crate::accounts::refresh_account`]).
//! Enqueued when an account connects and after every refresh, for `REFRESH_LEAD` before the new
//! expiry (one job per account and expiry, by idempotency key). Concurrent refreshes of one
//! account collapse: they queue on the account's row lock and the later ones find the token
//! fresh. A revoked refresh token (`invalid_grant`) marks the account broken: dead, class
//! `auth_revoked`, and the account's other jobs are held until the seller reconnects.

use serde::{Deserialize, Serialize};

use super::owned::{Owned, Owns};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct RefreshToken {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub account_id: i64,
}

impl Owns for RefreshToken {
    const IDS: &'static [(&'static str, Owned)] = &[("account_id", Owned::Account)];
}
