//! The WHEP endpoints: `POST /whep` and `/STREAM/whep` (offer in, answer out), `PATCH`
//! and `DELETE` on `/whep/resource/ID`, and `OPTIONS` on both for CORS preflights and
//! the ICE servers. The WHIP endpoints are the same on `/whip`, `/STREAM/whip` and
//! `/whip/resource/ID`, for a publisher's offer. Every response offers CORS to the page (the origin guard around the
//! main port narrows it to allowed pages) and exposes the headers a player reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::mpsc;

use super::patch::{self, PatchAction, PatchRefusal};
use super::sdpfrag;
use super::sessions::{Publishing, Session};
use super::{Whep, MAX_FRAG_BYTES, MAX_OFFER_BYTES};
use crate::janus::auth::Auth;
use crate::media::publisher;
use crate::media::stream::{Output, Stream};
use crate::rtc::{ice_restart, PeerEvent, PeerId, PeerOptions, RemoteCandidate, RtcError};

/// Where sessions live; `Location` is this plus the session's id.
pub const RESOURCE_PREFIX: &str = "/whep/resource/";
/// Where WHIP publishers' sessions live.
pub const WHIP_RESOURCE_PREFIX: &str = "/whip/resource/";

/// How long a POST waits for a stream's first pictures (its source may only start now
/// that someone watches) before answering 409.
const PARAMS_WAIT: Duration = Duration::from_secs(5);

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const ALLOW_METHODS: &str = "OPTIONS, POST, PATCH, DELETE";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match";
const EXPOSE_HEADERS: &str = "Location, ETag, Link, Accept-Patch, Accept-Post";

pub fn router(whep: Whep) -> Router {
    Router::new()
        .route("/whep", post(post_default).options(options))
        .route("/{stream}/whep", post(post_named).options(options))
        .route("/whip", post(publish_default).options(options))
        .route("/{stream}/whip", post(publish_named).options(options))
        .route(
            "/whep/resource/{id}",
            axum::routing::patch(patch_session)
                .delete(delete_session)
                .options(options),
        )
        .route(
            "/whip/resource/{id}",
            axum::routing::patch(patch_session)
                .delete(delete_session)
                .options(options),
        )
        .with_state(whep)
}

/// A response with CORS and the exposed headers.
fn reply(status: StatusCode, headers: Vec<(HeaderName, String)>, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in headers {
        let Ok(value) = HeaderValue::from_str(&value) else {
            continue;
        };
        // One `Link` per ICE server; every other header once.
        if name == header::LINK {
            h.append(name, value);
        } else {
            h.insert(name, value);
        }
    }
    response
}

/// An error with its reason as text.
fn refuse(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    reply(status, Vec::new(), format!("{reason}\n"))
}

/// `Link` headers for the configured ICE servers.
fn ice_server_links(whep: &Whep) -> Vec<(HeaderName, String)> {
    whep.inner
        .cfg
        .ice_servers
        .iter()
        .map(|url| (header::LINK, format!("<{url}>; rel=\"ice-server\"")))
        .collect()
}

/// Preflight and discovery: what may be sent, and the ICE servers. No credentials are
/// needed (browsers never send them on a preflight).
async fn options(State(whep): State<Whep>) -> Response {
    let mut headers = vec![
        (HeaderName::from_static("accept-post"), SDP.to_string()),
        (HeaderName::from_static("accept-patch"), SDPFRAG.to_string()),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            ALLOW_METHODS.to_string(),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            ALLOW_HEADERS.to_string(),
        ),
    ];
    headers.extend(ice_server_links(&whep));
    reply(StatusCode::NO_CONTENT, headers, String::new())
}

/// With the Janus API secret or tokens configured, a request needs
/// `Authorization: Bearer <secret or token>`: the 401 for one without.
fn bearer_refusal(whep: &Whep, headers: &HeaderMap) -> Option<Response> {
    let auth = &whep.inner.cfg.auth;
    if !auth.is_enabled() {
        return None;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    if token.is_some_and(|t| bearer_allowed(auth, t)) {
        return None;
    }
    crate::rejections::count(crate::rejections::Rejection::JanusAuth);
    Some(reply(
        StatusCode::UNAUTHORIZED,
        vec![(header::WWW_AUTHENTICATE, "Bearer".to_string())],
        "a valid Authorization: Bearer token is needed\n".to_string(),
    ))
}

/// The API secret, or a token that may use the ustreamer plugin (what a Janus viewer's
/// token must be allowed, as WHEP viewers watch the same streams).
fn bearer_allowed(auth: &Auth, bearer: &str) -> bool {
    if auth.allows(Some(bearer), None) {
        return true; // the API secret
    }
    let mut fields = serde_json::Map::new();
    fields.insert("token".into(), bearer.into());
    auth.allows(None, Some(bearer))
        && auth
            .check_plugin(&fields, crate::janus::ustreamer::PACKAGE)
            .is_ok()
}

/// The token of an `Authorization: Bearer TOKEN` value (scheme in any case).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the request's `Content-Type` is `want` (parameters and case aside).
fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// The body as text, at most `limit` bytes; else the status and reason to refuse it.
async fn read_text(body: Body, limit: usize) -> Result<String, (StatusCode, String)> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {limit} bytes (or was cut off)"),
        )
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| (StatusCode::BAD_REQUEST, "the body is not UTF-8 text".into()))
}

