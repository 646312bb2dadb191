//! Command line and configuration file. Every flag has a key of the same name (with `_`
//! for `-`) in the TOML file given by `--config`; the command line wins over the file,
//! the file over the built-in defaults.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use serde::Deserialize;

use crate::access::{Credentials, IpList};
use crate::config::janus_install::SecureTransport;
use crate::egress::{whip, RtpForwardTarget};
use crate::janus::{self, JanusConfig, Listen};
use crate::media::encoder::H264EncoderChoice;
use crate::media::m2m::M2mConfig;
use crate::media::{limits, VideoSettings};
use crate::origin::OriginPolicy;
use crate::source::camera::device::PixelFormat;
use crate::tls::CertFiles;

mod audio;
pub mod janus_install;
mod source_spec;
pub mod streams;
pub mod ustreamer;

pub use audio::{AudioConfig, AudioSettings, AudioSpec, AUDIO_FORMS};
pub use source_spec::{SourceSpec, SOURCE_FORMS};
pub use streams::{StreamArgs, StreamConfig};

/// Shortest `--jsmpeg-secret` accepted.
pub const MIN_SECRET_LEN: usize = 8;

/// The camera used when none is named.
pub const DEFAULT_DEVICE: &str = "/dev/video0";

/// The flags. Everything is optional here so that "not given" can fall back to the file.
#[derive(Parser, Debug, Default, Deserialize)]
#[command(
    name = "peregrine",
    version,
    about = "Live camera video to web browsers over WebRTC, through the Janus API",
    after_help = EXAMPLES
)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// TOML configuration file; every flag below is a key in it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on (HTTP, Janus transports, WebRTC media). [default: 127.0.0.1]
    #[arg(long, short = 's', value_name = "IP", help_heading = "Server")]
    pub host: Option<IpAddr>,
    /// Web pages of another host allowed to use the server from a browser (WebSocket
    /// upgrades, the Janus API, CORS on /state), e.g. https://kvm.example:8443;
    /// repeatable or comma-separated. Pages from the host name the server is reached
    /// by are always allowed; `*` allows every page (unsafe beyond a trusted network).
    #[arg(
        long,
        value_name = "ORIGIN[,ORIGIN...]",
        value_delimiter = ',',
        help_heading = "Server"
    )]
    pub allow_origin: Option<Vec<String>>,
    /// Require HTTP Basic authentication with this user name for everything on --port
    /// (pages, /state, relays, the Janus API at /janus); as µStreamer's --user. The
    /// Janus ports (--janus-ws-port, --janus-http-port) are not covered: give them
    /// --janus-api-secret or --janus-token-auth.
    #[arg(long, value_name = "NAME", help_heading = "Access")]
    pub user: Option<String>,
    /// The --user's password (as µStreamer's --passwd); visible to other users of the
    /// machine in `ps`: prefer --passwd-file or the config file. [default: empty]
    #[arg(long, value_name = "PASS", help_heading = "Access")]
    pub passwd: Option<String>,
    /// Read the --user's password from this file (its first line).
    #[arg(long, value_name = "FILE", help_heading = "Access")]
    pub passwd_file: Option<PathBuf>,
    /// Only these client addresses may connect, to every port (HTTP, Janus transports,
    /// WebRTC media): addresses (192.168.1.20), networks (10.0.0.0/8, fe80::/10) or, as
    /// in Janus's acl, text prefixes ending in . or : (192.168.0.); comma-separated or
    /// repeatable. Others are disconnected at once. [default: any]
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        help_heading = "Access"
    )]
    pub allow_ip: Option<Vec<String>>,
    /// HTTP port for the bundled pages and /state. [default: 8080]
    #[arg(long, short = 'p', value_name = "PORT", help_heading = "Server")]
    pub port: Option<u16>,
    /// PEM certificate chain (the server's certificate first): with --tls-key, every TCP
    /// listener (--port, --janus-ws-port, --janus-http-port) serves https:// and wss://
    /// only. Unix sockets stay plain. Read again on SIGHUP.
    #[arg(long, value_name = "FILE", help_heading = "Server")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, RSA or EC; not passphrase-protected); may
    /// be the same file.
    #[arg(long, value_name = "FILE", help_heading = "Server")]
    pub tls_key: Option<PathBuf>,
    /// Also serve everything of --port (/state, the pages, the relays, ...) as plain
    /// HTTP on this unix socket, as µStreamer's --unix (kvmd reads /state there). An
    /// existing file at the path is refused unless --unix-rm is given.
    #[arg(long, short = 'U', value_name = "PATH", help_heading = "Server")]
    pub unix: Option<PathBuf>,
    /// Remove an existing socket at the --unix path first (a file that is not a socket
    /// is never removed).
    #[arg(
        long,
        short = 'D',
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "Server",
    )]
    pub unix_rm: Option<bool>,
    /// Permissions of the --unix socket, octal (e.g. 660). [default: as the umask leaves them]
    #[arg(long, short = 'M', value_name = "OCTAL", help_heading = "Server")]
    pub unix_mode: Option<String>,
    /// Serve the files of this folder at / instead of the bundled pages (a folder's
    /// index.html for the folder), as µStreamer's --static; /state and the other
    /// routes stay. Symbolic links and paths out of the folder are not served.
    #[arg(long = "static", value_name = "DIR", help_heading = "Server")]
    #[serde(rename = "static")]
    pub static_dir: Option<PathBuf>,
    /// Reported as `instance_id` in /state, as µStreamer's --instance-id (letters,
    /// digits and . / + _ -). [default: empty]
    #[arg(long, value_name = "ID", help_heading = "Server")]
    pub instance_id: Option<String>,
    /// Report this size in /state's `result.source.resolution` whatever the source's,
    /// as µStreamer's --fake-resolution. [default: the source's]
    #[arg(long, short = 'R', value_name = "WxH", help_heading = "Server")]
    pub fake_resolution: Option<String>,
    /// Stop (as on SIGTERM) when the process that started peregrine ends, as
    /// µStreamer's --exit-on-parent-death (kvmd starts it so).
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "Server",
    )]
    pub exit_on_parent_death: Option<bool>,
    /// Janus API WebSocket transport port (subprotocol janus-protocol). [default: 8188]
    #[arg(long, value_name = "PORT", help_heading = "Janus API")]
    pub janus_ws_port: Option<u16>,
    /// Janus API HTTP long-poll transport port. [default: 8088]
    #[arg(long, value_name = "PORT", help_heading = "Janus API")]
    pub janus_http_port: Option<u16>,
    /// Address the Janus WebSocket transport listens on (Janus's `ws_ip`), instead of
    /// --host. [default: --host, or ws_ip / ws_interface from --janus-config]
    #[arg(long, value_name = "IP", help_heading = "Janus API")]
    pub janus_ws_host: Option<IpAddr>,
    /// Address the Janus HTTP transport listens on (Janus's `ip`), instead of --host.
    /// [default: --host, or ip / interface from --janus-config]
    #[arg(long, value_name = "IP", help_heading = "Janus API")]
    pub janus_http_host: Option<IpAddr>,
    /// Base path of the Janus HTTP transport. [default: /janus]
    #[arg(long, value_name = "PATH", help_heading = "Janus API")]
    pub janus_http_path: Option<String>,
    /// Serve the Janus WebSocket transport on this unix socket instead of
    /// --janus-ws-port (Janus's `ws_unix`; PiKVM's nginx proxies /janus/ws to one).
    /// A socket file left by a process that is gone is replaced.
    #[arg(long, value_name = "PATH", help_heading = "Janus API")]
    pub janus_ws_unix: Option<PathBuf>,
    /// Permissions of the --janus-ws-unix socket, octal. [default: 660]
    #[arg(long, value_name = "OCTAL", help_heading = "Janus API")]
    pub janus_ws_unix_mode: Option<String>,
    /// Serve the Janus HTTP transport on this unix socket instead of --janus-http-port.
    #[arg(long, value_name = "PATH", help_heading = "Janus API")]
    pub janus_http_unix: Option<PathBuf>,
    /// Permissions of the --janus-http-unix socket, octal. [default: 660]
    #[arg(long, value_name = "OCTAL", help_heading = "Janus API")]
    pub janus_http_unix_mode: Option<String>,
    /// Only these client addresses may connect to the Janus WebSocket transport (Janus's
    /// ws_acl), in the forms of --allow-ip and in addition to it. [default: any, or
    /// general.ws_acl from --janus-config]
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        help_heading = "Janus API"
    )]
    pub janus_ws_allow_ip: Option<Vec<String>>,
    /// Only these client addresses may connect to the Janus HTTP transport (Janus's
    /// acl), in the forms of --allow-ip and in addition to it. [default: any, or
    /// general.acl from --janus-config]
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        help_heading = "Janus API"
    )]
    pub janus_http_allow_ip: Option<Vec<String>>,
    /// Seconds without activity after which a Janus session expires; 0 disables. [default: 60]
    #[arg(long, value_name = "SECONDS", help_heading = "Janus API")]
    pub session_timeout: Option<u64>,
    /// Every Janus request except info and ping must carry this as `apisecret`
    /// (Janus's `api_secret`; janus.js: `new Janus({apisecret})`); else error 403.
    /// [default: none, or general.api_secret from --janus-config]
    #[arg(long, value_name = "SECRET", help_heading = "Janus API")]
    pub janus_api_secret: Option<String>,
    /// Every Janus request except info and ping must carry one of the --janus-token
    /// values as `token` (Janus's `token_auth`; janus.js: `new Janus({token})`); else
    /// error 403. With --janus-api-secret too, either one is enough. [default: false, or
    /// general.token_auth from --janus-config]
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "Janus API",
    )]
    pub janus_token_auth: Option<bool>,
    /// A token accepted by --janus-token-auth (repeatable).
    #[arg(long, value_name = "TOKEN", help_heading = "Janus API")]
    pub janus_token: Option<Vec<String>>,
    /// With --janus-token-auth: accept instead tokens signed with this secret
    /// (`EXPIRY,janus,janus.plugin.ustreamer:BASE64_HMAC_SHA1`; Janus's
    /// `token_auth_secret`). [default: none, or general.token_auth_secret from
    /// --janus-config]
    #[arg(long, value_name = "SECRET", help_heading = "Janus API")]
    pub janus_token_auth_secret: Option<String>,

    /// Every Admin API request except info and ping must carry this as `admin_secret`
    /// (Janus's `admin_secret`); else error 403. Required when an Admin API listener is
    /// reachable from other machines. [default: none, or general.admin_secret from
    /// --janus-config]
    #[arg(long, value_name = "SECRET", help_heading = "Janus Admin API")]
    pub janus_admin_secret: Option<String>,
    /// Serve the Janus Admin API over HTTP on this port (Janus's `admin_http`,
    /// `admin_port`, usually 7088). [default: off]
    #[arg(long, value_name = "PORT", help_heading = "Janus Admin API")]
    pub janus_admin_http_port: Option<u16>,
    /// Serve the Janus Admin API over WebSocket on this port (subprotocol
    /// janus-admin-protocol; Janus's `admin_ws`, `admin_ws_port`, usually 7188).
    /// [default: off]
    #[arg(long, value_name = "PORT", help_heading = "Janus Admin API")]
    pub janus_admin_ws_port: Option<u16>,
    /// Base path of the Admin API's HTTP transport. [default: /admin]
    #[arg(long, value_name = "PATH", help_heading = "Janus Admin API")]
    pub janus_admin_base_path: Option<String>,
    /// Address the Admin API's HTTP transport listens on, instead of --host (Janus's
    /// `admin_ip`). [default: --host, or admin_ip / admin_interface from --janus-config]
    #[arg(long, value_name = "IP", help_heading = "Janus Admin API")]
    pub janus_admin_http_host: Option<IpAddr>,
    /// Address the Admin API's WebSocket transport listens on, instead of --host
    /// (Janus's `admin_ws_ip`). [default: --host, or admin_ws_ip / admin_ws_interface
    /// from --janus-config]
    #[arg(long, value_name = "IP", help_heading = "Janus Admin API")]
    pub janus_admin_ws_host: Option<IpAddr>,

    /// Janus sessions in total (both transports); more get error 472; 0: no cap. [default: 1000]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub max_sessions: Option<usize>,
    /// Janus sessions one WebSocket connection may own; more get error 472; 0: no cap.
    /// [default: 10]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub max_sessions_per_connection: Option<usize>,
    /// Plugin handles in one Janus session; more get error 461; 0: no cap. [default: 10]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub max_handles_per_session: Option<usize>,
    /// Bytes of replies and events a Janus WebSocket may have waiting; while full, its
    /// requests are not read. [default: 4194304]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub ws_queue_bytes: Option<usize>,
    /// Seconds one WebSocket message may take to send before the client is
    /// disconnected (and its sessions destroyed). [default: 10]
    #[arg(long, value_name = "SECONDS", help_heading = "Limits")]
    pub ws_send_timeout: Option<u64>,
    /// Open connections in total over every HTTP and WebSocket listener; always kept
    /// below the open-file limit (raised to its hard maximum at start); 0: as many as
    /// that limit allows. [default: 0]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub max_connections: Option<usize>,
    /// Open connections from one client address; 0: no cap. [default: 256]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a connection has to send a complete request head, after connecting and
    /// between requests (closes slow and idle keep-alive connections). [default: 10]
    #[arg(long, value_name = "SECONDS", help_heading = "Limits")]
    pub header_timeout: Option<u64>,
    /// Seconds with no byte moving in either direction after which an HTTP connection
    /// is closed; more than the 30 s long-poll hold. [default: 60]
    #[arg(long, value_name = "SECONDS", help_heading = "Limits")]
    pub idle_timeout: Option<u64>,

    /// Video source: `v4l2` (the camera at --device), `testsrc` (generated pattern),
    /// `tcp://HOST:PORT` (read an H.264 byte stream, reconnecting), `tcp-listen://IP:PORT`
    /// (accept a pushing encoder), `rtp-listen://IP:PORT` (receive H.264 over RTP/UDP),
    /// `whip` (a WHIP publisher POSTing to the stream's `/whip`), `memsink:NAME` (a µStreamer sink), `-` (stdin) or a raw H.264 file (paced at
    /// --desired-fps, looping). [default: `v4l2` when --device is given or /dev/video0
    /// exists, else `testsrc`]
    #[arg(long, value_name = "SOURCE", help_heading = "Input")]
    pub source: Option<String>,
    /// With --source tcp-listen:// or rtp-listen://: the only peer addresses allowed to
    /// push (comma-separated); others are closed at once or their datagrams dropped.
    /// [default: any]
    #[arg(
        long,
        value_name = "IP[,IP...]",
        value_delimiter = ',',
        help_heading = "Input"
    )]
    pub source_allow: Option<Vec<IpAddr>>,
    /// V4L2 capture device. [default: /dev/video0]
    #[arg(long, short = 'd', value_name = "PATH", help_heading = "Input")]
    pub device: Option<PathBuf>,
    /// Camera pixel format: auto (the camera's own H.264 if it has one, else MJPEG,
    /// YUYV, NV12, YU12) or one of those. [default: auto]
    #[arg(long, short = 'm', value_name = "FORMAT", help_heading = "Input")]
    pub format: Option<String>,
    /// List the V4L2 devices and exit.
    #[arg(long, help_heading = "Input")]
    #[serde(skip)]
    pub list_devices: bool,
    /// List the formats, sizes and frame rates of --device and exit.
    #[arg(long, help_heading = "Input")]
    #[serde(skip)]
    pub list_formats: bool,
    /// Picture size WIDTHxHEIGHT. [default: 1280x720]
    #[arg(long, short = 'r', value_name = "WxH", help_heading = "Input")]
    pub resolution: Option<String>,
    /// Frames per second. [default: 30]
    #[arg(long, short = 'f', value_name = "FPS", help_heading = "Input")]
    pub desired_fps: Option<u32>,
    /// H.264 bitrate in kbit/s (for sources peregrine encodes). [default: 2000]
    #[arg(long, value_name = "KBPS", help_heading = "Encoder")]
    pub h264_bitrate: Option<u32>,
    /// Frames between keyframes (for sources peregrine encodes). [default: 60]
    #[arg(long, value_name = "FRAMES", help_heading = "Encoder")]
    pub h264_gop: Option<u32>,
    /// Encode H.264 with the V4L2 memory-to-memory encoder at PATH (a Raspberry Pi's
    /// /dev/video11) instead of openh264 on the CPU, for cameras delivering raw or JPEG
    /// pictures and the test pattern. [default: openh264]
    #[arg(long, value_name = "PATH", help_heading = "Encoder")]
    pub h264_m2m_device: Option<PathBuf>,
    /// With --h264-m2m-device: H.264 level 4.2 rather than 4.0 and up to 60 pictures
    /// per second above 720p, for faster boards (as µStreamer's --h264-boost).
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "Encoder",
    )]
    pub h264_boost: Option<bool>,
    /// JPEG quality of `/stream`, `/snapshot` and the JPEG sink (1..100) for sources peregrine encodes
    /// as JPEG; a camera's own JPEG is passed on as it is. [default: 80]
    #[arg(long, short = 'q', value_name = "N", help_heading = "Encoder")]
    pub quality: Option<u8>,
    /// `/stream` skips a picture byte-identical to the last one sent, at most N in a row
    /// (0..120; 0: send every picture), as µStreamer's --drop-same-frames: a still
    /// screen costs almost no traffic. [default: 0]
    #[arg(long, short = 'e', value_name = "N", help_heading = "Encoder")]
    pub drop_same_frames: Option<u32>,

    /// Delay before the test pattern's first picture after a viewer appears, like a
    /// camera warming up (exercises clients' retry-on-503 paths). [default: 0]
    #[arg(long, value_name = "MS", help_heading = "Input")]
    pub testsrc_warmup_ms: Option<u64>,

    /// STUN/TURN URL given to pages through `features` and to WHEP players in
    /// `Link: <URL>; rel="ice-server"` headers (repeatable).
    #[arg(long, value_name = "URL", help_heading = "WebRTC")]
    pub ice_server: Option<Vec<String>>,
    /// Address the WebRTC media socket binds, whose addresses are offered as ICE host
    /// candidates (every interface's with 0.0.0.0). Lets media reach the network while
    /// signalling stays on loopback or unix sockets behind a proxy. [default: --host]
    #[arg(long, value_name = "IP", help_heading = "WebRTC")]
    pub media_host: Option<IpAddr>,
    /// Public address to advertise in ICE candidates instead of the local ones.
    #[arg(long = "nat-1-1-ip", value_name = "IP", help_heading = "WebRTC")]
    #[serde(rename = "nat_1_1_ip")]
    pub nat_1_1_ip: Option<IpAddr>,
    /// UDP ports for WebRTC media, FIRST-LAST; all viewers share the first free one. [default: 20000-40000]
    #[arg(long, value_name = "FIRST-LAST", help_heading = "WebRTC")]
    pub udp_port_range: Option<String>,
    /// Also offer loopback candidates when listening on all interfaces.
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "WebRTC",
    )]
    pub ice_loopback: Option<bool>,
    /// Largest RTP packet in bytes, header included. [default: 1150]
    #[arg(long, value_name = "BYTES", help_heading = "WebRTC")]
    pub rtp_packet_size: Option<usize>,
    /// WebRTC viewers at most, connected or still negotiating; `watch` beyond gets
    /// error 429. [default: 1000]
    #[arg(long, value_name = "N", help_heading = "WebRTC")]
    pub max_viewers: Option<usize>,
    /// SRTP ciphers a viewer may choose: `aead` (AES-GCM only: every current browser
    /// offers it, and it costs a fraction of AES-CM + HMAC-SHA1's CPU per packet, which
    /// browsers would otherwise pick) or `all` (AES-CM too, for older clients). WHIP
    /// publishers and forwards accept both always. [default: aead]
    #[arg(long, value_name = "WHICH", help_heading = "WebRTC")]
    pub srtp_ciphers: Option<String>,
    /// WebRTC engine threads: viewers are spread over N engines, one thread each, all on
    /// the one UDP port; 1 runs a single engine reading the socket itself. [default: 0,
    /// one per CPU]
    #[arg(long, value_name = "N", help_heading = "WebRTC")]
    pub rtc_threads: Option<usize>,
    /// Send the default stream as plain RTP (H.264 on payload type 96) to HOST:PORT, e.g.
    /// a Janus Streaming `rtp` mountpoint; repeatable. Sender reports go to the next port
    /// (`rtcp=PORT` to change it), whose keyframe requests come back. With
    /// `video=HOST:PORT,audio=HOST:PORT` the sound goes too (Opus, payload type 111).
    #[arg(long, value_name = "HOST:PORT", help_heading = "Egress")]
    pub rtp_forward: Option<Vec<String>>,
    /// Publish the default stream to this WHIP endpoint (http:// or https://HOST[:PORT]/PATH), e.g.
    /// simple-whip-server in front of Janus VideoRoom, MediaMTX `/PATH/whip`, LiveKit
    /// `/whip/v1`; repeatable. Lost sessions start over with backoff.
    #[arg(long, value_name = "URL", help_heading = "Egress")]
    pub whip_forward: Option<Vec<String>>,
    /// Bearer token sent to the --whip-forward endpoints.
    #[arg(long, value_name = "TOKEN", help_heading = "Egress")]
    pub whip_token: Option<String>,
    /// CA certificates (PEM) trusted for https:// --whip-forward endpoints besides the
    /// system's (/etc/ssl/certs/ca-certificates.crt), e.g. a private CA.
    #[arg(long, value_name = "FILE", help_heading = "Egress")]
    pub whip_ca: Option<PathBuf>,

    /// Accept MPEG-TS uploads at /upload/SECRET (8 characters or more) and relay them to
    /// JSMpeg viewers (/jsmpeg, or a WebSocket on /). Without it JSMpeg viewers get the
    /// source transcoded.
    #[arg(long, value_name = "SECRET", help_heading = "Relays (JSMpeg, jmuxer)")]
    pub jsmpeg_secret: Option<String>,
    /// Send JSMpeg viewers the 8-byte `jsmp` header and raw MPEG-1 video, for the old jsmpg.js.
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "Relays (JSMpeg, jmuxer)",
    )]
    pub jsmpeg_header: Option<bool>,
    /// ffmpeg program for the JSMpeg transcode. [default: ffmpeg]
    #[arg(long, value_name = "PATH", help_heading = "Relays (JSMpeg, jmuxer)")]
    pub jsmpeg_ffmpeg: Option<String>,
    /// MPEG-1 bitrate of the JSMpeg transcode in kbit/s. [default: 1500]
    #[arg(long, value_name = "KBPS", help_heading = "Relays (JSMpeg, jmuxer)")]
    pub jsmpeg_bitrate: Option<u32>,

    /// The stream's sound: `tone` (a 1000 Hz beep at each whole second, for testing),
    /// `none`, or `alsa:DEVICE` (ALSA capture, e.g. alsa:hw:1,0; `arecord -L` lists the
    /// devices). Sent to WebRTC viewers as Opus. [default: `tone` with the test
    /// pattern, else `none`]
    #[arg(long, value_name = "SOURCE", help_heading = "Audio")]
    pub audio: Option<String>,
    /// ALSA capture device, e.g. hw:tc358743,0: the same as --audio alsa:DEVICE.
    #[arg(long, value_name = "DEVICE", help_heading = "Audio")]
    pub audio_device: Option<String>,
    /// ALSA capture rate in Hz (8000..192000); other rates than 48000 are converted.
    /// [default: 48000]
    #[arg(long, value_name = "HZ", help_heading = "Audio")]
    pub audio_rate: Option<u32>,
    /// ALSA capture channels: 1 (sent on both sides) or 2. [default: 2]
    #[arg(long, value_name = "N", help_heading = "Audio")]
    pub audio_channels: Option<u32>,
    /// Opus bitrate in kbit/s (6..510). [default: 128]
    #[arg(long, value_name = "KBPS", help_heading = "Audio")]
    pub audio_bitrate: Option<u32>,
    /// V4L2 device of a TC358743 HDMI bridge (e.g. /dev/kvmd-video): capture at the HDMI
    /// audio rate the chip reports instead of --audio-rate.
    #[arg(long, value_name = "PATH", help_heading = "Audio")]
    pub audio_tc358743: Option<PathBuf>,

    /// Folder of an existing Janus installation's configs (e.g. /opt/janus/etc/janus):
    /// the source is the memsink in janus.plugin.ustreamer.jcfg (`video.sink`), the
    /// ports come from the transport configs. Flags and --config keys still win.
    #[arg(long, value_name = "DIR", help_heading = "Janus API")]
    pub janus_config: Option<PathBuf>,

    /// Also write the H.264 stream into this µStreamer memsink (shared-memory object,
    /// e.g. `demo::ustreamer::h264`) for the Janus ustreamer plugin, kvmd or ustreamer-dump.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub h264_sink: Option<String>,
    /// Permissions of a newly created sink, octal. [default: 660]
    #[arg(
        long,
        value_name = "OCTAL",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub h264_sink_mode: Option<String>,
    /// Remove the sink when peregrine exits.
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "Memsink output (as µStreamer)",
    )]
    pub h264_sink_rm: Option<bool>,
    /// Seconds a sink reader counts as present after its last read (1..60). [default: 10]
    #[arg(
        long,
        value_name = "SECONDS",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub h264_sink_client_ttl: Option<u64>,
    /// Seconds to wait for the sink lock (1..60; kept for µStreamer parity). [default: 1]
    #[arg(
        long,
        value_name = "SECONDS",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub h264_sink_timeout: Option<u64>,
    /// Also write JPEG pictures into this µStreamer memsink (e.g. `kvmd::ustreamer::jpeg`)
    /// for kvmd's VNC server or ustreamer-dump; pictures are made only while it has a
    /// reader. `--sink` is µStreamer's older name.
    #[arg(
        long,
        alias = "sink",
        value_name = "NAME",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub jpeg_sink: Option<String>,
    /// Permissions of a newly created JPEG sink, octal. [default: 660]
    #[arg(
        long,
        alias = "sink-mode",
        value_name = "OCTAL",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub jpeg_sink_mode: Option<String>,
    /// Remove the JPEG sink when peregrine exits.
    #[arg(
        long,
        alias = "sink-rm",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "Memsink output (as µStreamer)",
    )]
    pub jpeg_sink_rm: Option<bool>,
    /// Seconds a JPEG sink reader counts as present after its last read (1..60).
    /// [default: 10]
    #[arg(
        long,
        alias = "sink-client-ttl",
        value_name = "SECONDS",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub jpeg_sink_client_ttl: Option<u64>,
    /// Seconds to wait for the JPEG sink lock (1..60; kept for µStreamer parity).
    /// [default: 1]
    #[arg(
        long,
        alias = "sink-timeout",
        value_name = "SECONDS",
        help_heading = "Memsink output (as µStreamer)"
    )]
    pub jpeg_sink_timeout: Option<u64>,

    /// Play the browsers' microphones (janus.js `watch {mic: true}`) on this ALSA
    /// playback device, e.g. `plughw:UAC2Gadget,0`; several talking browsers are mixed.
    /// Opened only while somebody talks. [default: off]
    #[arg(long, value_name = "DEVICE", help_heading = "Microphone")]
    pub mic_device: Option<String>,

    /// peregrine's own log level: error, warn, info, debug or trace; other libraries
    /// log warnings and errors only. RUST_LOG directives are applied on top. [default: info]
    #[arg(long, value_name = "LEVEL", help_heading = "Logging")]
    pub log_level: Option<String>,
    /// Log line format: text (coloured only on a terminal) or json (one object per line).
    /// [default: text]
    #[arg(long, value_name = "FORMAT", help_heading = "Logging")]
    pub log_format: Option<String>,

    /// More streams, from the TOML file only: `[[stream]]` tables.
    #[arg(skip)]
    #[serde(default)]
    pub stream: Vec<StreamArgs>,
}

