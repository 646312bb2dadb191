//! `--whip-forward` end to end: the real binary publishes to a WHIP endpoint served
//! here, whose peer is the Rust WebRTC receiver (an independent stack: webrtc-rs
//! answering). The endpoint first refuses (503), so the client must come back after its
//! backoff; then it must send the offer as `application/sdp` with the Bearer token, take
//! the 201 answer, deliver decodable pictures, and DELETE the session at shutdown.
//! Over `https://` it trusts a private CA given with `--whip-ca`, and refuses a
//! certificate of another CA, saying why in `/state`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use peregrine::media::h264::{nal_type, nal_units, NalType};
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::receiver::ReceiverPeer;
use support::Server;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

const TOKEN: &str = "s3cret-token";

/// What the endpoint saw.
#[derive(Default)]
struct Seen {
    posts: Vec<Instant>,
    deletes: Vec<Option<String>>,
}

#[derive(Clone)]
struct Endpoint {
    seen: Arc<Mutex<Seen>>,
    peers: mpsc::UnboundedSender<ReceiverPeer>,
}

async fn publish(State(ep): State<Endpoint>, headers: HeaderMap, offer: String) -> Response {
    let first = {
        let mut seen = ep.seen.lock().unwrap();
        seen.posts.push(Instant::now());
        seen.posts.len() == 1
    };
    if first {
        return (StatusCode::SERVICE_UNAVAILABLE, "not yet").into_response();
    }
    let text = |h| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    if text(header::CONTENT_TYPE) != "application/sdp" {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    if text(header::AUTHORIZATION) != format!("Bearer {TOKEN}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (peer, answer) = match ReceiverPeer::answer(&offer).await {
        Ok(x) => x,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let _ = ep.peers.send(peer);
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp"),
            // Relative to the endpoint, as some servers write it.
            (header::LOCATION, "../resource/1"),
        ],
        answer,
    )
        .into_response()
}

async fn end(State(ep): State<Endpoint>, headers: HeaderMap) -> StatusCode {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    ep.seen.lock().unwrap().deletes.push(auth);
    StatusCode::OK
}

/// The WHIP endpoint's routes, with what it sees and the peers it answers with.
fn endpoint() -> (
    Router,
    Arc<Mutex<Seen>>,
    mpsc::UnboundedReceiver<ReceiverPeer>,
) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (peers_tx, peers) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/whip/endpoint/cam", post(publish))
        .route("/whip/resource/1", delete(end))
        .with_state(Endpoint {
            seen: seen.clone(),
            peers: peers_tx,
        });
    (app, seen, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_forward_publishes_retries_and_deletes() -> Result<()> {
    let (app, seen, mut peers) = endpoint();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/whip/endpoint/cam", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = Server::start(&[
        "--source",
        "testsrc",
        "--resolution",
        "320x240",
        "--h264-gop",
        "600",
        "--whip-forward",
        &url,
        "--whip-token",
        TOKEN,
    ])
    .await?;
    let mut peer = tokio::time::timeout(Duration::from_secs(10), peers.recv())
        .await
        .context("no second POST within 10 s")?
        .context("endpoint gone")?;
    {
        let seen = seen.lock().unwrap();
        let wait = seen.posts[1] - seen.posts[0];
        assert!(
            wait >= Duration::from_millis(900),
            "retried after a backoff, not at once ({wait:?})"
        );
    }
    peer.wait_connected(Duration::from_secs(10)).await?;
    let mut decoder = H264Decoder::new()?;
    let mut decoded = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while decoded < 30 {
        let frame = tokio::time::timeout_at(until.into(), peer.next_frame())
            .await
            .context("fewer than 30 pictures in 10 s")?
            .context("receiver ended")?;
        if let Some(pic) = decoder.decode(&frame.data)? {
            assert_eq!((pic.width, pic.height), (320, 240));
            decoded += 1;
        }
    }
    // The endpoint is a server: a flood of its PLIs (one every 20 ms for 4 s) gets about
    // one keyframe a second, not one every 0.5 s as a viewer's would. The GOP is 20 s.
    let flood_until = Instant::now() + Duration::from_secs(4);
    let mut next_pli = Instant::now();
    let mut keyframes = 0;
    while Instant::now() < flood_until {
        if Instant::now() >= next_pli {
            peer.send_pli();
            next_pli += Duration::from_millis(20);
        }
        let wait = tokio::time::timeout(Duration::from_millis(20), peer.next_frame()).await;
        if let Ok(Some(frame)) = wait {
            if nal_units(&frame.data).any(|n| nal_type(n) == Some(NalType::Idr)) {
                keyframes += 1;
            }
        }
    }
    println!("{keyframes} keyframes for 200 PLIs in 4 s");
    assert!(
        (2..=5).contains(&keyframes),
        "a server's PLI flood gets about one keyframe a second, got {keyframes}"
    );

    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["whip_forwards"][0]["state"] == "connected"
        })
        .await?;
    let w = &state["whip_forwards"][0];
    println!("state: {w}");
    assert_eq!(w["sessions"], 1);
    assert_eq!(w["failures"], 1, "the refused POST");
    assert!(w["resource"]
        .as_str()
        .is_some_and(|r| r.ends_with("/whip/resource/1")));

    let (status, metrics) =
        support::http_request(server.http_port, "GET", "/metrics", None).await?;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics)?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("peregrine_whip_forward_connected_total{") && l.ends_with(" 1")),
        "no connected WHIP session in /metrics"
    );

    // A clean stop ends the session on the server.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().deletes.is_empty() {
        assert!(Instant::now() < deadline, "no DELETE within 5 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.lock().unwrap().deletes,
        [Some(format!("Bearer {TOKEN}"))]
    );
    Ok(())
}

