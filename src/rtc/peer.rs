//! One viewer's `rtc` peer connection behind a small interface the engine loop drives:
//! datagrams in, datagrams out, timers, state changes, shared frames (pictures and
//! sound) to stamp, and the viewer's microphone handed on.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{ReceiverReportBuilder, Registry, Slot};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCDtlsTransportState, RTCIceCandidate,
    RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::candidates::{self, Refusal, MAX_REMOTE_CANDIDATES};
use super::demux;
use super::direct_srtp::{DirectSrtp, Probe};
use super::extensions::{self, ExtensionIds};
use super::feedback::{self, FeedbackForwarder, VideoFeedback};
use super::frame::{OutAudio, OutFrame};
use super::keying_tap::{self, KeyingTap};
use super::nomination::{EarlyNomination, Feed, Role};
use super::peer_audio::PeerAudio;
use super::peer_ingest::PeerIngest;
use super::reports::{Clock, SenderReports};
use super::resend::SentHistory;
use super::{sdp, RemoteCandidate, RtcError};
use crate::media::audio::mic::{MicInput, TalkerId};
use crate::media::audio::OPUS_PAYLOAD_TYPE;
use crate::media::publisher::PublisherTap;

pub use super::feedback::KeyframeRequest;
pub use super::peer_audio::{opus_codec, AudioSetup};

/// The payload type that carries the stream under its own `profile-level-id`.
pub const H264_PAYLOAD_TYPE: u8 = 96;
/// The payload type that carries it under Constrained Baseline, offered next to the
/// first when the stream has another profile (see [`sdp::h264_offer_profiles`]).
pub const H264_FALLBACK_PAYLOAD_TYPE: u8 = 97;

/// The media engine both ends use: H.264 on PT 96 (and PT 97, see
/// [`sdp::h264_offer_profiles`]) with keyframe-request feedback, Opus on PT 111, and the
/// plugin's three header extensions, registered in the order that gives them ids 1-3.
pub fn media_engine(profile_level_id: &str) -> Result<MediaEngine, RtcError> {
    media_engine_with(h264_codecs(profile_level_id), opus_codec())
}

/// A media engine with these H.264 payload types and this Opus one, and the plugin's
/// header extensions.
fn media_engine_with(
    h264: Vec<RTCRtpCodecParameters>,
    opus: RTCRtpCodecParameters,
) -> Result<MediaEngine, RtcError> {
    let mut me = MediaEngine::default();
    for codec in h264 {
        me.register_codec(codec, RtpCodecKind::Video)?;
    }
    me.register_codec(opus, RtpCodecKind::Audio)?;
    for (_, uri) in extensions::OFFERED {
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_string(),
            },
            RtpCodecKind::Video,
            None,
        )?;
    }
    Ok(me)
}

/// The H.264 payload types to offer for a stream of `profile_level_id`, preferred first.
pub fn h264_codecs(profile_level_id: &str) -> Vec<RTCRtpCodecParameters> {
    let payload_types = [H264_PAYLOAD_TYPE, H264_FALLBACK_PAYLOAD_TYPE];
    sdp::h264_offer_profiles(profile_level_id)
        .into_iter()
        .zip(payload_types)
        .map(|(profile, pt)| h264_codec(&profile, pt))
        .collect()
}

pub fn h264_codec(profile_level_id: &str, payload_type: u8) -> RTCRtpCodecParameters {
    h264_codec_with_fmtp(sdp::h264_fmtp(profile_level_id), payload_type)
}

/// Our H.264 codec with keyframe-request and NACK feedback, under `fmtp`.
fn h264_codec_with_fmtp(fmtp: String, payload_type: u8) -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_string(),
        parameter: parameter.to_string(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_string(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp,
            rtcp_feedback: vec![fb("ccm", "fir"), fb("nack", ""), fb("nack", "pli")],
        },
        payload_type,
    }
}

/// Interceptors of the sending end (the server): our feedback forwarder; with
/// `receives` (a viewer's microphone comes in) receiver reports about it too. Sender
/// reports are our own ([`SenderReports`]), as NACKs are answered by the peer itself
/// from [`SentHistory`], not by the stack's responder, which would copy every packet's
/// header into a history of its own. Every interceptor in the chain costs on every
/// packet that goes through the stack.
pub fn sender_interceptors(receives: bool) -> Registry {
    let registry = Registry::new().with(Slot::from(feedback::SLOT), FeedbackForwarder::default());
    if receives {
        registry.with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
    } else {
        registry
    }
}

/// The SRTP protection profiles a peer accepts in the DTLS handshake. The client's
/// order decides among those both sides have, and browsers list AES-CM with HMAC-SHA1
/// first (Chromium does so on purpose, for its 6 bytes less per packet), so a server
/// that also accepts it never gets AES-GCM; yet AES-GCM costs a fraction of the CPU per
/// packet (one AES-NI pass instead of AES plus SHA-1), and every packet of every viewer
/// pays it. `aead_only` leaves AES-CM out, so browsers, which all offer AES-GCM too,
/// settle on it; without it the stack's default (AES-GCM first, then AES-CM).
pub fn srtp_profiles(aead_only: bool) -> Option<Vec<SrtpProtectionProfile>> {
    aead_only.then(|| {
        vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
        ]
    })
}

/// `settings` restricted to [`srtp_profiles`].
fn with_srtp(settings: SettingEngineBuilder, aead_only: bool) -> SettingEngineBuilder {
    match srtp_profiles(aead_only) {
        Some(profiles) => settings.with_srtp_protection_profiles(profiles),
        None => settings,
    }
}

/// Time between connectivity checks while connecting. The crate's default (200 ms) puts
/// a few hundred milliseconds into every viewer's start. Below 50 ms the 0.21 agent fails
/// to connect at all (seen with our own receiver peer), so 50 ms it is.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Checks per candidate pair before giving up on it: 1.5 s at the interval above, about
/// the crate's default budget (7 × 200 ms).
const ICE_MAX_BINDING_REQUESTS: u16 = 30;

/// Settings shared by both ends: fast acceptance of peer-reflexive pairs (the browser's
/// checks from loopback arrive before any candidate of its own matches), frequent
/// connectivity checks, no mDNS.
pub fn setting_engine(ufrag: &str, pwd: &str) -> SettingEngineBuilder {
    SettingEngineBuilder::new()
        .with_ice_credentials(ufrag.to_string(), pwd.to_string())
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
        .with_host_acceptance_min_wait(Some(Duration::ZERO))
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
}

