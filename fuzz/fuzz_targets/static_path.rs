//! Request paths as a client sends them to `--static`: `http::files::resolve` over a
//! folder with a file inside, one beside it and links out of it.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use peregrine::http::files::resolve;

/// The served folder, made once: `site/index.html`, `site/sub/a.txt`, and
/// `secret.txt` beside the folder, linked from inside it.
fn site() -> &'static PathBuf {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("fuzz-static-{}", std::process::id()));
        let root = base.join("site");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(base.join("secret.txt"), "outside").unwrap();
        let _ = std::os::unix::fs::symlink(base.join("secret.txt"), root.join("link.txt"));
        let _ = std::os::unix::fs::symlink(&base, root.join("up"));
        root.canonicalize().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let root = site();
    if let Some(found) = resolve(root, path) {
        assert!(
            found.starts_with(root),
            "{path:?} left the folder: {found:?}"
        );
        assert!(found.is_file());
    }
});
