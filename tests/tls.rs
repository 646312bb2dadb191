//! TLS on the real binary's TCP listeners: a test CA and server certificates made by
//! openssl, a rustls client trusting only that CA, https:// to /state and the Janus HTTP
//! API, wss:// to the Janus WebSocket API; plain HTTP and garbage to a TLS port, the
//! connection caps during handshakes, certificate reload on SIGHUP, the Janus config's
//! own TLS servers, and the starts that must fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use support::{binary, free_port, run_to_exit_on_free_ports, Captured};

/// Run `openssl COMMAND` (the first word of `line`) with each flag and file of
/// `files`, then the rest of `line` (which may end in a positional argument).
fn openssl(line: &str, files: &[(&str, &Path)]) -> Result<()> {
    let mut words = line.split_whitespace();
    let mut cmd = Command::new("openssl");
    cmd.args(words.next());
    for (flag, file) in files {
        cmd.arg(flag).arg(file);
    }
    cmd.args(words);
    let out = cmd
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

/// The kinds of private key files a server may be given.
#[derive(Clone, Copy)]
enum KeyForm {
    /// `PRIVATE KEY` (EC P-256).
    Pkcs8,
    /// `EC PRIVATE KEY`.
    Sec1,
    /// `RSA PRIVATE KEY`.
    Pkcs1,
}

/// A test CA in a folder of its own, issuing server certificates for 127.0.0.1.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Result<Pki> {
        let dir = std::env::temp_dir().join(format!("peregrine-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let pki = Pki { dir };
        openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN=peregrine-test-CA -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign",
            &[("-keyout", &pki.path("ca.key")), ("-out", &pki.ca())],
        )?;
        Ok(pki)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    fn key(&self, name: &str, form: KeyForm) -> Result<PathBuf> {
        let out = self.path(&format!("{name}.key"));
        let line = match form {
            KeyForm::Pkcs8 => "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256",
            KeyForm::Sec1 => "ecparam -name prime256v1 -genkey -noout",
            KeyForm::Pkcs1 => "genrsa -traditional 2048",
        };
        openssl(line, &[("-out", &out)])?;
        Ok(out)
    }

    /// A certificate for 127.0.0.1 and localhost with `key`, signed by the CA; the file
    /// holds the chain (the server's certificate, then the CA's).
    fn issue(&self, name: &str, key: &Path, serial: u32) -> Result<PathBuf> {
        let csr = self.path(&format!("{name}.csr"));
        let ext = self.path(&format!("{name}.ext"));
        let leaf = self.path(&format!("{name}.leaf.pem"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            &format!("req -new -subj /CN={name}"),
            &[("-key", key), ("-out", &csr)],
        )?;
        openssl(
            &format!("x509 -req -set_serial {serial} -days 2"),
            &[
                ("-in", &csr),
                ("-CA", &self.ca()),
                ("-CAkey", &self.path("ca.key")),
                ("-extfile", &ext),
                ("-out", &leaf),
            ],
        )?;
        let chain = self.path(&format!("{name}.pem"));
        let mut text = std::fs::read(&leaf)?;
        text.extend(std::fs::read(self.ca())?);
        std::fs::write(&chain, text)?;
        Ok(chain)
    }

    /// A key and a certificate for it.
    fn server(&self, name: &str, form: KeyForm, serial: u32) -> Result<(PathBuf, PathBuf)> {
        let key = self.key(name, form)?;
        let cert = self.issue(name, &key, serial)?;
        Ok((cert, key))
    }

    /// A client that trusts this CA alone.
    fn client(&self) -> Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.ca())?)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server's own certificate in a chain file, as it appears on the wire.
fn leaf(chain: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(chain)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

async fn tls_connect(tls: &TlsConnector, port: u16) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
        .await
        .context("TLS handshake timed out")??;
    Ok(stream)
}

/// The certificate the server presented on this connection.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().unwrap()[0].to_vec()
}

/// Send one HTTP/1.1 request on `io` (kept alive) and read its answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await?;
    tokio::time::timeout(Duration::from_secs(10), read_response(io))
        .await
        .context("no answer within 10 s")?
}

