//! What a browser or any client puts in headers and request fields: the Origin and Host
//! judged by the origin policy, and Janus credentials (API secret, stored and signed
//! tokens) judged by the auth check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::janus::auth::{signed_token_plugins, Auth, Tokens};
use peregrine::origin::OriginPolicy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (a, b, c) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let policy = OriginPolicy::new(&["https://kvm.example:8443".to_string()]).unwrap();
    let _ = policy.judge(Some(a), &[b, c]);
    let _ = policy.judge(None, &[a]);
    let _ = OriginPolicy::new(&[a.to_string(), b.to_string()]);

    let _ = signed_token_plugins("fuzz-secret", a, 1_800_000_000);
    let auth = Auth {
        api_secret: Some("fuzz-secret".into()),
        tokens: Some(Tokens::Signed("fuzz-secret".into())),
    };
    let _ = auth.allows(Some(a), Some(b));
    let _ = auth.allows(None, Some(c));
});
