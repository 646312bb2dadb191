//! `--static DIR`: the files of a folder served at `/`, as µStreamer's file server does.
//! A request path is resolved inside the folder lexically (`..` never climbs above it);
//! what it names must be a regular file (or a folder with an index.html), reached
//! without a symbolic link, and still inside the folder once resolved on disk.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

/// Bytes read from a file per chunk of the response.
const CHUNK: usize = 64 * 1024;

/// The file `request_path` (as in the URL, percent-encoded) names under `root`, if it
/// may be served.
pub fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(request_path)?;
    let mut relative = PathBuf::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                relative.pop();
            }
            part => relative.push(part),
        }
    }
    // Each part is a plain name now; anything else (a root, a prefix) is refused.
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let mut path = root.join(&relative);
    let mut meta = std::fs::symlink_metadata(&path).ok()?;
    if meta.is_dir() {
        path.push("index.html");
        meta = std::fs::symlink_metadata(&path).ok()?;
    }
    if !meta.is_file() {
        return None; // a symbolic link, a socket, a device...
    }
    // A symbolic link to a folder on the way out of the root is caught here.
    let real = path.canonicalize().ok()?;
    let real_root = root.canonicalize().ok()?;
    real.starts_with(&real_root).then_some(real)
}

/// `%XX` escapes decoded; `None` for a bad escape, a NUL or text that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The Content-Type for a file name, by its extension (as µStreamer's short list).
pub fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "mp4" => "video/mp4",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// Serve `uri`'s file from `root`, streamed in chunks so a large file is never held
/// in memory whole.
pub async fn serve(root: &Path, method: &Method, uri: &Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(path) = resolve(root, uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot open a static file");
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
    };
    let length = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(_) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .boxed();
    (
        [
            (header::CONTENT_TYPE, mime_type(&path).to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("peregrine-static-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("site");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("sub/a b.txt"), "spaced").unwrap();
        std::fs::write(base.join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(&base, root.join("up")).unwrap();
        (base, root)
    }

    #[test]
    fn paths_stay_inside_the_folder() {
        let (base, root) = site();
        let real = |p: &str| root.join(p).canonicalize().unwrap();
        assert_eq!(resolve(&root, "/"), Some(real("index.html")));
        assert_eq!(resolve(&root, "/sub/a%20b.txt"), Some(real("sub/a b.txt")));
        // `..` stops at the root, encoded or not.
        assert_eq!(resolve(&root, "/../secret.txt"), None);
        assert_eq!(resolve(&root, "/%2e%2e/secret.txt"), None);
        assert_eq!(
            resolve(&root, "/sub/../../index.html"),
            Some(real("index.html"))
        );
        // Links are not followed out, whether to a file or a folder.
        assert_eq!(resolve(&root, "/link.txt"), None);
        assert_eq!(resolve(&root, "/up/secret.txt"), None);
        // Bad escapes, NUL, folders without an index.
        assert_eq!(resolve(&root, "/%zz"), None);
        assert_eq!(resolve(&root, "/index.html%00.png"), None);
        assert_eq!(resolve(&root, "/sub/"), None);
        assert_eq!(resolve(&root, "/missing"), None);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(
            mime_type(Path::new("a/INDEX.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(mime_type(Path::new("x.png")), "image/png");
        assert_eq!(mime_type(Path::new("noext")), "application/octet-stream");
    }
}
