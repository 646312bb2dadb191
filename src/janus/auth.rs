//! Janus's request authentication: an API secret shared by every client
//! (`apisecret`), tokens (`token`), or both, where either one is enough, as in the
//! Janus core. `info` and `ping` need neither. Tokens are either stored (given at start
//! or added through the Admin API, each with the plugins it may attach to) or, with a
//! token secret, signed by the application: `EXPIRY,janus,PLUGIN...:SIGNATURE`, where
//! SIGNATURE is the base64 HMAC-SHA1 of the part before the colon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;

use serde_json::{Map, Value};

use super::error::{code, JanusError};
use crate::relay::jsmpeg::constant_time_eq;

/// What a request must carry. Nothing configured: every request is allowed.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// `apisecret` must equal this.
    pub api_secret: Option<String>,
    /// Token authentication is on, with these tokens.
    pub tokens: Option<Tokens>,
}

/// Which tokens are valid.
#[derive(Clone, Debug)]
pub enum Tokens {
    /// One of these (none: every token is refused); shared with the Admin API.
    Stored(TokenStore),
    /// Any unexpired token signed with this secret (Janus's `token_auth_secret`).
    Signed(String),
}

impl Tokens {
    fn accepts(&self, token: &str) -> bool {
        match self {
            Tokens::Stored(store) => store.contains(token),
            Tokens::Signed(secret) => signed_token_plugins(secret, token, unix_now()).is_some(),
        }
    }
}

/// Most tokens the store holds, so that adding tokens cannot take all memory.
pub const MAX_STORED_TOKENS: usize = 10_000;
/// Longest stored token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Why a token could not be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    Full,
    TooLong,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Full => write!(f, "{MAX_STORED_TOKENS} tokens are stored already"),
            StoreError::TooLong => write!(f, "tokens are at most {MAX_TOKEN_BYTES} bytes"),
        }
    }
}

/// A stored token and the plugins it may attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub token: String,
    pub plugins: Vec<String>,
}

/// Janus's stored tokens (token authentication without a token secret). Clones share
/// the store: the Janus API checks what the Admin API changes, from the next request
/// on.
#[derive(Clone)]
pub struct TokenStore(Arc<Mutex<Stored>>);

/// Tokens are found by a keyed hash of their text: one lookup per request however
/// many there are, and, the key being random, the time a lookup takes says nothing
/// about how close a guess came to a stored token.
struct Stored {
    key: [u8; 32],
    tokens: HashMap<[u8; 20], Entry>,
    added: u64,
}

struct Entry {
    token: StoredToken,
    /// When it was added, to list tokens in that order.
    order: u64,
}

impl Default for TokenStore {
    fn default() -> Self {
        TokenStore(Arc::new(Mutex::new(Stored {
            key: rand::random(),
            tokens: HashMap::new(),
            added: 0,
        })))
    }
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenStore({} tokens)", self.lock().tokens.len())
    }
}

