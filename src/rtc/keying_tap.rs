//! The DTLS-SRTP keying material of one connection, kept as the stack derives it, so
//! that an established viewer's RTP can be encrypted and sent without going through the
//! stack's per-packet write pipeline (see [`super::direct_srtp`]).
//!
//! The stack exposes neither the keys nor its SRTP context. It does take the crypto
//! provider from the application, and it computes the RFC 5705 exporter through it:
//! TLS 1.2's P_hash, whose output blocks are `HMAC(master_secret, A(i) || seed)` with
//! `seed = "EXTRACTOR-dtls_srtp" || client_random || server_random` (RFC 5764 §4.2).
//! This provider is the default one with each HMAC watched for exactly that input; the
//! blocks it produces, in order, are the keying material. The shape is fixed by the
//! RFCs, not by the stack; if the stack ever computed it otherwise, nothing would be
//! kept and every packet would simply go the stack's way.

use std::sync::{Arc, Mutex, OnceLock};

use rtc::crypto::{
    default_provider, ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm,
    CbcAlgorithm, CbcCipher, CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm,
    KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SecretVec,
    SignatureScheme, SigningKey, StreamCipher, StreamCipherAlgorithm,
};
use rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP;

/// Client and server randoms in the exporter's seed, 32 bytes each.
const RANDOMS_LEN: usize = 64;

/// Where the exporter's output of one connection is collected.
#[derive(Default)]
pub struct KeyingTap {
    blocks: Mutex<Vec<u8>>,
}

impl KeyingTap {
    /// The exporter output collected so far (whole hash blocks, at least as long as the
    /// keying material asked for), or `None` before the DTLS handshake has finished.
    pub fn keying_material(&self) -> Option<SecretVec> {
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        (!blocks.is_empty()).then(|| SecretVec::new(blocks.clone()))
    }

    /// Look at one HMAC computation of `hash_len`-byte output.
    fn observe(&self, hash_len: usize, input: &[&[u8]], output: &[u8]) {
        let label = LABEL_EXTRACTOR_DTLS_SRTP.as_bytes();
        let seed_len = label.len() + RANDOMS_LEN;
        let total: usize = input.iter().map(|s| s.len()).sum();
        // A(1) = HMAC(secret, seed): a new export starts.
        if total == seed_len && concatenated(input, 0, label.len()).as_deref() == Some(label) {
            self.lock().clear();
            return;
        }
        // An output block: HMAC(secret, A(i) || seed).
        if total == hash_len + seed_len
            && concatenated(input, hash_len, label.len()).as_deref() == Some(label)
        {
            self.lock().extend_from_slice(output);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for KeyingTap {
    fn drop(&mut self) {
        self.lock().fill(0);
    }
}

/// `len` bytes from `offset` of the concatenation of `parts`, if it is that long.
fn concatenated(parts: &[&[u8]], offset: usize, len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut skip = offset;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        let take = (len - out.len()).min(part.len() - skip);
        out.extend_from_slice(&part[skip..skip + take]);
        skip = 0;
        if out.len() == len {
            return Some(out);
        }
    }
    None
}

/// The process's built-in provider, shared by every connection's tap.
pub fn base() -> Result<Arc<dyn RTCCryptoProvider>, CryptoError> {
    static BASE: OnceLock<Result<Arc<dyn RTCCryptoProvider>, String>> = OnceLock::new();
    BASE.get_or_init(|| default_provider().map_err(|e| e.to_string()))
        .clone()
        .map_err(|_| CryptoError::NoDefaultProvider)
}

/// The default crypto provider with `tap` watching its HMACs; one per connection.
pub fn tapped_provider(
    tap: Arc<KeyingTap>,
) -> Result<Arc<dyn RTCCryptoProvider>, rtc::shared::error::Error> {
    let inner = base().map_err(|e| rtc::shared::error::Error::Crypto(e.to_string()))?;
    Ok(Arc::new(TappedProvider {
        crypto: TappedCrypto {
            inner: inner.clone(),
            tap,
        },
        inner,
    }))
}

struct TappedProvider {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: TappedCrypto,
}

impl RTCCryptoProvider for TappedProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }
    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

struct TappedCrypto {
    inner: Arc<dyn RTCCryptoProvider>,
    tap: Arc<KeyingTap>,
}

impl RTCCrypto for TappedCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }
    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }
    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }
    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        let inner = self.inner.crypto().new_hmac(algorithm, key)?;
        Ok(Box::new(TappedMac {
            inner,
            tap: self.tap.clone(),
        }))
    }
    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }
    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }
    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }
    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }
    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }
    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }
    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