async fn read_response<S: AsyncRead + Unpin>(io: &mut S) -> Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = io.read(&mut chunk).await?;
        ensure!(n > 0, "closed before a complete head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no content-length in {head:?}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = io.read(&mut chunk).await?;
        ensure!(n > 0, "closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((status, body))
}

/// One request on a new TLS connection.
async fn https(
    tls: &TlsConnector,
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Value)> {
    let mut conn = tls_connect(tls, port).await?;
    let (status, body) = exchange(&mut conn, method, path, body).await?;
    Ok((status, serde_json::from_slice(&body)?))
}

type JanusWs<S> = tokio_tungstenite::WebSocketStream<S>;

/// A Janus WebSocket on `io` (already TLS or plain) to `url`.
async fn ws_open<S>(io: S, url: &str) -> Result<JanusWs<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
    Ok(tokio_tungstenite::client_async(req, io).await?.0)
}

/// Janus `create` on an open WebSocket; the session id.
async fn ws_session<S>(ws: &mut JanusWs<S>) -> Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let create = json!({"janus": "create", "transaction": "t1"}).to_string();
    ws.send(Message::text(create)).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .context("no reply within 10 s")?
        .ok_or_else(|| anyhow!("closed"))??;
    let reply: Value = serde_json::from_str(reply.to_text()?)?;
    ensure!(reply["janus"] == "success", "{reply}");
    reply["data"]["id"]
        .as_u64()
        .ok_or_else(|| anyhow!("no id in {reply}"))
}

/// Janus `create` over a new WebSocket on `io`.
async fn ws_create<S>(io: S, url: &str) -> Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws_session(&mut ws_open(io, url).await?).await
}

/// A running peregrine; killed when dropped.
struct Peregrine {
    child: Child,
    log: Captured,
    port: u16,
    ws_port: u16,
    http_port: u16,
}

impl Drop for Peregrine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peregrine {
    /// Start on free loopback ports with `args` (which give TLS to the main port), and
    /// wait until /state answers over https:// with this process's pid.
    async fn start(args: &[&str], client: &TlsConnector) -> Result<Peregrine> {
        let mut last = anyhow!("not started");
        for _attempt in 0..3 {
            let (port, ws, http) = (free_port(), free_port(), free_port());
            let mut all = vec![
                "--port".to_string(),
                port.to_string(),
                "--janus-ws-port".into(),
                ws.to_string(),
                "--janus-http-port".into(),
                http.to_string(),
            ];
            all.extend(args.iter().map(|a| a.to_string()));
            let mut p = Self::spawn(&all, (port, ws, http))?;
            match p.ready(client).await {
                Ok(()) => return Ok(p),
                Err(e) => last = e.context(p.log.text()),
            }
        }
        Err(last)
    }

    fn spawn(args: &[String], (port, ws_port, http_port): (u16, u16, u16)) -> Result<Peregrine> {
        let mut child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
            .args(["--source", "testsrc"])
            .args(args)
            // The program's own defaults: info lines, which the tests read.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Captured::default();
        log.read_from(child.stderr.take().unwrap());
        Ok(Peregrine {
            child,
            log,
            port,
            ws_port,
            http_port,
        })
    }

