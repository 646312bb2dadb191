//! The smallest HTTP/1.1 client the WHIP client needs: one request per connection,
//! `http://` or `https://`, bounded in time and in the size of what it reads. An
//! `https://` server must show a certificate for its host name signed by a CA of the
//! system's bundle or of the file given to [`HttpClient::new`] (a private CA).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest wait for a connection (TLS handshake included), and for a whole reply.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply body read (an SDP answer is a few KiB).
const MAX_BODY: usize = 256 << 10;
/// The system's CA certificates (Debian's `ca-certificates`).
pub const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A reply: its status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A client, with the CAs it trusts for `https://`.
#[derive(Clone)]
pub struct HttpClient {
    tls: TlsConnector,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting the system's CAs and those of `extra_ca` (PEM), whose errors
    /// name the file and what is wrong with it.
    pub fn new(extra_ca: Option<&Path>) -> Result<HttpClient> {
        let mut roots = RootCertStore::empty();
        // A machine without the bundle still reaches endpoints of the extra CA.
        if let Ok(pem) = std::fs::read(SYSTEM_CAS) {
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
            let (added, ignored) = roots.add_parsable_certificates(certs);
            tracing::debug!(added, ignored, "system CA certificates for https://");
        }
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            add_ca_file(&mut roots, &pem).with_context(|| format!("CA file {}", path.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpClient {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Send one request to `uri` with `headers` and, if given, a body of
    /// `(content type, bytes)`.
    pub async fn request(
        &self,
        method: Method,
        uri: &Uri,
        headers: &[(&'static str, String)],
        body: Option<(&'static str, String)>,
    ) -> Result<Reply> {
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("{uri}: only http:// and https:// are supported"),
        };
        let authority = uri.authority().context("no host in the URL")?;
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| anyhow!("connecting to {authority} timed out"))?
            .with_context(|| format!("cannot connect to {authority}"))?;
        let req = build_request(method, uri, headers, body)?;
        let exchange = async {
            if !secure {
                return exchange(stream, req).await;
            }
            let name = ServerName::try_from(host.to_string())
                .map_err(|_| anyhow!("{host:?} is not a host name TLS can check"))?;
            let tls = self
                .tls
                .connect(name, stream)
                .await
                .with_context(|| format!("TLS with {authority} failed"))?;
            exchange(tls, req).await
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{uri} did not answer within {}s", TIMEOUT.as_secs()))?
    }
}

/// Add every certificate of a PEM file; a file without one, or with one that is not a
/// CA certificate rustls can use, is an error.
fn add_ca_file(roots: &mut RootCertStore, pem: &[u8]) -> Result<()> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("not valid PEM: {e:?}"))?;
    if certs.is_empty() {
        bail!("holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| anyhow!("a certificate that cannot be trusted: {e}"))?;
    }
    Ok(())
}

fn build_request(
    method: Method,
    uri: &Uri,
    headers: &[(&'static str, String)],
    body: Option<(&'static str, String)>,
) -> Result<Request<Full<Bytes>>> {
    let authority = uri.authority().context("no host in the URL")?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority.as_str());
    for (name, value) in headers {
        req = req.header(*name, HeaderValue::from_str(value)?);
    }
    let body = match body {
        Some((content_type, bytes)) => {
            req = req.header(CONTENT_TYPE, content_type);
            Full::new(Bytes::from(bytes))
        }
        None => Full::new(Bytes::new()),
    };
    Ok(req.body(body)?)
}

/// One request and its reply over `io`.
async fn exchange<I>(io: I, req: Request<Full<Bytes>>) -> Result<Reply>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await?;
    let (parts, body) = res.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the reply: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_that_cannot_be_used_are_named_errors() {
        let mut roots = RootCertStore::empty();
        let err = format!("{:#}", add_ca_file(&mut roots, b"hello").unwrap_err());
        assert!(err.contains("no PEM certificate"), "{err}");
        let bad = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(add_ca_file(&mut roots, bad).is_err());
        let missing = Path::new("/nonexistent/ca.pem");
        let err = format!("{:#}", HttpClient::new(Some(missing)).unwrap_err());
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let client = HttpClient::new(None).unwrap();
        let uri: Uri = "ftp://127.0.0.1/x".parse().unwrap();
        let err = client
            .request(Method::GET, &uri, &[], None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("only http:// and https://"),
            "{err}"
        );
    }
}