/// A random ICE username fragment or password of `len` alphanumerics.
pub fn ice_token(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, RtcError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_string(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(RtcError::from)
}

/// Which description a peer makes of itself.
#[derive(Clone, Copy)]
enum Side {
    Offer,
    Answer,
}

/// Our host candidates (then end-of-candidates) into the connection, and the offer or
/// answer that carries them set as the local description; its SDP is returned.
fn describe_locally(
    pc: &mut RTCPeerConnection,
    candidates: &[SocketAddr],
    side: Side,
    now: Instant,
) -> Result<String, RtcError> {
    for addr in candidates {
        pc.add_local_candidate(host_candidate(*addr)?)?;
    }
    pc.add_local_candidate(RTCIceCandidateInit::default())?;
    let description = match side {
        Side::Offer => pc.create_offer(None)?,
        Side::Answer => pc.create_answer(None)?,
    };
    pc.set_local_description(now, description)?;
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or(RtcError::Internal("no local description"))
}

/// RTP packets written to a connection between two polls of its output: a few at a
/// time keep the crate's per-handler queues at their smallest allocation (4 entries)
/// while each handler still works through several packets in one go.
const PACKETS_PER_POLL: u64 = 4;

/// What a peer tells the engine after being driven.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerNote {
    Connected,
    Disconnected,
    Gone(String),
    KeyframeRequest(KeyframeRequest),
    /// An RTCP NACK about our stream; `resent` of its packets were still in the history
    /// and go out again.
    Nack {
        resent: u64,
    },
    /// A report block about our stream from an RTCP receiver report: loss since the
    /// previous report in 1/256ths, interarrival jitter in RTP clock units.
    ReceiverReport {
        fraction_lost: u8,
        jitter: u32,
    },
    /// Keyframes handed out since the last note; `time_to_first` (from the offer) when
    /// the viewer's first one was among them.
    KeyframesSent {
        count: u64,
        time_to_first: Option<Duration>,
    },
    /// Microphone packets handed to the playback, and dropped (its queue full) since
    /// the last note; `started` with the viewer's first one.
    Mic {
        handed: u64,
        dropped: u64,
        started: bool,
    },
    /// A stream's probe decided whether its packets are encrypted here from now on
    /// (see [`super::direct_srtp`]).
    DirectSrtp {
        taken_over: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Offered,
    Answered,
    Connected,
    Disconnected,
}

/// Datagrams kept per peer while its answer is pending (a browser sends a few checks per
/// candidate pair in that time; anything beyond is retransmitted anyway).
const MAX_EARLY_DATAGRAMS: usize = 16;
/// Datagrams other than STUN kept per peer until ICE connects: a DTLS first flight, in a
/// few fragments, perhaps sent twice.
const MAX_BEFORE_ICE: usize = 8;

pub struct PeerSetup {
    pub ufrag: String,
    pub pwd: String,
    pub ssrc: u32,
    pub profile_level_id: String,
    /// Host candidates to advertise (after NAT substitution).
    pub candidates: Vec<SocketAddr>,
    pub orientation: u16,
    /// Ignore remote candidates that are not loopback.
    pub loopback_only: bool,
    /// The audio m-line, when the viewer gets sound or sends its microphone.
    pub audio: Option<AudioSetup>,
    /// A WHIP publisher's peer: its video is received, not sent, and goes here.
    pub publisher: Option<PublisherTap>,
    /// SRTP with AES-GCM only (see [`srtp_profiles`]).
    pub aead_only: bool,
}

pub struct Peer {
    pc: RTCPeerConnection,
    /// The connection's DTLS-SRTP keys as the stack derives them, for `direct`.
    keying: Arc<KeyingTap>,
    /// Our RTP past the stack once connected (see [`super::direct_srtp`]).
    direct: DirectSrtp,
    reports: SenderReports,
    /// NACKed packets sent again while reading notes, until the writes are drained.
    resends: Vec<(SocketAddr, BytesMut)>,
    /// Probes decided and not yet told in a [`PeerNote::DirectSrtp`].
    probes_untold: Vec<bool>,
    /// Something was handed to the stack by a write since the engine last asked: until
    /// then a peer that only got direct packets has nothing new in the stack to read
    /// (see [`Peer::take_stack_touched`]).
    stack_touched: bool,
    /// The stack holds writes not yet drained.
    writes_queued: bool,
    /// The stack's own timer as last read; it changes only when the stack is driven.
    stack_timeout: Option<Instant>,
    sender: RTCRtpSenderId,
    ssrc: u32,
    seq: u16,
    /// The address handed to the ICE agent as the datagrams' destination; it must be one
    /// of our advertised candidates for the agent to accept them.
    local_addr: SocketAddr,
    stage: Stage,
    /// Made from the viewer's offer (WHEP) rather than from ours.
    answerer: bool,
    ext: ExtensionIds,
    orientation: Option<Bytes>,
    /// The playout-delay sent instead of the frame's (render at once) while the viewer
    /// also gets the sound; see [`extensions::lip_sync_playout_delay`].
    lip_sync_delay: Bytes,
    loopback_only: bool,
    /// Remote candidates taken so far (trickled, early or not, and in the answer),
    /// against [`MAX_REMOTE_CANDIDATES`].
    remote_candidates: usize,
    early_candidates: Vec<String>,
    /// Datagrams (the browser's first connectivity checks) that arrived before the
    /// answer; replayed once it is applied so they are answered at once instead of
    /// after the browser's retransmission backoff.
    early_datagrams: Vec<(SocketAddr, BytesMut)>,
    /// The ICE password those datagrams were routed by, for their replay.
    early_pwd: Option<String>,
    /// The browser's check, kept until the stack's own check succeeds (see
    /// [`super::nomination`]).
    nomination: EarlyNomination,
    /// ICE has connected (once; it stays set through later disconnections).
    ice_connected: bool,
    /// Datagrams other than STUN that came before ICE connected, handed over once it
    /// has (see [`Peer::take_in`]).
    before_ice: Vec<(SocketAddr, BytesMut)>,
    /// Events taken from the stack early (see [`Peer::take_events`]), for
    /// [`Peer::poll_notes`].
    taken_events: VecDeque<RTCPeerConnectionEvent>,
    dtls_closed: bool,
    /// The H.264 payload type the answer kept (the first of ours it lists); packets go
    /// straight into the connection with it (see [`Peer::write_packet`]).
    payload_type: Option<u8>,
    /// The pictures sent lately, to answer NACKs from.
    history: SentHistory,
    /// NACKs read since the peer was last driven, answered before its writes are drained.
    nacks: Vec<u16>,
    /// The time of the last datagram or frame, for resends made while reading notes.
    last_now: Instant,
    audio: Option<PeerAudio>,
    /// A WHIP publisher's video coming in.
    ingest: Option<PeerIngest>,
    pub created: Instant,
    pub packets_sent: u64,
    write_errors: u64,
    /// Keyframes written and not yet told in a [`PeerNote::KeyframesSent`].
    keyframes_untold: u64,
    first_keyframe: FirstKeyframe,
}

/// When the viewer's first keyframe went out, and whether that was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstKeyframe {
    NotYet,
    Sent(Instant),
    Told,
}

impl Peer {
    /// Build the peer connection and its offer.
    pub fn offer(setup: PeerSetup, now: Instant) -> Result<(Peer, String), RtcError> {
        let local_addr = *setup
            .candidates
            .first()
            .ok_or_else(|| RtcError::Internal("no candidate address"))?;
        let me = media_engine(&setup.profile_level_id)?;
        let receives = setup.audio.as_ref().is_some_and(|a| a.mic.is_some());
        let registry = sender_interceptors(receives);
        let keying = Arc::new(KeyingTap::default());
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(super::certificate::configuration())
            .with_setting_engine(
                with_srtp(setting_engine(&setup.ufrag, &setup.pwd), setup.aead_only)
                    .with_crypto_provider(keying_tap::tapped_provider(keying.clone())?)
                    .build(),
            )
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)?;

