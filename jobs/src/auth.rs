//! Users, tenants and the tokens they log in with.
//!
//! - Passwords: Argon2id (a deliberately slow hash); an unknown e-mail costs the same hash as a
//!   wrong password, so timing does not tell which e-mails exist.
//! - Access tokens: JWT (HS256) with the signing key's id in the `kid` header, short-lived
//!   (`auth.access_ttl_s`). Keys rotate: new tokens use `auth.active_signing_key`; the others
//!   still verify until the `verify_until` instant written after them (the grace window).
//! - Refresh tokens: 32 random bytes, only their SHA-256 stored, single use. A refresh consumes
//!   one and issues its successor in the same family; a used one presented again (a copy in the
//!   wrong hands, or the legitimate client after the thief) revokes the whole family.
//!
//! Secrets are never compared with `==` here: Argon2 and HMAC verification are constant time,
//! and refresh tokens are looked up by their hash.

use std::collections::HashMap;

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// JWT (HS256) keys: "id:base64-of-at-least-32-bytes[:verify_until RFC 3339]".
    pub signing_keys: Vec<engine::settings::Secret>,
    pub active_signing_key: String,
    pub access_ttl_s: u64,
    pub refresh_ttl_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("e-mail or password is wrong")]
    BadCredentials,
    #[error("the access token is missing, malformed, expired or not signed by a current key")]
    BadToken,
    #[error("the refresh token is unknown, expired or revoked")]
    BadRefresh,
    #[error("the refresh token was already used: every session of this login is revoked")]
    RefreshReused,
    #[error("a user with this e-mail already exists")]
    EmailTaken,
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Seller,
    Ops,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Seller => "seller",
            Role::Ops => "ops",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "seller" => Some(Role::Seller),
            "ops" => Some(Role::Ops),
            _ => None,
        }
    }
}

/// The authenticated caller, as carried by an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub tenant_id: i64,
    pub role: Role,
}

impl User {
    pub fn is_ops(&self) -> bool {
        self.role == Role::Ops
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    tid: i64,
    role: Role,
    iat: i64,
    exp: i64,
}

/// A signing key spec parsed: id, secret, end of its grace window.
pub type SigningKeySpec = (String, Vec<u8>, Option<DateTime<Utc>>);

/// Parses "id:base64[:verify_until]" key specs (shared with the config validation).
pub fn parse_signing_key(spec: &str) -> Result<SigningKeySpec, String> {
    let mut parts = spec.splitn(3, ':');
    let id = parts.next().unwrap_or_default();
    let b64 = parts.next().ok_or_else(|| {
        format!(
            "signing key {:?} is not \"id:base64[:verify_until]\"",
            id_of(spec)
        )
    })?;
    if id.is_empty() {
        return Err("a signing key has an empty id".into());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("signing key {id:?}: the secret is not base64"))?;
    if raw.len() < 32 {
        return Err(format!(
            "signing key {id:?}: the secret must be at least 32 bytes"
        ));
    }
    let until = match parts.next() {
        None | Some("") => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| format!("signing key {id:?}: verify_until {t:?} is not RFC 3339"))?
                .with_timezone(&Utc),
        ),
    };
    Ok((id.to_string(), raw, until))
}

fn id_of(spec: &str) -> String {
    spec.split(':')
        .next()
        .unwrap_or("?")
        .chars()
        .take(20)
        .collect()
}

struct VerifyKey {
    key: DecodingKey,
    until: Option<DateTime<Utc>>,
}

/// Signs and verifies access tokens with the configured keys.
pub struct Signer {
    active: String,
    encoding: EncodingKey,
    keys: HashMap<String, VerifyKey>,
    ttl: chrono::Duration,
}

impl Signer {
    pub fn new(s: &AuthSettings) -> Result<Self, String> {
        let mut keys = HashMap::new();
        let mut encoding = None;
        for spec in &s.signing_keys {
            let (id, raw, until) = parse_signing_key(spec.expose())?;
            if id == s.active_signing_key {
                if until.is_some() {
                    return Err(format!(
                        "the active signing key {id:?} cannot have a verify_until"
                    ));
                }
                encoding = Some(EncodingKey::from_secret(&raw));
            }
            keys.insert(
                id,
                VerifyKey {
                    key: DecodingKey::from_secret(&raw),
                    until,
                },
            );
        }
        let encoding = encoding.ok_or_else(|| {
            format!(
                "active_signing_key {:?} is not among signing_keys",
                s.active_signing_key
            )
        })?;
        Ok(Self {
            active: s.active_signing_key.clone(),
            encoding,
            keys,
            ttl: chrono::Duration::seconds(s.access_ttl_s as i64),
        })
    }

