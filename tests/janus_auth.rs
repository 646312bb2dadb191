//! Janus's request authentication in the real binary, over both transports: the API
//! secret (`--janus-api-secret`, janus.jcfg's `api_secret`) and stored tokens
//! (`--janus-token-auth` with `--janus-token`).

mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use support::{http_request, Server};

const UNAUTHORIZED: &str = "Unauthorized request (wrong or missing secret/token)";

/// One request and its reply over a fresh Janus WebSocket.
async fn ws_request(server: &Server, request: Value) -> Result<Value> {
    let mut upgrade = format!("ws://127.0.0.1:{}/", server.ws_port).into_client_request()?;
    upgrade
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(upgrade).await?;
    ws.send(Message::text(request.to_string())).await?;
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await?
        .context("socket closed")??;
    Ok(serde_json::from_str(reply.to_text()?)?)
}

/// One request and its reply over the HTTP transport, at `path` below `/janus`.
async fn http_post(server: &Server, path: &str, request: Value) -> Result<Value> {
    let body = request.to_string();
    let (status, reply) = http_request(
        server.janus_http_port,
        "POST",
        &format!("/janus{path}"),
        Some(body.as_bytes()),
    )
    .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    Ok(serde_json::from_slice(&reply)?)
}

/// `create` with `extra` fields merged in, over the given transport.
async fn create(server: &Server, ws: bool, extra: Value) -> Result<Value> {
    let mut request = json!({"janus": "create", "transaction": "c1"});
    for (k, v) in extra.as_object().unwrap() {
        request[k] = v.clone();
    }
    if ws {
        ws_request(server, request).await
    } else {
        http_post(server, "", request).await
    }
}

fn assert_unauthorized(reply: &Value) {
    assert_eq!(reply["janus"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], 403, "{reply}");
    assert_eq!(reply["error"]["reason"], UNAUTHORIZED, "{reply}");
}

fn session_id(reply: &Value) -> u64 {
    assert_eq!(reply["janus"], "success", "{reply}");
    reply["data"]["id"].as_u64().expect("session id")
}

/// Missing and wrong credentials get 403 on both transports, the right one a session.
async fn check_credential(server: &Server, key: &str, right: &str) -> Result<()> {
    for ws in [true, false] {
        assert_unauthorized(&create(server, ws, json!({})).await?);
        assert_unauthorized(&create(server, ws, json!({ key: "wrong" })).await?);
        assert_unauthorized(&create(server, ws, json!({ key: format!("{right}x") })).await?);
        session_id(&create(server, ws, json!({ key: right })).await?);
    }
    Ok(())
}

async fn info(server: &Server) -> Result<Value> {
    let (status, body) = http_request(server.janus_http_port, "GET", "/janus/info", None).await?;
    assert_eq!(status, 200);
    let over_http: Value = serde_json::from_slice(&body)?;
    // Info needs no credentials, in Janus as here, on either transport.
    let over_ws = ws_request(server, json!({"janus": "info", "transaction": "i"})).await?;
    assert_eq!(over_ws["janus"], "server_info", "{over_ws}");
    assert_eq!(over_ws["api_secret"], over_http["api_secret"]);
    assert_eq!(over_ws["auth_token"], over_http["auth_token"]);
    let pong = ws_request(server, json!({"janus": "ping", "transaction": "p"})).await?;
    assert_eq!(pong["janus"], "pong", "{pong}");
    Ok(over_http)
}

#[tokio::test]
async fn api_secret_is_required_on_both_transports() -> Result<()> {
    let server = Server::start(&["--janus-api-secret", "janusrocks"]).await?;
    let info = info(&server).await?;
    assert_eq!(
        (&info["api_secret"], &info["auth_token"]),
        (&json!(true), &json!(false))
    );
    check_credential(&server, "apisecret", "janusrocks").await?;
    // A token is no substitute while token authentication is off.
    assert_unauthorized(&create(&server, true, json!({"token": "janusrocks"})).await?);

    // Requests inside a session need it too, before the session is even looked up.
    let s = session_id(&create(&server, false, json!({"apisecret": "janusrocks"})).await?);
    let attach = json!({"janus": "attach", "plugin": "janus.plugin.ustreamer", "transaction": "a"});
    assert_unauthorized(&http_post(&server, &format!("/{s}"), attach.clone()).await?);
    assert_unauthorized(&http_post(&server, "/987654321", attach.clone()).await?);
    let mut with_secret = attach;
    with_secret["apisecret"] = json!("janusrocks");
    let attached = http_post(&server, &format!("/{s}"), with_secret).await?;
    let h = session_id(&attached);
    // An event waiting, so that the authorized poll below answers at once.
    let detach = json!({"janus": "detach", "transaction": "d", "apisecret": "janusrocks"});
    let detached = http_post(&server, &format!("/{s}/{h}"), detach).await?;
    assert_eq!(detached["janus"], "success", "{detached}");

    // The long poll checks its query parameters (janus.js adds them URL-encoded).
    let poll = |query: String| {
        let port = server.janus_http_port;
        async move { http_request(port, "GET", &format!("/janus/{s}?maxev=1{query}"), None).await }
    };
    assert_eq!(poll(String::new()).await?.0, 403);
    assert_eq!(poll("&apisecret=wrong".into()).await?.0, 403);
    let (status, body) = poll("&apisecret=janus%72ocks".into()).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let event: Value = serde_json::from_slice(&body)?;
    assert_eq!(event["janus"], "detached", "{event}");
    Ok(())
}

