//! Janus's Admin API, on listeners of its own ([`http`], [`ws`]): stored tokens
//! (`add_token`, `allow_token`, `disallow_token`, `remove_token`, `list_tokens`) and a
//! look at the sessions (`list_sessions`, `list_handles`, `destroy_session`), besides
//! `info`, `ping` and `get_status`. Every request but `info` and `ping` must carry the
//! admin secret as `admin_secret` when one is set, as in Janus. Replies and error codes
//! follow the Janus core; the token changes act on the store the Janus API checks, so
//! they count from the next request on.

pub mod http;
pub mod ws;

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::auth::{StoreError, TokenStore};
use super::error::{code, JanusError};
use super::gateway::{Gateway, SessionEnd};
use super::message::{self, Request};
use super::ustreamer;
use crate::ratelog::{RateLimited, PERIOD};
use crate::relay::jsmpeg::constant_time_eq;

/// The WebSocket subprotocol of the Admin API.
pub const SUBPROTOCOL: &str = "janus-admin-protocol";

/// The plugins tokens may be granted; peregrine has one.
const PLUGINS: [&str; 1] = [ustreamer::PACKAGE];

static REFUSED: RateLimited = RateLimited::new(PERIOD);

/// The Admin API core, shared by its transports.
pub struct AdminApi {
    gateway: Arc<Gateway>,
    /// `admin_secret` must equal this; `None`: nothing is asked (loopback only).
    secret: Option<String>,
}

/// Which token request: they differ only in how they treat the plugin list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenVerb {
    /// `add_token`: stores the token; no plugins means every plugin.
    Add,
    /// `allow_token`: grants plugins to a stored token.
    Allow,
    /// `disallow_token`: takes plugins back.
    Disallow,
}

/// A token request's fields, checked as Janus checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenChange {
    pub token: String,
    /// `plugins` as sent (may hold anything); empty when absent.
    pub plugins: Vec<Value>,
}

/// The fields of `add_token`, `allow_token` and `disallow_token` (`token`, and
/// `plugins`, which only `add_token` may leave out).
pub fn parse_token_change(
    fields: &Map<String, Value>,
    verb: TokenVerb,
) -> Result<TokenChange, JanusError> {
    let token = parse_token(fields)?;
    let plugins = match fields.get("plugins") {
        None => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(JanusError::wrong_type("plugins", "an array")),
    };
    if verb != TokenVerb::Add && plugins.is_empty() {
        return Err(JanusError::wrong_type("plugins", "a non-empty array"));
    }
    Ok(TokenChange { token, plugins })
}

/// `token`, mandatory, a string (`remove_token` has nothing else). As in Janus, a
/// `null` counts as given, and of the wrong type.
pub fn parse_token(fields: &Map<String, Value>) -> Result<String, JanusError> {
    match fields.get("token") {
        None => Err(JanusError::missing("token")),
        Some(Value::String(t)) => Ok(t.clone()),
        Some(_) => Err(JanusError::wrong_type("token", "a string")),
    }
}

/// Janus's error when tokens are signed or token authentication is off.
fn not_stored_mode() -> JanusError {
    JanusError::new(code::UNKNOWN, "Stored-Token based authentication disabled")
}

fn success(transaction: &str, session_id: u64, extra: Value) -> Value {
    let mut reply = message::success(transaction, session_id);
    if let (Value::Object(reply), Value::Object(extra)) = (&mut reply, extra) {
        reply.extend(extra);
    }
    reply
}

impl AdminApi {
    pub fn new(gateway: Arc<Gateway>, secret: Option<String>) -> AdminApi {
        AdminApi { gateway, secret }
    }