    pub fn access_ttl_s(&self) -> i64 {
        self.ttl.num_seconds()
    }

    pub fn issue(&self, u: &User) -> String {
        let now = Utc::now();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.active.clone());
        let claims = Claims {
            sub: u.id.to_string(),
            tid: u.tenant_id,
            role: u.role,
            iat: now.timestamp(),
            exp: (now + self.ttl).timestamp(),
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::BadToken)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::BadToken);
        }
        let k = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(AuthError::BadToken)?;
        if k.until.is_some_and(|u| u <= Utc::now()) {
            return Err(AuthError::BadToken);
        }
        let mut v = Validation::new(Algorithm::HS256);
        // Tokens are issued and checked by this platform's own processes: no clock skew to allow.
        v.leeway = 0;
        let data =
            jsonwebtoken::decode::<Claims>(token, &k.key, &v).map_err(|_| AuthError::BadToken)?;
        let c = data.claims;
        Ok(User {
            id: c.sub.parse().map_err(|_| AuthError::BadToken)?,
            tenant_id: c.tid,
            role: c.role,
        })
    }
}

/// An Argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes fit a salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// Constant-time check of `password` against a PHC string.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A valid hash of nothing anyone knows: login verifies against it when the e-mail is unknown.
fn decoy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password(&format!("{:x}", rand::random::<u128>())))
}

pub fn validate_new_user(email: &str, password: &str) -> Result<(), AuthError> {
    let at = email.find('@');
    if email.len() < 3 || email.len() > 320 || at.is_none_or(|i| i == 0 || i == email.len() - 1) {
        return Err(AuthError::Invalid(format!(
            "{email:?} is not an e-mail address"
        )));
    }
    if password.chars().count() < 10 {
        return Err(AuthError::Invalid(
            "the password must have at least 10 characters".into(),
        ));
    }
    Ok(())
}

