//! ICE restarts of peers that answered (WHEP viewers). The viewer's new credentials go
//! in as a renegotiation offer: its first offer with the ufrag and password replaced.
//! The stack then restarts its agent with fresh credentials of its own (answering peers
//! are built without fixed ones, see [`super::peer::Peer::answer`]), and its answer
//! carries them; the router follows. DTLS, SSRCs and sequence numbers go on unchanged.

/// Our side of a restarted ICE session, as a WHEP PATCH answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalIce {
    pub ufrag: String,
    pub pwd: String,
    /// `candidate:...` values (without `a=`).
    pub candidates: Vec<String>,
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP.
pub fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let value = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix))
            .map(|v| v.trim().to_string())
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

/// What an answer tells the viewer of our restarted side.
pub fn local_ice(answer: &str) -> Option<LocalIce> {
    let (ufrag, pwd) = ice_credentials(answer)?;
    let mut candidates: Vec<String> = answer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a="))
        .filter(|a| a.starts_with("candidate:"))
        // RTP only: WebRTC muxes RTCP onto it (RFC 8834 §4.5), so component 2 is
        // noise, and the whip-whep player joins more than one candidate wrongly.
        .filter(|a| a.split(' ').nth(1) == Some("1"))
        .map(str::to_string)
        .collect();
    // Each media section repeats them (bundled on one transport).
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert(c.clone()));
    Some(LocalIce {
        ufrag,
        pwd,
        candidates,
    })
}

/// The renegotiation offer that restarts ICE: `offer` with every ufrag and password
/// replaced, and its candidates and end-of-candidates left out (the new session's come
/// trickled, and old ones would be checked with the new password).
pub fn restart_offer(offer: &str, ufrag: &str, pwd: &str) -> String {
    offer
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("a=candidate:") && *l != "a=end-of-candidates")
        .map(|l| {
            if l.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{ufrag}\r\n")
            } else if l.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{pwd}\r\n")
            } else {
                format!("{l}\r\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpassword\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        a=candidate:1 2 udp 2130706430 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpassword\r\n";

    #[test]
    fn the_restart_offer_has_only_the_new_credentials_and_no_candidates() {
        let offer = restart_offer(OFFER, "new1", "newpassword");
        assert_eq!(offer.matches("a=ice-ufrag:new1\r\n").count(), 2);
        assert_eq!(offer.matches("a=ice-pwd:newpassword\r\n").count(), 2);
        assert!(!offer.contains("old"), "{offer}");
        assert!(!offer.contains("candidate"), "{offer}");
        assert!(offer.starts_with("v=0\r\no=- 1 2") && offer.contains("a=mid:1\r\n"));
        assert_eq!(
            ice_credentials(&offer),
            Some(("new1".into(), "newpassword".into()))
        );
    }

    #[test]
    fn our_side_is_read_from_the_answer_once_per_rtp_candidate() {
        let ice = local_ice(OFFER).expect("credentials");
        assert_eq!(
            (ice.ufrag.as_str(), ice.pwd.as_str()),
            ("old1", "oldpassword")
        );
        assert_eq!(
            ice.candidates,
            vec!["candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".to_string()]
        );
        assert_eq!(local_ice("v=0\r\na=ice-ufrag:x\r\n"), None);
    }
}
