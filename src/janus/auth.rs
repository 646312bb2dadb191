//! Janus's request authentication: an API secret shared by every client
//! (`apisecret`), stored tokens (`token`), or both, where either one is enough, as in
//! the Janus core. `info` and `ping` need neither.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::{code, JanusError};
use crate::relay::jsmpeg::constant_time_eq;

/// What a request must carry. Nothing configured: every request is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// `apisecret` must equal this.
    pub api_secret: Option<String>,
    /// Token authentication is on: `token` must be one of these. An empty list refuses
    /// every token.
    pub tokens: Option<Vec<String>>,
}

impl Auth {
    pub fn is_enabled(&self) -> bool {
        self.api_secret.is_some() || self.tokens.is_some()
    }

    /// Whether a request carrying these values may go on.
    pub fn allows(&self, apisecret: Option<&str>, token: Option<&str>) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let secret_ok = matches!((&self.api_secret, apisecret),
            (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()));
        // Every stored token is compared, so the time taken says nothing about which
        // one came close.
        let token_ok = match (&self.tokens, token) {
            (Some(tokens), Some(got)) => tokens.iter().fold(false, |found, t| {
                constant_time_eq(t.as_bytes(), got.as_bytes()) | found
            }),
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

    fn auth(secret: Option<&str>, tokens: Option<&[&str]>) -> Auth {
        Auth {
            api_secret: secret.map(str::to_string),
            tokens: tokens.map(|t| t.iter().map(|s| s.to_string()).collect()),
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

    #[test]
    fn either_is_enough_when_both_are_on() {
        let a = auth(Some("s3cret"), Some(&["tok"]));
        assert!(a.allows(Some("s3cret"), None));
        assert!(a.allows(None, Some("tok")));
        assert!(a.allows(Some("wrong"), Some("tok")));
        assert!(!a.allows(Some("wrong"), Some("wrong")));
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
