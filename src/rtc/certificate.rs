//! One DTLS certificate for every peer connection of the process, as Janus has one.
//!
//! Left to itself the WebRTC stack makes a new ECDSA key and self-signed certificate
//! for each peer connection: key generation and signing on every viewer's offer (time
//! the viewer waits for its answer) and a key and certificate kept per viewer. The
//! certificate proves nothing about the server (browsers check only that the DTLS
//! handshake matches the fingerprint in the SDP), so sharing it loses nothing.

use std::sync::OnceLock;

use rtc::crypto::{default_provider, SignatureScheme};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::{RTCConfiguration, RTCConfigurationBuilder};

static SHARED: OnceLock<Option<RTCCertificate>> = OnceLock::new();

/// The process's certificate, made on first use; `None` if that failed (each peer
/// connection then makes its own, as the stack does by default).
pub fn shared() -> Option<&'static RTCCertificate> {
    SHARED
        .get_or_init(|| match generate() {
            Ok(cert) => Some(cert),
            Err(e) => {
                tracing::warn!(error = %e, "no shared DTLS certificate; each peer makes its own");
                None
            }
        })
        .as_ref()
}

fn generate() -> Result<RTCCertificate, String> {
    let provider = default_provider().map_err(|e| e.to_string())?;
    let params = CertificateParams::new(vec!["peregrine".to_owned()]).map_err(|e| e.to_string())?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .map_err(|e| e.to_string())
}

/// A peer connection's configuration with the shared certificate.
pub fn configuration() -> RTCConfiguration {
    let builder = RTCConfigurationBuilder::new();
    match shared() {
        Some(cert) => builder.with_certificates(vec![cert.clone()]),
        None => builder,
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_carries_the_same_certificate() {
        let a = configuration();
        let b = configuration();
        assert_eq!(a.certificates().len(), 1);
        assert_eq!(a.certificates(), b.certificates());
    }
}
