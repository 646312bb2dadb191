//! Janus's Admin API in the real binary, over both of its transports (HTTP on
//! `--janus-admin-http-port`, WebSocket with `janus-admin-protocol` on
//! `--janus-admin-ws-port`): the admin secret, and stored tokens added, granted, taken
//! back and removed, as the Janus API sees them from the next request on.

mod support;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use support::{free_port, http_request, Server};

const UNAUTHORIZED: &str = "Unauthorized request (wrong or missing secret/token)";
const PLUGIN: &str = "janus.plugin.ustreamer";
const SECRET: &str = "adm1n-s3cret";

/// A server with both Admin API listeners on free ports.
struct Admin {
    server: Server,
    http_port: u16,
    ws_port: u16,
}

impl Admin {
    /// Start with `extra` flags; a port found free may be taken before the server
    /// binds it, so the start is tried again on fresh ports.
    async fn start(extra: &[&str]) -> Result<Admin> {
        let mut last = None;
        for _ in 0..3 {
            let (http_port, ws_port) = (free_port(), free_port());
            let (h, w) = (http_port.to_string(), ws_port.to_string());
            let mut args = vec!["--janus-admin-http-port", &h, "--janus-admin-ws-port", &w];
            args.extend_from_slice(extra);
            match Server::start(&args).await {
                Ok(server) => {
                    return Ok(Admin {
                        server,
                        http_port,
                        ws_port,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }

    /// One request over the admin HTTP transport, at `path` below `/admin`.
    async fn http(&self, path: &str, request: Value) -> Result<Value> {
        let body = request.to_string();
        let (status, reply) = http_request(
            self.http_port,
            "POST",
            &format!("/admin{path}"),
            Some(body.as_bytes()),
        )
        .await?;
        if status != 200 {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&reply));
        }
        Ok(serde_json::from_slice(&reply)?)
    }

    /// A request with the admin secret, over HTTP.
    async fn call(&self, request: Value) -> Result<Value> {
        self.http("", with(request, json!({ "admin_secret": SECRET })))
            .await
    }

    /// A WebSocket to the Admin API, checking the subprotocol was agreed on.
    async fn ws(&self) -> Result<AdminSocket> {
        let mut upgrade = format!("ws://127.0.0.1:{}/", self.ws_port).into_client_request()?;
        upgrade
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "janus-admin-protocol".parse()?);
        let (ws, response) = tokio_tungstenite::connect_async(upgrade).await?;
        let protocol = response.headers().get("Sec-WebSocket-Protocol");
        assert_eq!(
            protocol.map(|v| v.to_str().unwrap()),
            Some("janus-admin-protocol")
        );
        Ok(AdminSocket(ws))
    }

    /// One Janus API request over the Janus HTTP transport, at `path` below `/janus`.
    async fn janus(&self, path: &str, request: Value) -> Result<Value> {
        let body = request.to_string();
        let (status, reply) = http_request(
            self.server.janus_http_port,
            "POST",
            &format!("/janus{path}"),
            Some(body.as_bytes()),
        )
        .await?;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        Ok(serde_json::from_slice(&reply)?)
    }

    async fn create(&self, token: &str) -> Result<Value> {
        self.janus(
            "",
            json!({"janus": "create", "transaction": "c", "token": token}),
        )
        .await
    }

    async fn attach(&self, session: u64, token: &str) -> Result<Value> {
        let attach =
            json!({"janus": "attach", "plugin": PLUGIN, "transaction": "a", "token": token});
        self.janus(&format!("/{session}"), attach).await
    }
}

struct AdminSocket(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl AdminSocket {
    async fn send(&mut self, text: String) -> Result<()> {
        Ok(self.0.send(Message::text(text)).await?)
    }

    async fn reply(&mut self) -> Result<Value> {
        let reply = tokio::time::timeout(Duration::from_secs(5), self.0.next())
            .await?
            .context("socket closed")??;
        Ok(serde_json::from_str(reply.to_text()?)?)
    }

    async fn call(&mut self, request: Value) -> Result<Value> {
        self.send(request.to_string()).await?;
        self.reply().await
    }
}

/// `request` with the fields of `extra` added.
fn with(mut request: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        request[k] = v.clone();
    }
    request
}

fn assert_error(reply: &Value, code: u16, reason: &str) {
    assert_eq!(reply["janus"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    assert_eq!(reply["error"]["reason"], reason, "{reply}");
}

fn id(reply: &Value) -> u64 {
    assert_eq!(reply["janus"], "success", "{reply}");
    reply["data"]["id"].as_u64().expect("an id")
}

fn plugins(reply: &Value) -> Value {
    assert_eq!(reply["janus"], "success", "{reply}");
    reply["data"]["plugins"].clone()
}

#[tokio::test]
async fn admin_secret_is_required_on_both_transports_but_for_info_and_ping() -> Result<()> {
    let admin = Admin::start(&[
        "--janus-token-auth",
        "--janus-api-secret",
        "api-s3cret",
        "--janus-admin-secret",
        SECRET,
    ])
    .await?;
    let list = json!({"janus": "list_tokens", "transaction": "l"});
    let mut ws = admin.ws().await?;
    for extra in [
        json!({}),
        json!({"admin_secret": "wrong"}),
        json!({"admin_secret": format!("{SECRET}x")}),
        json!({"admin_secret": 1234}),
        // The Janus API's secret is no admin secret.
        json!({"apisecret": "api-s3cret"}),
    ] {
        let request = with(list.clone(), extra);
        assert_error(&admin.http("", request.clone()).await?, 403, UNAUTHORIZED);
        let reply = ws.call(request).await?;
        assert_error(&reply, 403, UNAUTHORIZED);
        assert_eq!(reply["transaction"], "l");
    }
    // Inside a session too, before the session is looked up.
    let handles = json!({"janus": "list_handles", "transaction": "h", "session_id": 987654321});
    assert_error(&admin.http("", handles.clone()).await?, 403, UNAUTHORIZED);
    let handles = with(handles, json!({ "admin_secret": SECRET }));
    assert_error(
        &admin.http("", handles.clone()).await?,
        458,
        "No such session 987654321",
    );
    assert_error(&ws.call(handles).await?, 458, "No such session 987654321");

    // info and ping need nothing, over either transport; info is the Janus API's.
    let info = ws
        .call(json!({"janus": "info", "transaction": "i"}))
        .await?;
    assert_eq!(info["janus"], "server_info", "{info}");
    assert_eq!(
        (&info["api_secret"], &info["auth_token"]),
        (&json!(true), &json!(true))
    );
    let pong = admin
        .http("", json!({"janus": "PING", "transaction": "p"}))
        .await?;
    assert_eq!(pong, json!({"janus": "pong", "transaction": "p"}));
    let (status, body) = http_request(admin.http_port, "GET", "/admin/info", None).await?;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body)?["janus"],
        "server_info"
    );

    // With the secret, requests go through; unknown ones get Janus's answer.
    let listed = admin.call(list).await?;
    assert_eq!(listed["data"]["tokens"], json!([]), "{listed}");
    assert_error(
        &admin
            .call(json!({"janus": "frob", "transaction": "f"}))
            .await?,
        457,
        "Unhandled request 'frob' at this path",
    );
    // The Janus API is not served here, nor the Admin API on the Janus ports.
    assert_error(
        &admin
            .call(json!({"janus": "create", "transaction": "c"}))
            .await?,
        457,
        "Unhandled request 'create' at this path",
    );
    let (status, _) = http_request(admin.http_port, "POST", "/janus", Some(b"{}")).await?;
    assert_eq!(status, 404);
    let on_janus = admin
        .janus(
            "",
            json!({"janus": "list_tokens", "transaction": "x", "admin_secret": SECRET}),
        )
        .await?;
    assert_eq!(on_janus["error"]["code"], 457, "{on_janus}");
    Ok(())
}

#[tokio::test]
async fn tokens_added_granted_and_removed_act_on_the_janus_api_at_once() -> Result<()> {
    let admin = Admin::start(&[
        "--janus-token-auth",
        "--janus-token",
        "from-flag",
        "--janus-admin-secret",
        SECRET,
    ])
    .await?;
    let token = |verb: &str, token: &str, plugins: Option<Value>| {
        let mut request = json!({"janus": verb, "transaction": verb, "token": token});
        if let Some(p) = plugins {
            request["plugins"] = p;
        }
        request
    };
    assert_error(&admin.create("viewer-1").await?, 403, UNAUTHORIZED);

    // Added with the plugin: sessions and handles at once.
    let added = admin
        .call(token("add_token", "viewer-1", Some(json!([PLUGIN]))))
        .await?;
    assert_eq!(plugins(&added), json!([PLUGIN]));
    assert_eq!(added["transaction"], "add_token");
    let s = id(&admin.create("viewer-1").await?);
    id(&admin.attach(s, "viewer-1").await?);

    // Added for other plugins only (skipped: not here): sessions, but no attach.
    let other = admin
        .call(token(
            "add_token",
            "no-grant",
            Some(json!(["janus.plugin.echotest"])),
        ))
        .await?;
    assert_eq!(plugins(&other), json!([]));
    let s2 = id(&admin.create("no-grant").await?);
    let refused = admin.attach(s2, "no-grant").await?;
    assert_error(
        &refused,
        405,
        "Provided token can't access plugin 'janus.plugin.ustreamer'",
    );
    // Tokens that may use no plugin are not listed, as in Janus; flag tokens are.
    let listed = admin
        .call(json!({"janus": "list_tokens", "transaction": "l"}))
        .await?;
    assert_eq!(
        listed,
        json!({"janus": "success", "transaction": "l", "data": {"tokens": [
            {"token": "from-flag", "allowed_plugins": [PLUGIN]},
            {"token": "viewer-1", "allowed_plugins": [PLUGIN]},
        ]}})
    );

    // Taking the plugin back stops attaching, not sessions; granting it again restores it.
    let taken = admin
        .call(token("disallow_token", "viewer-1", Some(json!([PLUGIN]))))
        .await?;
    assert_eq!(plugins(&taken), json!([]));
    assert_eq!(admin.attach(s, "viewer-1").await?["error"]["code"], 405);
    id(&admin.create("viewer-1").await?);
    let granted = admin
        .call(token("allow_token", "viewer-1", Some(json!([PLUGIN]))))
        .await?;
    assert_eq!(plugins(&granted), json!([PLUGIN]));
    id(&admin.attach(s, "viewer-1").await?);
    // Janus's errors for grants that cannot be made.
    assert_error(
        &admin
            .call(token("allow_token", "nobody", Some(json!([PLUGIN]))))
            .await?,
        470,
        "Token nobody not found",
    );
    assert_error(
        &admin
            .call(token(
                "allow_token",
                "viewer-1",
                Some(json!(["janus.plugin.nope"])),
            ))
            .await?,
        467,
        "Invalid element type (some of the provided plugins are invalid)",
    );
    assert_error(
        &admin
            .call(token("disallow_token", "viewer-1", None))
            .await?,
        467,
        "Invalid element type (plugins should be a non-empty array)",
    );
    assert_error(
        &admin
            .call(json!({"janus": "add_token", "transaction": "t"}))
            .await?,
        456,
        "Missing mandatory element (token)",
    );

    // The sessions are there to see; the handle of the first one too.
    let sessions = admin
        .call(json!({"janus": "list_sessions", "transaction": "s"}))
        .await?;
    for session in [s, s2] {
        assert!(
            sessions["sessions"]
                .as_array()
                .unwrap()
                .contains(&json!(session)),
            "{sessions}"
        );
    }
    let handles = admin
        .http(
            &format!("/{s}"),
            json!({"janus": "list_handles", "transaction": "h", "admin_secret": SECRET}),
        )
        .await?;
    assert_eq!(handles["session_id"], s, "{handles}");
    assert_eq!(
        handles["handles"].as_array().map(Vec::len),
        Some(2),
        "{handles}"
    );

    // Removed: refused from the next request on, in the sessions it opened too (as in
    // Janus), and on the long poll; a flag token can be removed the same way.
    let removed = admin.call(token("remove_token", "viewer-1", None)).await?;
    assert_eq!(
        removed,
        json!({"janus": "success", "transaction": "remove_token"})
    );
    assert_error(&admin.create("viewer-1").await?, 403, UNAUTHORIZED);
    let keepalive = json!({"janus": "keepalive", "transaction": "k", "token": "viewer-1"});
    assert_error(
        &admin.janus(&format!("/{s}"), keepalive).await?,
        403,
        UNAUTHORIZED,
    );
    let (status, _) = http_request(
        admin.server.janus_http_port,
        "GET",
        &format!("/janus/{s}?token=viewer-1"),
        None,
    )
    .await?;
    assert_eq!(status, 403);
    assert_error(
        &admin.call(token("remove_token", "viewer-1", None)).await?,
        490,
        "Error removing token",
    );
    id(&admin.create("from-flag").await?);
    admin.call(token("remove_token", "from-flag", None)).await?;
    assert_error(&admin.create("from-flag").await?, 403, UNAUTHORIZED);

    // destroy_session ends a session now.
    let destroyed = admin
        .call(json!({"janus": "destroy_session", "transaction": "d", "session_id": s2}))
        .await?;
    assert_eq!(
        destroyed,
        json!({"janus": "success", "session_id": s2, "transaction": "d"})
    );
    let keepalive = json!({"janus": "keepalive", "transaction": "k", "token": "no-grant"});
    let gone = admin.janus(&format!("/{s2}"), keepalive).await?;
    assert_eq!(gone["error"]["code"], 458, "{gone}");
    Ok(())
}

#[tokio::test]
async fn tokens_are_managed_over_the_admin_websocket_too() -> Result<()> {
    let admin = Admin::start(&["--janus-token-auth", "--janus-admin-secret", SECRET]).await?;
    let mut ws = admin.ws().await?;
    let secret = json!({ "admin_secret": SECRET });
    // Two requests in one frame are answered in order, as by Janus.
    let add = with(
        json!({"janus": "add_token", "transaction": "a", "token": "ws-token"}),
        secret.clone(),
    );
    let list = with(
        json!({"janus": "list_tokens", "transaction": "l"}),
        secret.clone(),
    );
    ws.send(format!("{add}{list}")).await?;
    let added = ws.reply().await?;
    assert_eq!(added["transaction"], "a");
    assert_eq!(plugins(&added), json!([PLUGIN]), "no list: every plugin");
    let listed = ws.reply().await?;
    assert_eq!(
        listed["data"]["tokens"],
        json!([{"token": "ws-token", "allowed_plugins": [PLUGIN]}])
    );
    let s = id(&admin.create("ws-token").await?);
    id(&admin.attach(s, "ws-token").await?);

    let taken = ws
        .call(with(
            json!({"janus": "disallow_token", "transaction": "d", "token": "ws-token", "plugins": [PLUGIN]}),
            secret.clone(),
        ))
        .await?;
    assert_eq!(plugins(&taken), json!([]));
    assert_eq!(admin.attach(s, "ws-token").await?["error"]["code"], 405);
    let removed = ws
        .call(with(
            json!({"janus": "remove_token", "transaction": "r", "token": "ws-token"}),
            secret.clone(),
        ))
        .await?;
    assert_eq!(removed["janus"], "success", "{removed}");
    assert_error(&admin.create("ws-token").await?, 403, UNAUTHORIZED);
    // Broken JSON gets Janus's error and the connection stays usable.
    ws.send("{not json".into()).await?;
    assert_eq!(ws.reply().await?["error"]["code"], 454);
    let pong = ws
        .call(json!({"janus": "ping", "transaction": "p"}))
        .await?;
    assert_eq!(pong["janus"], "pong");
    Ok(())
}

#[tokio::test]
async fn token_requests_need_stored_tokens() -> Result<()> {
    let stored_off = "Stored-Token based authentication disabled";
    let add = json!({"janus": "add_token", "transaction": "a", "token": "t"});
    // Token authentication off: the Admin API still lists sessions.
    let admin = Admin::start(&["--janus-admin-secret", SECRET]).await?;
    assert_error(&admin.call(add.clone()).await?, 490, stored_off);
    let sessions = admin
        .call(json!({"janus": "list_sessions", "transaction": "s"}))
        .await?;
    assert_eq!(sessions["sessions"], json!([]), "{sessions}");
    let status = admin
        .call(json!({"janus": "get_status", "transaction": "g"}))
        .await?;
    assert_eq!(status["status"]["token_auth"], false, "{status}");
    drop(admin);
    // Signed tokens: nothing to store.
    let admin = Admin::start(&[
        "--janus-token-auth",
        "--janus-token-auth-secret",
        "signing-key",
        "--janus-admin-secret",
        SECRET,
    ])
    .await?;
    assert_error(&admin.call(add).await?, 490, stored_off);
    let list = json!({"janus": "list_tokens", "transaction": "l"});
    assert_error(&admin.call(list).await?, 490, stored_off);
    Ok(())
}

#[tokio::test]
async fn without_a_secret_only_on_loopback_and_with_a_warning() -> Result<()> {
    // Beyond loopback: refused before anything listens (the address is one no machine
    // has, so that even a start that went wrong could not open anything).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args([
            "--source",
            "testsrc",
            "--udp-port-range",
            "0",
            "--port",
            "0",
        ])
        .args(["--janus-ws-port", "0", "--janus-http-port", "0"])
        .args(["--janus-admin-http-port", "7088"])
        .args(["--janus-admin-http-host", "192.0.2.1"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without an admin secret"), "{stderr}");
    assert!(stderr.contains("--janus-admin-secret"), "{stderr}");

    // On loopback: served without one, as Janus does, and said at start.
    let port = free_port();
    let (server, log) = Server::start_piped(
        &[
            "--janus-token-auth",
            "--janus-admin-http-port",
            &port.to_string(),
        ],
        None,
    )
    .await?;
    log.wait_for(Duration::from_secs(10), |t| {
        t.contains("asks for no admin secret")
    })
    .await?;
    let admin = Admin {
        server,
        http_port: port,
        ws_port: 0,
    };
    let added = admin
        .http(
            "",
            json!({"janus": "add_token", "transaction": "a", "token": "t"}),
        )
        .await?;
    assert_eq!(plugins(&added), json!([PLUGIN]));
    id(&admin.create("t").await?);
    Ok(())
}

#[tokio::test]
async fn pages_of_other_sites_are_refused_by_the_admin_api() -> Result<()> {
    let admin = Admin::start(&["--janus-admin-secret", SECRET]).await?;
    let url = format!("http://127.0.0.1:{}/admin", admin.http_port);
    let curl = |origin: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", &format!("Origin: {origin}")])
            .args(["-d", r#"{"janus":"ping","transaction":"p"}"#, &url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("http://evil.example"), "403");
    assert_eq!(curl("http://127.0.0.1:9999"), "200");
    Ok(())
}

#[tokio::test]
async fn admin_settings_from_the_janus_config_are_served() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("peregrine-admin-jcfg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("janus.plugin.ustreamer.jcfg"),
        "video: { sink = \"kvmd::ustreamer::h264\" }",
    )?;
    std::fs::write(
        dir.join("janus.jcfg"),
        "general: { token_auth = true, admin_secret = \"janusoverlord\" }",
    )?;
    let mut last = None;
    for _ in 0..3 {
        let port = free_port();
        std::fs::write(
            dir.join("janus.transport.http.jcfg"),
            format!(
                "general: {{ http = true }}\nadmin: {{ admin_http = true, admin_port = {port},\n\
                 admin_base_path = \"/janus-admin\", admin_ip = \"127.0.0.1\" }}"
            ),
        )?;
        let config = dir.to_str().unwrap();
        let server = match Server::start(&["--janus-config", config, "--source", "testsrc"]).await {
            Ok(server) => server,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let add = json!({"janus": "add_token", "transaction": "a", "token": "t",
                         "admin_secret": "janusoverlord"});
        let (status, body) = http_request(
            port,
            "POST",
            "/janus-admin",
            Some(add.to_string().as_bytes()),
        )
        .await?;
        assert_eq!(status, 200);
        let added: Value = serde_json::from_slice(&body)?;
        assert_eq!(plugins(&added), json!([PLUGIN]));
        let create = json!({"janus": "create", "transaction": "c", "token": "t"});
        let (_, body) = http_request(
            server.janus_http_port,
            "POST",
            "/janus",
            Some(create.to_string().as_bytes()),
        )
        .await?;
        id(&serde_json::from_slice(&body)?);
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Err(last.unwrap())
}

/// The README's Admin API example, run as written: the peregrine command on free
/// ports, then each curl command, whose answer must be the JSON in the comment below it.
#[tokio::test]
async fn readme_admin_examples_answer_as_documented() -> Result<()> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("### Admin API")
        .nth(1)
        .context("README has an Admin API section")?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .context("an sh block in it")?;
    let lines: Vec<&str> = block.lines().collect();
    let command = lines
        .iter()
        .find_map(|l| l.strip_prefix("peregrine "))
        .context("a peregrine command")?;
    let mut pairs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("curl ") {
            let expected = lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix("# "))
                .with_context(|| format!("the answer under {line}"))?;
            pairs.push((line.to_string(), serde_json::from_str::<Value>(expected)?));
        }
    }
    assert_eq!(pairs.len(), 3, "add, list and remove");
    let mut last = None;
    for _ in 0..3 {
        let port = free_port().to_string();
        let args: Vec<String> = command
            .split_whitespace()
            .map(|a| {
                if a == "7088" {
                    port.clone()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = match Server::start(&args).await {
            Ok(server) => server,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        for (curl, expected) in &pairs {
            let curl = curl.replace("127.0.0.1:7088", &format!("127.0.0.1:{port}"));
            let out = std::process::Command::new("bash")
                .args(["-c", &curl])
                .output()?;
            assert!(out.status.success(), "{curl}");
            let answer: Value = serde_json::from_slice(&out.stdout)
                .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
            assert_eq!(&answer, expected, "{curl}");
        }
        drop(server);
        return Ok(());
    }
    Err(last.unwrap())
}
