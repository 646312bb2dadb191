//! The TOML configuration file and the values inside it, resolved as at start-up
//! (`Config::load` with no command-line flags and the file's text already read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::config::{parse_port_range, parse_resolution, Args, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((w, h)) = parse_resolution(text) {
        assert!((16..=4096).contains(&w) && (16..=4096).contains(&h));
        assert!(w % 2 == 0 && h % 2 == 0);
    }
    if let Ok((first, last)) = parse_port_range(text) {
        assert!(first <= last);
    }
    let Ok(args) = toml::from_str::<Args>(text) else {
        return;
    };
    assert!(args.config.is_none(), "the file cannot name another file");
    if let Ok(cfg) = Config::load(args) {
        // Whatever loads passes the one check every source relies on.
        assert_eq!(cfg.video.check(), Ok(()));
        assert!((200..=1500).contains(&cfg.rtp_packet_size));
        assert!(cfg.janus_http_path.starts_with('/') && cfg.janus_http_path.len() > 1);
        assert!(cfg.udp_ports.0 <= cfg.udp_ports.1);
        let streams = cfg.stream_configs();
        assert_eq!(streams[0].name, "default");
        for s in &streams {
            assert!(peregrine::media::stream::valid_name(&s.name));
            assert_eq!(s.video.check(), Ok(()));
            assert!((8_000..=192_000).contains(&s.audio.rate));
            assert!((1..=2).contains(&s.audio.channels));
            assert!((6..=510).contains(&s.audio.bitrate_kbps));
        }
    }
});
