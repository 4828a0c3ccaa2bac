//! Identifier newtypes (DESIGN §1). Each is built only through `parse` (or `generate`), so a value
//! that exists is valid and handlers never re-check strings.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;

use super::DomainError;

/// Bytes from the OS CSPRNG for ids, drawn [`POOL_BYTES`] at a time per thread and each handed
/// out once: an intake request takes three random values (its event id's, its execution id's,
/// its correlation id), and one `getrandom` call now serves about a dozen requests instead of
/// three calls each (issue 13: 3 % of an HTTP worker's samples). Secrets (webhook tokens, API
/// keys, signing secrets) and requests over a quarter of the pool go to the OS directly.
///
/// Not for secrets: each thread holds up to [`POOL_BYTES`] of the random parts of ids it has
/// not made yet, which a dump of the process's memory would show (as it would show the
/// database key and every key in use). Not fork-safe: a forked child that made ids would repeat
/// its parent's; the only fork (the step spawner's) is in another process, which makes none.
pub fn fill_random(buf: &mut [u8]) {
    use std::cell::RefCell;
    thread_local! {
        // The bytes not handed out yet are `pool[used..]`.
        static POOL: RefCell<(usize, [u8; POOL_BYTES])> = const { RefCell::new((POOL_BYTES, [0; POOL_BYTES])) };
    }
    if buf.len() > POOL_BYTES / 4 {
        OsRng.fill_bytes(buf);
        return;
    }
    let pooled = POOL.try_with(|pool| {
        let (used, pool) = &mut *pool.borrow_mut();
        if POOL_BYTES - *used < buf.len() {
            OsRng.fill_bytes(pool);
            *used = 0;
        }
        let taken = &mut pool[*used..*used + buf.len()];
        buf.copy_from_slice(taken);
        // What was handed out does not stay behind in the pool.
        taken.fill(0);
        *used += buf.len();
    });
    // A thread whose pool is already gone (its thread-locals being torn down) asks the OS.
    if pooled.is_err() {
        OsRng.fill_bytes(buf);
    }
}

/// How many bytes [`fill_random`] draws from the OS at a time.
const POOL_BYTES: usize = 512;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    fill_random(&mut buf);
    buf
}

/// Bytes for a secret (a webhook token, an API key), straight from the OS CSPRNG.
fn secret_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    OsRng.fill_bytes(&mut buf);
    buf
}

/// Milliseconds since the epoch, for ids that lead with the time they were made.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random (version 4) UUID from [`fill_random`], for correlation ids.
pub fn uuid_v4() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(random_bytes::<16>()).into_uuid()
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// An org, project, pipeline, trigger, stage, step or rule identifier:
    /// `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
    Identifier
);

impl Identifier {
    /// Parses an identifier; `what` names the field in the error message.
    pub fn parse(value: &str, what: &str) -> Result<Self, DomainError> {
        let mut chars = value.chars();
        let valid = value.len() <= 128
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(DomainError::invalid(format!(
                "{what} '{}' is not a valid identifier (expected {IDENTIFIER_PATTERN})",
                truncate_for_message(value)
            )))
        }
    }
}

/// What [`Identifier::parse`] accepts, as a regular expression (for messages and the API
/// document).
pub const IDENTIFIER_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$";

/// What [`AccountId::parse`] accepts, as a regular expression.
pub const ACCOUNT_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";

string_newtype!(
    /// An account identifier: `^[A-Za-z0-9_-]{1,64}$` (Harness account ids contain `-`).
    /// `_root` is reserved for the root key.
    AccountId
);

/// The reserved account id that owns the root key.
pub const ROOT_ACCOUNT: &str = "_root";

impl AccountId {
    /// Parses an account identifier.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        if Self::is_valid(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(DomainError::invalid(format!(
                "accountIdentifier '{}' is not a valid account identifier (expected {ACCOUNT_PATTERN})",
                truncate_for_message(value)
            )))
        }
    }

    /// Parses an account identifier that a user may create (not the reserved `_root`).
    pub fn parse_user(value: &str) -> Result<Self, DomainError> {
        let id = Self::parse(value)?;
        if id.is_root() {
            return Err(DomainError::invalid(format!(
                "accountIdentifier '{ROOT_ACCOUNT}' is reserved"
            )));
        }
        Ok(id)
    }

    fn is_valid(value: &str) -> bool {
        (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// True for the reserved root account.
    pub fn is_root(&self) -> bool {
        self.0 == ROOT_ACCOUNT
    }

    pub(crate) fn root() -> Self {
        Self(ROOT_ACCOUNT.to_owned())
    }
}

string_newtype!(
    /// A custom webhook token: 16 CSPRNG bytes, base64url without padding (22 chars).
    WebhookToken
);

impl WebhookToken {
    /// A fresh token from the OS CSPRNG.
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(secret_bytes::<16>()))
    }

    /// Parses a token as it appears in a URL; `None` when it cannot be one of ours.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == 22
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(value.to_owned()))
    }
}