    async fn ready(&mut self, client: &TlsConnector) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("peregrine exited at start ({status})");
            }
            if let Ok((200, state)) = https(client, self.port, "GET", "/state", b"").await {
                ensure!(
                    state["pid"] == json!(self.child.id()),
                    "another process answers"
                );
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "no https /state within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn every_tcp_port_speaks_https_and_wss_with_the_certificate_given() -> Result<()> {
    let pki = Pki::new("ports")?;
    let (cert, key) = pki.server("server", KeyForm::Pkcs8, 1)?;
    let client = pki.client()?;
    let p = Peregrine::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &client,
    )
    .await?;

    // The page and /state on the main port, from the certificate given.
    let mut conn = tls_connect(&client, p.port).await?;
    assert_eq!(presented(&conn), leaf(&cert));
    let (status, page) = exchange(&mut conn, "GET", "/", b"").await?;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&page).contains("<video"),
        "the bundled page"
    );
    // The Janus HTTP API on its own port and on the main port's /janus.
    let create = json!({"janus": "create", "transaction": "c1"}).to_string();
    for port in [p.http_port, p.port] {
        let (status, reply) = https(&client, port, "POST", "/janus", create.as_bytes()).await?;
        assert_eq!(status, 200);
        assert_eq!(reply["janus"], "success", "{reply}");
        assert!(reply["data"]["id"].as_u64().is_some(), "{reply}");
    }
    // The Janus WebSocket API on its own port and on the main port's /janus/ws.
    let ws = tls_connect(&client, p.ws_port).await?;
    assert_eq!(presented(&ws), leaf(&cert));
    ws_create(ws, &format!("wss://127.0.0.1:{}/", p.ws_port)).await?;
    let ws = tls_connect(&client, p.port).await?;
    ws_create(ws, &format!("wss://127.0.0.1:{}/janus/ws", p.port)).await?;

    // The log names the https:// and wss:// URLs.
    let log = p.log.text();
    for url in [
        format!("viewer page at https://127.0.0.1:{}/", p.port),
        format!("wss://127.0.0.1:{}/", p.ws_port),
        format!("https://127.0.0.1:{}/janus", p.http_port),
    ] {
        assert!(log.contains(&url), "{url} not in\n{log}");
    }
    Ok(())
}

#[tokio::test]
async fn plain_http_garbage_and_silence_on_a_tls_port_fail_without_disturbing_others() -> Result<()>
{
    let pki = Pki::new("bad-clients")?;
    let (cert, key) = pki.server("server", KeyForm::Sec1, 2)?;
    let client = pki.client()?;
    let p = Peregrine::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--header-timeout",
            "2",
        ],
        &client,
    )
    .await?;
    // A client that keeps its connection while the others misbehave.
    let url = format!("wss://127.0.0.1:{}/", p.ws_port);
    let mut kept = ws_open(tls_connect(&client, p.ws_port).await?, &url).await?;
    ws_session(&mut kept).await?;

    let bad: [&[u8]; 3] = [
        b"GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
        &[0xff; 600],
    ];
    for (i, bytes) in bad.iter().enumerate() {
        let mut tcp = TcpStream::connect(("127.0.0.1", p.port)).await?;
        tcp.write_all(bytes).await?;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer));
        // Closed (cleanly or reset) well within the time allowed, never an HTTP answer.
        let closed = read.await.context("the connection stayed open")?;
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
            "case {i}: {answer:?} ({closed:?})"
        );
    }
    // A client that sends nothing is closed after the header timeout (2 s).
    let mut silent = TcpStream::connect(("127.0.0.1", p.port)).await?;
    let t0 = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(12),
        "closed after {waited:?}"
    );

    // The server and the kept connection carry on; the mistake is in the log.
    ws_session(&mut kept).await?;
    assert_eq!(https(&client, p.port, "GET", "/state", b"").await?.0, 200);
    let log = p
        .log
        .wait_for(Duration::from_secs(5), |t| t.contains("plain HTTP"))
        .await?;
    assert!(log.contains("use https:// and wss://"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}

#[tokio::test]
async fn connections_still_in_their_handshake_count_against_the_caps() -> Result<()> {
    let pki = Pki::new("caps")?;
    let (cert, key) = pki.server("server", KeyForm::Pkcs8, 3)?;
    let client = pki.client()?;
    let p = Peregrine::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--max-connections-per-ip",
            "2",
            "--header-timeout",
            "60",
        ],
        &client,
    )
    .await?;
    // Two connections that never start their handshake fill this address's places...
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(("127.0.0.1", p.port)).await?);
    }
    // (They are ahead of the next one in the listener's queue, which is accepted in order.)
    // ...so a real client's connection evicts the oldest of them, long before the
    // 60 s header timeout would.
    let t0 = Instant::now();
    assert_eq!(https(&client, p.port, "GET", "/state", b"").await?.0, 200);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), idle[0].read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "not evicted: {read:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    Ok(())
}

