//! Janus `.jcfg` files (libconfig syntax), read so an existing Janus + ustreamer plugin
//! installation can be served by peregrine unchanged: the plugin's memsink name and
//! microphone playback device, and the transports' ports, addresses and TLS servers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// A libconfig value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Group(Vec<(String, Value)>),
    /// Arrays `[...]` and lists `(...)`.
    List(Vec<Value>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// `a.b.c` inside nested groups.
    pub fn get(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self, |v, key| match v {
            Value::Group(items) => items.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        })
    }

    /// A scalar as the string Janus stores for it; empty strings count as absent, as in
    /// the plugin.
    pub fn get_str(&self, path: &str) -> Option<String> {
        let s = match self.get(path)? {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:.6}"),
            Value::Bool(b) => b.to_string(),
            Value::Group(_) | Value::List(_) => return None,
        };
        (!s.is_empty()).then_some(s)
    }

    pub fn get_int(&self, path: &str) -> Option<i64> {
        match self.get(path)? {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn get_bool(&self, path: &str) -> Option<bool> {
        match self.get(path)? {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => None,
            },
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

/// Parse a whole `.jcfg` text into its top-level group.
pub fn parse(text: &str) -> Result<Value> {
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    let items = p.settings(None)?;
    Ok(Value::Group(items))
}

/// Read and parse a file, naming it in errors.
pub fn read(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid Janus config {}", path.display()))
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn line(&self) -> usize {
        1 + self.s[..self.pos.min(self.s.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
    }

    fn err<T>(&self, what: &str) -> Result<T> {
        Err(anyhow!("line {}: {what}", self.line()))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_space(&mut self) -> Result<()> {
        loop {
            match (self.peek(), self.s.get(self.pos + 1).copied()) {
                (Some(c), _) if c.is_ascii_whitespace() => self.pos += 1,
                (Some(b'#'), _) | (Some(b'/'), Some(b'/')) => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.line();
                    self.pos += 2;
                    loop {
                        match self.peek() {
                            None => bail!("line {start}: unterminated /* comment"),
                            Some(b'*') if self.s.get(self.pos + 1) == Some(&b'/') => {
                                self.pos += 2;
                                break;
                            }
                            Some(_) => self.pos += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Settings up to `close` (or the end of the text for the top level).
    fn settings(&mut self, close: Option<u8>) -> Result<Vec<(String, Value)>> {
        let mut items = Vec::new();
        loop {
            self.skip_space()?;
            match self.peek() {
                None if close.is_none() => return Ok(items),
                None => return self.err("missing '}'"),
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => {}
            }
            let name = self.name()?;
            self.skip_space()?;
            match self.peek() {
                Some(b'=' | b':') => self.pos += 1,
                _ => return self.err(&format!("expected '=' or ':' after {name:?}")),
            }
            let value = self.value()?;
            self.skip_space()?;
            if matches!(self.peek(), Some(b';' | b',')) {
                self.pos += 1;
            }
            items.push((name, value));
        }
    }

    fn name(&mut self) -> Result<String> {
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => self.pos += 1,
            _ => return self.err("expected a setting name"),
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'*'))
        {
            self.pos += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn value(&mut self) -> Result<Value> {
        self.skip_space()?;
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                Ok(Value::Group(self.settings(Some(b'}'))?))
            }
            Some(open @ (b'[' | b'(')) => {
                self.pos += 1;
                let close = if open == b'[' { b']' } else { b')' };
                let mut items = Vec::new();
                loop {
                    self.skip_space()?;
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value()?);
                    self.skip_space()?;
                    if self.peek() == Some(b',') {
                        self.pos += 1;
                    }
                }
            }
            Some(b'"') => {
                let mut s = self.string()?;
                // Adjacent strings are joined.
                loop {
                    self.skip_space()?;
                    if self.peek() != Some(b'"') {
                        return Ok(Value::Str(s));
                    }
                    s.push_str(&self.string()?);
                }
            }
            Some(_) => self.scalar(),
            None => self.err("missing value"),
        }
    }

    fn string(&mut self) -> Result<String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return self.err("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    let c = self.s.get(self.pos + 1).copied();
                    self.pos += 2;
                    match c {
                        Some(b'n') => out.push(b'\n'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b'f') => out.push(0x0c),
                        Some(b'x') => {
                            let hex = self.s.get(self.pos..self.pos + 2).unwrap_or_default();
                            let byte = std::str::from_utf8(hex)
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok());
                            match byte {
                                Some(b) => out.push(b),
                                None => return self.err("bad \\x escape"),
                            }
                            self.pos += 2;
                        }
                        Some(c) => out.push(c),
                        None => return self.err("unterminated string"),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn scalar(&mut self) -> Result<Value> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+'))
        {
            self.pos += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default();
        let lower = word.to_ascii_lowercase();
        if lower == "true" {
            return Ok(Value::Bool(true));
        }
        if lower == "false" {
            return Ok(Value::Bool(false));
        }
        let digits = lower.trim_end_matches('l');
        let (negative, unsigned) = match digits.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, digits.strip_prefix('+').unwrap_or(digits)),
        };
        let int = match unsigned.strip_prefix("0x") {
            Some(hex) => i64::from_str_radix(hex, 16).ok(),
            None => unsigned.parse::<i64>().ok(),
        };
        if let Some(i) = int {
            return Ok(Value::Int(if negative { -i } else { i }));
        }
        if let Ok(f) = digits.parse::<f64>() {
            return Ok(Value::Float(f));
        }
        self.err(&format!("unexpected {word:?}"))
    }
}

/// What an existing Janus installation's configs folder says peregrine should do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JanusInstall {
    /// The ustreamer plugin's memsink (`video.sink`, or the older `memsink.object`).
    pub sink: Option<String>,
    pub ws_port: Option<u16>,
    /// `ws_unix`: the WebSocket transport listens on this unix socket, not a port.
    pub ws_unix: Option<PathBuf>,
    /// The transport's file exists and does not enable it (`ws = true` is required, as
    /// in Janus).
    pub ws_off: bool,
    /// `ws_ip` (or `ws_interface`): the only address the WebSocket transport binds.
    pub ws_ip: Option<IpAddr>,
    pub http_port: Option<u16>,
    /// `ip` (or `interface`): the only address the HTTP transport binds.
    pub http_ip: Option<IpAddr>,
    pub http_off: bool,
    pub http_base_path: Option<String>,
    pub session_timeout: Option<u64>,
    pub rtp_port_range: Option<String>,
    pub nat_1_1_ip: Option<String>,
    /// `nat.ice_enforce_list` naming one interface or address: media binds there.
    pub media_ip: Option<IpAddr>,
    pub stun: Option<String>,
    /// `general.api_secret`, when not empty.
    pub api_secret: Option<String>,
    /// `general.token_auth = true`.
    pub token_auth: bool,
    /// `general.token_auth_secret` with token_auth on: tokens are signed with it.
    pub token_auth_secret: Option<String>,
    /// `general.admin_secret`, when not empty.
    pub admin_secret: Option<String>,
    /// With `admin.admin_http = true`: `admin_port` (Janus's default 7088).
    pub admin_http_port: Option<u16>,
    /// `admin_ip` (or `admin_interface`) of the admin HTTP server.
    pub admin_http_ip: Option<IpAddr>,
    pub admin_base_path: Option<String>,
    /// With `admin.admin_ws = true`: `admin_ws_port` (Janus's default 7188).
    pub admin_ws_port: Option<u16>,
    /// `admin_ws_ip` (or `admin_ws_interface`) of the admin WebSocket server.
    pub admin_ws_ip: Option<IpAddr>,
    /// `wss = true`: the WebSocket transport also (or only) listens over TLS.
    pub wss: Option<SecureTransport>,
    /// `https = true`: the HTTP transport also (or only) listens over TLS.
    pub https: Option<SecureTransport>,
    /// Settings read but not used, without loss of security: said in the log at start
    /// (the file is read before logging is set up).
    pub notes: Vec<String>,
    /// `general.ws_acl` of an enabled WebSocket transport: address prefixes allowed.
    pub ws_acl: Option<String>,
    /// `general.acl` of an enabled HTTP transport.
    pub http_acl: Option<String>,
    /// `cors.allow_origin` of either transport: a web page allowed to use the API.
    pub allow_origin: Vec<String>,
    /// The plugin's `aplay.device`: the ALSA device the browsers' microphones play on.
    pub mic_device: Option<String>,
    /// The plugin's sound capture: `acap.device` (or the older `audio.device`).
    pub audio_device: Option<String>,
    /// `acap.sampling_rate`: the capture rate in Hz.
    pub audio_rate: Option<u32>,
    /// `acap.tc358743` (or `audio.tc358743`): the chip telling the HDMI audio rate.
    pub audio_tc358743: Option<PathBuf>,
}

/// A transport's TLS server (Janus's `wss` or `https`), with the certificate named in
/// the transport's own file (its `certificates` section, as Janus reads it).
#[derive(Clone, Debug, PartialEq)]
pub struct SecureTransport {
    pub port: u16,
    /// `wss_ip` / `secure_ip` (or the interface): the only address it binds.
    pub ip: Option<IpAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the two transports keep their TLS settings.
struct SecureKeys {
    file: &'static str,
    /// The switch under `general`.
    on: &'static str,
    port: &'static str,
    default_port: u16,
    ip: &'static str,
    interface: &'static str,
    unix: Option<&'static str>,
    /// Janus's HTTP transport needs `cert_key`; its WebSocket transport reads the key
    /// from `cert_pem` without it.
    key_required: bool,
    /// The flag that also sets the address, for the message of a bad one.
    flag: &'static str,
}

const WSS: SecureKeys = SecureKeys {
    file: WS_FILE,
    on: "wss",
    port: "wss_port",
    default_port: 8989,
    ip: "wss_ip",
    interface: "wss_interface",
    unix: Some("wss_unix"),
    key_required: false,
    flag: "--janus-ws-host",
};

const HTTPS: SecureKeys = SecureKeys {
    file: HTTP_FILE,
    on: "https",
    port: "secure_port",
    default_port: 8089,
    ip: "secure_ip",
    interface: "secure_interface",
    unix: None,
    key_required: true,
    flag: "--janus-http-host",
};

/// Janus's default Admin API ports.
const ADMIN_HTTP_PORT: u16 = 7088;
const ADMIN_WS_PORT: u16 = 7188;

const PLUGIN_FILE: &str = "janus.plugin.ustreamer.jcfg";
const WS_FILE: &str = "janus.transport.websockets.jcfg";
const HTTP_FILE: &str = "janus.transport.http.jcfg";
const CORE_FILE: &str = "janus.jcfg";

/// Read `DIR/janus.plugin.ustreamer.jcfg` (required) and, when present, `janus.jcfg`,
/// `janus.transport.websockets.jcfg` and `janus.transport.http.jcfg`.
pub fn read_install(dir: &Path) -> Result<JanusInstall> {
    let plugin = read(&dir.join(PLUGIN_FILE))?;
    let sink = plugin
        .get_str("video.sink")
        .or_else(|| plugin.get_str("memsink.object"))
        .ok_or_else(|| {
            anyhow!(
                "{}: missing video.sink (the µStreamer memsink name, e.g. \
                 video: {{ sink = \"demo::ustreamer::h264\" }})",
                dir.join(PLUGIN_FILE).display()
            )
        })?;
    let mut install = JanusInstall {
        sink: Some(sink),
        mic_device: plugin.get_str("aplay.device"),
        ..JanusInstall::default()
    };
    if plugin.get_str("aplay.check").is_some() {
        // The plugin has ignored it since 6.41: the microphone is on with the device.
        install.notes.push(format!(
            "{}: aplay.check is not used: the microphone plays whenever aplay.device is set",
            dir.join(PLUGIN_FILE).display()
        ));
    }
    audio_capture(&plugin, &dir.join(PLUGIN_FILE), &mut install)?;
    let optional = |name: &str| -> Result<Option<Value>> {
        let path = dir.join(name);
        if path.exists() {
            read(&path).map(Some)
        } else {
            Ok(None)
        }
    };
    let mut refused = Vec::new();
    if let Some(ws) = optional(WS_FILE)? {
        // As in Janus, the transport runs only when `ws = true`; `ws_unix` then takes
        // the place of the port.
        install.ws_off = ws.get_bool("general.ws") != Some(true);
        if !install.ws_off {
            install.ws_port = port(&ws, "general.ws_port", WS_FILE)?;
            install.ws_unix = ws.get_str("general.ws_unix").map(PathBuf::from);
            // A unix socket takes the place of the address too, as in Janus.
            if install.ws_unix.is_none() {
                install.ws_ip = bind_address(
                    &ws,
                    &dir.join(WS_FILE),
                    "general.ws_ip",
                    "general.ws_interface",
                    "--janus-ws-host",
                )?;
                install.ws_acl = ws.get_str("general.ws_acl");
            }
        }
        if ws.get_bool("admin.admin_ws") == Some(true) {
            install.admin_ws_port =
                Some(port(&ws, "admin.admin_ws_port", WS_FILE)?.unwrap_or(ADMIN_WS_PORT));
            install.admin_ws_ip = bind_address(
                &ws,
                &dir.join(WS_FILE),
                "admin.admin_ws_ip",
                "admin.admin_ws_interface",
                "--janus-admin-ws-host",
            )?;
            refused.extend(unsupported_admin_ws(&ws));
        }
        if ws.get_bool("admin.admin_wss") == Some(true) {
            install.notes.push(format!(
                "{}: admin.admin_wss is not used: the Admin API is served over TLS only \
                 with --tls-cert (or admin_ws on 127.0.0.1, or a TLS proxy in front)",
                dir.join(WS_FILE).display()
            ));
        }
        install.wss = secure_transport(&ws, dir, &WSS, &mut refused, &mut install.notes)?;
        // The allow-list applies to the TLS server too, even with the plain one off.
        if install.wss.is_some() && install.ws_acl.is_none() {
            install.ws_acl = ws.get_str("general.ws_acl");
        }
        install
            .allow_origin
            .extend(allow_origin(&ws, &dir.join(WS_FILE))?);
        refused.extend(unsupported_ws(
            &ws,
            !install.ws_off || install.wss.is_some(),
        ));
    }
    if let Some(http) = optional(HTTP_FILE)? {
        install.http_off = http.get_bool("general.http") != Some(true);
        if !install.http_off {
            install.http_port = port(&http, "general.port", HTTP_FILE)?;
            install.http_ip = bind_address(
                &http,
                &dir.join(HTTP_FILE),
                "general.ip",
                "general.interface",
                "--janus-http-host",
            )?;
        }
        install.http_base_path = http.get_str("general.base_path");
        if http.get_bool("admin.admin_http") == Some(true) {
            install.admin_http_port =
                Some(port(&http, "admin.admin_port", HTTP_FILE)?.unwrap_or(ADMIN_HTTP_PORT));
            install.admin_http_ip = bind_address(
                &http,
                &dir.join(HTTP_FILE),
                "admin.admin_ip",
                "admin.admin_interface",
                "--janus-admin-http-host",
            )?;
            install.admin_base_path = http.get_str("admin.admin_base_path");
            if http.get_str("admin.admin_acl").is_some() {
                refused.push((
                    HTTP_FILE,
                    "admin.admin_acl".into(),
                    "address allow-lists are not supported, so every address would be accepted",
                ));
            }
        }
        if http.get_bool("admin.admin_https") == Some(true) {
            install.notes.push(format!(
                "{}: admin.admin_https is not used: the Admin API is served over TLS only \
                 with --tls-cert (or admin_http on 127.0.0.1, or a TLS proxy in front)",
                dir.join(HTTP_FILE).display()
            ));
        }
        install.https = secure_transport(&http, dir, &HTTPS, &mut refused, &mut install.notes)?;
        if !install.http_off || install.https.is_some() {
            install.http_acl = http.get_str("general.acl");
        }
        install
            .allow_origin
            .extend(allow_origin(&http, &dir.join(HTTP_FILE))?);
        refused.extend(unsupported_http(
            &http,
            !install.http_off || install.https.is_some(),
        ));
    }
    if let Some(janus) = optional(CORE_FILE)? {
        install.session_timeout = janus
            .get_int("general.session_timeout")
            .and_then(|t| u64::try_from(t).ok());
        install.rtp_port_range = janus.get_str("media.rtp_port_range");
        install.nat_1_1_ip = janus.get_str("nat.nat_1_1_mapping");
        install.media_ip = ice_enforce_list(&janus, &dir.join(CORE_FILE), &mut install.notes)?;
        if let Some(list) = janus.get_str("nat.ice_ignore_list") {
            // "vmnet" is the sample's value and names nothing on a usual machine.
            if list.trim() != "vmnet" {
                install.notes.push(format!(
                    "{}: nat.ice_ignore_list = {list:?} is not used: peregrine offers the \
                     --media-host address (every interface with 0.0.0.0)",
                    dir.join(CORE_FILE).display()
                ));
            }
        }
        if let Some(server) = janus.get_str("nat.stun_server") {
            let port = janus.get_int("nat.stun_port").unwrap_or(3478);
            install.stun = Some(format!("stun:{server}:{port}"));
        }
        install.api_secret = janus
            .get_str("general.api_secret")
            .filter(|s| !s.is_empty());
        install.admin_secret = janus.get_str("general.admin_secret");
        install.token_auth = janus.get_bool("general.token_auth") == Some(true);
        if install.token_auth {
            install.token_auth_secret = janus
                .get_str("general.token_auth_secret")
                .filter(|s| !s.is_empty());
        }
        if let Some(interface) = janus.get_str("general.interface") {
            // Janus only writes this address into its SDP; it still gathers candidates
            // on every interface, so nothing is exposed that was not before.
            install.notes.push(format!(
                "{}: general.interface = {interface:?} is not used: peregrine offers the \
                 --host address as its ICE candidate (every interface with --host 0.0.0.0)",
                dir.join(CORE_FILE).display()
            ));
        }
        if janus.get_str("certificates.cert_pem").is_some() {
            // Not a loss of security: browsers check the DTLS certificate against the
            // fingerprint in the SDP, whichever certificate it is.
            // The transports' TLS certificates are in their own files, as in Janus.
            install.notes.push(format!(
                "{}: certificates.cert_pem is not used: peregrine makes its own DTLS \
                 certificate",
                dir.join(CORE_FILE).display()
            ));
        }
    }
    if !refused.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|(file, setting, why)| format!("{}: {setting}: {why}", dir.join(file).display()))
            .collect();
        bail!(
            "refusing to start: the Janus configuration sets security settings peregrine \
             does not support yet, and serving without them would make the installation \
             less secure:\n  {}",
            list.join("\n  ")
        );
    }
    Ok(install)
}

/// A port number setting, when present.
/// The plugin's sound capture (`acap.*`, or `audio.*` before plugin 6.24), for
/// `--audio-device`, `--audio-rate` and `--audio-tc358743`. The playback keys
/// (`aplay.*`) are the microphone's.
fn audio_capture(plugin: &Value, file: &Path, install: &mut JanusInstall) -> Result<()> {
    let either = |key: &str| {
        plugin
            .get_str(&format!("acap.{key}"))
            .or_else(|| plugin.get_str(&format!("audio.{key}")))
    };
    let Some(device) = either("device") else {
        return Ok(());
    };
    install.audio_device = Some(device);
    install.audio_tc358743 = either("tc358743").map(PathBuf::from);
    if plugin.get("acap.sampling_rate").is_some() {
        let rate = plugin
            .get_int("acap.sampling_rate")
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| *r == 0 || crate::source::audio::tc358743::RATES.contains(r))
            .ok_or_else(|| {
                anyhow!(
                    "{}: acap.sampling_rate must be a rate in Hz, 8000 to 192000",
                    file.display()
                )
            })?;
        // 0 counts as unset, as in the plugin.
        install.audio_rate = (rate != 0).then_some(rate);
    }
    if install.audio_rate.is_none() && install.audio_tc358743.is_none() {
        install.notes.push(format!(
            "{}: acap.device without acap.sampling_rate or acap.tc358743: capturing at \
             48000 Hz",
            file.display()
        ));
    }
    Ok(())
}

fn port(v: &Value, key: &str, file: &str) -> Result<Option<u16>> {
    v.get_int(key)
        .map(|p| u16::try_from(p).map_err(|_| anyhow!("{file}: {key} = {p} is not a port number")))
        .transpose()
}

/// A transport's TLS server, when its file turns it on. As in Janus, it listens on a
/// port of its own beside the plain server and uses the `certificates` section of the
/// same file (janus.jcfg's certificate is the DTLS one, not used for this).
fn secure_transport(
    v: &Value,
    dir: &Path,
    k: &SecureKeys,
    refused: &mut Vec<Refusal>,
    notes: &mut Vec<String>,
) -> Result<Option<SecureTransport>> {
    if v.get_bool(&format!("general.{}", k.on)) != Some(true) {
        return Ok(None);
    }
    let file = dir.join(k.file);
    let cert = v.get_str("certificates.cert_pem");
    let key = v
        .get_str("certificates.cert_key")
        .or_else(|| cert.clone().filter(|_| !k.key_required));
    let (Some(cert), Some(key)) = (cert, key) else {
        let needs = if k.key_required {
            "certificates.cert_pem and certificates.cert_key"
        } else {
            "certificates.cert_pem"
        };
        bail!(
            "{}: general.{} = true needs {needs} (Janus starts no TLS server without \
             them); name the certificate and key files, or set {} = false",
            file.display(),
            k.on,
            k.on
        );
    };
    let mut usable = true;
    if let Some(unix) = k
        .unix
        .filter(|u| v.get_str(&format!("general.{u}")).is_some())
    {
        refused.push((
            k.file,
            format!("general.{unix}"),
            "TLS on a unix socket is not served; serve the plain WebSocket on the socket \
             (ws_unix) and let the proxy in front of it do TLS",
        ));
        usable = false;
    }
    if v.get_str("certificates.cert_pwd").is_some() {
        refused.push((
            k.file,
            "certificates.cert_pwd".into(),
            "passphrase-protected keys are not supported; write the key out unencrypted \
             (openssl pkey -in KEY -out KEY.plain), readable only by the server's user, \
             and name that file in cert_key",
        ));
        usable = false;
    }
    if v.get_str("certificates.ciphers").is_some() {
        notes.push(format!(
            "{}: certificates.ciphers is not used: peregrine offers only TLS 1.3 and \
             TLS 1.2 suites with forward secrecy and authenticated encryption",
            file.display()
        ));
    }
    if !usable {
        return Ok(None);
    }
    let port_key = format!("general.{}", k.port);
    Ok(Some(SecureTransport {
        port: port(v, &port_key, &file.display().to_string())?.unwrap_or(k.default_port),
        ip: bind_address(
            v,
            &file,
            &format!("general.{}", k.ip),
            &format!("general.{}", k.interface),
            k.flag,
        )?,
        cert: cert.into(),
        key: key.into(),
    }))
}

/// The one address a transport's file binds it to: `ip_key` (an address) wins over
/// `interface_key` (an interface name, or an address), as in Janus; both are full
/// paths such as `general.ws_ip`. A value that names no address of this machine stops
/// the start rather than letting the transport listen more widely than the file says.
fn bind_address(
    v: &Value,
    file: &Path,
    ip_key: &str,
    interface_key: &str,
    flag: &str,
) -> Result<Option<IpAddr>> {
    if let Some(ip) = v.get_str(ip_key) {
        return ip.trim().parse().map(Some).map_err(|_| {
            anyhow!(
                "{}: {ip_key} = {ip:?} is not an IP address (set the address the \
                 transport should listen on, e.g. \"127.0.0.1\")",
                file.display()
            )
        });
    }
    let Some(interface) = v.get_str(interface_key) else {
        return Ok(None);
    };
    if let Ok(ip) = interface.trim().parse() {
        return Ok(Some(ip));
    }
    match crate::net::interface_ipv4(interface.trim()) {
        Some(ip) => Ok(Some(ip)),
        None => bail!(
            "{}: {interface_key} = {interface:?}: no network interface of that name \
             is up with an IPv4 address; set {ip_key} to the address to listen on \
             instead, or remove the setting and choose the address with {flag} or --host",
            file.display()
        ),
    }
}

/// `cors.allow_origin`, checked to be an origin. Janus then answers CORS for that page
/// alone, and with `enforce_cors` also refuses other pages' upgrades and requests;
/// peregrine refuses pages it does not allow in any case (see [`crate::origin`]), so
/// both settings come down to allowing this page.
fn allow_origin(v: &Value, file: &Path) -> Result<Option<String>> {
    let Some(origin) = v.get_str("cors.allow_origin") else {
        return Ok(None);
    };
    crate::origin::OriginPolicy::new(std::slice::from_ref(&origin)).map_err(|_| {
        anyhow!(
            "{}: cors.allow_origin = {origin:?} is not an origin; write the page's \
             scheme://host[:port], e.g. \"https://kvm.example\", or \"*\" for every page",
            file.display()
        )
    })?;
    Ok(Some(origin))
}

/// `nat.ice_enforce_list`: Janus gathers media candidates only on the interfaces or
/// addresses listed. One interface or address maps to the media address; a longer list
/// or prefixes have no one address, and are reported as not used.
fn ice_enforce_list(v: &Value, file: &Path, notes: &mut Vec<String>) -> Result<Option<IpAddr>> {
    let Some(list) = v.get_str("nat.ice_enforce_list") else {
        return Ok(None);
    };
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if let [one] = entries[..] {
        if let Ok(ip) = one.parse() {
            return Ok(Some(ip));
        }
        if let Some(ip) = crate::net::interface_ipv4(one) {
            return Ok(Some(ip));
        }
        if !one.ends_with('.') && !one.ends_with(':') {
            bail!(
                "{}: nat.ice_enforce_list = {list:?}: no network interface of that name is up \
                 with an IPv4 address; set it to the address media should use, or choose it \
                 with --media-host",
                file.display()
            );
        }
    }
    notes.push(format!(
        "{}: nat.ice_enforce_list = {list:?} is not used: it names no single interface or \
         address; choose the media address with --media-host",
        file.display()
    ));
    Ok(None)
}

/// A security setting peregrine cannot honour: file, setting, what it would lose.
type Refusal = (&'static str, String, &'static str);

/// The parts of the address ACL peregrine cannot apply in the WebSocket transport.
fn unsupported_ws(ws: &Value, enabled: bool) -> Vec<Refusal> {
    let mut out = Vec::new();
    let acl = enabled && ws.get_str("general.ws_acl").is_some();
    if acl && ws.get_str("general.ws_unix").is_some() {
        out.push((
            WS_FILE,
            "general.ws_acl with ws_unix".into(),
            "a unix socket has no client addresses to check; remove ws_acl (the socket's \
             permissions decide who connects) or listen on a port",
        ));
    }
    if acl && ws.get_bool("general.ws_acl_forwarded") == Some(true) {
        out.push((
            WS_FILE,
            "general.ws_acl_forwarded = true".into(),
            "X-Forwarded-For is not checked against the ACL, so clients behind the proxy \
             would not be",
        ));
    }
    out
}

/// The address ACL of the admin WebSocket server, and a unix socket for it (served on
/// a port instead, every local user could reach it).
fn unsupported_admin_ws(ws: &Value) -> Vec<Refusal> {
    let mut out = Vec::new();
    if ws.get_str("admin.admin_ws_acl").is_some() {
        out.push((
            WS_FILE,
            "admin.admin_ws_acl".into(),
            "address allow-lists are not supported, so every address would be accepted",
        ));
    }
    if ws.get_str("admin.admin_ws_unix").is_some() {
        out.push((
            WS_FILE,
            "admin.admin_ws_unix".into(),
            "the Admin API is not served on a unix socket, and on a port every local user \
             could reach it; use admin_ws_port (on 127.0.0.1) with an admin_secret",
        ));
    }
    out
}

/// The parts of the address ACL peregrine cannot apply in the HTTP transport.
fn unsupported_http(http: &Value, enabled: bool) -> Vec<Refusal> {
    let mut out = Vec::new();
    if enabled
        && http.get_str("general.acl").is_some()
        && http.get_bool("general.acl_forwarded") == Some(true)
    {
        out.push((
            HTTP_FILE,
            "general.acl_forwarded = true".into(),
            "X-Forwarded-For is not checked against the ACL, so clients behind the proxy \
             would not be",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libconfig_forms() {
        let v = parse(
            r#"
            # comment
            // another
            /* block
               comment */
            video: {
                sink = "kvmd::ustreamer::"
                       "h264";
            }
            acap = { device = "hw:tc358743,0", sampling_rate = 48000 },
            list = ( 1, 0x10, -2.5, true, "x\"y\x41" );
            arr = [ "a", "b" ];
            FALSE_ish: FALSE;
            big = 12L
            "#,
        )
        .unwrap();
        assert_eq!(
            v.get_str("video.sink").as_deref(),
            Some("kvmd::ustreamer::h264")
        );
        assert_eq!(v.get_int("acap.sampling_rate"), Some(48000));
        assert_eq!(
            v.get("list"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Int(16),
                Value::Float(-2.5),
                Value::Bool(true),
                Value::Str("x\"yA".into()),
            ]))
        );
        assert_eq!(v.get_bool("FALSE_ish"), Some(false));
        assert_eq!(v.get_int("big"), Some(12));
        assert_eq!(v.get_str("missing.key"), None);
    }

    /// Each `(file, text, setting)`: a folder with the plugin file and `file` holding
    /// `text` stops the start, naming the setting and the file.
    fn assert_refused(cases: &[(&str, &str, &str)]) {
        for &(file, text, setting) in cases {
            let dir = dir_with(&[PLUGIN, (file, text)]);
            let err = format!("{:#}", read_install(&dir).unwrap_err());
            assert!(err.contains(setting), "{setting}: {err}");
            assert!(
                err.contains(&dir.join(file).display().to_string()),
                "{setting} names the file: {err}"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("a = 1;\nb = {\n c = \"open\n}").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(parse("a = {").is_err());
        assert!(parse("= 3").is_err());
        assert!(parse("/* never closed").is_err());
    }

    fn dir_with(files: &[(&str, &str)]) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "peregrine-jcfg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn ice_enforce_list_with_one_entry_is_the_media_address() {
        let install = |list: &str| {
            let dir = dir_with(&[
                (PLUGIN_FILE, "video: { sink = \"s\" }"),
                (
                    CORE_FILE,
                    &format!("nat: {{ ice_enforce_list = \"{list}\" }}"),
                ),
            ]);
            let out = read_install(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            out
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(install("192.168.1.7").unwrap().media_ip, ip("192.168.1.7"));
        assert_eq!(install(" lo ").unwrap().media_ip, ip("127.0.0.1"));
        // Several entries or a prefix name no one address: not used (with a warning).
        assert_eq!(install("eth0,wlan0").unwrap().media_ip, None);
        assert_eq!(install("192.168.").unwrap().media_ip, None);
        // A missing interface stops the start instead of binding elsewhere.
        let err = install("nosuchif0").unwrap_err().to_string();
        assert!(
            err.contains("ice_enforce_list") && err.contains("--media-host"),
            "{err}"
        );
    }

    #[test]
    fn reads_an_installation() {
        let dir = dir_with(&[
            (
                PLUGIN_FILE,
                "memsink: { object = \"demo::ustreamer::h264\" }\n",
            ),
            (
                "janus.transport.websockets.jcfg",
                "general: { json = \"indented\"\n ws = true\n ws_port = 8189 }\n",
            ),
            (
                "janus.transport.http.jcfg",
                "general: { http = true; port = 8089; base_path = \"/api\" }",
            ),
            (
                "janus.jcfg",
                "general: { session_timeout = 30 }\nmedia: { rtp_port_range = \"20000-20100\" }\n\
                 nat: { stun_server = \"stun.example.org\"\n stun_port = 19302 }",
            ),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(
            install,
            JanusInstall {
                sink: Some("demo::ustreamer::h264".into()),
                ws_port: Some(8189),
                ws_unix: None,
                ws_off: false,
                ws_ip: None,
                http_port: Some(8089),
                http_ip: None,
                http_off: false,
                http_base_path: Some("/api".into()),
                session_timeout: Some(30),
                rtp_port_range: Some("20000-20100".into()),
                nat_1_1_ip: None,
                media_ip: None,
                stun: Some("stun:stun.example.org:19302".into()),
                api_secret: None,
                token_auth: false,
                token_auth_secret: None,
                admin_secret: None,
                admin_http_port: None,
                admin_http_ip: None,
                admin_base_path: None,
                admin_ws_port: None,
                admin_ws_ip: None,
                wss: None,
                https: None,
                notes: Vec::new(),
                ws_acl: None,
                http_acl: None,
                allow_origin: Vec::new(),
                mic_device: None,
                audio_device: None,
                audio_rate: None,
                audio_tc358743: None,
            }
        );
        // The current form wins over the legacy one.
        std::fs::write(
            dir.join(PLUGIN_FILE),
            "video: { sink = \"kvmd::ustreamer::h264\" }\nmemsink: { object = \"old::h264\" }",
        )
        .unwrap();
        assert_eq!(
            read_install(&dir).unwrap().sink.as_deref(),
            Some("kvmd::ustreamer::h264")
        );
        std::fs::write(dir.join(PLUGIN_FILE), "video: { sink = \"\" }").unwrap();
        let err = read_install(&dir).unwrap_err().to_string();
        assert!(err.contains("video.sink"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sound_capture_keys_and_their_older_names_are_read() {
        let read = |plugin: &str| read_install(&dir_with(&[(PLUGIN_FILE, plugin)]));
        let kvmd = read(
            "video: { sink = \"kvmd::ustreamer::h264\" }\n\
             acap: { device = \"hw:tc358743,0\"\n tc358743 = \"/dev/kvmd-video\" }\n\
             aplay: { device = \"plughw:UAC2Gadget,0\" }",
        )
        .unwrap();
        assert_eq!(kvmd.audio_device.as_deref(), Some("hw:tc358743,0"));
        assert_eq!(kvmd.audio_tc358743, Some(PathBuf::from("/dev/kvmd-video")));
        assert_eq!((kvmd.audio_rate, kvmd.notes.len()), (None, 0));
        let fixed =
            read("video: { sink = \"s\" }\nacap: { device = \"hw:1\"; sampling_rate = 44100 }")
                .unwrap();
        assert_eq!(
            (fixed.audio_device.as_deref(), fixed.audio_rate),
            (Some("hw:1"), Some(44_100))
        );
        let old = read(
            "memsink: { object = \"s\" }\naudio: { device = \"hw:1\"  tc358743 = \"/dev/video0\" }",
        )
        .unwrap();
        assert_eq!(old.audio_device.as_deref(), Some("hw:1"));
        assert_eq!(old.audio_tc358743, Some(PathBuf::from("/dev/video0")));
        let bare = read("video: { sink = \"s\" }\nacap: { device = \"hw:1\" }").unwrap();
        assert!(
            bare.notes[0].contains("capturing at 48000 Hz"),
            "{:?}",
            bare.notes
        );
        let none = read("video: { sink = \"s\" }\nacap: { device = \"\" }").unwrap();
        assert_eq!(none.audio_device, None, "an empty name is no device");
        for bad in ["1000", "\"fast\"", "400000"] {
            let err = read(&format!(
                "video: {{ sink = \"s\" }}\nacap: {{ device = \"hw:1\"; sampling_rate = {bad} }}"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("acap.sampling_rate must be"), "{bad}: {err}");
        }
    }

    const PLUGIN: (&str, &str) = (PLUGIN_FILE, "video: { sink = \"kvmd::ustreamer::h264\" }");

    #[test]
    fn the_plugins_playback_device_is_the_microphone_device() {
        // kvmd's file.
        let dir = dir_with(&[(
            PLUGIN_FILE,
            "video: { sink = \"kvmd::ustreamer::h264\" }\n\
             acap: { device = \"hw:tc358743,0\"\n tc358743 = \"/dev/kvmd-video\" }\n\
             aplay: { device = \"plughw:UAC2Gadget,0\" }\n\
             vplay: { sink = \"kvmd::ucamera::h264\" }\n",
        )]);
        let install = read_install(&dir).unwrap();
        assert_eq!(install.mic_device.as_deref(), Some("plughw:UAC2Gadget,0"));
        assert!(install.notes.is_empty(), "{:?}", install.notes);
        // The old switch is told to be unused; an empty device is no device.
        std::fs::write(
            dir.join(PLUGIN_FILE),
            "video: { sink = \"s\" }\naplay: { device = \"\", check = \"/run/mic\" }",
        )
        .unwrap();
        let install = read_install(&dir).unwrap();
        assert_eq!(install.mic_device, None);
        assert!(
            install.notes[0].contains("aplay.check"),
            "{:?}",
            install.notes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pikvm_unix_socket_and_disabled_transports() {
        // PiKVM's own janus.transport.websockets.jcfg.
        let dir = dir_with(&[
            PLUGIN,
            (
                WS_FILE,
                "general: {\n\tws = true\n\tws_unix = \"/run/kvmd/janus-ws.sock\"\n}\n",
            ),
            (HTTP_FILE, "general: { http = false, port = 8088 }"),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(
            install.ws_unix.as_deref(),
            Some(Path::new("/run/kvmd/janus-ws.sock"))
        );
        assert!(!install.ws_off);
        assert!(install.http_off);
        assert_eq!(install.http_port, None);
        // Without `ws = true` Janus starts no WebSocket server at all.
        std::fs::write(dir.join(WS_FILE), "general: { ws_port = 8188 }").unwrap();
        let install = read_install(&dir).unwrap();
        assert!(install.ws_off);
        assert_eq!((install.ws_port, install.ws_unix), (None, None));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn security_settings_are_refused_by_name_and_file() {
        let cases = [
            (
                WS_FILE,
                "general: { ws = true, ws_acl = \"127.\", ws_acl_forwarded = true }",
                "general.ws_acl_forwarded",
            ),
            (
                WS_FILE,
                "general: { ws = true, ws_unix = \"/run/j.sock\", ws_acl = \"127.\" }",
                "general.ws_acl with ws_unix",
            ),
            (
                HTTP_FILE,
                "general: { http = true, acl = \"127.,10.\", acl_forwarded = true }",
                "general.acl_forwarded",
            ),
            (
                HTTP_FILE,
                "general: { http = true }\ncors: { allow_origin = \"kvm.example/x\" }",
                "cors.allow_origin",
            ),
        ];
        assert_refused(&cases);
        // Settings that lose nothing are accepted: an ACL of a disabled transport, an
        // empty secret, token_auth off.
        let dir = dir_with(&[
            PLUGIN,
            (
                CORE_FILE,
                "general: { api_secret = \"\", token_auth = false, admin_secret = \"x\" }",
            ),
            (WS_FILE, "general: { ws = false, ws_acl = \"127.\" }"),
        ]);
        read_install(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn admin_api_settings_are_read() {
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        // Janus's sample files: the admin servers are off, whatever else they say.
        let dir = dir_with(&[
            PLUGIN,
            (CORE_FILE, "general: { admin_secret = \"janusoverlord\" }"),
            (
                HTTP_FILE,
                "general: { http = true }\nadmin: { admin_base_path = \"/admin\"\n\
                 admin_http = false\n admin_port = 7088\n admin_https = false\n\
                 admin_acl = \"127.,192.168.0.\" }",
            ),
            (
                WS_FILE,
                "general: { ws = true }\nadmin: { admin_ws = false\n admin_ws_port = 7188\n\
                 admin_ws_acl = \"127.\"\n admin_ws_unix = \"/run/aws.sock\" }",
            ),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(install.admin_secret.as_deref(), Some("janusoverlord"));
        assert_eq!(
            (install.admin_http_port, install.admin_ws_port),
            (None, None)
        );
        // Turned on: Janus's default ports, or the ones given, and their addresses.
        std::fs::write(dir.join(HTTP_FILE), "admin: { admin_http = true }").unwrap();
        std::fs::write(dir.join(WS_FILE), "admin: { admin_ws = true }").unwrap();
        let install = read_install(&dir).unwrap();
        assert_eq!(
            (install.admin_http_port, install.admin_ws_port),
            (Some(7088), Some(7188))
        );
        assert_eq!((install.admin_http_ip, install.admin_ws_ip), (None, None));
        assert!(
            install.ws_off && install.http_off,
            "the Janus transports stay off"
        );
        std::fs::write(
            dir.join(HTTP_FILE),
            "admin: { admin_http = true, admin_port = 7099, admin_base_path = \"/adm\",\
             admin_ip = \"127.0.0.2\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join(WS_FILE),
            "admin: { admin_ws = true, admin_ws_port = 7199, admin_ws_interface = \"lo\" }",
        )
        .unwrap();
        let install = read_install(&dir).unwrap();
        assert_eq!(
            (install.admin_http_port, install.admin_ws_port),
            (Some(7099), Some(7199))
        );
        assert_eq!(install.admin_base_path.as_deref(), Some("/adm"));
        assert_eq!(
            (install.admin_http_ip, install.admin_ws_ip),
            (ip("127.0.0.2"), ip("127.0.0.1"))
        );
        // An interface that is not there stops the start, naming the admin setting.
        std::fs::write(
            dir.join(WS_FILE),
            "admin: { admin_ws = true, admin_ws_interface = \"no-such-if0\" }",
        )
        .unwrap();
        let err = format!("{:#}", read_install(&dir).unwrap_err());
        assert!(err.contains("admin.admin_ws_interface"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_servers_listen_beside_the_plain_ones_with_their_files_certificate() {
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        let dir = dir_with(&[
            PLUGIN,
            (
                WS_FILE,
                "general: { ws = true, ws_port = 8188, wss = true, wss_ip = \"127.0.0.1\" }\n\
                 certificates: { cert_pem = \"/etc/j/both.pem\" }",
            ),
            (
                HTTP_FILE,
                "general: { http = false, https = true, secure_port = 9089 }\n\
                 certificates: { cert_pem = \"/etc/j/c.pem\", cert_key = \"/etc/j/k.pem\" }",
            ),
            // The core's certificate is the DTLS one: not used for the transports.
            (
                CORE_FILE,
                "certificates: { cert_pem = \"/etc/j/dtls.pem\" }",
            ),
        ]);
        let install = read_install(&dir).unwrap();
        // Janus's WebSocket transport reads the key from cert_pem when cert_key is unset.
        assert_eq!(
            install.wss,
            Some(SecureTransport {
                port: 8989,
                ip: ip("127.0.0.1"),
                cert: "/etc/j/both.pem".into(),
                key: "/etc/j/both.pem".into(),
            })
        );
        assert_eq!((install.ws_off, install.ws_port), (false, Some(8188)));
        assert_eq!(
            install.https,
            Some(SecureTransport {
                port: 9089,
                ip: None,
                cert: "/etc/j/c.pem".into(),
                key: "/etc/j/k.pem".into(),
            })
        );
        assert!(install.http_off, "https alone leaves the plain server off");
        assert!(
            install.notes.iter().any(|n| n.contains("DTLS")),
            "{:?}",
            install.notes
        );
        // Ciphers are not used, and said so; a TLS server without its switch is none.
        std::fs::write(
            dir.join(WS_FILE),
            "general: { ws = true, wss = true, wss_port = 443, wss_interface = \"127.0.0.2\" }\n\
             certificates: { cert_pem = \"c.pem\", cert_key = \"k.pem\", ciphers = \"HIGH\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join(HTTP_FILE),
            "general: { http = true }\ncertificates: { cert_pem = \"c.pem\", cert_key = \"k.pem\" }",
        )
        .unwrap();
        let install = read_install(&dir).unwrap();
        let wss = install.wss.unwrap();
        assert_eq!((wss.port, wss.ip), (443, ip("127.0.0.2")));
        assert_eq!(wss.key, PathBuf::from("k.pem"));
        assert_eq!(install.https, None);
        assert!(
            install
                .notes
                .iter()
                .any(|n| n.contains("certificates.ciphers")),
            "{:?}",
            install.notes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn admin_acls_and_unix_socket_are_refused_when_the_admin_server_runs() {
        let cases = [
            (
                HTTP_FILE,
                "admin: { admin_http = true, admin_acl = \"127.\" }",
                "admin.admin_acl",
            ),
            (
                WS_FILE,
                "admin: { admin_ws = true, admin_ws_acl = \"127.\" }",
                "admin.admin_ws_acl",
            ),
            (
                WS_FILE,
                "admin: { admin_ws = true, admin_ws_unix = \"/run/aws.sock\" }",
                "admin.admin_ws_unix",
            ),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn tls_servers_that_cannot_be_honoured_stop_the_start() {
        let cases = [
            // No certificate: Janus would start no TLS server at all.
            (WS_FILE, "general: { wss = true }", "certificates.cert_pem"),
            (
                HTTP_FILE,
                "general: { https = true }\ncertificates: { cert_pem = \"c.pem\" }",
                "certificates.cert_key",
            ),
            (
                WS_FILE,
                "general: { wss = true }\n\
                 certificates: { cert_pem = \"c.pem\", cert_pwd = \"secret\" }",
                "certificates.cert_pwd",
            ),
            (
                HTTP_FILE,
                "general: { https = true }\n\
                 certificates: { cert_pem = \"c\", cert_key = \"k\", cert_pwd = \"s\" }",
                "certificates.cert_pwd",
            ),
            (
                WS_FILE,
                "general: { wss = true, wss_unix = \"/run/wss.sock\" }\n\
                 certificates: { cert_pem = \"c.pem\" }",
                "general.wss_unix",
            ),
            (
                WS_FILE,
                "general: { wss = true, wss_ip = \"eth0\" }\ncertificates: { cert_pem = \"c\" }",
                "general.wss_ip",
            ),
            (
                HTTP_FILE,
                "general: { https = true, secure_port = 70000 }\n\
                 certificates: { cert_pem = \"c\", cert_key = \"k\" }",
                "general.secure_port",
            ),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn api_secret_and_token_auth_are_honoured() {
        let dir = dir_with(&[
            PLUGIN,
            (
                CORE_FILE,
                "general: { api_secret = \"janusrocks\", token_auth = true }",
            ),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(install.api_secret.as_deref(), Some("janusrocks"));
        assert!(install.token_auth);
        assert_eq!(install.token_auth_secret, None);
        std::fs::write(
            dir.join(CORE_FILE),
            "general: { token_auth = true, token_auth_secret = \"k\" }",
        )
        .unwrap();
        assert_eq!(
            read_install(&dir).unwrap().token_auth_secret.as_deref(),
            Some("k")
        );
        // An empty secret is no secret, in Janus as here.
        std::fs::write(dir.join(CORE_FILE), "general: { api_secret = \"\" }").unwrap();
        let install = read_install(&dir).unwrap();
        assert_eq!((install.api_secret, install.token_auth), (None, false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn transport_addresses_are_honoured() {
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        let dir = dir_with(&[
            PLUGIN,
            (WS_FILE, "general: { ws = true, ws_ip = \"127.0.0.1\" }"),
            (HTTP_FILE, "general: { http = true, ip = \"::1\" }"),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(
            (install.ws_ip, install.http_ip),
            (ip("127.0.0.1"), ip("::1"))
        );
        // An interface by name is its IPv4 address; the address wins over it, as in
        // Janus; an interface may also be given as an address.
        std::fs::write(
            dir.join(WS_FILE),
            "general: { ws = true, ws_interface = \"lo\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join(HTTP_FILE),
            "general: { http = true, interface = \"no-such-if0\", ip = \"127.0.0.2\" }",
        )
        .unwrap();
        let install = read_install(&dir).unwrap();
        assert_eq!(
            (install.ws_ip, install.http_ip),
            (ip("127.0.0.1"), ip("127.0.0.2"))
        );
        std::fs::write(
            dir.join(HTTP_FILE),
            "general: { http = true, interface = \"127.0.0.3\" }",
        )
        .unwrap();
        assert_eq!(read_install(&dir).unwrap().http_ip, ip("127.0.0.3"));
        // A transport that is off or on a unix socket binds no address: nothing to check.
        std::fs::write(
            dir.join(WS_FILE),
            "general: { ws = true, ws_unix = \"/run/j.sock\", ws_interface = \"no-such-if0\" }",
        )
        .unwrap();
        std::fs::write(
            dir.join(HTTP_FILE),
            "general: { http = false, ip = \"not an address\" }",
        )
        .unwrap();
        let install = read_install(&dir).unwrap();
        assert_eq!((install.ws_ip, install.http_ip), (None, None));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_transport_addresses_are_refused_by_name_and_file() {
        let cases = [
            (
                WS_FILE,
                "general: { ws = true, ws_ip = \"localhost\" }",
                "general.ws_ip",
            ),
            (
                WS_FILE,
                "general: { ws = true, ws_ip = \"10.0.0.300\" }",
                "general.ws_ip",
            ),
            (
                WS_FILE,
                "general: { ws = true, ws_interface = \"no-such-if0\" }",
                "general.ws_interface",
            ),
            (
                HTTP_FILE,
                "general: { http = true, ip = \"eth0\" }",
                "general.ip",
            ),
            (
                HTTP_FILE,
                "general: { http = true, interface = \"no-such-if0\" }",
                "general.interface",
            ),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn acls_become_the_transports_allow_lists() {
        let dir = dir_with(&[
            PLUGIN,
            (
                WS_FILE,
                "general: { ws = true, ws_acl = \"127.,192.168.0.\" }",
            ),
            (HTTP_FILE, "general: { http = true, acl = \"10.0.0.\" }"),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(install.ws_acl.as_deref(), Some("127.,192.168.0."));
        assert_eq!(install.http_acl.as_deref(), Some("10.0.0."));
        // The forwarded-for switch off is no loss; an empty ACL is none, as in Janus.
        std::fs::write(
            dir.join(WS_FILE),
            "general: { ws = true, ws_acl = \"\", ws_acl_forwarded = false }",
        )
        .unwrap();
        std::fs::write(
            dir.join(HTTP_FILE),
            "general: { http = true, acl = \"127.\", acl_forwarded = false }",
        )
        .unwrap();
        let install = read_install(&dir).unwrap();
        assert_eq!(install.ws_acl, None);
        assert_eq!(install.http_acl.as_deref(), Some("127."));
        // A disabled transport's ACL guards nothing.
        std::fs::write(
            dir.join(HTTP_FILE),
            "general: { http = false, acl = \"127.\", acl_forwarded = true }",
        )
        .unwrap();
        assert_eq!(read_install(&dir).unwrap().http_acl, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cors_origins_become_allowed_pages() {
        let dir = dir_with(&[
            PLUGIN,
            (
                WS_FILE,
                "general: { ws = true }\n\
                 cors: { allow_origin = \"https://kvm.example\", enforce_cors = true }",
            ),
            (
                HTTP_FILE,
                "general: { http = true }\ncors: { allow_origin = \"http://dash.example:8000\" }",
            ),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(
            install.allow_origin,
            ["https://kvm.example", "http://dash.example:8000"]
        );
        // Janus's wildcard is every page, as --allow-origin '*'.
        std::fs::write(dir.join(HTTP_FILE), "cors: { allow_origin = \"*\" }").unwrap();
        std::fs::remove_file(dir.join(WS_FILE)).unwrap();
        assert_eq!(read_install(&dir).unwrap().allow_origin, ["*"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tls_only_transport_keeps_its_acl() {
        let dir = dir_with(&[
            PLUGIN,
            (
                WS_FILE,
                "general: { ws = false, wss = true, ws_acl = \"127.\" }\n\
                 certificates: { cert_pem = \"c\" }",
            ),
            (
                HTTP_FILE,
                "general: { http = false, https = true, acl = \"10.\" }\n\
                 certificates: { cert_pem = \"c\", cert_key = \"k\" }",
            ),
        ]);
        let install = read_install(&dir).unwrap();
        assert_eq!(install.ws_acl.as_deref(), Some("127."));
        assert_eq!(install.http_acl.as_deref(), Some("10."));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
