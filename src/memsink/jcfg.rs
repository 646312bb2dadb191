//! Janus `.jcfg` files (libconfig syntax), read so an existing Janus + ustreamer plugin
//! installation can be served by peregrine unchanged: the plugin's memsink name and the
//! transports' ports and addresses.

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
    /// `general.ws_acl` of an enabled WebSocket transport: address prefixes allowed.
    pub ws_acl: Option<String>,
    /// `general.acl` of an enabled HTTP transport.
    pub http_acl: Option<String>,
    /// `cors.allow_origin` of either transport: a web page allowed to use the API.
    pub allow_origin: Vec<String>,
}

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
        ..JanusInstall::default()
    };
    let optional = |name: &str| -> Result<Option<Value>> {
        let path = dir.join(name);
        if path.exists() {
            read(&path).map(Some)
        } else {
            Ok(None)
        }
    };
    let port = |v: &Value, key: &str, file: &str| -> Result<Option<u16>> {
        v.get_int(key)
            .map(|p| {
                u16::try_from(p).map_err(|_| anyhow!("{file}: {key} = {p} is not a port number"))
            })
            .transpose()
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
                    "ws_ip",
                    "ws_interface",
                    "--janus-ws-host",
                )?;
                install.ws_acl = ws.get_str("general.ws_acl");
            }
        }
        install
            .allow_origin
            .extend(allow_origin(&ws, &dir.join(WS_FILE))?);
        refused.extend(unsupported_ws(&ws, !install.ws_off));
    }
    if let Some(http) = optional(HTTP_FILE)? {
        install.http_off = http.get_bool("general.http") != Some(true);
        if !install.http_off {
            install.http_port = port(&http, "general.port", HTTP_FILE)?;
            install.http_ip = bind_address(
                &http,
                &dir.join(HTTP_FILE),
                "ip",
                "interface",
                "--janus-http-host",
            )?;
        }
        install.http_base_path = http.get_str("general.base_path");
        if !install.http_off {
            install.http_acl = http.get_str("general.acl");
        }
        install
            .allow_origin
            .extend(allow_origin(&http, &dir.join(HTTP_FILE))?);
        refused.extend(unsupported_http(&http, !install.http_off));
    }
    if let Some(janus) = optional(CORE_FILE)? {
        install.session_timeout = janus
            .get_int("general.session_timeout")
            .and_then(|t| u64::try_from(t).ok());
        install.rtp_port_range = janus.get_str("media.rtp_port_range");
        install.nat_1_1_ip = janus.get_str("nat.nat_1_1_mapping");
        install.media_ip = ice_enforce_list(&janus, &dir.join(CORE_FILE))?;
        if let Some(list) = janus.get_str("nat.ice_ignore_list") {
            // "vmnet" is the sample's value and names nothing on a usual machine.
            if list.trim() != "vmnet" {
                tracing::warn!(
                    file = %dir.join(CORE_FILE).display(),
                    list,
                    "nat.ice_ignore_list is not used: peregrine offers the --media-host \
                     address (every interface with 0.0.0.0)"
                );
            }
        }
        if let Some(server) = janus.get_str("nat.stun_server") {
            let port = janus.get_int("nat.stun_port").unwrap_or(3478);
            install.stun = Some(format!("stun:{server}:{port}"));
        }
        install.api_secret = janus
            .get_str("general.api_secret")
            .filter(|s| !s.is_empty());
        install.token_auth = janus.get_bool("general.token_auth") == Some(true);
        if install.token_auth {
            install.token_auth_secret = janus
                .get_str("general.token_auth_secret")
                .filter(|s| !s.is_empty());
        }
        if let Some(interface) = janus.get_str("general.interface") {
            // Janus only writes this address into its SDP; it still gathers candidates
            // on every interface, so nothing is exposed that was not before.
            tracing::warn!(
                file = %dir.join(CORE_FILE).display(),
                interface,
                "general.interface is not used: peregrine offers the --host address as \
                 its ICE candidate (every interface with --host 0.0.0.0)"
            );
        }
        if janus.get_str("certificates.cert_pem").is_some() {
            // Not a loss of security: browsers check the DTLS certificate against the
            // fingerprint in the SDP, whichever certificate it is.
            tracing::warn!(
                file = %dir.join(CORE_FILE).display(),
                "certificates.cert_pem is not used: peregrine makes its own DTLS certificate"
            );
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

/// The one address a transport's file binds it to: `ip_key` (an address) wins over
/// `interface_key` (an interface name, or an address), as in Janus. Both are under
/// `general`. A value that names no address of this machine stops the start rather
/// than letting the transport listen more widely than the file says.
fn bind_address(
    v: &Value,
    file: &Path,
    ip_key: &str,
    interface_key: &str,
    flag: &str,
) -> Result<Option<IpAddr>> {
    if let Some(ip) = v.get_str(&format!("general.{ip_key}")) {
        return ip.trim().parse().map(Some).map_err(|_| {
            anyhow!(
                "{}: general.{ip_key} = {ip:?} is not an IP address (set the address the \
                 transport should listen on, e.g. \"127.0.0.1\")",
                file.display()
            )
        });
    }
    let Some(interface) = v.get_str(&format!("general.{interface_key}")) else {
        return Ok(None);
    };
    if let Ok(ip) = interface.trim().parse() {
        return Ok(Some(ip));
    }
    match crate::net::interface_ipv4(interface.trim()) {
        Some(ip) => Ok(Some(ip)),
        None => bail!(
            "{}: general.{interface_key} = {interface:?}: no network interface of that name \
             is up with an IPv4 address; set general.{ip_key} to the address to listen on \
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
fn ice_enforce_list(v: &Value, file: &Path) -> Result<Option<IpAddr>> {
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
    tracing::warn!(
        file = %file.display(),
        list,
        "nat.ice_enforce_list is not used: it names no single interface or address; \
         choose the media address with --media-host"
    );
    Ok(None)
}

/// A security setting peregrine cannot honour: file, setting, what it would lose.
type Refusal = (&'static str, String, &'static str);

/// Secure WebSockets, and the parts of the address ACL peregrine cannot apply.
fn unsupported_ws(ws: &Value, enabled: bool) -> Vec<Refusal> {
    let mut out = Vec::new();
    if ws.get_bool("general.wss") == Some(true) {
        out.push((
            WS_FILE,
            "general.wss = true".into(),
            "secure WebSockets (TLS) are not served; terminate TLS in a proxy in front of peregrine",
        ));
    }
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

/// HTTPS, and the parts of the address ACL peregrine cannot apply.
fn unsupported_http(http: &Value, enabled: bool) -> Vec<Refusal> {
    let mut out = Vec::new();
    if http.get_bool("general.https") == Some(true) {
        out.push((
            HTTP_FILE,
            "general.https = true".into(),
            "HTTPS is not served; terminate TLS in a proxy in front of peregrine",
        ));
    }
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
                ws_acl: None,
                http_acl: None,
                allow_origin: Vec::new(),
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

    const PLUGIN: (&str, &str) = (PLUGIN_FILE, "video: { sink = \"kvmd::ustreamer::h264\" }");

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
            (WS_FILE, "general: { ws = true, wss = true }", "general.wss"),
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
                "general: { http = true, https = true }",
                "general.https",
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
        for (file, text, setting) in cases {
            let dir = dir_with(&[PLUGIN, (file, text)]);
            let err = format!("{:#}", read_install(&dir).unwrap_err());
            assert!(err.contains(setting), "{setting}: {err}");
            assert!(
                err.contains(&dir.join(file).display().to_string()),
                "{setting} names the file: {err}"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        // Settings that lose nothing are accepted: an ACL of a disabled transport, an
        // empty secret, token_auth off, the admin API's secret.
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
        for (file, text, setting) in cases {
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
}
