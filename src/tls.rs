//! TLS for the TCP listeners: a certificate chain and its private key read from PEM
//! files, read again on SIGHUP so a renewed certificate is used without a restart.
//! New connections get the certificate in force when they are accepted; a file that
//! cannot be used on reload leaves the previous certificate in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Where a certificate chain and its key are read from (they may be one file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate in use by one or more listeners.
pub struct Tls {
    files: CertFiles,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Read and check the files; the error says which file is wrong and how.
    pub fn load(files: CertFiles) -> Result<Arc<Tls>> {
        let config = read_config(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        }))
    }

    /// Read the files again; on success new connections use them, on error the
    /// certificate in force stays.
    pub fn reload(&self) -> Result<()> {
        let config = read_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            TlsAcceptor::from(Arc::new(config));
        Ok(())
    }

    /// What accepts the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn files(&self) -> &CertFiles {
        &self.files
    }
}

fn read_config(files: &CertFiles) -> Result<ServerConfig> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    };
    let cert = read(&files.cert, "certificate")?;
    let key = if files.key == files.cert {
        cert.clone()
    } else {
        read(&files.key, "key")?
    };
    server_config(&cert, &key).map_err(|e| {
        anyhow!(
            "TLS certificate {} with key {}: {e:#}",
            files.cert.display(),
            files.key.display()
        )
    })
}

/// A server configuration from PEM text: the certificate chain (the server's own
/// certificate first) and a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the certificate file is not valid PEM: {}", pem_error(&e)))?;
    if chain.is_empty() {
        bail!("the certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    }
    let key = private_key(key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                anyhow!("the private key does not belong to the certificate")
            }
            other => anyhow!("the certificate or key cannot be used: {other}"),
        })?;
    // Only HTTP/1.1 (and WebSockets over it) is served.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn private_key(pem_text: &[u8]) -> Result<PrivateKeyDer<'static>> {
    let has = |needle: &[u8]| pem_text.windows(needle.len()).any(|w| w == needle);
    if has(b"ENCRYPTED PRIVATE KEY") || has(b"Proc-Type: 4,ENCRYPTED") {
        bail!(
            "the private key is encrypted with a passphrase, which is not supported; \
             write it out unencrypted (e.g. `openssl pkey -in KEY -out KEY.plain`) and keep \
             that file readable only by the server's user"
        );
    }
    PrivateKeyDer::from_pem_slice(pem_text).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "the key file holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC \
             PRIVATE KEY)"
        ),
        other => anyhow!("the key file is not valid PEM: {}", pem_error(&other)),
    })
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::Base64Decode(_) => "bad base64 inside a PEM block".into(),
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_files_are_named_errors() {
        let err = server_config(b"", b"").unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let cert = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let err = server_config(cert, b"").unwrap_err().to_string();
        assert!(err.contains("not valid PEM"), "{err}");
        let open = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(server_config(open, b"").is_err());
        let err = private_key(b"hello").unwrap_err().to_string();
        assert!(err.contains("no PEM private key"), "{err}");
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = private_key(enc).unwrap_err().to_string();
        assert!(err.contains("encrypted"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = CertFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = format!("{:#}", Tls::load(files).unwrap_err());
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
