//! A viewer's SDP answer and trickled candidates, as the engine takes them: the quick
//! structural check, the loopback candidate filter, then the `rtc` crate's parsing
//! through `Peer::apply_answer` on a freshly offered peer, with sound and microphone
//! offered (so the answer's audio section is read too) when the input's first byte is odd.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use peregrine::media::audio::mic::MicInput;
use peregrine::rtc::peer::{AudioSetup, Peer, PeerNote, PeerSetup};
use peregrine::rtc::sdp::{candidate_address, check_answer, keep_loopback_candidates};
use peregrine::rtc::RemoteCandidate;

fn offered_peer(now: Instant, with_sound: bool) -> Peer {
    let setup = PeerSetup {
        ufrag: "fuzzufragfuzzufr".into(),
        pwd: "fuzzpasswordfuzzpasswordfuzzpass".into(),
        ssrc: 0x1234_5678,
        profile_level_id: "42e01f".into(),
        candidates: vec![SocketAddr::from(([127, 0, 0, 1], 20000))],
        orientation: 90,
        loopback_only: true,
        audio: with_sound.then(|| AudioSetup {
            ssrc: 0x0bad_cafe,
            payload_type: 111,
            send: true,
            mic: Some((MicInput::channel(4).0, 1)),
        }),
        publisher: None,
        aead_only: true,
    };
    Peer::offer(setup, now).expect("offer").0
}

fuzz_target!(|data: &[u8]| {
    let sdp = String::from_utf8_lossy(data);

    let filtered = keep_loopback_candidates(&sdp);
    assert_eq!(
        keep_loopback_candidates(&filtered),
        filtered,
        "filter is idempotent"
    );
    for line in filtered.lines() {
        // The whole attribute value, as the filter sees it: `candidate:` is the name.
        if let Some(c) = line
            .strip_prefix("a=")
            .filter(|c| c.starts_with("candidate:"))
        {
            assert!(candidate_address(c).is_some_and(|ip| ip.is_loopback()));
        }
    }

    // Building a peer costs a certificate, so only answers that pass the cheap check
    // (which the engine applies first anyway) get that far.
    if check_answer(&sdp).is_err() {
        return;
    }
    let now = Instant::now();
    let mut peer = offered_peer(now, data.first().is_some_and(|b| b & 1 == 1));
    // Trickled candidates may arrive before the answer; every line is tried as one.
    for line in sdp.lines().take(8) {
        let _ = peer.add_remote_candidate(RemoteCandidate::Candidate(line.to_string()));
    }
    let _ = peer.apply_answer(now, &sdp);
    let _ = peer.add_remote_candidate(RemoteCandidate::Completed);
    peer.handle_timeout(now);
    let mut notes: Vec<PeerNote> = Vec::new();
    peer.poll_notes(&mut notes);
    let mut writes = Vec::new();
    peer.drain_writes(&mut writes);
    peer.close();
});