/// The command line: [`Args`] and the µStreamer flags of [`ustreamer::FLAGS`] that were
/// given and are honoured; an error names a µStreamer flag that is not. `--help`,
/// `--version` and clap's own usage errors exit here, as [`Parser::parse`] does.
pub fn parse_command_line() -> Result<(Args, Vec<&'static str>)> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = ustreamer::with_flags(Args::command()).get_matches();
    let honoured = ustreamer::check(&matches)?;
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Ok((args, honoured))
}

/// Shown after the flags in `--help`; every line starting with `peregrine` is checked
/// to parse by the tests.
const EXAMPLES: &str = "\
Examples:
  # the camera at /dev/video0 (or the test pattern without one), for this machine only
  peregrine
  # a camera for the whole network
  peregrine --host 0.0.0.0 --device /dev/video0 --resolution 1920x1080 --desired-fps 30
  # an encoder pushing H.264 (e.g. ffmpeg ... -f h264 tcp://127.0.0.1:8000)
  peregrine --source tcp-listen://127.0.0.1:8000
  # in place of Janus + ustreamer plugin, reading uStreamer's H.264 memsink
  peregrine --source memsink:demo::ustreamer::h264
  # open to the LAN only (add --user NAME --passwd-file FILE for a password)
  peregrine --host 0.0.0.0 --allow-ip 127.0.0.1,192.168.1.0/24
  # behind NAT, with a narrow UDP port range opened in the firewall
  peregrine --host 0.0.0.0 --nat-1-1-ip 203.0.113.7 --udp-port-range 20000-20100
  # debug lines from peregrine, JSON for a log collector
  peregrine --log-level debug --log-format json
  # as µStreamer for kvmd: the HTTP routes (/state...) also on a unix socket
  peregrine --unix /run/kvmd/ustreamer.sock --unix-rm --unix-mode 660 --exit-on-parent-death
  # https:// and wss:// only, with a certificate read again on SIGHUP
  peregrine --tls-cert /etc/peregrine/cert.pem --tls-key /etc/peregrine/key.pem

