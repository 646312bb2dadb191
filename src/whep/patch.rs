//! What a PATCH to a WHEP session asks for, decided from its `If-Match`, the session's
//! entity tag, and its fragment (RFC 9725 §4.3, which the WHEP draft follows): an
//! `If-Match` that names another tag fails (412); `If-Match: *` or new ICE credentials
//! mean an ICE restart. Trickle without `If-Match` is taken, as MediaMTX takes it: the
//! `whip-whep` player (by the drafts' author) never sends one with candidates. Pure, so
//! every branch is tested and fuzzed.

use super::sdpfrag::SdpFrag;

/// What to do with a PATCH.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchAction {
    /// Hand the candidates (and end-of-candidates) to the peer: 204.
    Trickle,
    /// An ICE restart was asked for: 200 with our new credentials and a new ETag.
    Restart,
}

/// Why a PATCH is refused, with its status.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchRefusal {
    /// 412: `If-Match` names another tag.
    PreconditionFailed,
}

/// Decide a PATCH: `if_match` as sent, `etag` the session's (quoted), `remote_ufrag`
/// the ICE username fragment of the client's offer.
pub fn decide(
    if_match: Option<&str>,
    etag: &str,
    remote_ufrag: Option<&str>,
    frag: &SdpFrag,
) -> Result<PatchAction, PatchRefusal> {
    if let Some(if_match) = if_match.map(str::trim) {
        if if_match == "*" {
            return Ok(PatchAction::Restart);
        }
        // A list of tags (RFC 9110 §13.1.1): the current one anywhere in it matches; a
        // weak tag never does.
        if !if_match.split(',').map(str::trim).any(|t| t == etag) {
            return Err(PatchRefusal::PreconditionFailed);
        }
    }
    let new_credentials = frag
        .ufrag
        .as_deref()
        .is_some_and(|u| remote_ufrag.is_some_and(|r| r != u));
    if new_credentials {
        return Ok(PatchAction::Restart);
    }
    Ok(PatchAction::Trickle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"abc\"";

    fn frag(ufrag: Option<&str>) -> SdpFrag {
        SdpFrag {
            ufrag: ufrag.map(str::to_string),
            ..SdpFrag::default()
        }
    }

    #[test]
    fn trickle_needs_the_current_tag_if_any() {
        let f = frag(Some("client"));
        assert_eq!(
            decide(Some(TAG), TAG, Some("client"), &f),
            Ok(PatchAction::Trickle)
        );
        assert_eq!(
            decide(Some("\"x\", \"abc\""), TAG, Some("client"), &f),
            Ok(PatchAction::Trickle)
        );
        assert_eq!(
            decide(Some(TAG), TAG, None, &frag(None)),
            Ok(PatchAction::Trickle)
        );
        assert_eq!(
            decide(None, TAG, Some("client"), &f),
            Ok(PatchAction::Trickle),
            "whip-whep trickles without If-Match"
        );
        assert_eq!(
            decide(Some("\"other\""), TAG, Some("client"), &f),
            Err(PatchRefusal::PreconditionFailed)
        );
        assert_eq!(
            decide(Some("W/\"abc\""), TAG, Some("client"), &f),
            Err(PatchRefusal::PreconditionFailed)
        );
    }

    #[test]
    fn a_star_or_new_credentials_ask_for_a_restart() {
        assert_eq!(
            decide(Some("*"), TAG, Some("client"), &frag(Some("fresh"))),
            Ok(PatchAction::Restart)
        );
        assert_eq!(
            decide(Some(TAG), TAG, Some("client"), &frag(Some("fresh"))),
            Ok(PatchAction::Restart)
        );
        assert_eq!(
            decide(None, TAG, Some("client"), &frag(Some("fresh"))),
            Ok(PatchAction::Restart)
        );
    }
}