/// What a POST asks to be: a viewer (WHEP) or the stream's publisher (WHIP).
#[derive(Clone, Copy)]
enum Role {
    Viewer,
    Publisher,
}

async fn post_default(State(whep): State<Whep>, headers: HeaderMap, body: Body) -> Response {
    post_to(whep, None, Role::Viewer, headers, body).await
}

async fn post_named(
    State(whep): State<Whep>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    post_to(whep, Some(name), Role::Viewer, headers, body).await
}

async fn publish_default(State(whep): State<Whep>, headers: HeaderMap, body: Body) -> Response {
    post_to(whep, None, Role::Publisher, headers, body).await
}

async fn publish_named(
    State(whep): State<Whep>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    post_to(whep, Some(name), Role::Publisher, headers, body).await
}

/// A POST to the stream `name` (the default stream without one; an unknown one is 404).
async fn post_to(
    whep: Whep,
    name: Option<String>,
    role: Role,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let stream = match whep.inner.streams.get(name.as_deref()) {
        Ok(stream) => stream.clone(),
        Err(e) => return refuse(StatusCode::NOT_FOUND, format!("no such stream: {e}")),
    };
    match role {
        Role::Viewer => offer(whep, stream, headers, body).await,
        Role::Publisher => publish(whep, stream, headers, body).await,
    }
}

/// The offer of a POST, once its credentials and content type are checked.
async fn read_offer(whep: &Whep, headers: &HeaderMap, body: Body) -> Result<String, Response> {
    if let Some(refused) = bearer_refusal(whep, headers) {
        return Err(refused);
    }
    if !content_type_is(headers, SDP) {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        ));
    }
    read_text(body, MAX_OFFER_BYTES)
        .await
        .map_err(|(status, reason)| refuse(status, reason))
}

/// WHIP POST: a publisher's offer makes it the stream's source (when the stream's
/// source is `whip` and nobody else publishes).
async fn publish(whep: Whep, stream: Arc<Stream>, headers: HeaderMap, body: Body) -> Response {
    let offer = match read_offer(&whep, &headers, body).await {
        Ok(text) => text,
        Err(refused) => return refused,
    };
    let Some(slot) = stream.publisher_slot().cloned() else {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "stream {:?} takes no WHIP publisher: its source is not whip",
                stream.name()
            ),
        );
    };
    let id = random_hex(16);
    let Some(publishing) = Publishing::claim(&slot, &id) else {
        return refuse(
            StatusCode::CONFLICT,
            format!("stream {:?} has a publisher already", stream.name()),
        );
    };
    // The peer's id is known once the offer is answered; the source may ask for a
    // keyframe only after the publisher's first packets, which come later still.
    let peer_cell = Arc::new(AtomicU64::new(u64::MAX));
    let ask_keyframe = {
        let engine = whep.inner.engine.clone();
        let peer_cell = peer_cell.clone();
        Box::new(move || engine.request_keyframe(peer_cell.load(Ordering::Relaxed)))
    };
    let (tap, feed) = publisher::channel(ask_keyframe);
    let opts = PeerOptions {
        publisher: Some(tap.with_sound(slot.sound().cloned())),
        ..PeerOptions::new(stream.hub().clone())
    };
    let opened = open_session(&whep, stream, &offer, opts, id.clone(), Some(publishing)).await;
    if let Some(peer) = whep.inner.sessions.with(&id, |s| s.peer) {
        peer_cell.store(peer, Ordering::Relaxed);
        slot.hand_over(&id, feed);
    }
    opened
}

