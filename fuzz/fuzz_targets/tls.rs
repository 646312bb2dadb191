//! What a TLS port reads: the certificate and key files (PEM) given with --tls-cert and
//! --tls-key, and the first bytes any client sends to a TLS listener, handed to a
//! server configured by `tls::server_config` as the accept path does.
#![no_main]

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use peregrine::tls::server_config;

/// A self-signed certificate made once, so client bytes reach a real handshake.
fn config() -> &'static Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = made.cert.pem();
        let key = made.signing_key.serialize_pem();
        Arc::new(server_config(cert.as_bytes(), key.as_bytes()).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    // Files: everything before the first NUL is the certificate, the rest the key.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (cert, key) = data.split_at(split);
    let _ = server_config(cert, key.get(1..).unwrap_or_default());

    // A client's bytes, fed as they would arrive.
    let mut conn = rustls::ServerConnection::new(config().clone()).unwrap();
    let mut input = Cursor::new(data);
    while (input.position() as usize) < data.len() {
        match conn.read_tls(&mut input) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    break;
                }
            }
        }
    }
});
