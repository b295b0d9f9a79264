//! A scripted browser for the OAuth tests: a cookie jar per origin, forms, and redirects
//! followed on request, over raw HTTP/1.1.
use std::{collections::HashMap, net::SocketAddr};

use serde_json::Value;

use super::{Host, exchange};

/// An HTTP answer, as a browser reads it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The query parameters of the redirect this answer is.
    pub fn redirect_params(&self) -> HashMap<String, String> {
        let loc = self
            .header("location")
            .unwrap_or_else(|| panic!("no redirect: {self:?}"));
        let url = url::Url::parse(loc).unwrap();
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A browser: a cookie jar per origin, and forms; it never follows redirects by itself
/// ([`Browser::follow`] does). Paths go to its home origin (the authorization server);
/// `http://HOST:PORT/...` URLs to theirs.
pub struct Browser {
    addr: SocketAddr,
    cookies: HashMap<SocketAddr, HashMap<String, String>>,
}

impl Browser {
    pub fn new(host: &Host) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], host.authz_port())),
            cookies: HashMap::new(),
        }
    }

    pub fn send(&mut self, method: &str, target: &str, extra: &str, body: &str) -> Answer {
        let (addr, target) = match target.strip_prefix("http://") {
            Some(rest) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let addr: SocketAddr = authority.parse().expect("http://IP:PORT");
                (addr, if path.is_empty() { "/" } else { path })
            }
            None => (self.addr, target),
        };
        let jar = self.cookies.entry(addr).or_default();
        let cookie = if jar.is_empty() {
            String::new()
        } else {
            let c: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("cookie: {}\r\n", c.join("; "))
        };
        let raw = format!(
            "{method} {target} HTTP/1.1\r\nhost: {addr}\r\n{cookie}{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = exchange(addr, raw.as_bytes()).unwrap();
        let headers: Vec<(String, String)> = r
            .head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("set-cookie")
                && let Some((name, rest)) = v.split_once('=')
            {
                self.cookies.entry(addr).or_default().insert(
                    name.trim().to_string(),
                    rest.split(';').next().unwrap().to_string(),
                );
            }
        }
        let body = match r.body {
            Value::String(s) => s,
            v => v.to_string(),
        };
        Answer {
            status: r.status,
            headers,
            body,
        }
    }

    pub fn get(&mut self, target: &str) -> Answer {
        self.send("GET", target, "", "")
    }

    pub fn post_form(
        &mut self,
        target: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Answer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let origin = origin.map_or(String::new(), |o| format!("origin: {o}\r\n"));
        self.send(
            "POST",
            target,
            &format!("{origin}content-type: application/x-www-form-urlencoded\r\n"),
            &body,
        )
    }

    pub fn post_json(&mut self, target: &str, v: &Value) -> Answer {
        self.send(
            "POST",
            target,
            "content-type: application/json\r\n",
            &v.to_string(),
        )
    }

    /// GETs `target`, then each redirect (relative ones on the same origin), at most `max`;
    /// the last answer, and the URL it answered.
    pub fn follow(&mut self, target: &str, max: usize) -> (Answer, String) {
        let mut url = target.to_string();
        for _ in 0..max {
            let a = self.get(&url);
            let Some(loc) = a
                .header("location")
                .filter(|_| (300..400).contains(&a.status))
            else {
                return (a, url);
            };
            url = if loc.starts_with("http://") {
                loc.to_string()
            } else {
                let base = url::Url::parse(&if url.starts_with("http://") {
                    url.clone()
                } else {
                    format!("{}{url}", self.origin())
                })
                .unwrap();
                base.join(loc).unwrap().to_string()
            };
        }
        panic!("more than {max} redirects from {target}");
    }

    /// The cookies of its home origin.
    pub fn cookies(&mut self) -> &mut HashMap<String, String> {
        self.cookies.entry(self.addr).or_default()
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}