/// SHA-256 of a webhook token as presented: the key tokens are looked up by, in the database
/// and in memory, so that no comparison ever runs on the token itself.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

string_newtype!(
    /// An eventCorrelationId: 12 bytes nobody can guess, as 24 lowercase hex chars. CSPRNG bytes
    /// from [`generate`](Self::generate); the SQLite store mints its own (see
    /// `store/sqlite/event_ids.rs`).
    EventId
);

impl EventId {
    /// A fresh, unguessable event id.
    pub fn generate() -> Self {
        Self(hex::encode(random_bytes::<12>()))
    }

    /// Parses an event id; `None` when it is not 24 lowercase hex chars.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == 24
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(value.to_owned()))
    }

    /// The id of these 12 bytes, for a store that mints its own (as unguessable as
    /// [`generate`](Self::generate)'s: see `store/sqlite/event_ids.rs`).
    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        Self(hex::encode(bytes))
    }

    /// The 12 bytes the id spells.
    pub fn to_bytes(&self) -> [u8; 12] {
        let mut bytes = [0u8; 12];
        // Cannot fail: `parse` and `from_bytes` only make 24 hex chars.
        let _ = hex::decode_to_slice(&self.0, &mut bytes);
        bytes
    }
}

string_newtype!(
    /// An outbound delivery id: 12 bytes as 24 lowercase hex chars. The first 6 are the time it
    /// was made, in milliseconds since the epoch (big-endian), the other 6 come from the OS
    /// CSPRNG. As with [`PlanExecutionId`], ids made close in time sort together, so the
    /// deliveries' primary key and their attempts' (keyed by delivery) take each new row on a
    /// page already written instead of on one of their own at a random place (issue 13). A
    /// delivery id is a name, not a credential: every route that takes one checks that the
    /// caller's key may manage the project's account, and finds the delivery only within that
    /// project and rule.
    DeliveryId
);

impl DeliveryId {
    /// A fresh delivery id, made now.
    pub fn generate() -> Self {
        Self::made_at(now_millis())
    }

    /// A fresh delivery id that leads with `millis`.
    fn made_at(millis: u64) -> Self {
        let mut bytes = [0u8; 12];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random_bytes::<6>());
        Self(hex::encode(bytes))
    }

    /// Parses a delivery id as given in a URL.
    pub fn parse(value: &str) -> Option<Self> {
        EventId::parse(value).map(|e| Self(e.0))
    }
}

string_newtype!(
    /// A planExecutionId: 16 bytes, base64url without padding (22 chars). The first 6 are the
    /// time it was made, in milliseconds since the epoch (big-endian), and the other 10 come from
    /// the OS CSPRNG: 80 bits nobody can guess, as a UUIDv7 or a ULID has. Ids made within the
    /// same millisecond share their first 8 chars, and ids made close in time share most of
    /// them, so the executions' primary key (on both backends) takes each new id next to the
    /// last ones, on a page already written, instead of on a page of its own at a random place
    /// (issue 13).
    PlanExecutionId
);

impl PlanExecutionId {
    /// A fresh execution id, made now.
    pub fn generate() -> Self {
        Self::made_at(now_millis())
    }

    /// A fresh execution id that leads with `millis`.
    fn made_at(millis: u64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random_bytes::<10>());
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses an execution id as it appears in a URL.
    pub fn parse(value: &str) -> Option<Self> {
        WebhookToken::parse(value).map(|t| Self(t.0))
    }
}

string_newtype!(
    /// The token of one claim of an execution, or of one claim of due deliveries: 16 CSPRNG
    /// bytes, base64url without padding (22 chars). Each claim gets a new one, so a worker (or
    /// a delivery attempt) whose lease was claimed again (on another node or on its own) can no
    /// longer write with its old token.
    LeaseToken
);

