//! What a WHEP player or WHIP publisher sends: the SDP offer it POSTs (read to choose
//! what we send, or answered to receive), the sdpfrag and If-Match of its PATCHes, and
//! the ICE restart made of both. Anyone who reaches the port can send any
//! bytes; reading them must never panic, and what is read must hold its bounds.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use peregrine::media::audio::published::SoundOutlet;
use peregrine::media::publisher;
use peregrine::media::Hub;
use peregrine::rtc::ice_restart::{ice_credentials, local_ice, restart_offer};
use peregrine::rtc::peer::{Peer, PeerSetup};
use peregrine::rtc::sdp::read_offer;
use peregrine::source::audio::AudioStatusHandle;
use peregrine::whep::patch::decide;
use peregrine::whep::sdpfrag::{self, MAX_FRAG_CANDIDATES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(media) = read_offer(text, "42e01f") {
        // The payload type chosen is one the offer lists as H.264 with mode 1.
        assert!(text.contains(&format!("a=rtpmap:{} ", media.video.payload_type)));
        // Then the whole answer path, the `rtc` crate's SDP parsing included.
        let setup = |publisher| PeerSetup {
            ufrag: "fuzzfuzzfuzzfuzz".into(),
            pwd: "fuzzpasswordfuzzpasswordfuzzpass".into(),
            ssrc: 0x1234_5678,
            profile_level_id: "42e01f".into(),
            candidates: vec![SocketAddr::from(([127, 0, 0, 1], 20000))],
            orientation: 0,
            loopback_only: true,
            audio: None,
            publisher,
            aead_only: true,
        };
        if let Ok((mut peer, answer)) = Peer::answer(setup(None), text, Instant::now()) {
            // The router reads our credentials from every answer.
            assert!(local_ice(&answer).is_some());
            // A restart of that offer is answered, with credentials, or refused.
            let restart = restart_offer(text, "fuzzRestart", "fuzzrestartpasswordfuzz");
            if let Ok(again) = peer.restart_ice(Instant::now(), &restart) {
                assert!(local_ice(&again).is_some());
            }
        }
        // As a WHIP publisher's offer: video received, everything else inactive.
        let (tap, _feed) = publisher::channel(Box::new(|| {}));
        let _ = Peer::answer(setup(Some(tap)), text, Instant::now());
        // And to a stream that takes its sound: its Opus received as well.
        let (tap, _feed) = publisher::channel(Box::new(|| {}));
        let outlet = SoundOutlet {
            hub: Hub::new(4),
            status: AudioStatusHandle::new("whip"),
        };
        let _ = Peer::answer(
            setup(Some(tap.with_sound(Some(outlet)))),
            text,
            Instant::now(),
        );
    }
    let _ = read_offer(text, "640028");
    if let Ok(frag) = sdpfrag::parse(text) {
        assert!(frag.candidates.len() <= MAX_FRAG_CANDIDATES);
        let (if_match, rest) = text.split_once('\n').unwrap_or((text, ""));
        let _ = decide(Some(if_match), "\"tag\"", sdpfrag::ice_ufrag(rest), &frag);
        if let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) {
            if sdpfrag::credentials_valid(ufrag, pwd) {
                // Credentials taken go into the restart offer whole, one line each.
                let offer = restart_offer("a=ice-ufrag:x\r\na=ice-pwd:y\r\n", ufrag, pwd);
                assert_eq!(ice_credentials(&offer), Some((ufrag.clone(), pwd.clone())));
                assert_eq!(offer.lines().count(), 2);
            }
        }
    }
});
