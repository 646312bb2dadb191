//! The command line as a user meets it: `--help`, error messages and exit status of the
//! real binary (2: what was asked for is wrong; 1: starting or running failed).

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

fn peregrine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run peregrine")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_groups_the_flags_and_shows_examples() {
    let out = peregrine(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in [
        "Input:",
        "Encoder:",
        "WebRTC:",
        "Janus API:",
        "Relays (JSMpeg, jmuxer):",
        "Memsink output (as µStreamer):",
        "Logging:",
        "Examples:",
        "Exit status:",
    ] {
        assert!(help.contains(heading), "no {heading:?} in\n{help}");
    }
    assert!(help.contains("--udp-port-range <FIRST-LAST>"), "{help}");
    assert!(!help.contains("<JANUS_WS_PORT>"), "{help}");
    assert!(!help.contains("<UDP_PORT_RANGE>"), "{help}");
}

#[test]
fn a_port_range_in_another_form_says_which_form_is_expected() {
    let out = peregrine(&["--udp-port-range", "29000:29100"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("expected FIRST-LAST, e.g. 20000-20100"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn url_sources_that_are_not_supported_list_what_is() {
    for source in ["http://camera.local/video", "rtsp://camera.local/h264"] {
        let out = peregrine(&["--source", source]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("is not supported"), "{err}");
        assert!(
            err.contains("tcp-listen://IP:PORT") && err.contains("testsrc"),
            "{err}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_runtime_failures_exit_1() {
    // Something wrong in what was asked for: 2, whether clap, the value check or the
    // named source finds it.
    for args in [
        &["--no-such-flag"][..],
        &["--resolution", "big"],
        &["--source", "/nonexistent/clip.h264"],
        &["--source", "nosuchsource"],
        &[
            "--source",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/testsrc_160x120.ts"
            ),
        ],
    ] {
        let out = peregrine(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A port another process holds: a failure while starting, 1.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = peregrine(&[
        "--host",
        "127.0.0.1",
        "--udp-port-range",
        "0",
        "--source",
        "testsrc",
        "--port",
        &port,
        "--janus-ws-port",
        "0",
        "--janus-http-port",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot listen"), "{}", stderr(&out));
}

#[test]
fn an_m2m_encoder_path_that_is_not_one_stops_the_start_naming_the_flag() {
    for (device, why) in [
        ("/dev/null", "is not a V4L2 device"),
        ("/nonexistent/video11", "does not exist"),
    ] {
        let out = peregrine(&[
            "--source",
            "testsrc",
            "--h264-m2m-device",
            device,
            "--port",
            "0",
            "--janus-ws-port",
            "0",
            "--janus-http-port",
            "0",
            "--udp-port-range",
            "0",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("--h264-m2m-device {device}")) && err.contains(why),
            "{err}"
        );
    }
}