/// POST: answer the player's offer and open a session.
async fn offer(whep: Whep, stream: Arc<Stream>, headers: HeaderMap, body: Body) -> Response {
    let offer = match read_offer(&whep, &headers, body).await {
        Ok(text) => text,
        Err(refused) => return refused,
    };
    // Held until the peer watches: the source must not idle in between.
    let _hold = stream.hub().hold();
    if !stream.hub().wait_for_params(PARAMS_WAIT).await {
        return reply(
            StatusCode::CONFLICT,
            vec![(header::RETRY_AFTER, "1".to_string())],
            "the stream has not produced pictures yet; try again\n".to_string(),
        );
    }
    let opts = PeerOptions {
        audio: stream.audio().cloned(),
        ..PeerOptions::new(stream.hub().clone())
    };
    open_session(&whep, stream, &offer, opts, random_hex(16), None).await
}

/// Answer `offer` with a peer of `opts` and open the session `id` for it: the 201 with
/// the answer, or why not.
async fn open_session(
    whep: &Whep,
    stream: Arc<Stream>,
    offer: &str,
    opts: PeerOptions,
    id: String,
    publishing: Option<Publishing>,
) -> Response {
    let (events_tx, events) = mpsc::unbounded_channel();
    let engine = &whep.inner.engine;
    let (peer, answer) = match engine.answer_offer(opts, offer, events_tx).await {
        Ok(answered) => answered,
        Err(RtcError::TooManyViewers(max)) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                vec![(header::RETRY_AFTER, "5".to_string())],
                format!("too many viewers (at most {max})\n"),
            )
        }
        // The stack refusing a step of the answer is about the offer too (a section it
        // cannot pair, a parameter it rejects).
        Err(e @ (RtcError::Unacceptable(_) | RtcError::InvalidSdp(_) | RtcError::Stack(_))) => {
            return refuse(StatusCode::BAD_REQUEST, e)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot answer a WHEP/WHIP offer");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    };
    let etag = format!("\"{}\"", random_hex(8));
    let (prefix, protocol) = match publishing {
        Some(_) => (WHIP_RESOURCE_PREFIX, "WHIP"),
        None => (RESOURCE_PREFIX, "WHEP"),
    };
    whep.inner.sessions.insert(
        id.clone(),
        Session {
            peer,
            etag: etag.clone(),
            remote_ufrag: sdpfrag::ice_ufrag(offer).map(str::to_string),
            offer: offer.to_string(),
            viewing: None,
            publishing,
        },
    );
    tokio::spawn(follow_peer(whep.clone(), id.clone(), peer, stream, events));
    tracing::info!(peer, "{protocol} session opened");
    let mut headers = vec![
        (header::CONTENT_TYPE, SDP.to_string()),
        (header::LOCATION, format!("{prefix}{id}")),
        (header::ETAG, etag),
        (HeaderName::from_static("accept-patch"), SDPFRAG.to_string()),
    ];
    headers.extend(ice_server_links(whep));
    reply(StatusCode::CREATED, headers, answer)
}

/// `bytes` random bytes in lowercase hex: session ids (unguessable, so a resource URL
/// is only known to its player) and entity tags.
fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Keep a session in step with its peer: counted as a viewer of its stream while
/// connected, gone when the peer closes (or the engine stops).
async fn follow_peer(
    whep: Whep,
    id: String,
    peer: PeerId,
    stream: Arc<Stream>,
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
) {
    while let Some(event) = events.recv().await {
        match event {
            PeerEvent::Connected => {
                whep.inner.sessions.with(&id, |s| {
                    if s.peer == peer && s.viewing.is_none() && s.publishing.is_none() {
                        s.viewing = Some(stream.viewer(Output::WebRtc));
                    }
                });
            }
            PeerEvent::Closed { reason } => {
                tracing::info!(peer, %reason, "WHEP session closed by its peer");
                break;
            }
            PeerEvent::MicReceiving { .. } => {}
        }
    }
    whep.inner.sessions.remove_peer(&id, peer);
}