/// Run `openssl` with the words of `line` (paths here have no spaces).
fn openssl(line: &str) -> Result<()> {
    let out = Command::new("openssl")
        .args(line.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .context("run openssl (scripts/install-test-deps.sh installs it)")?;
    ensure!(
        out.status.success(),
        "openssl {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A test CA in a folder of its own, with a certificate for 127.0.0.1 it signed.
struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    fn new(name: &str) -> Result<TestCa> {
        let dir = std::env::temp_dir().join(format!("peregrine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let ca = TestCa { dir };
        let p = |f: &str| ca.path(f);
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(&format!(
            "req -x509 {ec} -days 2 -subj /CN={name}-CA \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign -keyout {} -out {}",
            p("ca.key"),
            p("ca.pem")
        ))?;
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        openssl(&format!(
            "req -new {ec} -subj /CN=127.0.0.1 -keyout {} -out {}",
            p("server.key"),
            p("server.csr")
        ))?;
        openssl(&format!(
            "x509 -req -days 2 -set_serial 1 -in {} -CA {} -CAkey {} -extfile {} -out {}",
            p("server.csr"),
            p("ca.pem"),
            p("ca.key"),
            p("server.ext"),
            p("server.pem")
        ))?;
        Ok(ca)
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn ca(&self) -> String {
        self.path("ca.pem")
    }

    /// Serve `app` over HTTPS with the CA's server certificate; its address.
    async fn serve(&self, app: Router) -> Result<SocketAddr> {
        let read = |f: &str| std::fs::read(Path::new(&self.path(f)));
        let config = peregrine::tls::server_config(&read("server.pem")?, &read("server.key")?)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            tower_service::Service::call(&mut app.clone(), req)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(addr)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_of_the_ca_given_are_trusted_and_others_refused() -> Result<()> {
    let ours = TestCa::new("whip-ca")?;
    let stranger = TestCa::new("whip-stranger")?;
    let (app, _seen, mut peers) = endpoint();
    let trusted = ours.serve(app).await?;
    let (app, stranger_seen, _stranger_peers) = endpoint();
    let untrusted = stranger.serve(app).await?;
    let trusted_url = format!("https://{trusted}/whip/endpoint/cam");
    let untrusted_url = format!("https://{untrusted}/whip/endpoint/cam");

    let server = Server::start(&[
        "--source",
        "testsrc",
        "--resolution",
        "320x240",
        "--whip-forward",
        &trusted_url,
        "--whip-forward",
        &untrusted_url,
        "--whip-token",
        TOKEN,
        "--whip-ca",
        &ours.ca(),
    ])
    .await?;
    // The endpoint refuses the first POST; the second, after the backoff, publishes.
    let mut peer = tokio::time::timeout(Duration::from_secs(15), peers.recv())
        .await
        .context("no second POST over https within 15 s")?
        .context("endpoint gone")?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    let mut decoder = H264Decoder::new()?;
    let mut decoded = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while decoded < 10 {
        let frame = tokio::time::timeout_at(until.into(), peer.next_frame())
            .await
            .context("fewer than 10 pictures in 10 s")?
            .context("receiver ended")?;
        if decoder.decode(&frame.data)?.is_some() {
            decoded += 1;
        }
    }

    let state = server
        .wait_state(Duration::from_secs(10), |s| {
            s["whip_forwards"][0]["state"] == "connected"
                && s["whip_forwards"][1]["failures"].as_u64() >= Some(1)
        })
        .await?;
    let refused = &state["whip_forwards"][1];
    println!("refused: {refused}");
    assert_eq!(refused["url"], untrusted_url.as_str(), "{state}");
    assert_eq!(refused["sessions"], 0, "{refused}");
    let why = refused["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("TLS") && why.contains("UnknownIssuer"),
        "the error says the certificate is not trusted: {why}"
    );
    assert!(
        stranger_seen.lock().unwrap().posts.is_empty(),
        "nothing is sent to a server that is not trusted"
    );
    Ok(())
}
