//! What a viewer's start costs the WebRTC engine in CPU: answering a browser's offer
//! (WHEP, WHIP) and making our own (the Janus API), on one core of this machine.
//!
//! ```sh
//! cargo bench --bench signalling [-- --rounds N]
//! ```
//!
//! The browser's offer is a recorded Chromium one (`tests/fixtures/chromium_offer.sdp`:
//! video only, recvonly, some 30 payload types). Not a test: nothing here fails on a
//! figure.

use std::time::{Duration, Instant};

use peregrine::rtc::peer::{Peer, PeerSetup};

fn setup(i: usize) -> PeerSetup {
    PeerSetup {
        ufrag: format!("bench{i:011}"),
        pwd: "benchpasswordbenchpassword".into(),
        ssrc: 1 + i as u32,
        profile_level_id: "42c01f".into(),
        candidates: vec!["127.0.0.1:20000".parse().expect("an address")],
        orientation: 0,
        loopback_only: true,
        audio: None,
        publisher: None,
        aead_only: true,
    }
}

/// The mean time of `rounds` runs of `f`, after a few to warm up.
fn mean(rounds: usize, mut f: impl FnMut(usize)) -> Duration {
    for i in 0..rounds.min(20) {
        f(i);
    }
    let start = Instant::now();
    for i in 0..rounds {
        f(i);
    }
    start.elapsed() / rounds as u32
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let offer = include_str!("../../tests/fixtures/chromium_offer.sdp");
    let answer = mean(rounds, |i| {
        Peer::answer(setup(i), offer, Instant::now()).expect("the offer is answered");
    });
    let ours = mean(rounds, |i| {
        Peer::offer(setup(i), Instant::now()).expect("an offer");
    });
    println!("signalling CPU per viewer, mean of {rounds}:");
    println!(
        "  answer a Chromium offer (WHEP)  {:>9.1} µs",
        answer.as_secs_f64() * 1e6
    );
    println!(
        "  make our offer (Janus API)      {:>9.1} µs",
        ours.as_secs_f64() * 1e6
    );
}