/// PATCH: trickled candidates (204), or an ICE restart (200 with our new credentials
/// and candidates, and a new ETag for the new ICE session).
async fn patch_session(
    State(whep): State<Whep>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = bearer_refusal(&whep, &headers) {
        return refused;
    }
    let Some((peer, etag, remote_ufrag, offer)) = whep.inner.sessions.with(&id, |s| {
        (
            s.peer,
            s.etag.clone(),
            s.remote_ufrag.clone(),
            s.offer.clone(),
        )
    }) else {
        return refuse(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    if !content_type_is(&headers, SDPFRAG) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH bodies must be Content-Type: application/trickle-ice-sdpfrag",
        );
    }
    let text = match read_text(body, MAX_FRAG_BYTES).await {
        Ok(text) => text,
        Err((status, reason)) => return refuse(status, reason),
    };
    let frag = match sdpfrag::parse(&text) {
        Ok(frag) => frag,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("bad sdpfrag: {e}")),
    };
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    match patch::decide(if_match, &etag, remote_ufrag.as_deref(), &frag) {
        Err(PatchRefusal::PreconditionFailed) => refuse(
            StatusCode::PRECONDITION_FAILED,
            "If-Match does not name the session's ETag",
        ),
        Ok(PatchAction::Restart) => restart_ice(&whep, &id, peer, &offer, frag).await,
        Ok(PatchAction::Trickle) => {
            let engine = &whep.inner.engine;
            for candidate in frag.candidates {
                engine.add_remote_candidate(peer, RemoteCandidate::Candidate(candidate));
            }
            if frag.end_of_candidates {
                engine.add_remote_candidate(peer, RemoteCandidate::Completed);
            }
            reply(StatusCode::NO_CONTENT, Vec::new(), String::new())
        }
    }
}

/// An ICE restart (RFC 9725 §4.3.2): the viewer's new credentials restart the peer's
/// ICE session; the reply carries ours and the new session's ETag.
async fn restart_ice(
    whep: &Whep,
    id: &str,
    peer: PeerId,
    offer: &str,
    frag: sdpfrag::SdpFrag,
) -> Response {
    let (Some(ufrag), Some(pwd)) = (frag.ufrag, frag.pwd) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "an ICE restart needs the new a=ice-ufrag and a=ice-pwd",
        );
    };
    if !sdpfrag::credentials_valid(&ufrag, &pwd) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a=ice-ufrag or a=ice-pwd is malformed (RFC 8839 ice-chars, 4 and 22 to 256 long)",
        );
    }
    let restart_offer = ice_restart::restart_offer(offer, &ufrag, &pwd);
    let engine = &whep.inner.engine;
    let ice = match engine
        .restart_ice(peer, restart_offer.clone(), frag.candidates)
        .await
    {
        Ok(ice) => ice,
        Err(RtcError::NoSuchPeer) => return refuse(StatusCode::NOT_FOUND, "no such WHEP session"),
        Err(e @ (RtcError::InvalidSdp(_) | RtcError::Stack(_))) => {
            return refuse(StatusCode::BAD_REQUEST, e)
        }
        Err(e) => {
            tracing::warn!(peer, error = %e, "cannot restart a WHEP session's ICE");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    };
    if frag.end_of_candidates {
        engine.add_remote_candidate(peer, RemoteCandidate::Completed);
    }
    let etag = format!("\"{}\"", random_hex(8));
    whep.inner.sessions.with(id, |s| {
        if s.peer == peer {
            s.etag = etag.clone();
            s.remote_ufrag = Some(ufrag);
            s.offer = restart_offer;
        }
    });
    reply(
        StatusCode::OK,
        vec![
            (header::CONTENT_TYPE, SDPFRAG.to_string()),
            (header::ETAG, etag),
        ],
        sdpfrag::restart_frag(&ice.ufrag, &ice.pwd, &ice.candidates),
    )
}

/// DELETE: end the session (200); an unknown one (deleted already) is 404.
async fn delete_session(
    State(whep): State<Whep>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = bearer_refusal(&whep, &headers) {
        return refused;
    }
    let Some(session) = whep.inner.sessions.remove(&id) else {
        return refuse(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    whep.inner.engine.close_peer(session.peer, "WHEP DELETE");
    tracing::info!(peer = session.peer, "WHEP session deleted");
    reply(StatusCode::OK, Vec::new(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_is_the_api_secret_or_a_token_for_the_ustreamer_plugin() {
        use crate::janus::auth::{TokenStore, Tokens};
        let store = TokenStore::new(
            &["viewer".into(), "other".into()],
            &[crate::janus::ustreamer::PACKAGE],
        );
        assert!(store.disallow("other", crate::janus::ustreamer::PACKAGE));
        let auth = Auth {
            api_secret: Some("secret".into()),
            tokens: Some(Tokens::Stored(store)),
        };
        assert!(bearer_allowed(&auth, "secret"));
        assert!(bearer_allowed(&auth, "viewer"));
        assert!(
            !bearer_allowed(&auth, "other"),
            "a token not granted the plugin"
        );
        assert!(!bearer_allowed(&auth, "nobody"));
    }

    #[test]
    fn bearer_tokens_are_read_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
