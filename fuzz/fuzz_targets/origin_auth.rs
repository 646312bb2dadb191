//! What a browser or any client puts in headers and request fields: the Origin and Host
//! judged by the origin policy, and Janus credentials (API secret, stored and signed
//! tokens) judged by the auth check, with stored tokens added and removed as the Admin
//! API does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::janus::auth::{signed_token_plugins, Auth, TokenStore, Tokens};
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

    // Stored tokens: only what was added is accepted, and nothing once removed.
    let plugin = "janus.plugin.ustreamer";
    let store = TokenStore::new(&["given".to_string()], &[plugin]);
    let stored = Auth {
        api_secret: None,
        tokens: Some(Tokens::Stored(store.clone())),
    };
    assert_eq!(stored.allows(None, Some(a)), a == "given");
    if store.insert(b).is_ok() {
        assert!(stored.allows(None, Some(b)));
        assert!(!store.may_use(b, plugin) || b == "given");
        assert!(store.allow(b, plugin));
        assert!(store.may_use(b, plugin));
        assert!(store.list().iter().any(|t| t.token == b));
        assert!(store.remove(b));
        assert!(!stored.allows(None, Some(b)));
        assert_eq!(store.plugins(b), None);
    }
    assert_eq!(store.contains(c), c == "given" && b != "given");
});