impl Stored {
    fn digest(&self, token: &str) -> [u8; 20] {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn get_mut(&mut self, token: &str) -> Option<&mut StoredToken> {
        let digest = self.digest(token);
        self.tokens
            .get_mut(&digest)
            .map(|e| &mut e.token)
            .filter(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
    }
}

impl TokenStore {
    /// `tokens`, each allowed to use every one of `plugins` (as Janus's `add_token`
    /// without a plugin list).
    pub fn new(tokens: &[String], plugins: &[&str]) -> TokenStore {
        let store = TokenStore::default();
        for token in tokens {
            if store.insert(token).is_ok() {
                for plugin in plugins {
                    store.allow(token, plugin);
                }
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Stored> {
        // Every operation leaves the store consistent, so a poisoned lock is usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn contains(&self, token: &str) -> bool {
        self.lock().get_mut(token).is_some()
    }

    /// Whether `token` is stored and may attach to `plugin`.
    pub fn may_use(&self, token: &str, plugin: &str) -> bool {
        self.lock()
            .get_mut(token)
            .is_some_and(|t| t.plugins.iter().any(|p| p == plugin))
    }

    /// Store `token` (with no plugins yet); a token already stored is left as it is.
    pub fn insert(&self, token: &str) -> Result<(), StoreError> {
        let mut stored = self.lock();
        if stored.get_mut(token).is_some() {
            return Ok(());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(StoreError::TooLong);
        }
        if stored.tokens.len() >= MAX_STORED_TOKENS {
            return Err(StoreError::Full);
        }
        let digest = stored.digest(token);
        let order = stored.added;
        stored.added += 1;
        stored.tokens.insert(
            digest,
            Entry {
                token: StoredToken {
                    token: token.to_string(),
                    plugins: Vec::new(),
                },
                order,
            },
        );
        Ok(())
    }

    /// Let `token` attach to `plugin`; false when the token is not stored.
    pub fn allow(&self, token: &str, plugin: &str) -> bool {
        let mut stored = self.lock();
        let Some(t) = stored.get_mut(token) else {
            return false;
        };
        if !t.plugins.iter().any(|p| p == plugin) {
            t.plugins.push(plugin.to_string());
        }
        true
    }

    /// Stop `token` from attaching to `plugin`; false when the token is not stored.
    pub fn disallow(&self, token: &str, plugin: &str) -> bool {
        let mut stored = self.lock();
        let Some(t) = stored.get_mut(token) else {
            return false;
        };
        t.plugins.retain(|p| p != plugin);
        true
    }

    /// Forget `token`; false when it was not stored.
    pub fn remove(&self, token: &str) -> bool {
        let mut stored = self.lock();
        if stored.get_mut(token).is_none() {
            return false;
        }
        let digest = stored.digest(token);
        stored.tokens.remove(&digest).is_some()
    }

    /// The plugins `token` may attach to; `None` when it is not stored.
    pub fn plugins(&self, token: &str) -> Option<Vec<String>> {
        self.lock().get_mut(token).map(|t| t.plugins.clone())
    }

    /// Every stored token, in the order they were added.
    pub fn list(&self) -> Vec<StoredToken> {
        let stored = self.lock();
        let mut entries: Vec<&Entry> = stored.tokens.values().collect();
        entries.sort_unstable_by_key(|e| e.order);
        entries.into_iter().map(|e| e.token.clone()).collect()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The plugins a signed token names, if its signature is right, its realm is `janus`
/// and it has not expired at `now` (Unix seconds).
pub fn signed_token_plugins<'a>(secret: &str, token: &'a str, now: u64) -> Option<Vec<&'a str>> {
    let (data, signature) = token.split_once(':')?;
    if signature.contains(':') {
        return None;
    }
    let mut fields = data.split(',');
    let expiry: u64 = fields.next()?.trim().parse().ok()?;
    if fields.next()? != "janus" || now > expiry {
        return None;
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(data.as_bytes());
    let expected = base64(&mac.finalize().into_bytes());
    constant_time_eq(expected.as_bytes(), signature.as_bytes()).then(|| fields.collect())
}

/// Standard base64 with padding (as GLib's `g_base64_encode`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Auth {
    pub fn is_enabled(&self) -> bool {
        self.api_secret.is_some() || self.tokens.is_some()
    }

    /// What requests must carry, for the start-up log line.
    pub fn describe(&self) -> &'static str {
        match (&self.api_secret, &self.tokens) {
            (None, None) => "none",
            (Some(_), None) => "api secret",
            (None, Some(Tokens::Stored(_))) => "listed tokens",
            (None, Some(Tokens::Signed(_))) => "signed tokens",
            (Some(_), Some(Tokens::Stored(_))) => "api secret or listed tokens",
            (Some(_), Some(Tokens::Signed(_))) => "api secret or signed tokens",
        }
    }

    /// Whether a request carrying these values may go on.
    pub fn allows(&self, apisecret: Option<&str>, token: Option<&str>) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let secret_ok = matches!((&self.api_secret, apisecret),
            (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()));
        let token_ok = match (&self.tokens, token) {
            (Some(tokens), Some(got)) => tokens.accepts(got),
            _ => false,
        };
        secret_ok || token_ok
    }

    /// Check a request's `apisecret` and `token` fields (ignored unless strings, as in
    /// Janus).
    pub fn check_request(&self, fields: &Map<String, Value>) -> Result<(), JanusError> {
        let get = |key: &str| fields.get(key).and_then(Value::as_str);
        if self.allows(get("apisecret"), get("token")) {
            Ok(())
        } else {
            Err(unauthorized())
        }
    }

    /// `attach`: a token that is given must be allowed to use the plugin (a signed
    /// one must name it, a stored one must have been granted it), as in Janus, even
    /// when the API secret let the request in.
    pub fn check_plugin(
        &self,
        fields: &Map<String, Value>,
        plugin: &str,
    ) -> Result<(), JanusError> {
        let (Some(tokens), Some(token)) =
            (&self.tokens, fields.get("token").and_then(Value::as_str))
        else {
            return Ok(());
        };
        let allowed = match tokens {
            Tokens::Signed(secret) => signed_token_plugins(secret, token, unix_now())
                .is_some_and(|plugins| plugins.contains(&plugin)),
            Tokens::Stored(store) => store.may_use(token, plugin),
        };
        if allowed {
            Ok(())
        } else {
            Err(JanusError::new(
                code::UNAUTHORIZED_PLUGIN,
                format!("Provided token can't access plugin '{plugin}'"),
            ))
        }
    }

    /// The stored tokens, when tokens are stored rather than signed.
    pub fn token_store(&self) -> Option<&TokenStore> {
        match &self.tokens {
            Some(Tokens::Stored(store)) => Some(store),
            _ => None,
        }
    }

    /// Check a long poll's `apisecret` and `token` query parameters.
    pub fn check_query(&self, query: &HashMap<String, String>) -> bool {
        let get = |key: &str| query.get(key).map(String::as_str);
        self.allows(get("apisecret"), get("token"))
    }
}

/// Janus's error for a missing or wrong secret or token.
pub fn unauthorized() -> JanusError {
    JanusError::new(
        code::UNAUTHORIZED,
        "Unauthorized request (wrong or missing secret/token)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGIN: &str = "janus.plugin.ustreamer";

    fn auth(secret: Option<&str>, tokens: Option<&[&str]>) -> Auth {
        Auth {
            api_secret: secret.map(str::to_string),
            tokens: tokens.map(|t| {
                let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
                Tokens::Stored(TokenStore::new(&t, &[PLUGIN]))
            }),
        }
    }

    #[test]
    fn nothing_configured_allows_everything() {
        assert!(Auth::default().allows(None, None));
        assert!(Auth::default().allows(Some("x"), Some("y")));
    }

    #[test]
    fn secret_must_match_exactly() {
        let a = auth(Some("janusrocks"), None);
        assert!(a.allows(Some("janusrocks"), None));
        assert!(!a.allows(None, None));
        assert!(!a.allows(Some("janusrock"), None));
        assert!(!a.allows(Some("janusrocks "), None));
        // A token is no use when token authentication is off.
        assert!(!a.allows(None, Some("janusrocks")));
    }

    #[test]
    fn tokens_must_be_stored() {
        let a = auth(None, Some(&["alpha", "beta"]));
        assert!(a.allows(None, Some("beta")));
        assert!(!a.allows(None, Some("gamma")));
        assert!(!a.allows(Some("beta"), None));
        assert!(!auth(None, Some(&[])).allows(None, Some("")));
    }

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn store_changes_are_seen_by_every_clone() {
        let a = auth(None, Some(&["given"]));
        let store = a.token_store().unwrap().clone();
        assert!(!a.allows(None, Some("added")));
        store.insert("added").unwrap();
        assert!(a.allows(None, Some("added")), "a token works once added");
        assert_eq!(store.plugins("added"), Some(vec![]));
        // A token with no plugin opens sessions but cannot attach, as in Janus.
        let with = |t: &str| fields(serde_json::json!({ "token": t }));
        assert_eq!(
            a.check_plugin(&with("added"), PLUGIN).unwrap_err().code,
            405
        );
        assert!(store.allow("added", PLUGIN));
        assert!(a.check_plugin(&with("added"), PLUGIN).is_ok());
        assert!(store.disallow("added", PLUGIN));
        assert!(a.check_plugin(&with("added"), PLUGIN).is_err());
        assert!(store.remove("added"));
        assert!(!a.allows(None, Some("added")), "a removed token is refused");
        assert!(!store.remove("added"));
        assert!(!store.allow("added", PLUGIN) && !store.disallow("added", PLUGIN));
        assert_eq!(store.plugins("added"), None);
        // Tokens given at start may use every plugin.
        assert!(a.check_plugin(&with("given"), PLUGIN).is_ok());
    }

    #[test]
    fn a_token_that_is_not_stored_cannot_attach_even_with_the_secret() {
        let a = auth(Some("s3cret"), Some(&["tok"]));
        let req = fields(serde_json::json!({"apisecret": "s3cret", "token": "other"}));
        assert!(a.check_request(&req).is_ok());
        assert_eq!(a.check_plugin(&req, PLUGIN).unwrap_err().code, 405);
        // Without a token the secret is enough.
        let req = fields(serde_json::json!({"apisecret": "s3cret"}));
        assert!(a.check_plugin(&req, PLUGIN).is_ok());
    }

    #[test]
    fn store_is_bounded_and_keeps_its_order() {
        let store = TokenStore::default();
        assert_eq!(
            store.insert(&"x".repeat(MAX_TOKEN_BYTES + 1)),
            Err(StoreError::TooLong)
        );
        for i in 0..MAX_STORED_TOKENS {
            store.insert(&format!("t{i}")).unwrap();
        }
        assert_eq!(store.insert("one-more"), Err(StoreError::Full));
        // Adding a token that is there already is no change, so it is fine when full.
        assert_eq!(store.insert("t7"), Ok(()));
        let list = store.list();
        assert_eq!(list.len(), MAX_STORED_TOKENS);
        assert_eq!(
            (list[0].token.as_str(), list[9].token.as_str()),
            ("t0", "t9")
        );
        store.allow("t3", "a");
        store.allow("t3", "b");
        store.allow("t3", "a");
        assert_eq!(store.plugins("t3"), Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn either_is_enough_when_both_are_on() {
        let a = auth(Some("s3cret"), Some(&["tok"]));
        assert!(a.allows(Some("s3cret"), None));
        assert!(a.allows(None, Some("tok")));
        assert!(a.allows(Some("wrong"), Some("tok")));
        assert!(!a.allows(Some("wrong"), Some("wrong")));
    }

    /// A token as Janus's documentation signs it.
    fn sign(secret: &str, data: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(data.as_bytes());
        format!("{data}:{}", base64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn base64_as_glib() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn signed_tokens_check_signature_realm_and_expiry() {
        let token = "1700000000,janus,janus.plugin.ustreamer";
        let signed = sign("janus", token);
        let hmac = signed.split_once(':').unwrap().1;
        assert_eq!(hmac.len(), 28, "20 bytes of SHA-1 in base64: {hmac}");
        assert_eq!(
            signed_token_plugins("janus", &signed, 1_700_000_000),
            Some(vec!["janus.plugin.ustreamer"])
        );
        assert_eq!(signed_token_plugins("janus", &signed, 1_700_000_001), None);
        assert_eq!(signed_token_plugins("other", &signed, 0), None);
        let other_realm = sign("janus", "1700000000,admin,janus.plugin.ustreamer");
        assert_eq!(signed_token_plugins("janus", &other_realm, 0), None);
        let tampered = signed.replace("1700000000", "1800000000");
        assert_eq!(signed_token_plugins("janus", &tampered, 0), None);
        for junk in ["", ":", "x:y", "1,janus", "1,janus:a:b", "-1,janus:x"] {
            assert_eq!(signed_token_plugins("janus", junk, 0), None, "{junk}");
        }
    }

    #[test]
    fn signed_tokens_must_name_the_plugin_to_attach() {
        let a = Auth {
            api_secret: None,
            tokens: Some(Tokens::Signed("k".into())),
        };
        let far = unix_now() + 3600;
        let good = sign("k", &format!("{far},janus,janus.plugin.ustreamer"));
        let other = sign("k", &format!("{far},janus,janus.plugin.echotest"));
        let fields = |t: &str| {
            serde_json::json!({ "token": t })
                .as_object()
                .unwrap()
                .clone()
        };
        assert!(a.allows(None, Some(&good)));
        assert!(a.allows(None, Some(&other)));
        assert!(!a.allows(None, Some(&sign("k", "1,janus,janus.plugin.ustreamer"))));
        assert!(a
            .check_plugin(&fields(&good), "janus.plugin.ustreamer")
            .is_ok());
        let err = a
            .check_plugin(&fields(&other), "janus.plugin.ustreamer")
            .unwrap_err();
        assert_eq!(err.code, 405);
        assert_eq!(
            err.reason,
            "Provided token can't access plugin 'janus.plugin.ustreamer'"
        );
    }

    #[test]
    fn request_fields_of_other_types_count_as_absent() {
        let a = auth(Some("1234"), None);
        let fields = |v: Value| v.as_object().unwrap().clone();
        assert!(a
            .check_request(&fields(serde_json::json!({"apisecret": "1234"})))
            .is_ok());
        let err = a
            .check_request(&fields(serde_json::json!({"apisecret": 1234})))
            .unwrap_err();
        assert_eq!(err.code, 403);
    }
}