Exit status: 0 after a clean stop, 2 when the command line or configuration is
invalid (nothing was started), 1 when starting or running failed.";

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The resolved configuration the program runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// `--tls-cert` and `--tls-key`, both or neither (checked at load).
    pub tls: Option<CertFiles>,
    pub janus_ws_port: u16,
    pub janus_http_port: u16,
    pub janus_http_path: String,
    /// The Janus transports' own addresses; `None`: `host`. A Janus config's `ws_ip` /
    /// `ip` lands here, so `--host` alone does not widen what it bound.
    pub janus_ws_host: Option<IpAddr>,
    pub janus_http_host: Option<IpAddr>,
    /// WebRTC media's own address; `None`: `host`.
    pub media_host: Option<IpAddr>,
    pub janus_ws_unix: Option<PathBuf>,
    pub janus_ws_unix_mode: u32,
    pub janus_http_unix: Option<PathBuf>,
    pub janus_http_unix_mode: u32,
    /// Turned off by a Janus config (`ws = false`, `http = false`) until a flag or key
    /// gives the transport a port or socket again.
    pub janus_ws_off: bool,
    pub janus_http_off: bool,
    /// The transports' TLS servers on ports of their own, from a Janus config (`wss`,
    /// `https`).
    pub janus_wss: Option<SecureTransport>,
    pub janus_https: Option<SecureTransport>,
    /// Said in the log at start: what the configuration files set that is not used.
    pub notes: Vec<String>,
    pub session_timeout_s: u64,
    pub janus_api_secret: Option<String>,
    pub janus_token_auth: bool,
    pub janus_tokens: Vec<String>,
    pub janus_token_auth_secret: Option<String>,
    pub janus_admin_secret: Option<String>,
    /// The Admin API's listeners; `None`: off.
    pub janus_admin_http_port: Option<u16>,
    pub janus_admin_ws_port: Option<u16>,
    pub janus_admin_base_path: String,
    pub janus_admin_http_host: Option<IpAddr>,
    pub janus_admin_ws_host: Option<IpAddr>,
    pub max_sessions: usize,
    pub max_sessions_per_connection: usize,
    pub max_handles_per_session: usize,
    pub ws_queue_bytes: usize,
    pub ws_send_timeout_s: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout_s: u64,
    pub idle_timeout_s: u64,
    /// The source as configured, for messages and `/state`.
    pub source: String,
    /// The source, parsed from `source` (with `device` and `format`).
    pub source_spec: SourceSpec,
    /// No source was configured: it was chosen by whether the camera exists.
    pub source_chosen: bool,
    pub device: PathBuf,
    /// `None`: auto.
    pub format: Option<PixelFormat>,
    /// The default stream's size, rate, bitrate and keyframe interval.
    pub video: VideoSettings,
    pub testsrc_warmup_ms: u64,
    pub ice_servers: Vec<String>,
    pub nat_1_1_ip: Option<IpAddr>,
    pub udp_ports: (u16, u16),
    pub ice_loopback: bool,
    pub rtp_packet_size: usize,
    pub max_viewers: usize,
    /// Viewers' SRTP is AES-GCM only (`--srtp-ciphers aead`).
    pub srtp_aead_only: bool,
    /// WebRTC engine shards, each on a thread of its own (`--rtc-threads`).
    pub rtc_threads: usize,
    /// Where the default stream is sent as plain RTP (`--rtp-forward`).
    pub rtp_forward: Vec<RtpForwardTarget>,
    /// WHIP endpoints the default stream is published to (`--whip-forward`).
    pub whip_forward: Vec<hyper::Uri>,
    pub whip_token: Option<String>,
    /// CA certificates trusted for `https://` WHIP endpoints besides the system's.
    pub whip_ca: Option<PathBuf>,
    pub source_allow: Vec<IpAddr>,
    /// `--allow-origin` entries, checked at load.
    pub allow_origin: Vec<String>,
    /// The main port's routes also on this unix socket (`--unix`).
    pub unix: Option<PathBuf>,
    pub unix_rm: bool,
    /// `None`: left as the umask makes it.
    pub unix_mode: Option<u32>,
    /// Files served at / instead of the bundled pages (`--static`).
    pub static_dir: Option<PathBuf>,
    pub instance_id: String,
    /// Reported in `/state` instead of the source's size (`--fake-resolution`).
    pub fake_resolution: Option<(u32, u32)>,
    pub exit_on_parent_death: bool,
    /// HTTP Basic authentication of the main port (`--user`, `--passwd`).
    pub basic_auth: Option<Credentials>,
    /// Addresses allowed to connect anywhere; empty: all.
    pub allow_ip: IpList,
    /// Addresses allowed to connect to one Janus transport, besides `allow_ip`.
    pub janus_ws_allow_ip: IpList,
    pub janus_http_allow_ip: IpList,
    pub jsmpeg_secret: Option<String>,
    pub jsmpeg_header: bool,
    pub jsmpeg_ffmpeg: String,
    pub jsmpeg_bitrate_kbps: u32,
    /// The default stream's sound, as layered; see [`StreamConfig::audio`] for a
    /// stream's resolved one.
    pub audio: AudioSettings,
    /// JPEG quality of the MJPEG output, 1..=100.
    pub jpeg_quality: u8,
    /// What encodes raw pictures to H.264.
    pub h264_encoder: H264EncoderChoice,
    /// `--h264-boost`, kept apart until the device it applies to is known.
    pub h264_boost: bool,
    pub h264_sink: Option<String>,
    pub h264_sink_mode: u32,
    pub h264_sink_rm: bool,
    pub h264_sink_client_ttl_s: u64,
    pub h264_sink_timeout_s: u64,
    pub jpeg_sink: Option<String>,
    pub jpeg_sink_mode: u32,
    pub jpeg_sink_rm: bool,
    pub jpeg_sink_client_ttl_s: u64,
    pub jpeg_sink_timeout_s: u64,
    /// `/stream` skips up to this many pictures in a row identical to the last one sent.
    pub drop_same_frames: u32,
    /// The ALSA device the browsers' microphones play on; `None`: no microphone.
    pub mic_device: Option<String>,
    /// peregrine's own log level (`error` … `trace`).
    pub log_level: tracing::Level,
    /// The level was given (flag or file), so it wins over a bare level in RUST_LOG.
    pub log_level_given: bool,
    pub log_format: LogFormat,
    /// The streams of `[[stream]]` tables, besides the default one.
    pub streams: Vec<StreamConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            tls: None,
            janus_ws_port: 8188,
            janus_http_port: 8088,
            janus_http_path: "/janus".into(),
            janus_ws_host: None,
            janus_http_host: None,
            media_host: None,
            janus_ws_unix: None,
            janus_ws_unix_mode: 0o660,
            janus_http_unix: None,
            janus_http_unix_mode: 0o660,
            janus_ws_off: false,
            janus_http_off: false,
            janus_wss: None,
            janus_https: None,
            notes: Vec::new(),
            session_timeout_s: 60,
            janus_api_secret: None,
            janus_token_auth: false,
            janus_tokens: Vec::new(),
            janus_token_auth_secret: None,
            janus_admin_secret: None,
            janus_admin_http_port: None,
            janus_admin_ws_port: None,
            janus_admin_base_path: "/admin".into(),
            janus_admin_http_host: None,
            janus_admin_ws_host: None,
            max_sessions: 1000,
            max_sessions_per_connection: 10,
            max_handles_per_session: 10,
            ws_queue_bytes: 4 << 20,
            ws_send_timeout_s: 10,
            max_connections: 0,
            max_connections_per_ip: 256,
            header_timeout_s: 10,
            idle_timeout_s: 60,
            source: "testsrc".into(),
            source_spec: SourceSpec::Testsrc,
            source_chosen: false,
            device: PathBuf::from(DEFAULT_DEVICE),
            format: None,
            video: VideoSettings::default(),
            testsrc_warmup_ms: 0,
            ice_servers: Vec::new(),
            nat_1_1_ip: None,
            udp_ports: (20000, 40000),
            ice_loopback: false,
            rtp_packet_size: 1150,
            max_viewers: crate::rtc::DEFAULT_MAX_VIEWERS,
            srtp_aead_only: true,
            rtc_threads: crate::rtc::default_shards(),
            rtp_forward: Vec::new(),
            whip_forward: Vec::new(),
            whip_token: None,
            whip_ca: None,
            source_allow: Vec::new(),
            allow_origin: Vec::new(),
            unix: None,
            unix_rm: false,
            unix_mode: None,
            static_dir: None,
            instance_id: String::new(),
            fake_resolution: None,
            exit_on_parent_death: false,
            basic_auth: None,
            allow_ip: IpList::default(),
            janus_ws_allow_ip: IpList::default(),
            janus_http_allow_ip: IpList::default(),
            jsmpeg_secret: None,
            jsmpeg_header: false,
            jsmpeg_ffmpeg: "ffmpeg".into(),
            jsmpeg_bitrate_kbps: 1500,
            audio: AudioSettings::default(),
            jpeg_quality: crate::media::jpeg::DEFAULT_QUALITY,
            h264_encoder: H264EncoderChoice::Cpu,
            h264_boost: false,
            h264_sink: None,
            h264_sink_mode: 0o660,
            h264_sink_rm: false,
            h264_sink_client_ttl_s: 10,
            h264_sink_timeout_s: 1,
            jpeg_sink: None,
            jpeg_sink_mode: 0o660,
            jpeg_sink_rm: false,
            jpeg_sink_client_ttl_s: 10,
            jpeg_sink_timeout_s: 1,
            drop_same_frames: 0,
            mic_device: None,
            log_level: tracing::Level::INFO,
            log_level_given: false,
            log_format: LogFormat::Text,
            streams: Vec::new(),
        }
    }
}