impl LeaseToken {
    /// A fresh token from the OS CSPRNG, through the pool of [`fill_random`] (it fences a
    /// worker's writes, and never leaves the process and its database).
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(random_bytes::<16>()))
    }

    /// Parses a token as a backend stored it.
    pub fn parse(value: &str) -> Option<Self> {
        WebhookToken::parse(value).map(|t| Self(t.0))
    }
}

string_newtype!(
    /// The id part of an API key: 24 lowercase hex chars.
    KeyId
);

impl KeyId {
    /// A fresh key id.
    pub fn generate() -> Self {
        Self(hex::encode(random_bytes::<12>()))
    }

    /// Parses a key id as given in a URL or inside a key.
    pub fn parse(value: &str) -> Option<Self> {
        EventId::parse(value).map(|e| Self(e.0))
    }
}

/// A presented or freshly generated API key, `pat.<account>.<keyId>.<secret>`.
///
/// `Debug` never prints the secret.
#[derive(Clone)]
pub struct ApiKey {
    full: String,
    account: AccountId,
    key_id: KeyId,
}

/// Length of the base62 secret part: 32 chars ≈ 190 bits.
const SECRET_LEN: usize = 32;

impl ApiKey {
    /// Generates a new key for `account` from the OS CSPRNG.
    pub fn generate(account: &AccountId) -> Self {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let key_id = KeyId::generate();
        let mut secret = String::with_capacity(SECRET_LEN);
        while secret.len() < SECRET_LEN {
            // Rejection sampling keeps every character uniformly likely.
            for b in secret_bytes::<48>() {
                if (b as usize) < 248 && secret.len() < SECRET_LEN {
                    secret.push(ALPHABET[b as usize % 62] as char);
                }
            }
        }
        Self {
            full: format!("pat.{account}.{key_id}.{secret}"),
            account: account.clone(),
            key_id,
        }
    }

    /// Parses a presented key; `None` when it is malformed.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split('.');
        let (pat, account, key_id, secret) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if pat != "pat" || parts.next().is_some() {
            return None;
        }
        let secret_ok = (16..=128).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !secret_ok || !AccountId::is_valid(account) {
            return None;
        }
        Some(Self {
            full: value.to_owned(),
            account: AccountId(account.to_owned()),
            key_id: KeyId::parse(key_id)?,
        })
    }

    /// The account the key claims to belong to.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The key's id (not secret).
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The whole key, secret included: only for hashing and for showing once at creation.
    pub fn expose_secret(&self) -> &str {
        &self.full
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(pat.{}.{}.***)", self.account, self.key_id)
    }
}

/// The account/org/project triple that scopes pipelines, triggers, events and executions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectRef {
    /// The account.
    pub account: AccountId,
    /// The org inside the account.
    pub org: Identifier,
    /// The project inside the org.
    pub project: Identifier,
}

impl fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.account, self.org, self.project)
    }
}

