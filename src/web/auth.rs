//! Who may use the web app: the rules every request passes before a page
//! or an action runs. Pure, so each rule is tested alone.
//!
//! - The server listens on 127.0.0.1 only. A request whose `Host` is not
//!   exactly the address it was given is refused (403): a web page that
//!   rebinds its own DNS name to 127.0.0.1 sends its own name as `Host`.
//! - A per-session token (random, 256 bits) opens the app: it comes in the
//!   URL `latus ui` prints once, is turned into a cookie (`HttpOnly`,
//!   `SameSite=Strict`) and taken out of the address bar. A request with
//!   neither gets 401.
//! - A request that changes something (POST) also needs the CSRF token
//!   (a second random value the pages embed in their forms), and an
//!   `Origin`, when the browser sends one, that is the app's own.

pub const COOKIE: &str = "latus_session";

/// What the server was given at start.
#[derive(Debug, Clone)]
pub struct Keys {
    pub session: String,
    pub csrf: String,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

impl Keys {
    pub fn new(host: String) -> Self {
        Self {
            session: random_token(),
            csrf: random_token(),
            host,
        }
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.host)
    }
}

/// The parts of a request the rules look at.
#[derive(Debug, Default)]
pub struct Seen<'a> {
    pub post: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub cookie: Option<&'a str>,
    /// `token=` in the query.
    pub url_token: Option<&'a str>,
    /// `csrf=` in the query, or the `X-Latus-Csrf` header.
    pub csrf: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The token came in the URL: set the cookie and load the page again
    /// without it.
    SetCookie,
    Deny(u16, &'static str),
}

pub fn judge(keys: &Keys, r: &Seen) -> Verdict {
    if r.host != Some(keys.host.as_str()) {
        return Verdict::Deny(
            403,
            "this address is not the one latus serves (open the app with `latus ui`)",
        );
    }
    let by_cookie = r.cookie.is_some_and(|c| same(c, &keys.session));
    let by_url = r.url_token.is_some_and(|t| same(t, &keys.session));
    if !by_cookie && !by_url {
        return Verdict::Deny(
            401,
            "no session: open the app with `latus ui` (its address carries a token)",
        );
    }
    if r.post {
        if r.origin.is_some_and(|o| o != keys.origin()) {
            return Verdict::Deny(403, "a request from another site was refused");
        }
        if !r.csrf.is_some_and(|c| same(c, &keys.csrf)) {
            return Verdict::Deny(403, "a change without this page's form token was refused");
        }
        if !by_cookie {
            return Verdict::Deny(401, "no session cookie");
        }
        return Verdict::Pass;
    }
    if by_url && !by_cookie {
        Verdict::SetCookie
    } else {
        Verdict::Pass
    }
}

/// The session token from a `Cookie` header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE).then_some(v)
    })
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS gives random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("127.0.0.1:4000".into())
    }

    fn get<'a>(k: &'a Keys) -> Seen<'a> {
        Seen {
            host: Some(&k.host),
            cookie: Some(&k.session),
            ..Default::default()
        }
    }

    #[test]
    fn a_session_is_needed() {
        let k = keys();
        assert_eq!(judge(&k, &get(&k)), Verdict::Pass);
        let none = Seen {
            cookie: None,
            ..get(&k)
        };
        assert!(matches!(judge(&k, &none), Verdict::Deny(401, _)));
        let wrong = Seen {
            cookie: Some("00"),
            ..get(&k)
        };
        assert!(matches!(judge(&k, &wrong), Verdict::Deny(401, _)));
        let url = Seen {
            cookie: None,
            url_token: Some(&k.session),
            ..get(&k)
        };
        assert_eq!(judge(&k, &url), Verdict::SetCookie);
        // Another daemon's token opens nothing here.
        let other = keys();
        let stale = Seen {
            cookie: Some(&other.session),
            ..get(&k)
        };
        assert!(matches!(judge(&k, &stale), Verdict::Deny(401, _)));
    }

    #[test]
    fn another_host_is_refused_even_with_the_token() {
        let k = keys();
        for host in [
            "evil.example:4000",
            "localhost:4000",
            "127.0.0.1:4001",
            "127.0.0.1",
        ] {
            let r = Seen {
                host: Some(host),
                ..get(&k)
            };
            assert!(matches!(judge(&k, &r), Verdict::Deny(403, _)), "{host}");
        }
        let r = Seen {
            host: None,
            ..get(&k)
        };
        assert!(matches!(judge(&k, &r), Verdict::Deny(403, _)));
    }

    #[test]
    fn changes_need_the_form_token_and_our_origin() {
        let k = keys();
        let origin = k.origin();
        let ok = Seen {
            post: true,
            origin: Some(&origin),
            csrf: Some(&k.csrf),
            ..get(&k)
        };
        assert_eq!(judge(&k, &ok), Verdict::Pass);
        let no_csrf = Seen {
            csrf: None,
            ..Seen {
                post: true,
                origin: Some(&origin),
                ..get(&k)
            }
        };
        assert!(matches!(judge(&k, &no_csrf), Verdict::Deny(403, _)));
        let session_as_csrf = Seen {
            post: true,
            csrf: Some(&k.session),
            ..get(&k)
        };
        assert!(matches!(judge(&k, &session_as_csrf), Verdict::Deny(403, _)));
        let cross = Seen {
            post: true,
            origin: Some("http://evil.example"),
            csrf: Some(&k.csrf),
            ..get(&k)
        };
        assert!(matches!(judge(&k, &cross), Verdict::Deny(403, _)));
        // A token in the URL opens pages, never changes.
        let by_url = Seen {
            post: true,
            cookie: None,
            url_token: Some(&k.session),
            csrf: Some(&k.csrf),
            ..get(&k)
        };
        assert!(matches!(judge(&k, &by_url), Verdict::Deny(401, _)));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(cookie_value("a=1; latus_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("a=1"), None);
    }
}