impl Config {
    /// Resolve flags over the file over the defaults, validating every value.
    pub fn load(mut args: Args) -> Result<Config> {
        let mut file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                // toml's Display quotes the offending line, which names the key.
                toml::from_str::<Args>(&text)
                    .map_err(|e| anyhow!("invalid config file {}: {e}", path.display()))?
            }
            None => Args::default(),
        };
        let source_given = args.source.is_some() || file.source.is_some();
        let args_tls = (args.tls_cert.clone(), args.tls_key.clone());
        let file_tls = (file.tls_cert.clone(), file.tls_key.clone());
        let device_given = args.device.is_some() || file.device.is_some();
        let mut cfg = Config::default();
        if let Some(dir) = args.janus_config.as_ref().or(file.janus_config.as_ref()) {
            let install = crate::config::janus_install::read_install(dir)
                .with_context(|| format!("janus_config {}", dir.display()))?;
            let (ws_off, http_off) = (install.ws_off, install.http_off);
            (cfg.janus_wss, cfg.janus_https) = (install.wss.clone(), install.https.clone());
            cfg.notes = install.notes.clone();
            // Janus's ACLs are text prefixes, not --allow-ip's forms: set as they are.
            let acl = |text: &Option<String>| {
                text.as_deref()
                    .map(IpList::from_janus_acl)
                    .unwrap_or_default()
            };
            let (ws_acl, http_acl) = (acl(&install.ws_acl), acl(&install.http_acl));
            janus_install_args(install)
                .and_then(|janus| cfg.apply(janus))
                .with_context(|| format!("janus_config {}", dir.display()))?;
            (cfg.janus_ws_off, cfg.janus_http_off) = (ws_off, http_off);
            (cfg.janus_ws_allow_ip, cfg.janus_http_allow_ip) = (ws_acl, http_acl);
        }
        let janus_source = cfg.source != Config::default().source;
        // Tables come from the file; `args` has them only when built from TOML text too.
        let mut stream_tables = std::mem::take(&mut file.stream);
        stream_tables.append(&mut args.stream);
        cfg.apply(file)?;
        cfg.apply(args)?;
        if !(source_given || janus_source) {
            // Like µStreamer, the camera by default; a machine without one (a laptop,
            // CI, a first try) gets the test pattern instead of an error.
            cfg.source_chosen = true;
            if device_given || cfg.device.exists() {
                cfg.source = "v4l2".into();
            }
        }
        cfg.source_spec = SourceSpec::parse(&cfg.source, &cfg.device, cfg.format)?;
        cfg.audio.check(&cfg.source_spec)?;
        cfg.check_janus_auth()?;
        cfg.check_janus_admin()?;
        cfg.tls = tls_files(&args_tls, &file_tls)?;
        cfg.check_access()?;
        if cfg.h264_boost && cfg.h264_encoder == H264EncoderChoice::Cpu {
            bail!(
                "h264_boost tunes the V4L2 M2M encoder only: give --h264-m2m-device too \
                 (e.g. /dev/video11), or leave --h264-boost out"
            );
        }
        streams::check_source_allow(&StreamConfig::default_of(&cfg))?;
        streams::check_whip(&cfg)?;
        if let Some(ca) = &cfg.whip_ca {
            // A CA file that cannot be used stops the start, as a bad certificate does.
            whip::HttpClient::new(Some(ca)).map_err(|e| anyhow!("whip_ca: {e:#}"))?;
        }
        cfg.streams = streams::resolve(&cfg, stream_tables)?;
        Ok(cfg)
    }

    /// Every stream: the default one (the top-level keys and flags) first.
    pub fn stream_configs(&self) -> Vec<StreamConfig> {
        std::iter::once(StreamConfig::default_of(self))
            .chain(self.streams.iter().cloned())
            .collect()
    }

    fn apply(&mut self, a: Args) -> Result<()> {
        macro_rules! set {
            ($($field:ident).+ <- $arg:ident) => {
                if let Some(v) = a.$arg {
                    self.$($field).+ = v;
                }
            };
        }
        self.apply_admin(&a)?;
        self.apply_access(&a)?;
        self.apply_ustreamer_http(&a)?;
        self.audio.apply(&a)?;
        // A port or socket given by a later layer turns a transport on again.
        if a.janus_ws_port.is_some() || a.janus_ws_unix.is_some() {
            self.janus_ws_off = false;
        }
        if a.janus_http_port.is_some() || a.janus_http_unix.is_some() {
            self.janus_http_off = false;
        }
        for (key, path) in [
            ("janus_ws_unix", &a.janus_ws_unix),
            ("janus_http_unix", &a.janus_http_unix),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                bail!("{key} must be a path, got an empty one");
            }
        }
        if let (Some(ws), Some(http)) = (&a.janus_ws_unix, &a.janus_http_unix) {
            if ws == http {
                bail!(
                    "janus_ws_unix and janus_http_unix are both {}",
                    ws.display()
                );
            }
        }
        for (key, mode, field) in [
            (
                "janus_ws_unix_mode",
                &a.janus_ws_unix_mode,
                &mut self.janus_ws_unix_mode,
            ),
            (
                "janus_http_unix_mode",
                &a.janus_http_unix_mode,
                &mut self.janus_http_unix_mode,
            ),
        ] {
            if let Some(mode) = mode {
                *field = crate::janus::listen::parse_mode(mode).ok_or_else(|| {
                    anyhow!("{key} must be octal permissions like 660, got {mode:?}")
                })?;
            }
        }
        if let Some(path) = a.janus_ws_unix {
            self.janus_ws_unix = Some(path);
        }
        if let Some(path) = a.janus_http_unix {
            self.janus_http_unix = Some(path);
        }
        set!(host <- host);
        set!(port <- port);
        set!(janus_ws_port <- janus_ws_port);
        set!(janus_http_port <- janus_http_port);
        if let Some(ip) = a.janus_ws_host {
            self.janus_ws_host = Some(ip);
        }
        if let Some(ip) = a.janus_http_host {
            self.janus_http_host = Some(ip);
        }
        if let Some(ip) = a.media_host {
            self.media_host = Some(ip);
        }
        set!(session_timeout_s <- session_timeout);
        if let Some(secret) = a.janus_api_secret {
            if secret.is_empty() {
                bail!("janus_api_secret must not be empty");
            }
            self.janus_api_secret = Some(secret);
        }
        set!(janus_token_auth <- janus_token_auth);
        if let Some(tokens) = a.janus_token {
            if tokens.iter().any(String::is_empty) {
                bail!("janus_token must not be empty");
            }
            self.janus_tokens = tokens;
        }
        if let Some(secret) = a.janus_token_auth_secret {
            if secret.is_empty() {
                bail!("janus_token_auth_secret must not be empty");
            }
            self.janus_token_auth_secret = Some(secret);
        }
        set!(max_sessions <- max_sessions);
        set!(max_sessions_per_connection <- max_sessions_per_connection);
        set!(max_handles_per_session <- max_handles_per_session);
        set!(ws_queue_bytes <- ws_queue_bytes);
        set!(ws_send_timeout_s <- ws_send_timeout);
        set!(max_connections <- max_connections);
        set!(max_connections_per_ip <- max_connections_per_ip);
        set!(header_timeout_s <- header_timeout);
        set!(idle_timeout_s <- idle_timeout);
        set!(source <- source);
        set!(source_allow <- source_allow);
        if let Some(list) = a.rtp_forward {
            self.rtp_forward = list
                .iter()
                .map(|t| RtpForwardTarget::parse(t).map_err(|e| anyhow!("rtp_forward: {e}")))
                .collect::<Result<_>>()?;
        }
        if let Some(list) = a.whip_forward {
            self.whip_forward = list
                .iter()
                .map(|u| whip::parse_url(u).map_err(|e| anyhow!("whip_forward: {e}")))
                .collect::<Result<_>>()?;
        }
        if let Some(token) = a.whip_token {
            if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
                bail!("whip_token must be a non-empty token without spaces");
            }
            self.whip_token = Some(token);
        }
        if let Some(ca) = a.whip_ca {
            self.whip_ca = Some(ca);
        }
        set!(allow_origin <- allow_origin);
        set!(device <- device);
        if let Some(name) = a.format {
            self.format = match name.to_ascii_lowercase().as_str() {
                "auto" => None,
                _ => Some(PixelFormat::parse(&name).ok_or_else(|| {
                    anyhow!("format must be auto, H264, MJPEG, YUYV, NV12 or YU12 (YUV420), got {name:?}")
                })?),
            };
        }
        set!(video.fps <- desired_fps);
        set!(video.bitrate_kbps <- h264_bitrate);
        set!(video.gop <- h264_gop);
        set!(testsrc_warmup_ms <- testsrc_warmup_ms);
        set!(ice_servers <- ice_server);
        set!(ice_loopback <- ice_loopback);
        set!(rtp_packet_size <- rtp_packet_size);
        set!(max_viewers <- max_viewers);
        if let Some(which) = a.srtp_ciphers {
            self.srtp_aead_only = match which.to_ascii_lowercase().as_str() {
                "aead" => true,
                "all" => false,
                _ => bail!("srtp_ciphers must be aead or all, got {which:?}"),
            };
        }
        set!(rtc_threads <- rtc_threads);
        if self.rtc_threads == 0 {
            self.rtc_threads = crate::rtc::default_shards();
        }
        set!(jsmpeg_header <- jsmpeg_header);
        set!(jsmpeg_ffmpeg <- jsmpeg_ffmpeg);
        set!(jsmpeg_bitrate_kbps <- jsmpeg_bitrate);
        set!(jpeg_quality <- quality);
        self.apply_h264_encoder(a.h264_m2m_device, a.h264_boost)?;
        set!(drop_same_frames <- drop_same_frames);
        if let Some(device) = a.mic_device {
            self.mic_device = Some(check_mic_device(&device)?);
        }
        if self.drop_same_frames > MAX_DROP_SAME_FRAMES {
            bail!(
                "drop_same_frames must be 0..={MAX_DROP_SAME_FRAMES}, got {}",
                self.drop_same_frames
            );
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            bail!("quality must be 1..100, got {}", self.jpeg_quality);
        }
        if let Some(secret) = a.jsmpeg_secret {
            if !secret.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
                bail!("jsmpeg_secret must be printable ASCII without '/' or spaces");
            }
            if secret.len() < MIN_SECRET_LEN {
                bail!(
                    "jsmpeg_secret must be at least {MIN_SECRET_LEN} characters (it is all that \
                     stands between anyone who can reach the port and the viewers' screens), \
                     got {}; e.g. `openssl rand -hex 16` makes one",
                    secret.len()
                );
            }
            self.jsmpeg_secret = Some(secret);
        }
        if self.jsmpeg_bitrate_kbps < 100 {
            bail!(
                "jsmpeg_bitrate is in kbit/s and must be at least 100, got {}",
                self.jsmpeg_bitrate_kbps
            );
        }
        if let Some(level) = a.log_level {
            self.log_level = match level.trim() {
                // µStreamer's numbers: info, performance, verbose, debug.
                "0" | "1" => tracing::Level::INFO,
                "2" | "3" => tracing::Level::DEBUG,
                name => name.parse().map_err(|_| {
                    anyhow!(
                        "log_level must be error, warn, info, debug or trace (or µStreamer's \
                         0 to 3), got {level:?}"
                    )
                })?,
            };
            self.log_level_given = true;
        }
        if let Some(format) = a.log_format {
            self.log_format = match format.to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => bail!("log_format must be text or json, got {format:?}"),
            };
        }
        set!(h264_sink_rm <- h264_sink_rm);
        set!(h264_sink_client_ttl_s <- h264_sink_client_ttl);
        set!(h264_sink_timeout_s <- h264_sink_timeout);
        if let Some(name) = a.h264_sink {
            crate::memsink::layout::data_size_for_name(&name)
                .map_err(|e| anyhow!("h264_sink: {e}"))?;
            self.h264_sink = Some(name);
        }
        if let Some(mode) = a.h264_sink_mode {
            self.h264_sink_mode = parse_sink_mode("h264_sink_mode", &mode)?;
        }
        set!(jpeg_sink_rm <- jpeg_sink_rm);
        set!(jpeg_sink_client_ttl_s <- jpeg_sink_client_ttl);
        set!(jpeg_sink_timeout_s <- jpeg_sink_timeout);
        if let Some(name) = a.jpeg_sink {
            crate::memsink::layout::data_size_for_name(&name)
                .map_err(|e| anyhow!("jpeg_sink: {e}"))?;
            self.jpeg_sink = Some(name);
        }
        if let Some(mode) = a.jpeg_sink_mode {
            self.jpeg_sink_mode = parse_sink_mode("jpeg_sink_mode", &mode)?;
        }
        if let Some(path) = a.janus_http_path {
            if !path.starts_with('/') {
                bail!("janus_http_path must start with '/', got {path:?}");
            }
            self.janus_http_path = path.trim_end_matches('/').to_string();
            if self.janus_http_path.is_empty() {
                bail!("janus_http_path must not be '/' alone; use e.g. /janus");
            }
        }
        if let Some(ip) = a.nat_1_1_ip {
            self.nat_1_1_ip = Some(ip);
        }
        if let Some(res) = a.resolution {
            (self.video.width, self.video.height) = parse_resolution(&res)?;
        }
        if let Some(range) = a.udp_port_range {
            self.udp_ports = parse_port_range(&range)?;
        }
        self.video.check().map_err(|e| anyhow!(e))?;
        if self.max_viewers == 0 {
            bail!("max_viewers must be at least 1");
        }
        if !(1..=crate::rtc::MAX_SHARDS).contains(&self.rtc_threads) {
            bail!(
                "rtc_threads must be 1..={}, got {}",
                crate::rtc::MAX_SHARDS,
                self.rtc_threads
            );
        }
        if !(200..=1500).contains(&self.rtp_packet_size) {
            bail!(
                "rtp_packet_size must be 200..=1500 bytes, got {}",
                self.rtp_packet_size
            );
        }
        for (key, v) in [
            ("h264_sink_client_ttl", self.h264_sink_client_ttl_s),
            ("h264_sink_timeout", self.h264_sink_timeout_s),
            ("jpeg_sink_client_ttl", self.jpeg_sink_client_ttl_s),
            ("jpeg_sink_timeout", self.jpeg_sink_timeout_s),
        ] {
            if !(1..=60).contains(&v) {
                bail!("{key} must be 1..=60 seconds, got {v}");
            }
        }
        let read = self.source.strip_prefix("memsink:");
        for (key, sink) in [
            ("h264_sink", &self.h264_sink),
            ("jpeg_sink", &self.jpeg_sink),
        ] {
            if sink.is_some() && sink.as_deref() == read {
                bail!(
                    "{key} {:?} is also the source: peregrine would read its own frames",
                    read.unwrap_or_default()
                );
            }
        }
        if self.h264_sink.is_some() && self.h264_sink == self.jpeg_sink {
            bail!(
                "h264_sink and jpeg_sink are both {:?}; each sink needs its own name",
                self.jpeg_sink.as_deref().unwrap_or_default()
            );
        }
        if self.ws_queue_bytes < 4096 {
            bail!(
                "ws_queue_bytes must be at least 4096, got {}",
                self.ws_queue_bytes
            );
        }
        for (key, v) in [
            ("ws_send_timeout", self.ws_send_timeout_s),
            ("header_timeout", self.header_timeout_s),
        ] {
            if !(1..=3600).contains(&v) {
                bail!("{key} must be 1..=3600 seconds, got {v}");
            }
        }
        // A long poll is held 30 s without a byte moving.
        if !(31..=86400).contains(&self.idle_timeout_s) {
            bail!(
                "idle_timeout must be 31..=86400 seconds (more than the 30 s long-poll hold), got {}",
                self.idle_timeout_s
            );
        }
        OriginPolicy::new(&self.allow_origin).map_err(|e| anyhow!(e))?;
        for url in &self.ice_servers {
            if !(url.starts_with("stun:") || url.starts_with("turn:") || url.starts_with("turns:"))
            {
                bail!("ice_server {url:?} must be a stun:, turn: or turns: URL");
            }
        }
        Ok(())
    }
}