        let codec = h264_codec(&setup.profile_level_id, H264_PAYLOAD_TYPE);
        let track = media_track("video", RtpCodecKind::Video, setup.ssrc, &codec);
        let transceiver = pc.add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )?;
        // The track's codec alone would be offered; offer every payload type we can
        // send the stream under, the stream's own profile first.
        pc.rtp_transceiver(transceiver)
            .ok_or_else(|| RtcError::Internal("no transceiver"))?
            .set_codec_preferences(h264_codecs(&setup.profile_level_id))?;
        let sender = pc
            .get_senders()
            .last()
            .ok_or_else(|| RtcError::Internal("no sender for the video transceiver"))?;
        let mut audio = match setup.audio {
            Some(a) => Some(PeerAudio::add(&mut pc, a)?),
            None => None,
        };

        let sdp = describe_locally(&mut pc, &setup.candidates, Side::Offer, now)?;
        if let Some(a) = &mut audio {
            a.set_mid(&sdp);
        }

        let peer = Peer::assemble(
            pc,
            keying,
            sender,
            setup.ssrc,
            local_addr,
            setup.orientation,
            setup.loopback_only,
            audio,
            now,
        );
        Ok((peer, sdp))
    }

    /// Build the peer connection from a viewer's offer (WHEP) and answer it: our video
    /// on the offered H.264 payload type that fits the stream best, sendonly; our sound
    /// on the offered Opus payload type when `setup.audio` is given (the engine gives
    /// it only when the offer takes sound and the stream has it); our host candidates
    /// in the answer, which is complete (no trickle needed). The viewer is the ICE
    /// controlling agent; we answer `passive` to its `actpass`, so the viewer, as DTLS
    /// client, starts the handshake as soon as its own connectivity check succeeds
    /// rather than when ours learns of the nomination.
    ///
    /// With `setup.publisher` (WHIP) the video is received instead: answered
    /// `recvonly`, its RTP handed to the publisher tap, no sound sent; its Opus answered
    /// `recvonly` too when the stream takes the publisher's sound; receiver reports go
    /// back to the publisher (no NACKs: a lost picture is repaired by a keyframe
    /// request, see [`Peer::request_keyframe`]).
    pub fn answer(setup: PeerSetup, offer: &str, now: Instant) -> Result<(Peer, String), RtcError> {
        let local_addr = *setup
            .candidates
            .first()
            .ok_or_else(|| RtcError::Internal("no candidate address"))?;
        let offered =
            sdp::read_offer(offer, &setup.profile_level_id).map_err(RtcError::Unacceptable)?;
        let video_codec =
            h264_codec_with_fmtp(offered.video.fmtp.clone(), offered.video.payload_type);
        let opus_pt = offered.opus.unwrap_or(OPUS_PAYLOAD_TYPE);
        let me = media_engine_with(
            vec![video_codec.clone()],
            super::peer_audio::opus_codec_on(opus_pt),
        )?;
        let keying = Arc::new(KeyingTap::default());
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(super::certificate::configuration())
            .with_setting_engine(
                // No fixed ICE credentials: the stack makes fresh ones now and at every
                // ICE restart (fixed ones would be used again), and the router reads
                // them from the answer.
                with_srtp(setting_engine("", ""), setup.aead_only)
                    .with_answering_dtls_role(RTCDtlsRole::Server)
                    .with_crypto_provider(keying_tap::tapped_provider(keying.clone())?)
                    .build(),
            )
            .with_media_engine(me)
            .with_interceptor_registry(sender_interceptors(setup.publisher.is_some()))
            .build(now)?;

        // Our transceivers come first, so the offer's sections pair with them.
        let transceiver = match &setup.publisher {
            Some(_) => pc.add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )?,
            None => pc.add_transceiver_from_track(
                media_track("video", RtpCodecKind::Video, setup.ssrc, &video_codec),
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )?,
        };
        pc.rtp_transceiver(transceiver)
            .ok_or_else(|| RtcError::Internal("no transceiver"))?
            .set_codec_preferences(vec![video_codec])?;
        let sender = RTCRtpSenderId::from(transceiver);
        let audio_setup = setup
            .audio
            .filter(|_| offered.opus.is_some() && setup.publisher.is_none())
            .map(|a| AudioSetup {
                payload_type: opus_pt,
                send: true,
                mic: None,
                ..a
            });
        let mut audio = match audio_setup {
            Some(a) => Some(PeerAudio::add(&mut pc, a)?),
            None => None,
        };
        let budget = MAX_REMOTE_CANDIDATES;
        let (offer_kept, kept, dropped) =
            candidates::filter_answer(offer, setup.loopback_only, budget);
        if dropped > 0 {
            tracing::debug!(kept, dropped, "offer candidates left out");
        }
        // Only what the answer can keep: the stack reads every offered codec many times.
        let offer_kept = sdp::offer_cut_to(&offer_kept, offered.video.payload_type, offered.opus);
        let desc = RTCSessionDescription::offer(offer_kept)
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        pc.set_remote_description(now, desc)
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        // The section of a publisher's sound, when the stream takes it (it has no sound
        // source of its own) and the offer sends Opus.
        let sound_mid = setup
            .publisher
            .as_ref()
            .filter(|tap| tap.sound().is_some() && offered.opus.is_some())
            .and_then(|_| sdp::mid_of(offer, "audio"));
        if setup.publisher.is_some() {
            // Anything else a publisher offers is not taken: answered inactive, it is
            // not sent.
            let others: Vec<_> = pc
                .get_transceivers()
                .filter(|t| *t != transceiver)
                .collect();
            for other in others {
                if let Some(mut t) = pc.rtp_transceiver(other) {
                    let is_sound = sound_mid.is_some() && t.mid().as_deref() == sound_mid;
                    t.set_direction(if is_sound {
                        RTCRtpTransceiverDirection::Recvonly
                    } else {
                        RTCRtpTransceiverDirection::Inactive
                    });
                }
            }
        }
        let sdp = describe_locally(&mut pc, &setup.candidates, Side::Answer, now)?;
        // What the answer kept of our video is what we send on.
        let payload_type = sdp::chosen_payload_type(&sdp, &[offered.video.payload_type])
            .map_err(RtcError::Unacceptable)?;
        if let Some(a) = &mut audio {
            a.set_mid(&sdp);
            a.apply_answer(sdp::audio_answer(offer, opus_pt));
        }

        let mut peer = Peer::assemble(
            pc,
            keying,
            sender,
            setup.ssrc,
            local_addr,
            setup.orientation,
            setup.loopback_only,
            audio,
            now,
        );
        peer.stage = Stage::Answered;
        peer.answerer = true;
        peer.nomination = EarlyNomination::new(Role::Controlled);
        peer.remote_candidates = kept;
        peer.payload_type = Some(payload_type);
        // The sound is taken when the answer kept it receiving on the offer's Opus.
        let sound_pt = sound_mid
            .is_some()
            .then(|| sdp::audio_answer(&sdp, opus_pt))
            .and_then(|answered| match answered {
                sdp::AudioAnswer::Accepted {
                    payload_type,
                    receives: true,
                    ..
                } => Some(payload_type),
                _ => None,
            });
        peer.ingest = setup.publisher.map(|tap| {
            let receiver = RTCRtpReceiverId::from(transceiver);
            PeerIngest::new(tap, payload_type, receiver, sound_pt)
        });
        peer.take_negotiated_extensions();
        let publisher_sound = peer.ingest.as_ref().map(PeerIngest::takes_sound);
        tracing::debug!(ext = ?peer.ext, payload_type, ?publisher_sound, "offer answered");
        Ok((peer, sdp))
    }

    pub fn awaiting_answer(&self) -> bool {
        self.stage == Stage::Offered
    }

    /// Not in use yet, and to be dropped if that lasts: an offer of ours unanswered, or
    /// an answer of ours whose viewer never connected.
    pub fn pending(&self) -> bool {
        self.stage == Stage::Offered || (self.answerer && self.stage == Stage::Answered)
    }

    /// The peer around a built connection, before any answer is applied.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        pc: RTCPeerConnection,
        keying: Arc<KeyingTap>,
        sender: RTCRtpSenderId,
        ssrc: u32,
        local_addr: SocketAddr,
        orientation: u16,
        loopback_only: bool,
        audio: Option<PeerAudio>,
        now: Instant,
    ) -> Peer {
        Peer {
            pc,
            keying,
            direct: DirectSrtp::default(),
            reports: SenderReports::default(),
            resends: Vec::new(),
            probes_untold: Vec::new(),
            stack_touched: false,
            writes_queued: false,
            stack_timeout: None,
            sender,
            ssrc,
            seq: rand::random(),
            local_addr,
            stage: Stage::Offered,
            answerer: false,
            ext: ExtensionIds::default(),
            orientation: extensions::video_orientation(orientation),
            lip_sync_delay: extensions::lip_sync_playout_delay(),
            loopback_only,
            remote_candidates: 0,
            early_candidates: Vec::new(),
            early_datagrams: Vec::new(),
            early_pwd: None,
            nomination: EarlyNomination::new(Role::Controlling),
            ice_connected: false,
            before_ice: Vec::new(),
            taken_events: VecDeque::new(),
            dtls_closed: false,
            payload_type: None,
            audio,
            ingest: None,
            created: now,
            packets_sent: 0,
            write_errors: 0,
            keyframes_untold: 0,
            first_keyframe: FirstKeyframe::NotYet,
            history: SentHistory::default(),
            nacks: Vec::new(),
            last_now: now,
        }
    }

    /// The header extension ids the negotiation settled on, for stamping packets.
    fn take_negotiated_extensions(&mut self) {
        let params = self
            .pc
            .rtp_sender(self.sender)
            .map(|mut s| s.get_parameters().rtp_parameters.clone());
        let negotiated: Vec<(String, u16)> = params
            .as_ref()
            .map(|p| {
                p.header_extensions
                    .iter()
                    .map(|h| (h.uri.clone(), h.id))
                    .collect()
            })
            .unwrap_or_default();
        self.ext = ExtensionIds::from_negotiated(negotiated.iter().map(|(u, i)| (u.as_str(), *i)));
    }

    pub fn apply_answer(&mut self, now: Instant, answer: &str) -> Result<(), RtcError> {
        if self.stage != Stage::Offered {
            return Err(RtcError::NoOffer);
        }
        sdp::check_answer(answer).map_err(RtcError::InvalidSdp)?;
        let payload_type =
            sdp::chosen_payload_type(answer, &[H264_PAYLOAD_TYPE, H264_FALLBACK_PAYLOAD_TYPE])
                .map_err(RtcError::VideoRejected)?;
        let audio_answer = sdp::audio_answer(answer, OPUS_PAYLOAD_TYPE);
        let budget = MAX_REMOTE_CANDIDATES.saturating_sub(self.remote_candidates);
        let (answer, kept, dropped) = candidates::filter_answer(answer, self.loopback_only, budget);
        if dropped > 0 {
            tracing::debug!(kept, dropped, "answer candidates left out");
        }
        let desc = RTCSessionDescription::answer(answer)
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, desc)
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        self.stage = Stage::Answered;
        self.remote_candidates += kept;

        self.take_negotiated_extensions();
        self.payload_type = Some(payload_type);
        if let Some(audio) = &mut self.audio {
            audio.apply_answer(audio_answer);
        }
        tracing::debug!(ext = ?self.ext, payload_type, "answer applied");

        for c in std::mem::take(&mut self.early_candidates) {
            self.add_candidate_now(&c);
        }
        let pwd = self.early_pwd.take();
        for (from, data) in std::mem::take(&mut self.early_datagrams) {
            self.handle_datagram(now, from, &data, pwd.as_deref());
        }
        Ok(())
    }

    /// Answer a renegotiation offer with new ICE credentials (see [`super::ice_restart`]):
    /// the stack restarts its agent with fresh credentials, which the answer returned
    /// carries. Only a peer that answered can: an offering one would have to offer.
    pub fn restart_ice(&mut self, now: Instant, offer: &str) -> Result<String, RtcError> {
        if !self.answerer {
            return Err(RtcError::Internal("ICE restart of a peer that offered"));
        }
        let desc = RTCSessionDescription::offer(offer.to_string())
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, desc)
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        // The new ICE session's first checks get the same help.
        self.nomination = EarlyNomination::new(Role::Controlled);
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or(RtcError::Internal("no local description"))
    }

    /// Take a trickled candidate, or say why not (the caller logs refusals, rate-limited).
    pub fn add_remote_candidate(&mut self, candidate: RemoteCandidate) -> Result<(), Refusal> {
        let RemoteCandidate::Candidate(c) = candidate else {
            return Ok(()); // end of candidates: nothing to do for a host-only agent
        };
        let c = c.trim().trim_start_matches("a=");
        candidates::check(c, self.loopback_only)?;
        if self.remote_candidates >= MAX_REMOTE_CANDIDATES {
            return Err(Refusal::OverBudget);
        }
        self.remote_candidates += 1;
        let c = c.to_string();
        if self.stage == Stage::Offered {
            self.early_candidates.push(c);
        } else {
            self.add_candidate_now(&c);
        }
        Ok(())
    }

    fn add_candidate_now(&mut self, candidate: &str) {
        let init = RTCIceCandidateInit {
            candidate: candidate.to_string(),
            ..Default::default()
        };
        if let Err(e) = self.pc.add_remote_candidate(init) {
            tracing::debug!(%candidate, error = %e, "remote candidate rejected");
        }
    }

    /// Take in a datagram from `from`; `ice_pwd` is the peer's local ICE password, as
    /// routed by.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        ice_pwd: Option<&str>,
    ) {
        self.last_now = now;
        if self.stage == Stage::Offered {
            if self.early_datagrams.len() < MAX_EARLY_DATAGRAMS {
                self.early_datagrams.push((from, BytesMut::from(data)));
                self.early_pwd = self.early_pwd.take().or(ice_pwd.map(str::to_owned));
            }
            return;
        }
        let feed = match ice_pwd {
            Some(pwd) => self.nomination.inbound(from, data, pwd),
            None => Feed::AsIs,
        };
        match feed {
            Feed::AsIs => self.take_in(now, from, data),
            Feed::Instead(check) => self.take_in(now, from, &check),
            Feed::AndThen(check) => {
                self.take_in(now, from, data);
                self.take_in(now, from, &check);
            }
        }
    }

    /// Hand a datagram to the stack, or keep it while the stack would drop it.
    ///
    /// The stack drops everything but STUN until ICE has connected, but a browser starts
    /// DTLS as soon as its own check is answered, which is often before that; dropped,
    /// its first flight comes again only 50 to 100 ms later. So a few such datagrams are
    /// kept and handed over the moment ICE connects.
    fn take_in(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let stun = demux::is_stun(data);
        if !stun && !self.ice_connected {
            if self.before_ice.len() < MAX_BEFORE_ICE {
                self.before_ice.push((from, BytesMut::from(data)));
            }
            return;
        }
        self.feed(now, from, BytesMut::from(data));
        if stun && !self.ice_connected {
            self.take_events();
            if self.ice_connected {
                for (from, datagram) in std::mem::take(&mut self.before_ice) {
                    self.feed(now, from, datagram);
                }
            }
        }
    }

    /// Take the stack's events now, noting when ICE connects; [`Peer::poll_notes`] acts
    /// on them.
    fn take_events(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed,
            ) = event
            {
                self.ice_connected = true;
                // Reconnected, perhaps on another pair: the reports go at once, and the
                // direct path learns the pair from them.
                self.reports.hurry(self.last_now);
            }
            self.taken_events.push_back(event);
        }
    }

    fn feed(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        if let Some(ingest) = &mut self.ingest {
            ingest.heard_from(from);
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        if let Err(e) = self.pc.handle_read(msg) {
            tracing::debug!(%from, error = %e, "datagram rejected");
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.pc.handle_timeout(now) {
            tracing::debug!(error = %e, "peer timer");
        }
        self.send_reports(now);
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.stack_timeout = self.pc.poll_timeout();
        self.poll_timeout_untouched()
    }

    /// [`Peer::poll_timeout`] for a peer whose stack was not driven since it was last
    /// asked: its timer is the one read then, and only ours can have moved.
    pub fn poll_timeout_untouched(&self) -> Option<Instant> {
        match (self.stack_timeout, self.reports.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a write handed anything to the stack since the last call: if not, the
    /// engine reads only [`Peer::own_notes`] and [`Peer::poll_timeout_untouched`], not
    /// the stack's queues, which walking costs more than the packets' encryption.
    pub fn take_stack_touched(&mut self) -> bool {
        std::mem::take(&mut self.stack_touched)
    }

    /// Our sender reports, when due, each in an RTCP packet of its own; through the
    /// connection, whose SRTCP context is its own.
    fn send_reports(&mut self, now: Instant) {
        let Some(reports) = self.reports.take_due(now) else {
            return;
        };
        if self.dtls_closed {
            return;
        }
        self.stack_touched = true;
        self.writes_queued = true;
        for report in reports {
            if let Err(e) = self.pc.handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtcpPacket(String::new(), vec![Box::new(report)]),
            }) {
                tracing::debug!(error = %e, "sender report refused");
            }
        }
    }

    /// Move queued datagrams into `out`.
    pub fn drain_writes(&mut self, out: &mut Vec<(SocketAddr, BytesMut)>) {
        if !self.resends.is_empty() {
            out.extend(std::mem::take(&mut self.resends));
        }
        self.writes_queued = false;
        while let Some(msg) = self.pc.poll_write() {
            self.direct.saw(msg.transport.peer_addr, &msg.message);
            out.push((msg.transport.peer_addr, msg.message));
        }
    }

    /// Collect state changes, the viewer's feedback, and keyframes sent.
    pub fn poll_notes(&mut self, notes: &mut Vec<PeerNote>) {
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in packets {
                        self.note_feedback(p.as_ref(), notes);
                    }
                }
                RTCMessage::RtpPacket(_, packet) => self.hand_on_rtp(packet),
                _ => {}
            }
        }
        if !self.nacks.is_empty() {
            self.resend_nacked();
        }
        self.own_notes(notes);
        self.take_events();
        // Taken whole: events come in a few bursts (connecting, leaving), and the room
        // they needed is not kept for the rest of the viewer's life.
        for event in std::mem::take(&mut self.taken_events) {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                tracing::debug!(%state, "peer connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        self.stage = Stage::Connected;
                        notes.push(PeerNote::Connected);
                    }
                    RTCPeerConnectionState::Disconnected => {
                        self.stage = Stage::Disconnected;
                        notes.push(PeerNote::Disconnected);
                    }
                    RTCPeerConnectionState::Failed => {
                        notes.push(PeerNote::Gone("ICE failed".into()))
                    }
                    RTCPeerConnectionState::Closed => notes.push(PeerNote::Gone("Close PC".into())),
                    _ => {}
                }
            }
        }
        // A close_notify from the viewer closes DTLS but leaves the W3C connection state at
        // Connected (ICE is still up), so look at the transport itself, as Janus does when
        // it reports a "DTLS alert" hangup.
        if matches!(self.stage, Stage::Connected | Stage::Disconnected) && !self.dtls_closed {
            let dtls = match &self.ingest {
                // A publisher's transceiver only receives: it has no sender to ask.
                Some(ingest) => ingest.dtls_state(&mut self.pc),
                None => self
                    .pc
                    .rtp_sender(self.sender)
                    .and_then(|s| s.transport().map(|t| t.state())),
            };
            if matches!(
                dtls,
                Some(RTCDtlsTransportState::Closed | RTCDtlsTransportState::Failed)
            ) {
                self.dtls_closed = true;
                notes.push(PeerNote::Gone("DTLS alert".into()));
            }
        }
    }

    /// The notes of our own making, not the stack's: the sound's, the probes', the
    /// keyframes sent.
    pub fn own_notes(&mut self, notes: &mut Vec<PeerNote>) {
        if let Some(note) = self.audio.as_mut().and_then(PeerAudio::take_note) {
            notes.push(note);
        }
        notes.extend(
            self.probes_untold
                .drain(..)
                .map(|taken_over| PeerNote::DirectSrtp { taken_over }),
        );
        if self.keyframes_untold > 0 {
            let time_to_first = match self.first_keyframe {
                FirstKeyframe::Sent(at) => {
                    self.first_keyframe = FirstKeyframe::Told;
                    Some(at.saturating_duration_since(self.created))
                }
                _ => None,
            };
            notes.push(PeerNote::KeyframesSent {
                count: std::mem::take(&mut self.keyframes_untold),
                time_to_first,
            });
        }
    }

    /// Feedback about our video, told apart from feedback about our sound by media
    /// SSRC (see [`feedback::classify`]). The packets a NACK names are queued for
    /// [`Peer::resend_nacked`].
    fn note_feedback(&mut self, packet: &dyn rtc::rtcp::Packet, notes: &mut Vec<PeerNote>) {
        let (history, nacks, now) = (&mut self.history, &mut self.nacks, self.last_now);
        feedback::classify(packet, self.ssrc, |f| {
            notes.push(match f {
                VideoFeedback::KeyframeRequest(kind) => PeerNote::KeyframeRequest(kind),
                VideoFeedback::Nack(nack) => {
                    let seqs = history.take_resends(now, nack);
                    let resent = seqs.len() as u64;
                    nacks.extend(seqs);
                    PeerNote::Nack { resent }
                }
                VideoFeedback::Report(report) => PeerNote::ReceiverReport {
                    fraction_lost: report.fraction_lost,
                    jitter: report.jitter,
                },
            })
        });
    }

    /// An RTP packet from the peer: a publisher's video, or a viewer's microphone
    /// (handed on while connected).
    fn hand_on_rtp(&mut self, packet: rtc::rtp::Packet) {
        if let Some(ingest) = &mut self.ingest {
            ingest.hand_on(&packet);
        } else if self.stage == Stage::Connected {
            if let Some(audio) = &mut self.audio {
                audio.hand_on(packet);
            }
        }
    }

    /// Ask a publisher for a keyframe (RTCP PLI); `false` when this is no publisher or
    /// nothing came from it yet.
    pub fn request_keyframe(&mut self, now: Instant) -> bool {
        match &self.ingest {
            Some(ingest) => ingest.request_keyframe(&mut self.pc, now, self.ssrc),
            None => false,
        }
    }

    /// A publisher's video packets handed to its source, and dropped (queue full).
    pub fn ingest_counts(&self) -> Option<(u64, u64)> {
        self.ingest.as_ref().map(|i| (i.handed, i.dropped))
    }

    /// Whether our sound goes to this viewer (offered and taken by its answer).
    pub fn sends_audio(&self) -> bool {
        self.audio.as_ref().is_some_and(PeerAudio::sends)
    }

    /// The `a=mid` of the audio m-line (empty without one).
    pub fn audio_mid(&self) -> &str {
        self.audio.as_ref().map_or("", PeerAudio::mid)
    }

    /// The playback this viewer's microphone goes to, and its talker id, once its
    /// answer says it sends.
    pub fn mic(&self) -> Option<&(MicInput, TalkerId)> {
        self.audio.as_ref()?.mic()
    }

    /// Stamp one shared audio frame for this viewer (see [`PeerAudio::stamp`]) and hand
    /// it to the connection; the datagram goes to `out`. Returns the packets queued (0
    /// or 1).
    pub fn write_audio(
        &mut self,
        now: Instant,
        frame: &OutAudio,
        out: &mut Vec<(SocketAddr, BytesMut)>,
    ) -> u64 {
        let Some(packet) = self.audio.as_mut().and_then(|a| a.stamp(frame)) else {
            return 0;
        };
        let sent = self.write_packet(now, packet, Clock::Audio48k, out);
        if self.writes_queued {
            self.drain_writes(out);
        }
        u64::from(sent)
    }

    /// Stamp a shared picture with this viewer's SSRC and sequence numbers and hand its
    /// packets to the connection; keep it for NACKs. Returns the packets queued. The
    /// engine's fan-out decides which frames and when.
    ///
    /// Packets are taken out of the connection every [`PACKETS_PER_POLL`]: the crate
    /// moves queued writes through its handlers one handler at a time, so a whole
    /// picture written before polling grows every handler's queue to the picture's
    /// packet count, capacity each viewer then keeps for good.
    pub fn write_frame(
        &mut self,
        now: Instant,
        frame: &Arc<OutFrame>,
        out: &mut Vec<(SocketAddr, BytesMut)>,
    ) -> u64 {
        // Frames are sent only once connected, which takes an applied answer.
        let Some(payload_type) = self.payload_type else {
            return 0;
        };
        self.last_now = now;
        let first_seq = self.seq;
        let mut sent = 0;
        for i in 0..frame.payloads.len() {
            let packet = self.rtp_packet(payload_type, frame, i, self.seq);
            self.seq = self.seq.wrapping_add(1);
            if self.write_packet(now, packet, Clock::Video90k, out) {
                sent += 1;
                if self.writes_queued && sent % PACKETS_PER_POLL == 0 {
                    self.drain_writes(out);
                }
            }
        }
        if self.writes_queued {
            self.drain_writes(out);
        }
        self.history.record(first_seq, frame);
        self.packets_sent += sent;
        if frame.key && sent > 0 {
            self.keyframes_untold += 1;
            if self.first_keyframe == FirstKeyframe::NotYet {
                self.first_keyframe = FirstKeyframe::Sent(now);
            }
        }
        sent
    }

    /// Packet `i` of `frame` as this viewer gets it under sequence number `seq`: the
    /// same bytes the first time and when a NACK has it sent again.
    fn rtp_packet(
        &self,
        payload_type: u8,
        frame: &OutFrame,
        i: usize,
        seq: u16,
    ) -> rtc::rtp::Packet {
        let p = &frame.payloads[i];
        let mut header = rtc::rtp::Header {
            version: 2,
            marker: p.marker,
            payload_type,
            sequence_number: seq,
            timestamp: frame.timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        if i == 0 {
            if let Some(id) = self.ext.playout_delay {
                let delay = if self.sends_audio() {
                    &self.lip_sync_delay
                } else {
                    &frame.playout_delay
                };
                let _ = header.set_extension(id, delay.clone());
            }
            if let Some(id) = self.ext.abs_capture_time {
                let _ = header.set_extension(id, frame.abs_capture_time.clone());
            }
        }
        if i + 1 == frame.payloads.len() {
            if let (Some(id), Some(cvo)) = (self.ext.video_orientation, &self.orientation) {
                let _ = header.set_extension(id, cvo.clone());
            }
        }
        rtc::rtp::Packet {
            header,
            payload: p.payload.clone(),
        }
    }

    /// Send again the packets the viewer's NACKs named that are still kept; returns how
    /// many went.
    fn resend_nacked(&mut self) -> u64 {
        let Some(payload_type) = self.payload_type else {
            self.nacks.clear();
            return 0;
        };
        let now = self.last_now;
        let mut resent = 0;
        let mut out = std::mem::take(&mut self.resends);
        for seq in std::mem::take(&mut self.nacks) {
            let Some((frame, i)) = self.history.find(seq) else {
                continue;
            };
            let packet = self.rtp_packet(payload_type, frame, i, seq);
            if self.write_packet(now, packet, Clock::Video90k, &mut out) {
                resent += 1;
            }
        }
        self.resends = out;
        resent
    }

    /// Send one RTP packet: encrypted here into `out` once its stream is ours (see
    /// [`super::direct_srtp`]), else through the connection, whose datagrams `out` gets
    /// when drained. `false` (logged once) when it could not go.
    fn write_packet(
        &mut self,
        now: Instant,
        packet: rtc::rtp::Packet,
        clock: Clock,
        out: &mut Vec<(SocketAddr, BytesMut)>,
    ) -> bool {
        let ssrc = packet.header.ssrc;
        let payload_len = packet.payload.len();
        let sent = if self.direct.owns(ssrc) {
            match self.direct.seal(&packet) {
                Some(datagram) if !self.dtls_closed => {
                    out.push(datagram);
                    true
                }
                _ => false,
            }
        } else if self.stage == Stage::Connected && self.direct.wants_probe(ssrc) {
            self.probe_with(now, packet, out)
        } else {
            self.write_through_stack(now, packet)
        };
        if sent {
            self.reports.sent(now, ssrc, clock, payload_len);
        }
        sent
    }

    /// Send `packet` through the connection, and offer what it sent as the probe of its
    /// stream.
    fn probe_with(
        &mut self,
        now: Instant,
        packet: rtc::rtp::Packet,
        out: &mut Vec<(SocketAddr, BytesMut)>,
    ) -> bool {
        if !self.write_through_stack(now, packet.clone()) {
            return false;
        }
        let start = out.len();
        self.drain_writes(out);
        let Ok(provider) = keying_tap::base() else {
            return true;
        };
        let keying = &self.keying;
        let outcome = self.direct.probe(
            &packet,
            &out[start..],
            || keying.keying_material(),
            provider.crypto(),
        );
        if outcome != Probe::NotYet {
            tracing::debug!(ssrc = packet.header.ssrc, ?outcome, "direct SRTP probe");
            self.probes_untold.push(outcome == Probe::TakenOver);
        }
        true
    }

    /// Hand one RTP packet to the connection; `false` (logged once) when it refuses.
    /// `RTCRtpSender::write_rtp` rebuilds the sender's parameters (codec list, extension
    /// URIs) for every packet only to check that its SSRC, payload type and extension ids
    /// were negotiated; ours are so by construction (our SSRC, the payload type checked
    /// once in the answer, extension ids taken from it), so the packet goes straight to
    /// the connection's write path, which is where `write_rtp` would put it after the
    /// checks. The write path does not read the track id, so none is allocated for it.
    fn write_through_stack(&mut self, now: Instant, packet: rtc::rtp::Packet) -> bool {
        self.stack_touched = true;
        self.writes_queued = true;
        match self.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(String::new(), packet),
        }) {
            Ok(()) => true,
            Err(e) => {
                self.write_errors += 1;
                if self.write_errors == 1 {
                    tracing::warn!(error = %e, "RTP write refused");
                }
                false
            }
        }
    }

    /// Start closing (DTLS close_notify is queued; drain writes afterwards).
    pub fn close(&mut self) {
        let _ = self.pc.close();
    }
}

