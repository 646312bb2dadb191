//! The smallest HTTP/1.1 client the WHIP client needs: one request per connection,
//! plain `http://`, bounded in time and in the size of what it reads.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for a connection, and for a whole reply.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply body read (an SDP answer is a few KiB).
const MAX_BODY: usize = 256 << 10;

/// A reply: its status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Send one request to `uri` (`http://` only) with `headers` and, if given, a body of
/// `(content type, bytes)`.
pub async fn request(
    method: Method,
    uri: &Uri,
    headers: &[(&'static str, String)],
    body: Option<(&'static str, String)>,
) -> Result<Reply> {
    if uri.scheme_str() != Some("http") {
        bail!("{uri}: only http:// is supported");
    }
    let authority = uri.authority().context("no host in the URL")?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| anyhow!("connecting to {authority} timed out"))?
        .with_context(|| format!("cannot connect to {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
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
    let req = req.body(body)?;
    let exchange = async {
        let res = sender.send_request(req).await?;
        let (parts, body) = res.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the reply: {e}"))?
            .to_bytes();
        Ok::<_, anyhow::Error>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{uri} did not answer within {}s", TIMEOUT.as_secs()))?
}