    pub(super) fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Whether requests must carry an admin secret.
    pub fn asks_for_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Answer one Admin API request.
    pub fn handle(&self, req: &Request) -> Value {
        match self.dispatch(req) {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(verb = %req.verb_name, error = %e, "Admin API request failed");
                message::error_reply(Some(&req.transaction), req.session_id, &e)
            }
        }
    }

    fn check_secret(&self, req: &Request) -> Result<(), JanusError> {
        let Some(want) = &self.secret else {
            return Ok(());
        };
        let given = req.fields.get("admin_secret").and_then(Value::as_str);
        if given.is_some_and(|got| constant_time_eq(want.as_bytes(), got.as_bytes())) {
            return Ok(());
        }
        if let Some(n) = REFUSED.hit() {
            tracing::warn!(
                refused = n,
                verb = %req.verb_name,
                "Admin API request refused: wrong or missing admin_secret"
            );
        }
        Err(super::auth::unauthorized())
    }

    fn dispatch(&self, req: &Request) -> Result<Value, JanusError> {
        let (tx, s, h) = (req.transaction.as_str(), req.session_id, req.handle_id);
        let verb = req.verb_name.to_ascii_lowercase();
        if s == 0 && h == 0 {
            // As in Janus, info and ping need no secret.
            match verb.as_str() {
                "info" => return Ok(message::server_info(tx, &self.gateway.server_info())),
                "ping" => return Ok(message::pong(tx)),
                _ => {}
            }
            self.check_secret(req)?;
            return match verb.as_str() {
                "get_status" => Ok(self.status(tx)),
                "list_sessions" => {
                    let mut ids = self.gateway.session_ids();
                    ids.sort_unstable();
                    Ok(success(tx, 0, json!({ "sessions": ids })))
                }
                "add_token" => self.change_token(req, TokenVerb::Add),
                "allow_token" => self.change_token(req, TokenVerb::Allow),
                "disallow_token" => self.change_token(req, TokenVerb::Disallow),
                "remove_token" => self.remove_token(req),
                "list_tokens" => self.list_tokens(tx),
                _ => Err(JanusError::unhandled_at_path(&req.verb_name)),
            };
        }
        if s == 0 {
            // A handle without its session: Janus's bare "Session not found".
            return Err(JanusError::new(
                code::SESSION_NOT_FOUND,
                "Session not found",
            ));
        }
        self.check_secret(req)?;
        let handles = self
            .gateway
            .handle_ids(s)
            .ok_or_else(|| JanusError::no_session(s))?;
        if h != 0 {
            if !handles.contains(&h) {
                return Err(JanusError::no_handle(s, h));
            }
            // Nothing is done with a single handle here (handle_info, hangup_webrtc...).
            return Err(JanusError::unhandled_at_path(&req.verb_name));
        }
        match verb.as_str() {
            "list_handles" => {
                let mut handles = handles;
                handles.sort_unstable();
                Ok(success(tx, s, json!({ "handles": handles })))
            }
            "destroy_session" => {
                self.gateway.destroy_session(s, SessionEnd::AdminDestroyed);
                tracing::info!(session = s, "Janus session destroyed through the Admin API");
                Ok(message::success(tx, s))
            }
            _ => Err(JanusError::unhandled_at_path(&req.verb_name)),
        }
    }

    /// What Janus's `get_status` says that applies here.
    fn status(&self, tx: &str) -> Value {
        let settings = &self.gateway.settings;
        success(
            tx,
            0,
            json!({ "status": {
                "token_auth": settings.auth.tokens.is_some(),
                "session_timeout": settings.session_timeout.as_secs(),
            }}),
        )
    }

    fn store(&self) -> Result<&TokenStore, JanusError> {
        self.gateway
            .settings
            .auth
            .token_store()
            .ok_or_else(not_stored_mode)
    }

    /// `add_token`, `allow_token`, `disallow_token`, in the Janus core's order of checks.
    fn change_token(&self, req: &Request, verb: TokenVerb) -> Result<Value, JanusError> {
        let store = self.store()?;
        let change = parse_token_change(&req.fields, verb)?;
        let token = change.token.as_str();
        if verb == TokenVerb::Add {
            store.insert(token).map_err(|e: StoreError| {
                JanusError::new(code::UNKNOWN, format!("Error adding token ({e})"))
            })?;
        } else if !store.contains(token) {
            return Err(JanusError::new(
                code::TOKEN_NOT_FOUND,
                format!("Token {token} not found"),
            ));
        }
        let named: Vec<Option<&str>> = change
            .plugins
            .iter()
            .map(|p| p.as_str().filter(|name| PLUGINS.contains(name)))
            .collect();
        if change.plugins.is_empty() {
            // No list: every plugin, as in Janus.
            for plugin in PLUGINS {
                store.allow(token, plugin);
            }
        } else if verb != TokenVerb::Add && named.iter().any(Option::is_none) {
            return Err(JanusError::new(
                code::INVALID_ELEMENT_TYPE,
                "Invalid element type (some of the provided plugins are invalid)",
            ));
        } else {
            // add_token skips what is not a plugin of this server, as Janus does.
            for plugin in named.into_iter().flatten() {
                match verb {
                    TokenVerb::Add | TokenVerb::Allow => store.allow(token, plugin),
                    TokenVerb::Disallow => store.disallow(token, plugin),
                };
            }
        }
        let plugins = store.plugins(token).unwrap_or_default();
        tracing::info!(
            request = %req.verb_name,
            plugins = ?plugins,
            "Admin API changed a stored token"
        );
        Ok(success(
            req.transaction.as_str(),
            0,
            json!({ "data": { "plugins": plugins } }),
        ))
    }

    fn remove_token(&self, req: &Request) -> Result<Value, JanusError> {
        let store = self.store()?;
        let token = parse_token(&req.fields)?;
        if !store.remove(&token) {
            return Err(JanusError::new(code::UNKNOWN, "Error removing token"));
        }
        tracing::info!("Admin API removed a stored token");
        Ok(message::success(&req.transaction, 0))
    }

    /// As in Janus, only tokens that may use at least one plugin are listed.
    fn list_tokens(&self, tx: &str) -> Result<Value, JanusError> {
        let tokens: Vec<Value> = self
            .store()?
            .list()
            .into_iter()
            .filter(|t| !t.plugins.is_empty())
            .map(|t| json!({ "token": t.token, "allowed_plugins": t.plugins }))
            .collect();
        Ok(success(tx, 0, json!({ "data": { "tokens": tokens } })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn token_fields_are_checked_as_janus_does() {
        let add = |v: Value| parse_token_change(&fields(v), TokenVerb::Add);
        let allow = |v: Value| parse_token_change(&fields(v), TokenVerb::Allow);
        assert_eq!(
            add(json!({"token": "t"})).unwrap(),
            TokenChange {
                token: "t".into(),
                plugins: vec![]
            }
        );
        assert_eq!(
            add(json!({"token": "t", "plugins": ["a", 1]}))
                .unwrap()
                .plugins,
            [json!("a"), json!(1)]
        );
        let err = |r: Result<TokenChange, JanusError>| {
            let e = r.unwrap_err();
            (e.code, e.reason)
        };
        assert_eq!(
            err(add(json!({}))),
            (456, "Missing mandatory element (token)".into())
        );
        assert_eq!(
            err(add(json!({"token": null}))),
            (
                467,
                "Invalid element type (token should be a string)".into()
            )
        );
        assert_eq!(
            err(add(
                json!({"token": "t", "plugins": "janus.plugin.ustreamer"})
            )),
            (
                467,
                "Invalid element type (plugins should be an array)".into()
            )
        );
        // Granting and taking back need a plugin to act on.
        for v in [json!({"token": "t"}), json!({"token": "t", "plugins": []})] {
            assert_eq!(
                err(allow(v)),
                (
                    467,
                    "Invalid element type (plugins should be a non-empty array)".into()
                )
            );
        }
        assert_eq!(
            err(parse_token_change(
                &fields(json!({"plugins": ["x"]})),
                TokenVerb::Disallow
            )),
            (456, "Missing mandatory element (token)".into())
        );
        assert_eq!(parse_token(&fields(json!({"token": "x"}))).unwrap(), "x");
        assert_eq!(
            parse_token(&fields(json!({"token": 5}))).unwrap_err().code,
            467
        );
    }
}