impl Config {
    /// µStreamer's HTTP server keys: `unix*`, `static`, `instance_id`.
    /// `--h264-m2m-device` picks the M2M encoder; `--h264-boost` tunes it.
    fn apply_h264_encoder(&mut self, device: Option<PathBuf>, boost: Option<bool>) -> Result<()> {
        if let Some(boost) = boost {
            self.h264_boost = boost;
        }
        if let Some(device) = device {
            if device.as_os_str().is_empty() {
                bail!("h264_m2m_device must be the encoder's device path, e.g. /dev/video11");
            }
            self.h264_encoder = H264EncoderChoice::M2m(M2mConfig {
                device,
                boost: false,
            });
        }
        if let H264EncoderChoice::M2m(m2m) = &mut self.h264_encoder {
            m2m.boost = self.h264_boost;
        }
        Ok(())
    }

    fn apply_ustreamer_http(&mut self, a: &Args) -> Result<()> {
        if let Some(path) = &a.unix {
            if path.as_os_str().is_empty() {
                bail!("unix must be a path, got an empty one");
            }
            self.unix = Some(path.clone());
        }
        if let Some(rm) = a.unix_rm {
            self.unix_rm = rm;
        }
        if let Some(mode) = &a.unix_mode {
            self.unix_mode = Some(crate::janus::listen::parse_mode(mode).ok_or_else(|| {
                anyhow!("unix_mode must be octal permissions like 660, got {mode:?}")
            })?);
        }
        if let Some(dir) = &a.static_dir {
            if !dir.is_dir() {
                bail!("static {} is not a folder", dir.display());
            }
            self.static_dir = Some(dir.clone());
        }
        if let Some(id) = &a.instance_id {
            // µStreamer's rule: it goes into JSON and file names unescaped.
            if !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"./+_-".contains(&b))
            {
                bail!("instance_id may hold letters, digits and . / + _ - only, got {id:?}");
            }
            self.instance_id = id.clone();
        }
        if let Some(size) = &a.fake_resolution {
            let (w, h) = size
                .split_once(['x', 'X'])
                .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
                .filter(|&(w, h): &(u32, u32)| w > 0 && h > 0)
                .ok_or_else(|| {
                    anyhow!("fake_resolution must be WIDTHxHEIGHT, e.g. 1920x1080, got {size:?}")
                })?;
            self.fake_resolution = Some((w, h));
        }
        if let Some(on) = a.exit_on_parent_death {
            self.exit_on_parent_death = on;
        }
        Ok(())
    }

    /// The Admin API's keys.
    fn apply_admin(&mut self, a: &Args) -> Result<()> {
        if let Some(secret) = &a.janus_admin_secret {
            if secret.is_empty() {
                bail!("janus_admin_secret must not be empty");
            }
            self.janus_admin_secret = Some(secret.clone());
        }
        if let Some(port) = a.janus_admin_http_port {
            self.janus_admin_http_port = Some(port);
        }
        if let Some(port) = a.janus_admin_ws_port {
            self.janus_admin_ws_port = Some(port);
        }
        if let Some(ip) = a.janus_admin_http_host {
            self.janus_admin_http_host = Some(ip);
        }
        if let Some(ip) = a.janus_admin_ws_host {
            self.janus_admin_ws_host = Some(ip);
        }
        if let Some(path) = &a.janus_admin_base_path {
            if !path.starts_with('/') {
                bail!("janus_admin_base_path must start with '/', got {path:?}");
            }
            self.janus_admin_base_path = path.trim_end_matches('/').to_string();
            if self.janus_admin_base_path.is_empty() {
                bail!("janus_admin_base_path must not be '/' alone; use e.g. /admin");
            }
        }
        Ok(())
    }

    /// The Admin API's listeners that are on.
    pub fn janus_admin_listeners(&self) -> Vec<AdminListener> {
        let mut out = Vec::new();
        if let Some(port) = self.janus_admin_http_port {
            out.push(AdminListener {
                addr: (self.janus_admin_http_host.unwrap_or(self.host), port).into(),
                transport: "HTTP",
                host_key: "janus_admin_http_host",
            });
        }
        if let Some(port) = self.janus_admin_ws_port {
            out.push(AdminListener {
                addr: (self.janus_admin_ws_host.unwrap_or(self.host), port).into(),
                transport: "WebSocket",
                host_key: "janus_admin_ws_host",
            });
        }
        out
    }

    /// Whoever reaches the Admin API can let anybody watch, so beyond loopback it must
    /// ask for a secret.
    fn check_janus_admin(&self) -> Result<()> {
        if self.janus_admin_secret.is_some() {
            return Ok(());
        }
        for AdminListener { addr, host_key, .. } in self.janus_admin_listeners() {
            if !addr.ip().is_loopback() {
                bail!(
                    "the Janus Admin API would listen on {addr}, beyond this machine, without \
                     an admin secret: anyone reaching it could add tokens and end sessions. \
                     Set janus_admin_secret (--janus-admin-secret; Janus's admin_secret), or \
                     keep it on 127.0.0.1 with {host_key} (--{})",
                    host_key.replace('_', "-")
                );
            }
        }
        Ok(())
    }

    /// Which web pages may use the server (`allow_origin` was checked at load).
    pub fn origin_policy(&self) -> OriginPolicy {
        OriginPolicy::new(&self.allow_origin).unwrap_or_default()
    }

    /// `--user`, `--passwd` / `--passwd-file` and the address allow-lists of one layer.
    /// The credentials are completed and checked at the end, by [`Config::check_access`].
    fn apply_access(&mut self, a: &Args) -> Result<()> {
        if let Some(user) = &a.user {
            let passwd = self.basic_auth.take().map(|c| c.passwd).unwrap_or_default();
            self.basic_auth = Some(Credentials {
                user: user.clone(),
                passwd,
            });
        }
        let passwd = match (&a.passwd, &a.passwd_file) {
            (Some(_), Some(_)) => bail!("passwd and passwd_file exclude each other"),
            (Some(p), None) => Some(p.clone()),
            (None, Some(path)) => Some(read_passwd_file(path)?),
            (None, None) => None,
        };
        if let Some(passwd) = passwd {
            // Without a user yet (it may come from a later layer), the user stays empty.
            let user = self.basic_auth.take().map(|c| c.user).unwrap_or_default();
            self.basic_auth = Some(Credentials { user, passwd });
        }
        for (key, values, field) in [
            ("allow_ip", &a.allow_ip, &mut self.allow_ip),
            (
                "janus_ws_allow_ip",
                &a.janus_ws_allow_ip,
                &mut self.janus_ws_allow_ip,
            ),
            (
                "janus_http_allow_ip",
                &a.janus_http_allow_ip,
                &mut self.janus_http_allow_ip,
            ),
        ] {
            if let Some(values) = values {
                *field = IpList::parse(values, key).map_err(|e| anyhow!(e))?;
            }
        }
        Ok(())
    }

    /// A password needs a user; a user name cannot hold `:` (RFC 7617); an allow-list
    /// of a transport on a unix socket would check nothing.
    fn check_access(&self) -> Result<()> {
        if let Some(c) = &self.basic_auth {
            if c.user.is_empty() {
                bail!("passwd is given but user is not (or is empty); set --user NAME too");
            }
            if c.user.contains(':') || c.user.chars().any(char::is_control) {
                bail!(
                    "user {:?} must not contain ':' or control characters",
                    c.user
                );
            }
            if c.passwd.chars().any(char::is_control) {
                bail!("passwd must not contain control characters");
            }
        }
        for (key, list, listen, socket_key) in [
            (
                "janus_ws_allow_ip",
                &self.janus_ws_allow_ip,
                self.janus_ws_listen(),
                "janus_ws_unix",
            ),
            (
                "janus_http_allow_ip",
                &self.janus_http_allow_ip,
                self.janus_http_listen(),
                "janus_http_unix",
            ),
        ] {
            if !list.is_empty() && matches!(listen, Listen::Unix { .. }) {
                bail!(
                    "{key} cannot apply: the transport listens on a unix socket ({socket_key}), \
                     whose clients have no address; its file permissions decide who connects"
                );
            }
        }
        Ok(())
    }

    /// Connection caps and timeouts of every listener.
    pub fn conn_limits(&self) -> crate::serve::ConnLimits {
        crate::serve::ConnLimits {
            caps: crate::serve::Caps {
                total: self.max_connections,
                per_ip: self.max_connections_per_ip,
            },
            header_timeout: std::time::Duration::from_secs(self.header_timeout_s),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_s),
        }
    }

    /// Where the Janus WebSocket transport listens.
    /// Tokens only make sense with token authentication, and token authentication
    /// without tokens (and no secret) would refuse every request.
    fn check_janus_auth(&self) -> Result<()> {
        if !self.janus_token_auth && !self.janus_tokens.is_empty() {
            bail!("janus_token is given but janus_token_auth is off; turn it on with --janus-token-auth");
        }
        if self.janus_token_auth_secret.is_some() && !self.janus_tokens.is_empty() {
            bail!(
                "janus_token and janus_token_auth_secret exclude each other: tokens are either \
                 listed or signed"
            );
        }
        if !self.janus_token_auth && self.janus_token_auth_secret.is_some() {
            bail!("janus_token_auth_secret is given but janus_token_auth is off; turn it on with --janus-token-auth");
        }
        if self.janus_token_auth
            && self.janus_tokens.is_empty()
            && self.janus_token_auth_secret.is_none()
            && self.janus_api_secret.is_none()
            && self.janus_admin_listeners().is_empty()
        {
            bail!(
                "janus_token_auth is on but no janus_token is given, so every Janus request \
                 would be refused; give the accepted tokens with --janus-token, or turn on \
                 the Admin API (--janus-admin-http-port / --janus-admin-ws-port) to add them \
                 with add_token"
            );
        }
        Ok(())
    }

    /// The address WebRTC media binds.
    pub fn media_ip(&self) -> IpAddr {
        self.media_host.unwrap_or(self.host)
    }

    pub fn janus_ws_listen(&self) -> Listen {
        listen(
            self.janus_ws_off,
            &self.janus_ws_unix,
            self.janus_ws_unix_mode,
            self.janus_ws_port,
        )
    }

    /// Where the Janus HTTP transport listens.
    pub fn janus_http_listen(&self) -> Listen {
        listen(
            self.janus_http_off,
            &self.janus_http_unix,
            self.janus_http_unix_mode,
            self.janus_http_port,
        )
    }
}

/// One listener of the Janus Admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminListener {
    pub addr: std::net::SocketAddr,
    /// `HTTP` or `WebSocket`.
    pub transport: &'static str,
    /// The key that gives it an address of its own.
    pub host_key: &'static str,
}

/// A unix socket, when given, takes the place of the port (as `ws_unix` in Janus).
fn listen(off: bool, unix: &Option<PathBuf>, mode: u32, port: u16) -> Listen {
    match unix {
        _ if off => Listen::Off,
        Some(path) => Listen::Unix {
            path: path.clone(),
            mode,
        },
        None => Listen::Tcp(port),
    }
}

impl Config {
    /// What the Janus transports and core take from the configuration.
    pub fn janus_config(&self) -> JanusConfig {
        let cfg = self;
        JanusConfig {
            host: cfg.host,
            ws_host: cfg.janus_ws_host,
            http_host: cfg.janus_http_host,
            ws: cfg.janus_ws_listen(),
            http: cfg.janus_http_listen(),
            http_path: cfg.janus_http_path.clone(),
            session_timeout: std::time::Duration::from_secs(cfg.session_timeout_s),
            ice_servers: cfg.ice_servers.clone(),
            caps: janus::gateway::SessionCaps {
                sessions: cfg.max_sessions,
                sessions_per_connection: cfg.max_sessions_per_connection,
                handles_per_session: cfg.max_handles_per_session,
            },
            ws_queue_bytes: cfg.ws_queue_bytes,
            ws_send_timeout: std::time::Duration::from_secs(cfg.ws_send_timeout_s),
            conn: cfg.conn_limits(),
            auth: janus::auth::Auth {
                api_secret: cfg.janus_api_secret.clone(),
                tokens: cfg
                    .janus_token_auth
                    .then(|| match &cfg.janus_token_auth_secret {
                        Some(secret) => janus::auth::Tokens::Signed(secret.clone()),
                        None => janus::auth::Tokens::Stored(janus::auth::TokenStore::new(
                            &cfg.janus_tokens,
                            &[janus::ustreamer::PACKAGE],
                        )),
                    }),
            },
            origins: cfg.origin_policy(),
            admin: janus::AdminConfig {
                secret: cfg.janus_admin_secret.clone(),
                http: cfg.janus_admin_http_port.map_or(Listen::Off, Listen::Tcp),
                http_host: cfg.janus_admin_http_host,
                http_path: cfg.janus_admin_base_path.clone(),
                ws: cfg.janus_admin_ws_port.map_or(Listen::Off, Listen::Tcp),
                ws_host: cfg.janus_admin_ws_host,
            },
            allow_ip: cfg.allow_ip.clone(),
            ws_allow_ip: cfg.janus_ws_allow_ip.clone(),
            http_allow_ip: cfg.janus_http_allow_ip.clone(),
            ..JanusConfig::default()
        }
    }
}

