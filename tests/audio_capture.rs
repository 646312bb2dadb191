//! The sound of the real peregrine binary: what `/state` and `/metrics` say of each
//! stream's sound source.

mod support;

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use support::Server;

fn audio(state: &Value) -> &Value {
    &state["streams"]["default"]["audio"]
}

#[tokio::test]
async fn the_default_program_has_the_test_tone_idle_until_somebody_listens() -> Result<()> {
    let server = Server::start(&[]).await?;
    let state = server.state().await?;
    let sound = audio(&state);
    assert_eq!(sound["source"], "tone", "{sound}");
    assert_eq!(sound["state"], "idle", "{sound}");
    assert_eq!(sound["listeners"], 0);
    assert_eq!(sound["frames"], 0, "nothing is made for nobody");
    let (status, body) = support::http_request(server.http_port, "GET", "/metrics", None).await?;
    let metrics = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("peregrine_audio_frames_total{stream=\"default\"} 0"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_without_sound_says_so() -> Result<()> {
    let server = Server::start(&["--audio", "none"]).await?;
    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["streams"]["default"].is_object()
        })
        .await?;
    assert!(audio(&state).is_null(), "{state}");
    Ok(())
}
