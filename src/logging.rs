//! Log output: which messages (`--log-level`, `RUST_LOG`), in which shape (`--log-format`),
//! with colour only on a terminal.
//!
//! By default peregrine's own messages show from `info` up and the libraries' from
//! `warn` up, minus library warnings that are expected and tell a user nothing.
//! `RUST_LOG` takes the usual `tracing` directives and is applied after these defaults,
//! so it wins for every target it names; a bare level in it (`RUST_LOG=debug`) sets
//! every library and, unless `--log-level` was given, peregrine too.

use std::io::IsTerminal;

use anyhow::{anyhow, Result};
use tracing::Level;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Library messages that are routine and quieted by default.
const QUIETED: &[&str] = &[
    // The DTLS layer warns for every ClientHello extension it does not implement; a
    // browser offers about 18 of them per connection, and skipping them is correct.
    "rtc_dtls::handshake=error",
];

/// Targets that are peregrine's own: the library and both binaries.
const OURS: &[&str] = &["peregrine", "peregrine_load"];

/// The filter directives for `level` (peregrine's own), `level_given` (it came from the
/// command line or the file) and the `RUST_LOG` value, if any.
pub fn directives(level: Level, level_given: bool, rust_log: Option<&str>) -> String {
    let rust_log = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let bare = rust_log.and_then(|r| {
        r.split(',')
            .map(str::trim)
            .filter(|d| !d.contains('=') && !d.contains('['))
            .filter_map(|d| d.parse::<tracing_subscriber::filter::LevelFilter>().ok())
            .next_back()
    });
    let ours = match bare {
        Some(filter) if !level_given => filter.to_string().to_ascii_lowercase(),
        _ => level.as_str().to_ascii_lowercase(),
    };
    let mut parts = vec!["warn".to_string()];
    parts.extend(QUIETED.iter().map(|q| q.to_string()));
    parts.extend(OURS.iter().map(|t| format!("{t}={ours}")));
    parts.extend(rust_log.map(String::from));
    parts.join(",")
}

/// The filter from [`directives`]; an unreadable `RUST_LOG` is an error naming it.
pub fn filter(level: Level, level_given: bool, rust_log: Option<&str>) -> Result<EnvFilter> {
    let text = directives(level, level_given, rust_log);
    EnvFilter::builder().parse(&text).map_err(|e| {
        anyhow!(
            "RUST_LOG {:?} is not a valid filter: {e}",
            rust_log.unwrap_or("")
        )
    })
}

/// Colour codes only when a person is watching: not in files, pipes or the journal.
pub fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Install the global subscriber, writing to stderr; `colour` overrides
/// [`use_colour`] (µStreamer's `--force-log-colors` and `--no-log-colors`).
pub fn init(filter: EnvFilter, format: LogFormat, colour: Option<bool>) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let colour = colour.unwrap_or_else(use_colour);
    match format {
        LogFormat::Text => builder.with_target(false).with_ansi(colour).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_libraries_at_warn_and_quiet_known_noise() {
        let d = directives(Level::INFO, false, None);
        assert_eq!(
            d,
            "warn,rtc_dtls::handshake=error,peregrine=info,peregrine_load=info"
        );
        assert!(filter(Level::INFO, false, None).is_ok());
    }

    #[test]
    fn log_level_sets_ours_and_rust_log_is_applied_after() {
        let d = directives(Level::DEBUG, true, Some("rtc_ice=trace"));
        assert!(d.contains("peregrine=debug"), "{d}");
        assert!(d.ends_with(",rtc_ice=trace"), "{d}");
    }

    #[test]
    fn a_bare_rust_log_level_covers_peregrine_unless_the_flag_was_given() {
        let d = directives(Level::INFO, false, Some("debug"));
        assert!(
            d.contains("peregrine=debug") && d.ends_with(",debug"),
            "{d}"
        );
        let d = directives(Level::WARN, true, Some("debug"));
        assert!(d.contains("peregrine=warn"), "{d}");
    }

    #[test]
    fn a_bad_rust_log_is_an_error() {
        let err = filter(Level::INFO, false, Some("peregrine=loud")).unwrap_err();
        assert!(format!("{err:#}").contains("RUST_LOG"), "{err:#}");
    }
}