#[tokio::test]
async fn stored_tokens_are_required_on_both_transports() -> Result<()> {
    let server = Server::start(&[
        "--janus-token-auth",
        "--janus-token",
        "tok-one",
        "--janus-token",
        "tok-two",
    ])
    .await?;
    let info = info(&server).await?;
    assert_eq!(
        (&info["api_secret"], &info["auth_token"]),
        (&json!(false), &json!(true))
    );
    check_credential(&server, "token", "tok-one").await?;
    check_credential(&server, "token", "tok-two").await?;
    let s = session_id(&create(&server, true, json!({"token": "tok-two"})).await?);
    let (status, _) = http_request(
        server.janus_http_port,
        "GET",
        &format!("/janus/{s}?token=tok-three"),
        None,
    )
    .await?;
    assert_eq!(status, 403);
    Ok(())
}

#[tokio::test]
async fn with_both_either_the_secret_or_a_token_is_enough() -> Result<()> {
    let server = Server::start(&[
        "--janus-api-secret",
        "s3cret-value",
        "--janus-token-auth",
        "--janus-token",
        "tok-one",
    ])
    .await?;
    let info = info(&server).await?;
    assert_eq!(
        (&info["api_secret"], &info["auth_token"]),
        (&json!(true), &json!(true))
    );
    session_id(&create(&server, true, json!({"apisecret": "s3cret-value"})).await?);
    session_id(&create(&server, false, json!({"token": "tok-one"})).await?);
    assert_unauthorized(&create(&server, true, json!({"apisecret": "x", "token": "y"})).await?);
    Ok(())
}

#[tokio::test]
async fn without_auth_nothing_is_required_and_info_says_so() -> Result<()> {
    let server = Server::start(&[]).await?;
    let info = info(&server).await?;
    assert_eq!(
        (&info["api_secret"], &info["auth_token"]),
        (&json!(false), &json!(false))
    );
    session_id(&create(&server, true, json!({})).await?);
    session_id(&create(&server, false, json!({"apisecret": "ignored"})).await?);
    Ok(())
}

#[tokio::test]
async fn janus_config_api_secret_and_token_auth_are_enforced() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("peregrine-auth-jcfg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("janus.plugin.ustreamer.jcfg"),
        "video: { sink = \"kvmd::ustreamer::h264\" }",
    )?;
    std::fs::write(
        dir.join("janus.jcfg"),
        "general: { api_secret = \"from-jcfg\", token_auth = true }",
    )?;
    let config = dir.to_str().unwrap();
    let server = Server::start(&[
        "--janus-config",
        config,
        "--source",
        "testsrc",
        "--janus-token",
        "tok-flag",
    ])
    .await?;
    let info = info(&server).await?;
    assert_eq!(
        (&info["api_secret"], &info["auth_token"]),
        (&json!(true), &json!(true))
    );
    check_credential(&server, "apisecret", "from-jcfg").await?;
    check_credential(&server, "token", "tok-flag").await?;
    drop(server);
    // The flag wins over the file.
    let server = Server::start(&[
        "--janus-config",
        config,
        "--source",
        "testsrc",
        "--janus-api-secret",
        "from-flag",
        "--janus-token-auth=false",
    ])
    .await?;
    check_credential(&server, "apisecret", "from-flag").await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A token signed by the `openssl` command, as an application would sign one for Janus.
fn signed_token(secret: &str, expiry: u64, plugins: &str) -> String {
    let data = format!("{expiry},janus,{plugins}");
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "printf %s \"$1\" | openssl dgst -sha1 -hmac \"$2\" -binary | base64",
        ])
        .args(["sign", &data, secret])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{data}:{}", String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test]
async fn signed_tokens_from_the_janus_config_are_checked() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("peregrine-auth-signed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("janus.plugin.ustreamer.jcfg"),
        "video: { sink = \"kvmd::ustreamer::h264\" }",
    )?;
    std::fs::write(
        dir.join("janus.jcfg"),
        "general: { token_auth = true, token_auth_secret = \"signing-key\" }",
    )?;
    let server = Server::start(&[
        "--janus-config",
        dir.to_str().unwrap(),
        "--source",
        "testsrc",
    ])
    .await?;
    let info = info(&server).await?;
    assert_eq!(
        (&info["api_secret"], &info["auth_token"]),
        (&json!(false), &json!(true))
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let good = signed_token("signing-key", now + 3600, "janus.plugin.ustreamer");
    let expired = signed_token("signing-key", now - 10, "janus.plugin.ustreamer");
    let wrong_key = signed_token("other-key", now + 3600, "janus.plugin.ustreamer");
    for ws in [true, false] {
        session_id(&create(&server, ws, json!({ "token": good })).await?);
        assert_unauthorized(&create(&server, ws, json!({ "token": expired })).await?);
        assert_unauthorized(&create(&server, ws, json!({ "token": wrong_key })).await?);
        assert_unauthorized(&create(&server, ws, json!({})).await?);
    }
    // A token that does not name the plugin opens a session but cannot attach to it.
    let other = signed_token("signing-key", now + 3600, "janus.plugin.echotest");
    let s = session_id(&create(&server, false, json!({ "token": other })).await?);
    let attach = |token: &str| json!({"janus": "attach", "plugin": "janus.plugin.ustreamer", "transaction": "a", "token": token});
    let refused = http_post(&server, &format!("/{s}"), attach(&other)).await?;
    assert_eq!(refused["error"]["code"], 405, "{refused}");
    assert_eq!(
        refused["error"]["reason"],
        "Provided token can't access plugin 'janus.plugin.ustreamer'"
    );
    let attached = http_post(&server, &format!("/{s}"), attach(&good)).await?;
    assert_eq!(attached["janus"], "success", "{attached}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