/// A mistake in what was asked for (flags, config file, the named source) rather than a
/// failure while running: the program exits with status 2 for it, as for bad flags.
#[derive(Debug)]
pub struct UsageError(pub anyhow::Error);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// Tag `err` as a [`UsageError`].
pub fn usage_error(err: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(UsageError(err))
}

/// The certificate and key, from the command line or else the file; one without the
/// other is a mistake.
fn tls_files(
    args: &(Option<PathBuf>, Option<PathBuf>),
    file: &(Option<PathBuf>, Option<PathBuf>),
) -> Result<Option<CertFiles>> {
    let cert = args.0.as_ref().or(file.0.as_ref());
    let key = args.1.as_ref().or(file.1.as_ref());
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            if cert.as_os_str().is_empty() || key.as_os_str().is_empty() {
                bail!("tls_cert and tls_key must be paths, got an empty one");
            }
            Ok(Some(CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }))
        }
        (Some(_), None) => bail!(
            "tls_cert is given without tls_key: give both (--tls-key names the private key, \
             which may be the same file)"
        ),
        (None, Some(_)) => {
            bail!("tls_key is given without tls_cert: give both (--tls-cert names the certificate)")
        }
    }
}

/// The settings an existing Janus installation implies, as if given as keys.
fn janus_install_args(install: crate::config::janus_install::JanusInstall) -> Result<Args> {
    let nat_1_1_ip = install
        .nat_1_1_ip
        .map(|ip| {
            ip.parse()
                .map_err(|_| anyhow!("nat.nat_1_1_mapping {ip:?} is not an IP address"))
        })
        .transpose()?;
    Ok(Args {
        source: install.sink.map(|s| format!("memsink:{s}")),
        janus_ws_port: install.ws_port,
        janus_ws_unix: install.ws_unix,
        janus_ws_host: install.ws_ip,
        janus_http_port: install.http_port,
        janus_http_host: install.http_ip,
        media_host: install.media_ip,
        janus_http_path: install.http_base_path,
        session_timeout: install.session_timeout,
        janus_api_secret: install.api_secret,
        janus_token_auth: install.token_auth.then_some(true),
        janus_token_auth_secret: install.token_auth_secret,
        janus_admin_secret: install.admin_secret,
        janus_admin_http_port: install.admin_http_port,
        janus_admin_http_host: install.admin_http_ip,
        janus_admin_base_path: install.admin_base_path,
        janus_admin_ws_port: install.admin_ws_port,
        janus_admin_ws_host: install.admin_ws_ip,
        udp_port_range: install.rtp_port_range,
        nat_1_1_ip,
        ice_server: install.stun.map(|s| vec![s]),
        allow_origin: (!install.allow_origin.is_empty()).then_some(install.allow_origin),
        mic_device: install.mic_device,
        audio_device: install.audio_device,
        audio_rate: install.audio_rate,
        audio_tc358743: install.audio_tc358743,
        ..Args::default()
    })
}

/// The first line of a password file, without its line end.
fn read_passwd_file(path: &std::path::Path) -> Result<String> {
    const MAX: u64 = 4096;
    let file = std::fs::File::open(path)
        .with_context(|| format!("passwd_file: cannot read {}", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX + 1), &mut text)
        .with_context(|| format!("passwd_file {}: not UTF-8 text", path.display()))?;
    if text.len() as u64 > MAX {
        bail!("passwd_file {}: longer than {MAX} bytes", path.display());
    }
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("passwd_file {}: the first line is empty", path.display());
    }
    Ok(line.to_string())
}

/// A `--mic-device` value: an ALSA PCM name (`hw:1,0`, `plughw:UAC2Gadget,0`, a PCM of
/// an asoundrc). Whether it opens is found out when somebody talks.
fn check_mic_device(device: &str) -> Result<String> {
    let device = device.trim();
    if device.is_empty() || device.len() > 256 || device.chars().any(char::is_control) {
        bail!(
            "mic_device must be an ALSA playback device name such as plughw:UAC2Gadget,0, \
             got {device:?}"
        );
    }
    Ok(device.to_string())
}

/// `1280x720` → (1280, 720); even sizes only, as 4:2:0 encoding needs.
/// µStreamer's limit of --drop-same-frames (its highest frame rate).
pub const MAX_DROP_SAME_FRAMES: u32 = 120;

/// A sink's `--*-sink-mode`: octal permissions.
fn parse_sink_mode(key: &str, mode: &str) -> Result<u32> {
    u32::from_str_radix(mode.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| anyhow!("{key} must be octal permissions like 660, got {mode:?}"))
}

pub fn parse_resolution(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow!("resolution must be WIDTHxHEIGHT, e.g. 1280x720, got {s:?}"))?;
    let w: u32 = w
        .trim()
        .parse()
        .with_context(|| format!("resolution width in {s:?}"))?;
    let h: u32 = h
        .trim()
        .parse()
        .with_context(|| format!("resolution height in {s:?}"))?;
    if !limits::encodable_size(w, h) {
        bail!(
            "resolution {s:?}: width and height must be even and within {}..={}",
            limits::MIN_SIDE,
            limits::MAX_SIDE
        );
    }
    Ok((w, h))
}