#[tokio::test]
async fn sighup_reads_the_certificate_again_and_a_bad_one_keeps_the_old() -> Result<()> {
    let pki = Pki::new("reload")?;
    let (first, first_key) = pki.server("first", KeyForm::Pkcs1, 0x1001)?;
    let (second, second_key) = pki.server("second", KeyForm::Sec1, 0x1002)?;
    // The files the server is given, replaced as a certificate renewal would.
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    let replace = |from: &Path, to: &Path| -> Result<()> {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp)?;
        std::fs::rename(&tmp, to)?;
        Ok(())
    };
    replace(&first, &cert)?;
    replace(&first_key, &key)?;
    let client = pki.client()?;
    let p = Peregrine::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &client,
    )
    .await?;
    let hup = || {
        let child = nix::unistd::Pid::from_raw(p.child.id() as i32);
        nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGHUP).expect("signal the server");
    };
    let mut before = tls_connect(&client, p.port).await?;
    assert_eq!(presented(&before), leaf(&first));

    replace(&second, &cert)?;
    replace(&second_key, &key)?;
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn = tls_connect(&client, p.port).await?;
        if presented(&conn) == leaf(&second) {
            break;
        }
        assert_eq!(presented(&conn), leaf(&first), "neither certificate");
        ensure!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same on the Janus ports, and the connection made before goes on.
    for port in [p.ws_port, p.http_port] {
        assert_eq!(presented(&tls_connect(&client, port).await?), leaf(&second));
    }
    assert_eq!(exchange(&mut before, "GET", "/state", b"").await?.0, 200);
    p.log
        .wait_for(Duration::from_secs(5), |t| {
            t.contains("TLS certificate read again")
        })
        .await?;

    // A key that does not belong to the certificate: said, and the second one stays.
    replace(&first_key, &key)?;
    hup();
    let log = p
        .log
        .wait_for(Duration::from_secs(10), |t| t.contains("does not belong"))
        .await?;
    let line = log.lines().find(|l| l.contains("does not belong")).unwrap();
    assert!(line.contains("ERROR") && line.contains("keep"), "{line}");
    assert_eq!(
        presented(&tls_connect(&client, p.port).await?),
        leaf(&second)
    );
    // A file that is not a certificate at all, the same.
    std::fs::write(&cert, "not a certificate")?;
    replace(&second_key, &key)?;
    hup();
    p.log
        .wait_for(Duration::from_secs(10), |t| {
            t.contains("no PEM certificate")
        })
        .await?;
    assert_eq!(
        presented(&tls_connect(&client, p.port).await?),
        leaf(&second)
    );
    assert_eq!(https(&client, p.port, "GET", "/state", b"").await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn unix_sockets_stay_plain_with_tls_on() -> Result<()> {
    let pki = Pki::new("unix")?;
    let (cert, key) = pki.server("server", KeyForm::Pkcs8, 4)?;
    let client = pki.client()?;
    let socket = pki.path("janus-http.sock");
    let p = Peregrine::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--janus-http-unix",
            socket.to_str().unwrap(),
        ],
        &client,
    )
    .await?;
    let mut unix = UnixStream::connect(&socket).await?;
    let create = json!({"janus": "create", "transaction": "u"}).to_string();
    let (status, body) = exchange(&mut unix, "POST", "/janus", create.as_bytes()).await?;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_slice(&body)?;
    assert_eq!(reply["janus"], "success", "{reply}");
    let log = p.log.text();
    assert!(log.contains(&format!("unix:{}", socket.display())), "{log}");
    Ok(())
}