/// Creates a user. Without `tenant_id`, a new tenant named after the e-mail is created for them
/// (every seller starts as their own business; ops users get one to hold their own objects).
pub async fn create_user(
    pool: &PgPool,
    email: &str,
    password: &str,
    role: Role,
    tenant_id: Option<i64>,
) -> Result<User, AuthError> {
    validate_new_user(email, password)?;
    let hash = hash_password(password);
    let mut tx = pool.begin().await?;
    let tenant_id = match tenant_id {
        Some(t) => t,
        None => {
            sqlx::query_scalar("INSERT INTO tenants (name) VALUES ($1) RETURNING id")
                .bind(email)
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO users (tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (lower(email)) DO NOTHING RETURNING id",
    )
    .bind(tenant_id)
    .bind(email)
    .bind(&hash)
    .bind(role.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let id = id.ok_or(AuthError::EmailTaken)?;
    tx.commit().await?;
    Ok(User {
        id,
        tenant_id,
        role,
    })
}

/// What a login or a refresh hands out.
#[derive(Debug, Clone, Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    pub user: User,
}

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

async fn new_refresh(
    conn: &mut sqlx::PgConnection,
    user: i64,
    family: &str,
    ttl_s: u64,
) -> Result<String, sqlx::Error> {
    let token = random_token();
    sqlx::query(
        "INSERT INTO refresh_tokens (user_id, family, token_hash, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(user)
    .bind(family)
    .bind(sha256(&token))
    .bind(ttl_s as f64)
    .execute(conn)
    .await?;
    Ok(token)
}

/// Password login: a fresh access token and the first refresh token of a new family.
pub async fn login(
    pool: &PgPool,
    signer: &Signer,
    s: &AuthSettings,
    email: &str,
    password: &str,
) -> Result<Tokens, AuthError> {
    let row: Option<(i64, i64, String, String)> = sqlx::query_as(
        "SELECT id, tenant_id, role, password_hash FROM users
          WHERE lower(email) = lower($1) AND disabled_at IS NULL",
    )
    .bind(email)
    .fetch_optional(pool)
    .await?;
    let hash = row
        .as_ref()
        .map_or(decoy_hash(), |r| r.3.as_str())
        .to_string();
    let pw = password.to_string();
    // Argon2 takes tens of milliseconds of CPU: off the async threads.
    let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
        .await
        .unwrap_or(false);
    let Some((id, tenant_id, role, _)) = row.filter(|_| ok) else {
        return Err(AuthError::BadCredentials);
    };
    let user = User {
        id,
        tenant_id,
        role: Role::parse(&role).ok_or(AuthError::BadCredentials)?,
    };
    let family = random_token();
    let refresh = new_refresh(&mut *pool.acquire().await?, id, &family, s.refresh_ttl_s).await?;
    Ok(Tokens {
        access_token: signer.issue(&user),
        refresh_token: refresh,
        expires_in: signer.access_ttl_s(),
        user,
    })
}

/// Exchanges a refresh token for a new pair (rotation). Reuse of a consumed token revokes the
/// family, so a stolen token works at most until its owner (or the thief) refreshes once.
pub async fn refresh(
    pool: &PgPool,
    signer: &Signer,
    s: &AuthSettings,
    refresh_token: &str,
) -> Result<Tokens, AuthError> {
    let mut tx = pool.begin().await?;
    // The row lock makes two concurrent uses of one token see each other: one wins, one is reuse.
    #[derive(sqlx::FromRow)]
    struct Row {
        id: i64,
        user_id: i64,
        family: String,
        used: bool,
        revoked: bool,
        expired: bool,
        tenant_id: i64,
        role: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT r.id, r.user_id, r.family, r.used_at IS NOT NULL AS used,
                r.revoked_at IS NOT NULL AS revoked,
                r.expires_at <= now() OR u.disabled_at IS NOT NULL AS expired, u.tenant_id, u.role
           FROM refresh_tokens r JOIN users u ON u.id = r.user_id
          WHERE r.token_hash = $1 FOR UPDATE OF r",
    )
    .bind(sha256(refresh_token))
    .fetch_optional(&mut *tx)
    .await?;
    let Row {
        id,
        user_id,
        family,
        used,
        revoked,
        expired,
        tenant_id,
        role,
    } = row.ok_or(AuthError::BadRefresh)?;
    if used && !revoked {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL",
        )
        .bind(&family)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::warn!(user_id, "refresh token reused: its family is revoked");
        return Err(AuthError::RefreshReused);
    }
    if used || revoked || expired {
        return Err(AuthError::BadRefresh);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let next = new_refresh(&mut tx, user_id, &family, s.refresh_ttl_s).await?;
    tx.commit().await?;
    let user = User {
        id: user_id,
        tenant_id,
        role: Role::parse(&role).ok_or(AuthError::BadRefresh)?,
    };
    Ok(Tokens {
        access_token: signer.issue(&user),
        refresh_token: next,
        expires_in: signer.access_ttl_s(),
        user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(keys: &[String], active: &str) -> AuthSettings {
        let mut s = crate::Settings::defaults().auth;
        s.signing_keys = keys.iter().map(|k| Secret::new(k.clone())).collect();
        s.active_signing_key = active.into();
        s
    }

    fn key(id: &str, byte: u8, until: Option<&str>) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        match until {
            Some(u) => format!("{id}:{b}:{u}"),
            None => format!("{id}:{b}"),
        }
    }

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn tokens_carry_kid_and_old_keys_verify_until_their_grace_ends() {
        let u = User {
            id: 7,
            tenant_id: 3,
            role: Role::Seller,
        };
        let old = Signer::new(&settings(&[key("k1", 1, None)], "k1")).unwrap();
        let t = old.issue(&u);
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.kid.as_deref(), Some("k1"));
        assert_eq!(old.verify(&t).unwrap(), u);

        let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let past = (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
        let rotated = Signer::new(&settings(
            &[key("k2", 2, None), key("k1", 1, Some(&future))],
            "k2",
        ))
        .unwrap();
        assert_eq!(
            rotated.verify(&t).unwrap(),
            u,
            "old key in its grace window"
        );
        let t2 = rotated.issue(&u);
        assert_eq!(
            jsonwebtoken::decode_header(&t2).unwrap().kid.as_deref(),
            Some("k2")
        );
        assert!(old.verify(&t2).is_err(), "unknown kid");
        let expired = Signer::new(&settings(
            &[key("k2", 2, None), key("k1", 1, Some(&past))],
            "k2",
        ))
        .unwrap();
        assert!(expired.verify(&t).is_err(), "grace window over");
        let dropped = Signer::new(&settings(&[key("k2", 2, None)], "k2")).unwrap();
        assert!(dropped.verify(&t).is_err(), "key removed");
        // A token whose kid names a key but that another key signed does not verify.
        let forged = Signer::new(&settings(&[key("k2", 9, None)], "k2"))
            .unwrap()
            .issue(&u);
        assert!(rotated.verify(&forged).is_err());
    }

    #[test]
    fn bad_signing_keys_are_refused() {
        assert!(Signer::new(&settings(&["k1:c2hvcnQ=".into()], "k1")).is_err());
        assert!(Signer::new(&settings(&[key("k1", 1, None)], "k9")).is_err());
        assert!(
            Signer::new(&settings(
                &[key("k1", 1, Some("2020-01-01T00:00:00Z"))],
                "k1"
            ))
            .is_err()
        );
    }
}