/// `20000-40000` → (20000, 40000); a single port `9000` → (9000, 9000); `0` → any free port.
pub fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let expected = || {
        anyhow!(
            "udp_port_range {s:?}: expected FIRST-LAST, e.g. 20000-20100 \
             (or one port, or 0 for any free port)"
        )
    };
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| expected())?;
    let b: u16 = b.trim().parse().map_err(|_| expected())?;
    if a > b {
        bail!("udp_port_range {s:?}: first port is above the last");
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_janus_ports() {
        let c = Config::load(Args::default()).unwrap();
        assert_eq!(
            (c.port, c.janus_ws_port, c.janus_http_port),
            (8080, 8188, 8088)
        );
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            (c.video.width, c.video.height, c.video.fps),
            (1280, 720, 30)
        );
    }

    #[test]
    fn rtc_threads_default_to_the_cpus_as_zero_does_and_are_bounded() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let c = Config::load(Args::default()).unwrap();
        assert_eq!(c.rtc_threads, cpus.min(crate::rtc::MAX_SHARDS));
        let threads = |n: &str| Config::load(Args::parse_from(["peregrine", "--rtc-threads", n]));
        assert_eq!(threads("3").unwrap().rtc_threads, 3);
        assert_eq!(
            threads("0").unwrap().rtc_threads,
            cpus.min(crate::rtc::MAX_SHARDS)
        );
        let err = threads("257").unwrap_err().to_string();
        assert!(err.contains("rtc_threads"), "{err}");
    }

    #[test]
    fn the_m2m_encoder_is_chosen_by_its_device_and_boost_needs_it() {
        let c = Config::load(Args::default()).unwrap();
        assert_eq!(c.h264_encoder, H264EncoderChoice::Cpu);
        let args = |extra: &[&str]| {
            let mut all = vec!["peregrine"];
            all.extend_from_slice(extra);
            Args::parse_from(all)
        };
        let c = Config::load(args(&["--h264-m2m-device", "/dev/video11", "--h264-boost"])).unwrap();
        let m2m = M2mConfig {
            device: "/dev/video11".into(),
            boost: true,
        };
        assert_eq!(c.h264_encoder, H264EncoderChoice::M2m(m2m.clone()));
        assert_eq!(
            c.stream_configs()[0].h264_encoder,
            H264EncoderChoice::M2m(m2m)
        );
        let err = Config::load(args(&["--h264-boost"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--h264-m2m-device"), "{err}");
    }

    #[test]
    fn a_whip_ca_file_that_cannot_be_used_stops_the_start() {
        let args = Args::parse_from(["peregrine", "--whip-ca", "/nonexistent/ca.pem"]);
        let err = Config::load(args).unwrap_err().to_string();
        assert!(
            err.contains("whip_ca") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn file_keys_apply_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(
            &path,
            "port = 9000\nresolution = \"640x480\"\ndesired_fps = 15\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "peregrine",
            "--config",
            path.to_str().unwrap(),
            "--desired-fps",
            "25",
        ]);
        let c = Config::load(args).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!((c.video.width, c.video.height), (640, 480));
        assert_eq!(c.video.fps, 25);
    }

    #[test]
    fn unknown_or_bad_key_is_named() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, "prot = 9000\n").unwrap();
        let err = Config::load(Args::parse_from([
            "peregrine",
            "--config",
            path.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("prot"), "{err:#}");
        std::fs::write(&path, "port = \"x\"\n").unwrap();
        let err = Config::load(Args::parse_from([
            "peregrine",
            "--config",
            path.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("port"), "{err:#}");
        std::fs::write(&path, "resolution = \"big\"\n").unwrap();
        let err = Config::load(Args::parse_from([
            "peregrine",
            "--config",
            path.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("resolution"), "{err:#}");
    }

    #[test]
    fn jpeg_quality_is_1_to_100_and_80_by_default() {
        assert_eq!(Config::load(Args::default()).unwrap().jpeg_quality, 80);
        let c = Config::load(Args::parse_from(["peregrine", "--quality", "95"])).unwrap();
        assert_eq!(c.jpeg_quality, 95);
        for bad in ["0", "101"] {
            let err = Config::load(Args::parse_from(["peregrine", "--quality", bad])).unwrap_err();
            assert!(
                format!("{err:#}").contains("quality must be 1..100"),
                "{err:#}"
            );
        }
    }

    #[test]
    fn source_allow_takes_addresses_for_tcp_listen_only() {
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--source",
            "tcp-listen://127.0.0.1:8000",
            "--source-allow",
            "127.0.0.1,::1",
        ]))
        .unwrap();
        assert_eq!(c.source_allow.len(), 2);
        let err = Config::load(Args::parse_from([
            "peregrine",
            "--source",
            "testsrc",
            "--source-allow",
            "127.0.0.1",
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("tcp-listen"), "{err:#}");
        assert!(Args::try_parse_from(["peregrine", "--source-allow", "nohost"]).is_err());
    }

    #[test]
    fn jsmpeg_keys() {
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--jsmpeg-secret",
            "s3cret-upload",
            "--jsmpeg-header",
        ]))
        .unwrap();
        assert_eq!(c.jsmpeg_secret.as_deref(), Some("s3cret-upload"));
        assert!(c.jsmpeg_header);
        let err = Config::load(Args::parse_from([
            "peregrine",
            "--jsmpeg-secret",
            "a/bcdefgh",
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("jsmpeg_secret"), "{err:#}");
        for short in ["x", "1234567"] {
            let err = Config::load(Args::parse_from(["peregrine", "--jsmpeg-secret", short]))
                .unwrap_err();
            assert!(
                format!("{err:#}").contains("at least 8 characters"),
                "{err:#}"
            );
        }
        Config::load(Args::parse_from([
            "peregrine",
            "--jsmpeg-secret",
            "12345678",
        ]))
        .unwrap();
    }

    #[test]
    fn sink_flags_parse_and_validate() {
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--h264-sink",
            "demo::ustreamer::h264",
            "--h264-sink-mode",
            "644",
            "--h264-sink-rm",
            "--h264-sink-client-ttl",
            "3",
        ]))
        .unwrap();
        assert_eq!(c.h264_sink.as_deref(), Some("demo::ustreamer::h264"));
        assert_eq!((c.h264_sink_mode, c.h264_sink_rm), (0o644, true));
        assert_eq!((c.h264_sink_client_ttl_s, c.h264_sink_timeout_s), (3, 1));
        for (flag, value, key) in [
            ("--h264-sink", "x:y.h264", "h264_sink"),
            ("--h264-sink-mode", "9", "h264_sink_mode"),
            ("--h264-sink-client-ttl", "0", "h264_sink_client_ttl"),
            ("--h264-sink-timeout", "61", "h264_sink_timeout"),
        ] {
            let err = Config::load(Args::parse_from(["peregrine", flag, value])).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{err:#}");
        }
        let err = Config::load(Args::parse_from([
            "peregrine",
            "--source",
            "memsink:a::h264",
            "--h264-sink",
            "a::h264",
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("also the source"), "{err:#}");
    }

    #[test]
    fn jpeg_sink_flags_and_ustreamers_older_sink_names_parse_and_validate() {
        for prefix in ["--jpeg-sink", "--sink"] {
            let c = Config::load(Args::parse_from([
                "peregrine".to_string(),
                prefix.to_string(),
                "kvmd::ustreamer::jpeg".to_string(),
                format!("{prefix}-mode"),
                "600".to_string(),
                format!("{prefix}-rm"),
                format!("{prefix}-client-ttl"),
                "2".to_string(),
                format!("{prefix}-timeout"),
                "5".to_string(),
            ]))
            .unwrap();
            assert_eq!(c.jpeg_sink.as_deref(), Some("kvmd::ustreamer::jpeg"));
            assert_eq!((c.jpeg_sink_mode, c.jpeg_sink_rm), (0o600, true));
            assert_eq!((c.jpeg_sink_client_ttl_s, c.jpeg_sink_timeout_s), (2, 5));
            assert_eq!(c.h264_sink, None, "{prefix} sets the JPEG sink only");
        }
        for args in [
            &["--jpeg-sink", "nosuffix"][..],
            &["--jpeg-sink-mode", "abc"],
            &["--jpeg-sink-client-ttl", "0"],
            &["--jpeg-sink-timeout", "61"],
            &["--source", "memsink:a::jpeg", "--jpeg-sink", "a::jpeg"],
            &["--h264-sink", "a::jpeg", "--jpeg-sink", "a::jpeg"],
            &["--drop-same-frames", "121"],
        ] {
            let err = Config::load(Args::parse_from(
                std::iter::once("peregrine").chain(args.iter().copied()),
            ))
            .unwrap_err();
            let key = args[args.len() - 2]
                .trim_start_matches("--")
                .replace('-', "_");
            assert!(format!("{err:#}").contains(&key), "{args:?}: {err:#}");
        }
        let c = Config::load(Args::parse_from(["peregrine", "-e", "30"])).unwrap();
        assert_eq!(c.drop_same_frames, 30);
    }

    #[test]
    fn shipped_example_config_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/peregrine.toml");
        let c = Config::load(Args::parse_from(["peregrine", "--config", path])).unwrap();
        assert_eq!(c.device, PathBuf::from("/dev/video0"));
        assert_eq!(c.format, None);
        assert_eq!(
            (c.video.width, c.video.height, c.video.fps),
            (1280, 720, 30)
        );
    }

    #[test]
    fn source_defaults_to_the_camera_only_when_there_is_one() {
        let c = Config::load(Args::parse_from(["peregrine", "--device", "/dev/nope"])).unwrap();
        assert_eq!(
            c.source, "v4l2",
            "a named device is used even if absent (persistent)"
        );
        let c = Config::load(Args::parse_from(["peregrine"])).unwrap();
        let camera = std::path::Path::new(DEFAULT_DEVICE).exists();
        assert_eq!(c.source, if camera { "v4l2" } else { "testsrc" });
        assert!(c.source_chosen);
        let c = Config::load(Args::parse_from(["peregrine", "--source", "testsrc"])).unwrap();
        assert!(!c.source_chosen);
        let c = Config::load(Args::parse_from(["peregrine", "--format", "mjpg"])).unwrap();
        assert_eq!(c.format, Some(PixelFormat::Mjpeg));
        let err = Config::load(Args::parse_from(["peregrine", "--format", "rgb"])).unwrap_err();
        assert!(format!("{err:#}").contains("format must be"), "{err:#}");
    }

    #[test]
    fn janus_auth_flags_and_their_mistakes() {
        let load = |args: &[&str]| {
            let mut all = vec!["peregrine", "--source", "testsrc"];
            all.extend_from_slice(args);
            Config::load(Args::parse_from(all))
        };
        let c = load(&[
            "--janus-token-auth",
            "--janus-token",
            "a",
            "--janus-token",
            "b",
        ])
        .unwrap();
        assert!(c.janus_token_auth);
        assert_eq!(c.janus_tokens, ["a", "b"]);
        let c = load(&["--janus-api-secret", "s", "--janus-token-auth"]).unwrap();
        assert_eq!(c.janus_api_secret.as_deref(), Some("s"));
        // The same as keys of the --config file.
        let file =
            std::env::temp_dir().join(format!("peregrine-cfg-auth-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "janus_api_secret = \"s\"\njanus_token_auth = true\njanus_token = [\"a\"]\n",
        )
        .unwrap();
        let c = load(&["--config", file.to_str().unwrap()]).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(c.janus_api_secret.as_deref(), Some("s"));
        assert!(c.janus_token_auth);
        assert_eq!(c.janus_tokens, ["a"]);
        for (args, needle) in [
            (
                &["--janus-api-secret", ""][..],
                "janus_api_secret must not be empty",
            ),
            (
                &["--janus-token-auth", "--janus-token", ""][..],
                "janus_token must not be empty",
            ),
            (&["--janus-token", "a"][..], "janus_token_auth is off"),
            (&["--janus-token-auth"][..], "every Janus request"),
            (
                &[
                    "--janus-token-auth",
                    "--janus-token",
                    "a",
                    "--janus-token-auth-secret",
                    "k",
                ][..],
                "exclude each other",
            ),
            (
                &["--janus-token-auth-secret", "k"][..],
                "janus_token_auth is off",
            ),
        ] {
            let err = format!("{:#}", load(args).unwrap_err());
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn janus_admin_flags_and_the_secret_they_need_beyond_loopback() {
        let load = |args: &[&str]| {
            let mut all = vec!["peregrine", "--source", "testsrc"];
            all.extend_from_slice(args);
            Config::load(Args::parse_from(all))
        };
        let c = load(&[]).unwrap();
        assert!(c.janus_admin_listeners().is_empty(), "off by default");
        assert_eq!(c.janus_admin_base_path, "/admin");
        // On loopback no secret is needed (as in Janus); tokens can then be added.
        let c = load(&[
            "--janus-admin-http-port",
            "7088",
            "--janus-admin-ws-port",
            "7188",
            "--janus-admin-base-path",
            "/adm/",
            "--janus-token-auth",
        ])
        .unwrap();
        let addrs: Vec<String> = c
            .janus_admin_listeners()
            .iter()
            .map(|l| format!("{} {}", l.transport, l.addr))
            .collect();
        assert_eq!(addrs, ["HTTP 127.0.0.1:7088", "WebSocket 127.0.0.1:7188"]);
        assert_eq!(c.janus_admin_base_path, "/adm");
        let j = c.janus_config();
        assert_eq!(
            (j.admin.http, j.admin.ws),
            (Listen::Tcp(7088), Listen::Tcp(7188))
        );
        // Beyond loopback, only with a secret.
        for args in [
            &["--host", "0.0.0.0", "--janus-admin-http-port", "7088"][..],
            &[
                "--janus-admin-ws-port",
                "7188",
                "--janus-admin-ws-host",
                "::",
            ][..],
        ] {
            let err = format!("{:#}", load(args).unwrap_err());
            assert!(err.contains("without an admin secret"), "{args:?}: {err}");
            assert!(err.contains("--janus-admin-secret"), "{err}");
        }
        let c = load(&[
            "--host",
            "0.0.0.0",
            "--janus-admin-http-port",
            "7088",
            "--janus-admin-http-host",
            "127.0.0.1",
        ])
        .unwrap();
        assert_eq!(
            c.janus_admin_listeners()[0].addr,
            "127.0.0.1:7088".parse::<std::net::SocketAddr>().unwrap()
        );
        let c = load(&[
            "--host",
            "0.0.0.0",
            "--janus-admin-ws-port",
            "7188",
            "--janus-admin-secret",
            "adm1n",
        ])
        .unwrap();
        assert_eq!(c.janus_admin_secret.as_deref(), Some("adm1n"));
        for (args, needle) in [
            (
                &["--janus-admin-secret", ""][..],
                "janus_admin_secret must not be empty",
            ),
            (
                &["--janus-admin-base-path", "admin"][..],
                "must start with '/'",
            ),
            (&["--janus-admin-base-path", "/"][..], "'/' alone"),
        ] {
            let err = format!("{:#}", load(args).unwrap_err());
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn janus_config_admin_settings_apply_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"demo::ustreamer::h264\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.jcfg"),
            "general: { admin_secret = \"overlord\", token_auth = true }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.http.jcfg"),
            "admin: { admin_http = true, admin_base_path = \"/adm\" }",
        )
        .unwrap();
        let dir_s = dir.to_str().unwrap();
        let load = |extra: &[&str]| {
            let mut argv = vec!["peregrine", "--janus-config", dir_s];
            argv.extend_from_slice(extra);
            Config::load(Args::parse_from(argv)).unwrap()
        };
        // token_auth with no token is fine: the Admin API adds them.
        let c = load(&[]);
        assert_eq!(c.janus_admin_secret.as_deref(), Some("overlord"));
        assert_eq!(
            (c.janus_admin_http_port, c.janus_admin_ws_port),
            (Some(7088), None)
        );
        assert_eq!(c.janus_admin_base_path, "/adm");
        let c = load(&[
            "--janus-admin-secret",
            "flag",
            "--janus-admin-http-port",
            "7099",
        ]);
        assert_eq!(c.janus_admin_secret.as_deref(), Some("flag"));
        assert_eq!(c.janus_admin_http_port, Some(7099));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn janus_config_folder_sets_source_and_ports_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-janus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"demo::ustreamer::h264\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.websockets.jcfg"),
            "general: { ws = true, ws_port = 9188 }",
        )
        .unwrap();
        let dir_s = dir.to_str().unwrap();
        let c = Config::load(Args::parse_from(["peregrine", "--janus-config", dir_s])).unwrap();
        assert_eq!(c.source, "memsink:demo::ustreamer::h264");
        assert_eq!((c.janus_ws_port, c.janus_http_port), (9188, 8088));
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--janus-config",
            dir_s,
            "--janus-ws-port",
            "7000",
        ]))
        .unwrap();
        assert_eq!(c.janus_ws_port, 7000);
        std::fs::remove_file(dir.join("janus.plugin.ustreamer.jcfg")).unwrap();
        let err =
            Config::load(Args::parse_from(["peregrine", "--janus-config", dir_s])).unwrap_err();
        assert!(format!("{err:#}").contains("janus_config"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn janus_config_playback_device_plays_the_microphones_and_the_flag_wins() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-mic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"kvmd::ustreamer::h264\" }\n\
             aplay: { device = \"plughw:UAC2Gadget,0\" }",
        )
        .unwrap();
        let dir_s = dir.to_str().unwrap();
        let c = Config::load(Args::parse_from(["peregrine", "--janus-config", dir_s])).unwrap();
        assert_eq!(c.mic_device.as_deref(), Some("plughw:UAC2Gadget,0"));
        assert_eq!(
            c.stream_configs()[0].mic_device.as_deref(),
            Some("plughw:UAC2Gadget,0")
        );
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--janus-config",
            dir_s,
            "--mic-device",
            "hw:2,0",
        ]))
        .unwrap();
        assert_eq!(c.mic_device.as_deref(), Some("hw:2,0"));
        let err = Config::load(Args::parse_from(["peregrine", "--mic-device", " "])).unwrap_err();
        assert!(format!("{err:#}").contains("mic_device"), "{err:#}");
        assert_eq!(Config::default().mic_device, None, "off by default");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn janus_config_transport_addresses_outrank_host_but_not_their_flags() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-ip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"demo::ustreamer::h264\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.websockets.jcfg"),
            "general: { ws = true, ws_ip = \"127.0.0.1\" }",
        )
        .unwrap();
        let dir_s = dir.to_str().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let load = |extra: &[&str]| {
            let mut argv = vec!["peregrine", "--janus-config", dir_s];
            argv.extend_from_slice(extra);
            Config::load(Args::parse_from(argv)).unwrap()
        };
        // --host moves everything else, not a transport its Janus file pinned.
        let c = load(&["--host", "0.0.0.0"]);
        assert_eq!(c.host, ip("0.0.0.0"));
        assert_eq!(
            (c.janus_ws_host, c.janus_http_host),
            (Some(ip("127.0.0.1")), None)
        );
        let j = c.janus_config();
        assert_eq!((j.ws_host, j.http_host), (Some(ip("127.0.0.1")), None));
        // The transport's own flag wins over the file.
        let c = load(&["--janus-ws-host", "0.0.0.0", "--janus-http-host", "::1"]);
        assert_eq!(
            (c.janus_ws_host, c.janus_http_host),
            (Some(ip("0.0.0.0")), Some(ip("::1")))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn janus_unix_sockets_from_keys_flags_and_the_janus_config() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("p.toml");
        std::fs::write(
            &toml,
            "janus_ws_unix = \"/run/x/ws.sock\"\njanus_ws_unix_mode = \"600\"\n",
        )
        .unwrap();
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--config",
            toml.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(
            c.janus_ws_listen(),
            Listen::Unix {
                path: "/run/x/ws.sock".into(),
                mode: 0o600
            }
        );
        assert_eq!(c.janus_http_listen(), Listen::Tcp(8088));
        std::fs::write(&toml, "janus_http_unix_mode = \"rw\"\n").unwrap();
        let err = Config::load(Args::parse_from([
            "peregrine",
            "--config",
            toml.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("janus_http_unix_mode"),
            "{err:#}"
        );

        // A Janus config that turns a transport off; a flag turns it on again.
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"demo::ustreamer::h264\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.http.jcfg"),
            "general: { http = false }",
        )
        .unwrap();
        let dir_s = dir.to_str().unwrap();
        let c = Config::load(Args::parse_from(["peregrine", "--janus-config", dir_s])).unwrap();
        assert_eq!(c.janus_http_listen(), Listen::Off);
        assert_eq!(c.janus_ws_listen(), Listen::Tcp(8188));
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--janus-config",
            dir_s,
            "--janus-http-port",
            "9088",
        ]))
        .unwrap();
        assert_eq!(c.janus_http_listen(), Listen::Tcp(9088));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_flags_come_in_pairs_from_flags_or_keys() {
        let load = |args: &[&str]| {
            let mut all = vec!["peregrine", "--source", "testsrc"];
            all.extend_from_slice(args);
            Config::load(Args::parse_from(all))
        };
        let c = load(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        let files = |c: &str, k: &str| {
            Some(CertFiles {
                cert: c.into(),
                key: k.into(),
            })
        };
        assert_eq!(c.tls, files("c.pem", "k.pem"));
        assert_eq!(load(&[]).unwrap().tls, None);
        for (args, needle) in [
            (
                &["--tls-cert", "c.pem"][..],
                "tls_cert is given without tls_key",
            ),
            (
                &["--tls-key", "k.pem"][..],
                "tls_key is given without tls_cert",
            ),
        ] {
            let err = format!("{:#}", load(args).unwrap_err());
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        // Keys of the --config file, and a flag completing or replacing one of them.
        let file =
            std::env::temp_dir().join(format!("peregrine-cfg-tls-{}.toml", std::process::id()));
        std::fs::write(&file, "tls_cert = \"/f/c.pem\"\ntls_key = \"/f/k.pem\"\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(
            load(&["--config", path]).unwrap().tls,
            files("/f/c.pem", "/f/k.pem")
        );
        assert_eq!(
            load(&["--config", path, "--tls-key", "/g/k.pem"])
                .unwrap()
                .tls,
            files("/f/c.pem", "/g/k.pem")
        );
        std::fs::write(&file, "tls_cert = \"/f/c.pem\"\n").unwrap();
        let c = load(&["--config", path, "--tls-key", "/g/k.pem"]).unwrap();
        assert_eq!(c.tls, files("/f/c.pem", "/g/k.pem"));
        assert!(load(&["--config", path]).is_err());
        std::fs::write(&file, "tls_cert = \"\"\ntls_key = \"k.pem\"\n").unwrap();
        let err = format!("{:#}", load(&["--config", path]).unwrap_err());
        assert!(err.contains("must be paths"), "{err}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn janus_config_tls_servers_reach_the_config() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-wss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"demo::ustreamer::h264\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.websockets.jcfg"),
            "general: { ws = false, wss = true, wss_port = 9989 }\n\
             certificates: { cert_pem = \"/e/c.pem\", cert_key = \"/e/k.pem\" }",
        )
        .unwrap();
        let dir_s = dir.to_str().unwrap();
        let c = Config::load(Args::parse_from(["peregrine", "--janus-config", dir_s])).unwrap();
        let wss = c.janus_wss.clone().unwrap();
        assert_eq!(
            (wss.port, wss.cert, wss.key),
            (9989, "/e/c.pem".into(), "/e/k.pem".into())
        );
        assert_eq!(
            c.janus_ws_listen(),
            Listen::Off,
            "no plain server without ws = true"
        );
        assert_eq!(c.janus_https, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ranges_and_sizes_parse() {
        assert_eq!(parse_port_range("20000-20010").unwrap(), (20000, 20010));
        assert_eq!(parse_port_range("0").unwrap(), (0, 0));
        assert!(parse_port_range("9-1").is_err());
        // Janus writes ranges as FIRST-LAST; other tools' FIRST:LAST gets the form.
        let err = parse_port_range("29000:29100").unwrap_err().to_string();
        assert!(
            err.contains("expected FIRST-LAST, e.g. 20000-20100"),
            "{err}"
        );
        assert_eq!(parse_resolution("640x360").unwrap(), (640, 360));
        assert!(parse_resolution("641x360").is_err());
    }

    #[test]
    fn unsupported_sources_are_refused_with_the_supported_forms() {
        for source in [
            "http://camera.local/stream",
            "rtsp://camera.local:554/h264",
            "/nonexistent/clip.h264",
            "nosuchthing",
        ] {
            let err = Config::load(Args::parse_from(["peregrine", "--source", source]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(source), "{err}");
            assert!(
                err.contains("tcp-listen://IP:PORT") && err.contains("memsink:NAME"),
                "{err}"
            );
        }
        let err = Config::load(Args::parse_from(["peregrine", "--source", "rtsp://c/x"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rtsp:// is not supported") && err.contains("ffmpeg"),
            "{err}"
        );
        for ok in [
            "testsrc",
            "v4l2",
            "-",
            "tcp://127.0.0.1:8000",
            "memsink:a::h264",
        ] {
            Config::load(Args::parse_from(["peregrine", "--source", ok])).unwrap();
        }
    }

    #[test]
    fn log_flags_parse_and_validate() {
        let c = Config::load(Args::parse_from([
            "peregrine",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ]))
        .unwrap();
        assert_eq!(
            (c.log_level, c.log_level_given, c.log_format),
            (tracing::Level::DEBUG, true, LogFormat::Json)
        );
        let c = Config::load(Args::default()).unwrap();
        assert_eq!(
            (c.log_level, c.log_level_given, c.log_format),
            (tracing::Level::INFO, false, LogFormat::Text)
        );
        for (flag, value, key) in [
            ("--log-level", "loud", "log_level"),
            ("--log-format", "xml", "log_format"),
        ] {
            let err = Config::load(Args::parse_from(["peregrine", flag, value])).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{err:#}");
        }
    }

    #[test]
    fn ustreamer_log_levels_are_numbers() {
        let level = |n: &str| {
            Config::load(Args::parse_from(["peregrine", "--log-level", n]))
                .unwrap()
                .log_level
        };
        assert_eq!(level("0"), tracing::Level::INFO);
        assert_eq!(level("3"), tracing::Level::DEBUG);
        let err = Config::load(Args::parse_from(["peregrine", "--log-level", "7"])).unwrap_err();
        assert!(format!("{err:#}").contains("log_level"), "{err:#}");
    }

    #[test]
    fn ustreamer_http_keys_parse_and_validate() {
        let c = Config::load(Args::parse_from([
            "peregrine",
            "-U",
            "/run/x.sock",
            "-D",
            "-M",
            "0660",
            "--instance-id",
            "kvm.1/a+b_c-d",
            "-R",
            "1920x1080",
            "--exit-on-parent-death",
        ]))
        .unwrap();
        assert_eq!(c.unix.as_deref(), Some(std::path::Path::new("/run/x.sock")));
        assert!(c.unix_rm && c.exit_on_parent_death);
        assert_eq!(c.unix_mode, Some(0o660));
        assert_eq!(c.instance_id, "kvm.1/a+b_c-d");
        assert_eq!(c.fake_resolution, Some((1920, 1080)));
        let c = Config::load(Args::default()).unwrap();
        assert_eq!((c.unix, c.unix_mode, c.static_dir), (None, None, None));
        for (flag, value, key) in [
            ("--unix-mode", "rw", "unix_mode"),
            ("--instance-id", "a b", "instance_id"),
            ("--instance-id", "\"}", "instance_id"),
            ("--fake-resolution", "0x10", "fake_resolution"),
            ("--static", "/nonexistent/folder", "static"),
        ] {
            let err = Config::load(Args::parse_from(["peregrine", flag, value])).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{flag} {value}: {err:#}");
        }
    }

    /// `--help` groups the flags under headings, names values by what they are (not
    /// by the field), and its examples are real command lines.
    #[test]
    fn help_is_grouped_with_real_value_names_and_examples_that_parse() {
        use clap::CommandFactory;
        let mut cmd = Args::command();
        let help = cmd.render_long_help().to_string();
        for heading in [
            "Server:",
            "Input:",
            "Encoder:",
            "WebRTC:",
            "Janus API:",
            "Relays (JSMpeg, jmuxer):",
            "Memsink output (as µStreamer):",
            "Logging:",
            "Examples:",
        ] {
            assert!(help.contains(heading), "no {heading:?} in\n{help}");
        }
        assert!(help.contains("--udp-port-range <FIRST-LAST>"), "{help}");
        assert!(help.contains("--janus-ws-port <PORT>"), "{help}");
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            assert!(
                arg.get_help_heading().is_some() || id == "config",
                "{id} has no heading"
            );
            if !arg.get_action().takes_values() {
                continue;
            }
            for name in arg.get_value_names().unwrap_or_default() {
                assert!(!name.contains('_'), "{id} shows its field name {name}");
            }
        }
        let snake = help
            .split(['<', '>'])
            .skip(1)
            .step_by(2)
            .find(|v| v.contains('_'));
        assert_eq!(snake, None, "a value name derived from a field in\n{help}");
        let examples: Vec<&str> = EXAMPLES
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("peregrine"))
            .collect();
        assert!(examples.len() >= 5, "{EXAMPLES}");
        for line in examples {
            let args = Args::try_parse_from(line.split_whitespace())
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            Config::load(args).unwrap_or_else(|e| panic!("{line}: {e:#}"));
        }
    }

    #[test]
    fn user_and_password_from_flags_files_and_keys() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-user-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |args: &[&str]| {
            let mut all = vec!["peregrine", "--source", "testsrc"];
            all.extend_from_slice(args);
            Config::load(Args::parse_from(all))
        };
        let creds = |c: Config| c.basic_auth.map(|c| (c.user, c.passwd));
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(creds(load(&[]).unwrap()), None);
        assert_eq!(
            creds(load(&["--user", "admin", "--passwd", "pw"]).unwrap()),
            pair("admin", "pw")
        );
        // As in µStreamer, a user without a password has an empty one.
        assert_eq!(
            creds(load(&["--user", "admin"]).unwrap()),
            pair("admin", "")
        );
        let file = dir.join("passwd");
        std::fs::write(&file, "from file\nsecond line\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(
            creds(load(&["--user", "a", "--passwd-file", path]).unwrap()),
            pair("a", "from file")
        );
        std::fs::write(&file, "crlf\r\n").unwrap();
        assert_eq!(
            creds(load(&["--user", "a", "--passwd-file", path]).unwrap()),
            pair("a", "crlf")
        );
        // The user from the config file, the password from a flag.
        let toml = dir.join("p.toml");
        std::fs::write(&toml, "user = \"kvm\"\npasswd = \"in-file\"\n").unwrap();
        let toml_s = toml.to_str().unwrap();
        assert_eq!(
            creds(load(&["--config", toml_s]).unwrap()),
            pair("kvm", "in-file")
        );
        assert_eq!(
            creds(load(&["--config", toml_s, "--passwd", "flag"]).unwrap()),
            pair("kvm", "flag")
        );
        let debug = format!("{:?}", load(&["--config", toml_s]).unwrap());
        assert!(!debug.contains("in-file"), "the password is not in Debug");
        std::fs::write(&file, "\n").unwrap();
        for (args, needle) in [
            (&["--passwd", "pw"][..], "set --user"),
            (&["--user", "", "--passwd", "pw"][..], "set --user"),
            (&["--user", "a:b"][..], "must not contain ':'"),
            (
                &["--user", "a", "--passwd", "x", "--passwd-file", path][..],
                "exclude",
            ),
            (
                &["--user", "a", "--passwd-file", path][..],
                "first line is empty",
            ),
            (
                &["--user", "a", "--passwd-file", "/nonexistent/pw"][..],
                "passwd_file",
            ),
        ] {
            let err = format!("{:#}", load(args).unwrap_err());
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn allow_lists_parse_and_name_their_key() {
        let load = |args: &[&str]| {
            let mut all = vec!["peregrine", "--source", "testsrc"];
            all.extend_from_slice(args);
            Config::load(Args::parse_from(all))
        };
        let c = load(&[
            "--allow-ip",
            "127.,10.0.0.0/8",
            "--allow-ip",
            "::1",
            "--janus-ws-allow-ip",
            "192.168.0.",
        ])
        .unwrap();
        assert_eq!(c.allow_ip.describe(), "127., 10.0.0.0/8, ::1");
        assert_eq!(c.janus_ws_allow_ip.describe(), "192.168.0.");
        assert!(c.janus_http_allow_ip.is_empty());
        let j = c.janus_config();
        assert_eq!(j.allow_ip, c.allow_ip);
        assert_eq!(j.ws_allow_ip, c.janus_ws_allow_ip);
        for (flag, key) in [
            ("--allow-ip", "allow_ip"),
            ("--janus-ws-allow-ip", "janus_ws_allow_ip"),
            ("--janus-http-allow-ip", "janus_http_allow_ip"),
        ] {
            let err = format!("{:#}", load(&[flag, "10"]).unwrap_err());
            assert!(err.contains(key), "{flag}: {err}");
        }
        let err = format!(
            "{:#}",
            load(&[
                "--janus-ws-unix",
                "/run/x.sock",
                "--janus-ws-allow-ip",
                "127."
            ])
            .unwrap_err()
        );
        assert!(err.contains("unix socket"), "{err}");
    }

    #[test]
    fn janus_acls_and_cors_origins_are_enforced_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("peregrine-cfg-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"demo::ustreamer::h264\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.websockets.jcfg"),
            "general: { ws = true, ws_acl = \"127.,192.168.1.1\" }\n\
             cors: { allow_origin = \"https://kvm.example\", enforce_cors = true }",
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.http.jcfg"),
            "general: { http = true, acl = \"10.\" }",
        )
        .unwrap();
        let dir_s = dir.to_str().unwrap();
        let load = |extra: &[&str]| {
            let mut argv = vec!["peregrine", "--janus-config", dir_s];
            argv.extend_from_slice(extra);
            Config::load(Args::parse_from(argv)).unwrap()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = load(&[]);
        // Janus's prefixes: the whole address 192.168.1.1 also admits 192.168.1.10.
        assert!(c.janus_ws_allow_ip.allows(ip("127.0.0.2")));
        assert!(c.janus_ws_allow_ip.allows(ip("192.168.1.10")));
        assert!(!c.janus_ws_allow_ip.allows(ip("192.168.2.1")));
        assert!(c.janus_http_allow_ip.allows(ip("10.9.8.7")));
        assert!(!c.janus_http_allow_ip.allows(ip("127.0.0.1")));
        assert!(c.allow_ip.is_empty(), "the transports' lists are their own");
        assert_eq!(c.allow_origin, ["https://kvm.example"]);
        use crate::origin::Verdict;
        assert!(matches!(
            c.origin_policy()
                .judge(Some("https://kvm.example"), &["other:8188"]),
            Verdict::Allowed(_)
        ));
        let warnings = crate::exposure::start_warnings(&c);
        assert!(
            warnings.iter().any(|w| w.contains("\"192.168.1.1\"")),
            "{warnings:?}"
        );
        // Flags replace what the files say.
        let c = load(&[
            "--janus-ws-allow-ip",
            "10.0.0.0/8",
            "--allow-origin",
            "https://other.example",
        ]);
        assert!(!c.janus_ws_allow_ip.allows(ip("127.0.0.1")));
        assert_eq!(c.allow_origin, ["https://other.example"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