/// Cuts user input that is echoed into an error message to a sane length.
pub(crate) fn truncate_for_message(value: &str) -> String {
    const MAX: usize = 130;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_design_pattern() {
        assert!(Identifier::parse("CD_Docs", "x").is_ok());
        assert!(Identifier::parse("_a1", "x").is_ok());
        assert!(Identifier::parse(&"a".repeat(128), "x").is_ok());
        assert!(Identifier::parse(&"a".repeat(129), "x").is_err());
        assert!(Identifier::parse("1abc", "x").is_err());
        assert!(Identifier::parse("a-b", "x").is_err());
        assert!(Identifier::parse("", "x").is_err());
        assert!(Identifier::parse("é", "x").is_err());
    }

    #[test]
    fn account_ids_allow_dash_and_reserve_root() {
        assert!(AccountId::parse("px7xd_BFRCi-pfWPYXVjvw").is_ok());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse(&"a".repeat(65)).is_err());
        assert!(AccountId::parse("a.b").is_err());
        assert!(AccountId::parse_user("_root").is_err());
    }

    #[test]
    fn pooled_random_bytes_are_never_handed_out_twice() {
        // 1,000 draws of 12 bytes go through the 512-byte pool 23 times; a refill that reused
        // or skipped the pool's bytes would repeat or zero values. Odd sizes misalign the rest.
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let mut buf = vec![0u8; 12 + i % 3];
            fill_random(&mut buf);
            assert!(buf.iter().any(|b| *b != 0), "draw {i} is all zeros");
            assert!(
                seen.insert(buf[..12].to_vec()),
                "draw {i} repeats an earlier one"
            );
        }
        // Past a quarter of the pool, straight from the OS.
        let mut large = [0u8; POOL_BYTES];
        fill_random(&mut large);
        assert!(large.iter().filter(|b| **b == 0).count() < 16);
        let id = uuid_v4();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn generated_ids_have_the_documented_shapes() {
        let token = WebhookToken::generate();
        assert_eq!(token.as_str().len(), 22);
        assert!(WebhookToken::parse(token.as_str()).is_some());
        let event = EventId::generate();
        assert!(EventId::parse(event.as_str()).is_some());
        assert_ne!(EventId::generate(), EventId::generate());
        assert_eq!(EventId::from_bytes(event.to_bytes()), event);
        assert_eq!(PlanExecutionId::generate().as_str().len(), 22);
        let lease = LeaseToken::generate();
        assert_eq!(LeaseToken::parse(lease.as_str()), Some(lease));
        assert_ne!(LeaseToken::generate(), LeaseToken::generate());
    }

    #[test]
    fn execution_ids_lead_with_their_time_and_end_with_80_random_bits() {
        let decode = |id: &PlanExecutionId| URL_SAFE_NO_PAD.decode(id.as_str()).unwrap();
        let millis = 1_796_428_800_123_u64; // 2026-12-04
        let (a, b) = (
            PlanExecutionId::made_at(millis),
            PlanExecutionId::made_at(millis),
        );
        assert_eq!(a.as_str().len(), 22);
        assert_eq!(PlanExecutionId::parse(a.as_str()), Some(a.clone()));
        // The same millisecond: the same first 6 bytes (8 chars), then random bytes.
        assert_eq!(decode(&a)[..6], millis.to_be_bytes()[2..]);
        assert_eq!(a.as_str()[..8], b.as_str()[..8]);
        assert_ne!(decode(&a)[6..], decode(&b)[6..]);
        // A millisecond later shares the first 7 chars here (the eighth holds the low 6 bits).
        let later = PlanExecutionId::made_at(millis + 1);
        assert_eq!(later.as_str()[..7], a.as_str()[..7]);
        assert_ne!(later.as_str()[..8], a.as_str()[..8]);
        // `generate` leads with the clock's time.
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let now = decode(&PlanExecutionId::generate());
        let mut lead = [0u8; 8];
        lead[2..].copy_from_slice(&now[..6]);
        let made = u64::from_be_bytes(lead);
        assert!(
            (before..before + 60_000).contains(&made),
            "{made} vs {before}"
        );
    }

    #[test]
    fn delivery_ids_lead_with_their_time_and_end_with_48_random_bits() {
        let millis = 1_796_428_800_123_u64; // 2026-12-04
        let (a, b) = (DeliveryId::made_at(millis), DeliveryId::made_at(millis));
        assert_eq!(DeliveryId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.as_str()[..12], format!("{millis:012x}"));
        assert_eq!(a.as_str()[..12], b.as_str()[..12]);
        assert_ne!(a.as_str()[12..], b.as_str()[12..]);
        // Later ids sort after earlier ones, whatever their random part.
        let later = DeliveryId::made_at(millis + 1);
        assert!(later.as_str() > a.as_str() && later.as_str() > b.as_str());
        let made = u64::from_str_radix(&DeliveryId::generate().as_str()[..12], 16).unwrap();
        let now = now_millis();
        assert!((now - 60_000..=now).contains(&made), "{made} vs {now}");
    }

    #[test]
    fn generated_keys_parse_back_and_hide_their_secret() {
        let acc = AccountId::parse("acc-1").unwrap();
        let key = ApiKey::generate(&acc);
        let parsed = ApiKey::parse(key.expose_secret()).expect("parses");
        assert_eq!(parsed.account(), &acc);
        assert_eq!(parsed.key_id(), key.key_id());
        let secret = key.expose_secret().rsplit('.').next().unwrap().to_owned();
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(!format!("{key:?}").contains(&secret));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "pat",
            "pat.acc.0123456789abcdef01234567",
            "pat.acc.0123456789abcdef01234567.short",
            "tok.acc.0123456789abcdef01234567.aaaaaaaaaaaaaaaaaaaa",
            "pat.acc.XYZ.aaaaaaaaaaaaaaaaaaaa",
            "pat.a c.0123456789abcdef01234567.aaaaaaaaaaaaaaaaaaaa",
            "pat.acc.0123456789abcdef01234567.aaaaaaaaaaaaaaaaaaaa.extra",
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }
}
