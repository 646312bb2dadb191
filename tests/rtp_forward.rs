//! `--rtp-forward` end to end: the real binary sends plain RTP to a UDP receiver on
//! loopback that reassembles and decodes it, reads the sender reports like Janus does to
//! learn where feedback goes, and sends PLIs back: one is answered with a keyframe at
//! once, a flood only with keyframes a second apart.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use peregrine::media::h264::{nal_type, nal_units, NalType};
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::depacketizer::depacketize;
use support::{http_request, Server};
use tokio::net::UdpSocket;

const WIDTH: usize = 320;
const HEIGHT: usize = 240;

/// One RTP packet's fields the test needs.
struct Rtp {
    payload_type: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(b: &[u8]) -> Result<Rtp> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        bail!("not RTP: {:02x?}", &b[..b.len().min(12)]);
    }
    let csrcs = usize::from(b[0] & 0x0f) * 4;
    let mut start = 12 + csrcs;
    if b[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([b[start + 2], b[start + 3]]));
        start += 4 + words * 4;
    }
    Ok(Rtp {
        payload_type: b[1] & 0x7f,
        marker: b[1] & 0x80 != 0,
        seq: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: b
            .get(start..)
            .context("header longer than packet")?
            .to_vec(),
    })
}

/// Receives the forward: access units reassembled in sequence (a gap fails the test,
/// loopback loses nothing), every keyframe's arrival time, pictures decoded.
struct Receiver {
    socket: UdpSocket,
    decoder: H264Decoder,
    au: BytesMut,
    next_seq: Option<u16>,
    ssrc: Option<u32>,
    last_timestamp: Option<u32>,
    pictures: usize,
    keyframes: Vec<Instant>,
    max_packet: usize,
}

impl Receiver {
    /// Read packets until one completes an access unit; returns whether it was an IDR.
    async fn next_access_unit(&mut self) -> Result<bool> {
        let mut buf = [0u8; 2048];
        loop {
            let len = tokio::time::timeout(Duration::from_secs(5), self.socket.recv(&mut buf))
                .await
                .context("no RTP for 5 s")??;
            self.max_packet = self.max_packet.max(len);
            let p = parse_rtp(&buf[..len])?;
            assert_eq!(p.payload_type, 96, "H.264 on PT 96");
            assert_eq!(*self.ssrc.get_or_insert(p.ssrc), p.ssrc, "one SSRC");
            if let Some(expected) = self.next_seq {
                assert_eq!(p.seq, expected, "packets in sequence, none lost");
            }
            self.next_seq = Some(p.seq.wrapping_add(1));
            depacketize(&p.payload, &mut self.au).map_err(anyhow::Error::msg)?;
            if !p.marker {
                continue;
            }
            if let Some(last) = self.last_timestamp {
                assert_ne!(p.timestamp, last, "each access unit has its own timestamp");
            }
            self.last_timestamp = Some(p.timestamp);
            let au = self.au.split().freeze();
            let types: Vec<_> = nal_units(&au).filter_map(nal_type).collect();
            let key = types.contains(&NalType::Idr);
            if self.pictures == 0 {
                assert!(
                    key && types.contains(&NalType::Sps) && types.contains(&NalType::Pps),
                    "the forward starts with a keyframe and its parameter sets: {types:?}"
                );
            }
            if key {
                self.keyframes.push(Instant::now());
            }
            if let Some(pic) = self.decoder.decode(&au)? {
                assert_eq!((pic.width, pic.height), (WIDTH, HEIGHT));
            }
            self.pictures += 1;
            return Ok(key);
        }
    }

    async fn run_for(&mut self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.next_access_unit().await?;
        }
        Ok(())
    }
}