#[tokio::test]
async fn a_janus_configs_wss_and_https_servers_listen_beside_the_plain_ones() -> Result<()> {
    let pki = Pki::new("janus")?;
    let (cert, key) = pki.server("janus", KeyForm::Sec1, 5)?;
    let client = pki.client()?;
    let (ws, wss, http, https_port) = (free_port(), free_port(), free_port(), free_port());
    let (c, k) = (cert.display(), key.display());
    let dir = pki.path("etc");
    std::fs::create_dir_all(&dir)?;
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text);
    write(
        "janus.plugin.ustreamer.jcfg",
        "video: { sink = \"tls-test::ustreamer::h264\" }".into(),
    )?;
    // As Janus's WebSocket transport reads it: the key may sit in cert_pem's file, so
    // cert_key is left out here.
    let both = pki.path("both.pem");
    std::fs::write(
        &both,
        [std::fs::read(&key)?, std::fs::read(&cert)?].concat(),
    )?;
    write(
        "janus.transport.websockets.jcfg",
        format!(
            "general: {{ ws = true, ws_port = {ws}, wss = true, wss_port = {wss} }}\n\
             certificates: {{ cert_pem = \"{}\", ciphers = \"HIGH\" }}",
            both.display()
        ),
    )?;
    write(
        "janus.transport.http.jcfg",
        format!(
            "general: {{ http = true, port = {http}, https = true, secure_port = {https_port} }}\n\
             certificates: {{ cert_pem = \"{c}\", cert_key = \"{k}\" }}"
        ),
    )?;
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--janus-config",
        dir.to_str().unwrap(),
    ]
    .map(String::from)
    .into();
    let mut p = Peregrine::spawn(&args, (port, ws, http))?;
    // The main port has no certificate here: plain HTTP.
    let deadline = Instant::now() + Duration::from_secs(20);
    while support::http_request(port, "GET", "/state", None)
        .await
        .is_err()
    {
        if let Some(status) = p.child.try_wait()? {
            bail!("exited ({status}):\n{}", p.log.text());
        }
        ensure!(Instant::now() < deadline, "no /state:\n{}", p.log.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let create = json!({"janus": "create", "transaction": "j"}).to_string();
    // Plain and TLS servers of each transport, side by side.
    let plain = TcpStream::connect(("127.0.0.1", ws)).await?;
    ws_create(plain, &format!("ws://127.0.0.1:{ws}/")).await?;
    let secure = tls_connect(&client, wss).await?;
    assert_eq!(presented(&secure), leaf(&cert));
    ws_create(secure, &format!("wss://127.0.0.1:{wss}/")).await?;
    let (status, body) =
        support::http_request(http, "POST", "/janus", Some(create.as_bytes())).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, reply) = https(&client, https_port, "POST", "/janus", create.as_bytes()).await?;
    assert_eq!(
        (status, &reply["janus"]),
        (200, &json!("success")),
        "{reply}"
    );
    let log = p.log.text();
    // What the file sets that is not used is said at start.
    assert!(log.contains("certificates.ciphers is not used"), "{log}");
    for url in [
        format!("ws://127.0.0.1:{ws}/ wss://127.0.0.1:{wss}/"),
        format!("http://127.0.0.1:{http}/janus https://127.0.0.1:{https_port}/janus"),
    ] {
        assert!(log.contains(&url), "{url} not in\n{log}");
    }
    Ok(())
}

#[test]
fn certificates_that_cannot_be_used_stop_the_start_with_exit_2() -> Result<()> {
    let pki = Pki::new("bad-files")?;
    let (cert, key) = pki.server("server", KeyForm::Pkcs8, 6)?;
    let other_key = pki.key("other", KeyForm::Sec1)?;
    let encrypted = pki.path("encrypted.key");
    openssl(
        "pkey -aes256 -passout pass:secret",
        &[("-in", &key), ("-out", &encrypted)],
    )?;
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "hello")?;
    let unreadable = pki.path("missing.pem");
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let cases: [(Vec<&str>, &str); 7] = [
        (vec!["--tls-cert", c], "tls_key"),
        (vec!["--tls-key", k], "tls_cert"),
        (
            vec!["--tls-cert", unreadable.to_str().unwrap(), "--tls-key", k],
            "missing.pem",
        ),
        (
            vec!["--tls-cert", c, "--tls-key", other_key.to_str().unwrap()],
            "does not belong",
        ),
        (
            vec!["--tls-cert", c, "--tls-key", encrypted.to_str().unwrap()],
            "encrypted",
        ),
        (
            vec!["--tls-cert", junk.to_str().unwrap(), "--tls-key", k],
            "no PEM certificate",
        ),
        (
            vec!["--tls-cert", c, "--tls-key", junk.to_str().unwrap()],
            "no PEM private key",
        ),
    ];
    for (args, needle) in cases {
        let out = run_to_exit_on_free_ports(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
    }
    Ok(())
}
