//! Cross-site request forgery defence for the web pages' forms that change something (the
//! Marketplace upload, the Storage page's create, update, attach, detach and delete).
//!
//! Every such form carries a per-session token in a hidden field ([`FIELD`]); a POST is taken
//! only if the token is the session's and the request's `Origin`, when it has one, is this
//! site (the login form's check, [`super::same_origin`]). The token is an HMAC-SHA-256 of a
//! fixed label keyed with the session's secret (the API token in the `stratus_session`
//! cookie): any controller node can derive and check it without storing anything, it dies
//! with the session, and it says nothing about the secret (an HMAC cannot be inverted), so it
//! can sit in the page. It is compared in constant time (`ring::hmac::verify`).
//!
//! The pages' scripts that call the JSON API with `fetch` (the console stream, the event
//! stream) only read. A write through the JSON API would not need this token: the session
//! cookie is `SameSite=Strict`, so no other site's page makes the browser send it, and API
//! bodies must be `application/json`, which a cross-site form cannot send and a cross-site
//! `fetch` can only send after a CORS preflight this controller never grants.

use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

use crate::api::extract::session_cookie;

/// The name of the forms' hidden field holding the token.
pub const FIELD: &str = "csrf";

/// What the token is an HMAC of: fixed, versioned, and used for nothing else.
const LABEL: &[u8] = b"stratuslab web form token v1";

/// Why a form's POST is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// The request's `Origin` is another site.
    #[error("This form can only be sent from this site.")]
    OtherSite,
    /// The form came without its token, or with one that is not this session's (an old page,
    /// another session's, or forged).
    #[error("This form's security token is missing or wrong: reload the page and send it again.")]
    BadToken,
}

impl crate::failure::Failure for CsrfError {
    fn kind(&self) -> crate::failure::Kind {
        crate::failure::Kind::Forbidden
    }

    fn code(&self) -> &'static str {
        "csrf"
    }
}

fn key(session_secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, session_secret.as_bytes())
}

/// The form token of the session whose secret is `session_secret`.
pub fn token_of(session_secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac::sign(&key(session_secret), LABEL))
}

/// Whether `presented` is the form token of the session whose secret is `session_secret`,
/// compared in constant time.
pub fn is_token_of(session_secret: &str, presented: &str) -> bool {
    let Ok(tag) = URL_SAFE_NO_PAD.decode(presented.trim()) else {
        return false;
    };
    hmac::verify(&key(session_secret), LABEL, &tag).is_ok()
}

/// The form token of the request's session, for the forms of the page it is answered with
/// (empty without a session: such a page is never shown, the viewer is sent to log in).
pub fn token(headers: &HeaderMap) -> String {
    session_cookie(&super::parts_of(headers))
        .map(|secret| token_of(&secret))
        .unwrap_or_default()
}

/// Checks a form's POST: its `Origin` (if any) is `host`, the site the client asked for, and
/// `presented` is the token of the session the request's cookie holds.
pub fn check(
    headers: &HeaderMap,
    host: Option<&str>,
    presented: Option<&str>,
) -> Result<(), CsrfError> {
    if !super::same_origin(headers, host) {
        return Err(CsrfError::OtherSite);
    }
    let secret = session_cookie(&super::parts_of(headers)).ok_or(CsrfError::BadToken)?;
    match presented {
        Some(presented) if is_token_of(&secret, presented) => Ok(()),
        _ => Err(CsrfError::BadToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderValue};

    const SECRET: &str = "stk_0123456789abcdef";

    fn request(cookie: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(secret) = cookie {
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("other=1; stratus_session={secret}")).unwrap(),
            );
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn a_token_is_its_sessions_and_no_other() {
        let token = token_of(SECRET);
        assert_eq!(
            token,
            token_of(SECRET),
            "derived, not random: any node agrees"
        );
        assert!(is_token_of(SECRET, &token));
        assert!(!is_token_of("stk_another-session", &token));
        assert_ne!(token, token_of("stk_another-session"));
        // It is not the secret, nor does it contain it.
        assert!(!token.contains(SECRET));
        // One character changed, cut short, empty, not base64: refused.
        let mut changed = token.clone().into_bytes();
        changed[0] = if changed[0] == b'A' { b'B' } else { b'A' };
        assert!(!is_token_of(SECRET, &String::from_utf8(changed).unwrap()));
        assert!(!is_token_of(SECRET, &token[..token.len() - 1]));
        assert!(!is_token_of(SECRET, ""));
        assert!(!is_token_of(SECRET, "not base64!"));
    }

    #[test]
    fn a_post_needs_this_sites_origin_and_its_sessions_token() {
        let host = Some("ctl1.example.org:8440");
        let token = token_of(SECRET);
        let good = request(Some(SECRET), Some("https://ctl1.example.org:8440"));
        assert_eq!(check(&good, host, Some(&token)), Ok(()));
        // No Origin header (some browsers omit it on same-site posts): the token decides.
        assert_eq!(
            check(&request(Some(SECRET), None), host, Some(&token)),
            Ok(())
        );
        assert_eq!(check(&good, host, None), Err(CsrfError::BadToken));
        assert_eq!(check(&good, host, Some("forged")), Err(CsrfError::BadToken));
        assert_eq!(
            check(&good, host, Some(&token_of("stk_another-session"))),
            Err(CsrfError::BadToken)
        );
        assert_eq!(
            check(
                &request(Some(SECRET), Some("https://evil.example")),
                host,
                Some(&token)
            ),
            Err(CsrfError::OtherSite)
        );
        assert_eq!(
            check(&request(None, None), host, Some(&token)),
            Err(CsrfError::BadToken)
        );
        // The page's forms get the token of the session that asked for it.
        assert_eq!(super::token(&good), token);
    }

    #[test]
    fn the_refusal_is_forbidden_and_says_what_to_do() {
        use crate::failure::{Failure, Kind};
        assert_eq!(CsrfError::BadToken.kind(), Kind::Forbidden);
        assert!(CsrfError::BadToken.to_string().contains("reload the page"));
    }
}