fn pli(media_ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&media_ssrc.to_be_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_forward_decodes_and_answers_keyframe_requests_coalesced() -> Result<()> {
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let rtcp = UdpSocket::bind("127.0.0.1:0").await?;
    let target = format!(
        "video={},rtcp={}",
        rtp.local_addr()?,
        rtcp.local_addr()?.port()
    );
    // A GOP of 20 s: every keyframe seen in the test was asked for.
    let server = Server::start(&[
        "--source",
        "testsrc",
        "--resolution",
        &format!("{WIDTH}x{HEIGHT}"),
        "--desired-fps",
        "30",
        "--h264-gop",
        "600",
        "--rtp-packet-size",
        "1000",
        "--rtp-forward",
        &target,
    ])
    .await?;
    let mut rx = Receiver {
        socket: rtp,
        decoder: H264Decoder::new()?,
        au: BytesMut::new(),
        next_seq: None,
        ssrc: None,
        last_timestamp: None,
        pictures: 0,
        keyframes: Vec::new(),
        max_packet: 0,
    };
    let first = Instant::now();
    rx.next_access_unit().await?;
    println!("first access unit after {:?}", first.elapsed());
    while rx.pictures < 60 {
        rx.next_access_unit().await?;
    }
    assert!(rx.max_packet <= 1000, "--rtp-packet-size kept");

    // The sender report tells where feedback goes (the forward's own socket).
    let mut buf = [0u8; 1500];
    let (len, feedback_to): (usize, SocketAddr) =
        tokio::time::timeout(Duration::from_secs(3), rtcp.recv_from(&mut buf))
            .await
            .context("no sender report")??;
    assert!(
        len >= 28 && buf[1] == 200,
        "a sender report: {:02x?}",
        &buf[..len]
    );
    let ssrc = rx.ssrc.context("no SSRC")?;
    assert_eq!(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]), ssrc);

    // Garbage on the feedback socket changes nothing.
    for junk in [
        &b""[..],
        &[0xff; 3],
        &[0x80, 206, 0xff, 0xff],
        &[0x81, 206, 0, 0],
    ] {
        rtcp.send_to(junk, feedback_to).await?;
    }

    // One PLI, more than a second after the first keyframe: a keyframe follows promptly.
    rx.run_for(Duration::from_millis(1200)).await?;
    let keys_before = rx.keyframes.len();
    let asked = Instant::now();
    rtcp.send_to(&pli(ssrc), feedback_to).await?;
    while rx.keyframes.len() == keys_before {
        rx.next_access_unit().await?;
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "no keyframe 2 s after a PLI"
        );
    }
    println!("PLI answered in {:?}", asked.elapsed());

    // A flood: ten "servers" each sending a PLI every 100 ms for 5 s.
    let keys_before = rx.keyframes.len();
    let flood = {
        let to = feedback_to;
        let packet = pli(ssrc);
        let sender = UdpSocket::bind("127.0.0.1:0").await?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for _ in 0..500 {
                tick.tick().await;
                let _ = sender.send_to(&packet, to).await;
            }
        })
    };
    let flood_start = Instant::now();
    rx.run_for(Duration::from_secs(5)).await?;
    flood.await?;
    let keys = rx.keyframes.len() - keys_before;
    println!(
        "{keys} keyframes for 500 PLIs in {:?}",
        flood_start.elapsed()
    );
    assert!(
        (3..=6).contains(&keys),
        "a flood of PLIs gets about one keyframe a second, got {keys}"
    );

    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["rtp_forwards"][0]["keyframe_requests"].as_u64() >= Some(400)
        })
        .await?;
    let f = &state["rtp_forwards"][0];
    println!("state: {f}");
    assert_eq!(f["stream"], "default");
    assert!(f["packets"].as_u64() > Some(100));
    assert!(f["bytes"].as_u64() > f["packets"].as_u64());
    assert!(
        f["keyframe_requests_coalesced"].as_u64() >= Some(400),
        "all but about one request a second coalesced: {f}"
    );
    let (status, metrics) = http_request(server.http_port, "GET", "/metrics", None).await?;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics)?;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("peregrine_rtp_forward_keyframe_requests_total{"))
        .context("no keyframe request counter in /metrics")?;
    assert!(line.contains("stream=\"default\""), "{line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_forward_sends_the_sound_as_opus_at_48_khz() -> Result<()> {
    let video = UdpSocket::bind("127.0.0.1:0").await?;
    let audio = UdpSocket::bind("127.0.0.1:0").await?;
    let target = format!(
        "video={},audio={}",
        video.local_addr()?,
        audio.local_addr()?
    );
    // The test pattern comes with its test tone.
    let _server = Server::start(&["--source", "testsrc", "--rtp-forward", &target]).await?;
    let mut buf = [0u8; 2048];
    let mut last: Option<(u16, u32)> = None;
    let mut ssrc = None;
    for _ in 0..50 {
        let len = tokio::time::timeout(Duration::from_secs(5), audio.recv(&mut buf))
            .await
            .context("no Opus RTP for 5 s")??;
        let p = parse_rtp(&buf[..len])?;
        assert_eq!(p.payload_type, 111, "Opus on PT 111");
        assert!(p.marker, "every Opus frame is a whole access unit");
        assert!(!p.payload.is_empty());
        assert_eq!(*ssrc.get_or_insert(p.ssrc), p.ssrc);
        if let Some((seq, ts)) = last {
            assert_eq!(p.seq, seq.wrapping_add(1), "in sequence");
            let step = p.timestamp.wrapping_sub(ts);
            assert!(
                step > 0 && step % 960 == 0 && step <= 960 * 5,
                "20 ms frames at 48 kHz step by 960, got {step}"
            );
        }
        last = Some((p.seq, p.timestamp));
    }
    assert_ne!(ssrc, None);
    let len = tokio::time::timeout(Duration::from_secs(5), video.recv(&mut buf))
        .await
        .context("no video RTP")??;
    let p = parse_rtp(&buf[..len])?;
    assert_eq!(p.payload_type, 96);
    assert_ne!(
        Some(p.ssrc),
        ssrc,
        "video and sound have SSRCs of their own"
    );
    Ok(())
}