/// The msid stream both our tracks belong to: one stream, so the browser plays the
/// sound in sync with the pictures (lined up by the sender reports).
const MEDIA_STREAM_ID: &str = "peregrine";

/// A track of ours: one encoding with our SSRC and `codec`.
pub(super) fn media_track(
    track_id: &str,
    kind: RtpCodecKind,
    ssrc: u32,
    codec: &RTCRtpCodecParameters,
) -> rtc::media_stream::MediaStreamTrack {
    rtc::media_stream::MediaStreamTrack::new(
        MEDIA_STREAM_ID.to_string(),
        track_id.to_string(),
        track_id.to_string(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtp_codec.clone(),
            ..Default::default()
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> PeerSetup {
        PeerSetup {
            ufrag: "ufragufrag".into(),
            pwd: "pwdpwdpwdpwdpwdpwdpwdpwd".into(),
            ssrc: 1234,
            profile_level_id: "42e01f".into(),
            candidates: vec!["127.0.0.1:40000".parse().unwrap()],
            orientation: 0,
            loopback_only: true,
            audio: None,
            publisher: None,
            aead_only: true,
        }
    }

    /// The lines of the `kind` section of `sdp`.
    fn section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
        let start = format!("m={kind} ");
        sdp.lines()
            .skip_while(|l| !l.starts_with(&start))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.starts_with("m="))
            .map(|(_, l)| l)
            .collect()
    }

    #[test]
    fn the_audio_m_line_follows_the_video_with_opus_and_our_own_ssrc() {
        let (mic, _rx) = MicInput::channel(4);
        for (send, mic, direction) in [
            (true, None, "a=sendonly"),
            (true, Some(mic.clone()), "a=sendrecv"),
            (false, Some(mic), "a=recvonly"),
        ] {
            let audio = AudioSetup {
                ssrc: 5678,
                payload_type: 111,
                send,
                mic: mic.map(|m| (m, 1)),
            };
            let setup = PeerSetup {
                audio: Some(audio),
                ..setup()
            };
            let (_, offer) = Peer::offer(setup, Instant::now()).expect("offer");
            if std::env::var_os("SHOW_OFFER").is_some() {
                println!("{offer}");
            }
            let video_at = offer.find("m=video ").expect("video");
            let audio_at = offer.find("m=audio ").expect("audio");
            assert!(video_at < audio_at, "video first:\n{offer}");
            let audio = section(&offer, "audio");
            assert!(audio[0].ends_with(" 111"), "{audio:?}");
            assert!(audio.contains(&"a=rtpmap:111 opus/48000/2"), "{audio:?}");
            assert!(
                audio.contains(&"a=fmtp:111 minptime=10;useinbandfec=1;sprop-stereo=1"),
                "{audio:?}"
            );
            assert!(
                !audio.iter().any(|l| l.starts_with("a=rtcp-fb")),
                "no feedback on audio: {audio:?}"
            );
            assert!(audio.contains(&direction), "{direction}: {audio:?}");
            let video = section(&offer, "video");
            assert!(video.contains(&"a=sendonly"));
            assert!(video.iter().any(|l| l.starts_with("a=ssrc:1234 ")));
            if send {
                assert!(
                    audio.iter().any(|l| l.starts_with("a=ssrc:5678 ")),
                    "{audio:?}"
                );
                // One msid stream for both tracks: the browser syncs them.
                let stream = |lines: &[&str]| {
                    lines
                        .iter()
                        .find_map(|l| l.strip_prefix("a=msid:"))
                        .and_then(|v| v.split_whitespace().next())
                        .map(str::to_string)
                };
                assert_eq!(stream(&audio), stream(&video));
                assert!(stream(&audio).is_some(), "{audio:?}");
            }
        }
    }

    #[test]
    fn a_video_only_offer_has_no_audio_m_line() {
        let (_, offer) = Peer::offer(setup(), Instant::now()).expect("offer");
        assert!(!offer.contains("m=audio"), "{offer}");
    }

    #[test]
    fn a_publisher_is_answered_recvonly_video() {
        // Our own sendonly offer of video and sound is what a WHIP publisher sends.
        let audio = AudioSetup {
            ssrc: 5678,
            payload_type: 111,
            send: true,
            mic: None,
        };
        let publishing = PeerSetup {
            audio: Some(audio),
            ..setup()
        };
        let (_, offer) = Peer::offer(publishing, Instant::now()).expect("offer");
        let (tap, _feed) = crate::media::publisher::channel(Box::new(|| {}));
        let answering = PeerSetup {
            ufrag: "otherufrag".into(),
            publisher: Some(tap),
            ..setup()
        };
        let (peer, answer) = Peer::answer(answering, &offer, Instant::now()).expect("answer");
        if std::env::var_os("SHOW_ANSWER").is_some() {
            println!("{answer}");
        }
        let video = section(&answer, "video");
        assert!(video.contains(&"a=recvonly"), "{video:?}");
        let audio = section(&answer, "audio");
        assert!(
            audio.contains(&"a=inactive"),
            "the sound is not taken: {audio:?}"
        );
        assert!(
            !answer.contains("a=ssrc:1234"),
            "nothing of ours is sent: {answer}"
        );
        assert!(!peer.sends_audio());
        assert_eq!(peer.ingest_counts(), Some((0, 0)));

        // A stream without a sound source of its own takes the publisher's.
        let (tap, _feed) = crate::media::publisher::channel(Box::new(|| {}));
        let outlet = crate::media::audio::published::SoundOutlet {
            hub: crate::media::Hub::new(4),
            status: crate::source::audio::AudioStatusHandle::new("whip"),
        };
        let taking = PeerSetup {
            ufrag: "thirdufrag".into(),
            publisher: Some(tap.with_sound(Some(outlet))),
            ..setup()
        };
        let (peer, answer) = Peer::answer(taking, &offer, Instant::now()).expect("answer");
        let audio = section(&answer, "audio");
        assert!(audio.contains(&"a=recvonly"), "{audio:?}");
        assert!(
            audio.iter().any(|l| l.contains("opus/48000/2")),
            "{audio:?}"
        );
        assert!(section(&answer, "video").contains(&"a=recvonly"));
        assert!(peer.ingest.as_ref().is_some_and(PeerIngest::takes_sound));
        assert!(!peer.sends_audio());
    }

    fn offered_peer() -> Peer {
        Peer::offer(setup(), Instant::now()).expect("offer").0
    }

    #[test]
    fn datagrams_before_the_answer_are_capped() {
        // Anyone who guesses the port can send before a viewer answers: what is kept
        // must not grow with what is sent.
        let mut peer = offered_peer();
        let from: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let junk = vec![0u8; 1200];
        for _ in 0..10_000 {
            peer.handle_datagram(Instant::now(), from, &junk, None);
        }
        assert_eq!(peer.early_datagrams.len(), MAX_EARLY_DATAGRAMS);
        let held: usize = peer.early_datagrams.iter().map(|(_, d)| d.len()).sum();
        assert_eq!(held, MAX_EARLY_DATAGRAMS * junk.len());
    }

    /// Play a browser that offered and nominates with its first check (as Chromium
    /// does): the check is answered at once, and the pair is nominated as soon as the
    /// browser answers our own check, not at its next check.
    #[test]
    fn a_browser_nominating_with_its_first_check_is_answered_and_nominated_at_once() {
        use super::super::ice_restart;
        let now = Instant::now();
        // The browser's side: our own offer carries ufrag and password like a browser's.
        let (_, offer) = Peer::offer(setup(), now).expect("offer");
        let (browser_ufrag, browser_pwd) = ice_restart::ice_credentials(&offer).unwrap();
        let answering = PeerSetup {
            ufrag: "otherufrag".into(),
            ..setup()
        };
        let (mut peer, answer) = Peer::answer(answering, &offer, now).expect("answer");
        let (ufrag, pwd) = ice_restart::ice_credentials(&answer).unwrap();
        let browser: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let username = format!("{ufrag}:{browser_ufrag}");
        let request = browser_check(&username, ICE_CONTROLLING, true, &pwd);
        peer.handle_datagram(now, browser, &request, Some(&pwd));
        let mut out = Vec::new();
        peer.drain_writes(&mut out);
        let stun = |kind: u16| {
            out.iter()
                .filter(|(to, m)| *to == browser && m.len() >= 20 && m[..2] == kind.to_be_bytes())
                .map(|(_, m)| m.to_vec())
                .collect::<Vec<_>>()
        };
        let answered = stun(0x0101);
        assert_eq!(answered.len(), 1, "the nominating check is answered");
        assert_eq!(answered[0][8..20], [3; 12], "under its own transaction");
        let ours = stun(0x0001);
        assert!(!ours.is_empty(), "and checked back");
        assert!(
            !ice_connected(&mut peer),
            "not nominated before our check succeeds"
        );

        // The browser answers our check: the pair is nominated.
        let success = browser_answer(&ours[0], browser, &browser_pwd);
        peer.handle_datagram(now, browser, &success, Some(&pwd));
        assert!(
            ice_connected(&mut peer),
            "nominated once our check succeeded"
        );
    }

    /// Play a browser answering our offer (the Janus API): its check comes first, and
    /// once it answers ours the pair is nominated at once rather than at the stack's
    /// next check interval; DTLS sent before that is kept and handed over on connect.
    #[test]
    fn an_offering_peer_nominates_as_soon_as_both_checks_succeeded() {
        use super::super::ice_restart;
        let now = Instant::now();
        let (mut peer, offer) = Peer::offer(setup(), now).expect("offer");
        let (ufrag, pwd) = ice_restart::ice_credentials(&offer).unwrap();
        // The browser's answer: another peer answering ours has the shape of one.
        let answering = PeerSetup {
            ufrag: "otherufrag".into(),
            ..setup()
        };
        let (_, answer) = Peer::answer(answering, &offer, now).expect("answer");
        let (browser_ufrag, browser_pwd) = ice_restart::ice_credentials(&answer).unwrap();
        // The address of the candidate in its answer.
        let browser: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let username = format!("{ufrag}:{browser_ufrag}");
        let request = browser_check(&username, ICE_CONTROLLED, false, &pwd);
        // On the loopback its first check often comes before its answer is applied.
        peer.handle_datagram(now, browser, &request, Some(&pwd));
        peer.apply_answer(now, &answer).expect("answer applied");
        let mut out = Vec::new();
        peer.drain_writes(&mut out);
        assert!(
            out.iter().any(|(to, m)| *to == browser && m[..2] == [1, 1]),
            "the early check answered once the answer is applied"
        );
        out.clear();
        // A few milliseconds on, as on the wire (the stack nominates only after its start).
        let now = now + Duration::from_millis(5);
        // DTLS from the browser, its check answered: the stack would drop it now.
        let hello = [0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        peer.handle_datagram(now, browser, &hello, Some(&pwd));
        assert_eq!(peer.before_ice.len(), 1, "kept until ICE connects");
        // The stack checks a new address back on its timer, due at once.
        if let Some(at) = peer.poll_timeout() {
            peer.handle_timeout(at.max(now));
        }
        peer.drain_writes(&mut out);
        let checks = |out: &[(SocketAddr, BytesMut)]| {
            out.iter()
                .filter(|(to, m)| *to == browser && m.len() >= 20 && m[..2] == [0, 1])
                .map(|(_, m)| m.to_vec())
                .collect::<Vec<_>>()
        };
        let nominates = |m: &[u8]| {
            demux::attributes(m).any(|(kind, _, _)| kind == 0x0025 /* USE-CANDIDATE */)
        };
        let ours = checks(&out);
        assert!(!ours.is_empty(), "the browser's address is checked back");
        assert!(!ours.iter().any(|m| nominates(m)), "nothing nominated yet");

        // The browser answers our check: the nomination goes out now, no timer needed.
        out.clear();
        peer.handle_datagram(
            now,
            browser,
            &browser_answer(&ours[0], browser, &browser_pwd),
            Some(&pwd),
        );
        peer.drain_writes(&mut out);
        let nomination: Vec<Vec<u8>> = checks(&out).into_iter().filter(|m| nominates(m)).collect();
        assert_eq!(nomination.len(), 1, "nominated at once");
        assert!(!ice_connected(&mut peer));
        peer.handle_datagram(
            now,
            browser,
            &browser_answer(&nomination[0], browser, &browser_pwd),
            Some(&pwd),
        );
        assert!(
            ice_connected(&mut peer),
            "connected on the nomination's answer"
        );
        assert!(peer.before_ice.is_empty(), "the kept DTLS handed over");
    }

    const ICE_CONTROLLING: u16 = 0x802a;
    const ICE_CONTROLLED: u16 = 0x8029;

    /// A connectivity check as Chromium sends it, in `role`, nominating when `nominate`.
    fn browser_check(username: &str, role: u16, nominate: bool, pwd: &str) -> Vec<u8> {
        let priority = 0x6e7f_1effu32.to_be_bytes();
        let mut attributes = vec![(0x0006, username.as_bytes()), (role, &[7; 8][..])];
        if nominate {
            attributes.push((0x0025, &[])); // USE-CANDIDATE
        }
        attributes.push((0x0024, &priority[..]));
        super::super::nomination::stun_message(0x0001, [3; 12], &attributes, pwd)
    }

    /// The browser's success response to our `check`, seen from `browser`.
    fn browser_answer(check: &[u8], browser: SocketAddr, pwd: &str) -> Vec<u8> {
        let transaction: [u8; 12] = check[8..20].try_into().unwrap();
        let SocketAddr::V4(v4) = browser else {
            panic!("IPv4 here")
        };
        let mut mapped = vec![0, 1];
        mapped.extend_from_slice(&(v4.port() ^ 0x2112).to_be_bytes());
        mapped.extend_from_slice(&(u32::from(*v4.ip()) ^ 0x2112_a442).to_be_bytes());
        super::super::nomination::stun_message(0x0101, transaction, &[(0x0020, &mapped)], pwd)
    }

    fn ice_connected(peer: &mut Peer) -> bool {
        let mut notes = Vec::new();
        peer.poll_notes(&mut notes);
        peer.ice_connected
    }

    #[test]
    fn trickled_candidates_before_the_answer_are_capped() {
        let mut peer = offered_peer();
        let mut refused = 0;
        for port in 0..200u16 {
            let c = format!(
                "candidate:1 1 udp 2130706431 127.0.0.1 {} typ host",
                40_000 + port
            );
            match peer.add_remote_candidate(RemoteCandidate::Candidate(c)) {
                Ok(()) => {}
                Err(Refusal::OverBudget) => refused += 1,
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }
        assert_eq!(peer.early_candidates.len(), MAX_REMOTE_CANDIDATES);
        assert_eq!(refused, 200 - MAX_REMOTE_CANDIDATES);
    }
}