struct TappedMac {
    inner: Box<dyn Mac>,
    tap: Arc<KeyingTap>,
}

impl Mac for TappedMac {
    fn output_len(&self) -> usize {
        self.inner.output_len()
    }
    fn sign(&mut self, input: &[&[u8]], output: &mut [u8]) -> Result<(), CryptoError> {
        self.inner.sign(input, output)?;
        self.tap.observe(self.inner.output_len(), input, output);
        Ok(())
    }
    fn verify(&mut self, input: &[&[u8]], expected: &[u8]) -> Result<(), CryptoError> {
        self.inner.verify(input, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS 1.2 P_SHA256 as RFC 5246 §5 defines it, through `crypto`.
    fn p_sha256(crypto: &dyn RTCCrypto, secret: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut a = seed.to_vec();
        while out.len() < len {
            let mut mac = crypto.new_hmac(HmacAlgorithm::Sha256, secret).unwrap();
            let mut next = vec![0; 32];
            mac.sign(&[&a], &mut next).unwrap();
            a = next;
            let mut mac = crypto.new_hmac(HmacAlgorithm::Sha256, secret).unwrap();
            let mut block = vec![0; 32];
            mac.sign(&[&a, seed], &mut block).unwrap();
            out.extend_from_slice(&block);
        }
        out.truncate(len);
        out
    }

    fn exporter_seed(label: &str) -> Vec<u8> {
        let mut seed = label.as_bytes().to_vec();
        seed.extend((0..RANDOMS_LEN as u8).map(|i| i.wrapping_mul(7)));
        seed
    }

    #[test]
    fn the_dtls_srtp_export_is_kept_whole_blocks_in_order() {
        let tap = Arc::new(KeyingTap::default());
        let provider = tapped_provider(tap.clone()).unwrap();
        let plain = base().unwrap();
        let secret = [0x5a; 48];
        let seed = exporter_seed(LABEL_EXTRACTOR_DTLS_SRTP);

        let exported = p_sha256(provider.crypto(), &secret, &seed, 56);
        let expected = p_sha256(plain.crypto(), &secret, &seed, 64);
        assert_eq!(&expected[..56], &exported[..]);
        let kept = tap.keying_material().expect("the export was seen");
        assert_eq!(kept.as_ref(), &expected[..], "two SHA-256 blocks, in order");

        // A second export (a new handshake) replaces the first.
        let secret = [0x11; 48];
        let expected = p_sha256(plain.crypto(), &secret, &seed, 96);
        p_sha256(provider.crypto(), &secret, &seed, 88);
        assert_eq!(tap.keying_material().unwrap().as_ref(), &expected[..]);
    }

    #[test]
    fn other_hmacs_are_not_kept() {
        let tap = Arc::new(KeyingTap::default());
        let provider = tapped_provider(tap.clone()).unwrap();
        // The handshake's own PRF runs (master secret, key expansion) and STUN's
        // message integrity go through the same HMACs.
        p_sha256(
            provider.crypto(),
            &[1; 32],
            &exporter_seed("master secret"),
            48,
        );
        p_sha256(
            provider.crypto(),
            &[1; 48],
            &exporter_seed("key expansion"),
            104,
        );
        let mut mac = provider
            .crypto()
            .new_hmac(HmacAlgorithm::Sha1, b"icepassword")
            .unwrap();
        let mut out = vec![0; 20];
        mac.sign(&[b"a STUN message of some length"], &mut out)
            .unwrap();
        assert!(tap.keying_material().is_none());
    }

    #[test]
    fn concatenation_spans_parts() {
        let parts: [&[u8]; 3] = [b"ab", b"cde", b"f"];
        assert_eq!(concatenated(&parts, 1, 4).as_deref(), Some(&b"bcde"[..]));
        assert_eq!(concatenated(&parts, 5, 1).as_deref(), Some(&b"f"[..]));
        assert_eq!(concatenated(&parts, 4, 3), None);
    }
}
