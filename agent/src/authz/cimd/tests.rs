//! The fetcher against a local HTTPS server that answers what each test scripts. The server is
//! on loopback, so it is refused unless the test allows 127.0.0.1: the public-address happy path
//! cannot be tested offline, and is tested here through an allowed private network.
mod server;

use std::time::Duration;

use serde_json::json;

use self::server::{JSON, Server, Step, doc, json_head, serving, serving_its_document};
use super::{client_id::UrlError, document::DocumentError, guard::Class, *};

#[tokio::test]
async fn a_loopback_server_is_refused_unless_allowed() {
    let server = serving_its_document().await;
    let url = server.url("127.0.0.1");

    let refused = server.fetcher(&[], Limits::default()).get(&url).await;
    assert_eq!(
        refused,
        Err(CimdError::Forbidden {
            host: "127.0.0.1".into(),
            addr: "127.0.0.1".parse().unwrap(),
            class: Class::Loopback,
        })
    );
    let other_net = server.fetcher(&["10.0.0.0/8", "127.0.0.2/32"], Limits::default());
    assert!(matches!(
        other_net.get(&url).await,
        Err(CimdError::Forbidden { .. })
    ));
    assert_eq!(
        server.accepted(),
        0,
        "a refused address is never connected to"
    );

    let fetcher = server.allowing_loopback();
    let document = fetcher.get(&url).await.unwrap();
    assert_eq!(document.client_id.as_str(), url);
    assert_eq!(document.client_name.as_deref(), Some("Test client"));
    assert_eq!(
        document.redirect_uris[0].as_str(),
        "http://127.0.0.1:33418/callback"
    );
    assert_eq!(server.accepted(), 1);

    // Cached: the same client is not fetched again.
    assert_eq!(fetcher.get(&url).await.unwrap(), document);
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn a_name_is_checked_by_every_address_it_resolves_to() {
    let server = serving_its_document().await;
    let url = server.url("localhost");
    let refused = server.fetcher(&[], Limits::default()).get(&url).await;
    let Err(CimdError::Forbidden { host, addr, class }) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!((host.as_str(), class), ("localhost", Class::Loopback));
    assert!(addr.is_loopback());
    assert_eq!(server.accepted(), 0);

    // Allowed, the name is connected to at the address checked, and the certificate is
    // checked for the name. (The document names its 127.0.0.1 URL, not this one.)
    let fetcher = server.fetcher(&["127.0.0.0/8", "::1/128"], Limits::default());
    let got = fetcher.get(&url).await;
    assert!(
        matches!(
            got,
            Err(CimdError::Document(DocumentError::ClientIdMismatch { .. }))
        ),
        "{got:?}"
    );
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn addresses_written_as_the_host_are_checked_too() {
    let fetcher = Fetcher::new(vec![], native_roots(), Limits::default()).unwrap();
    for (url, class) in [
        ("https://127.0.0.1/x", Class::Loopback),
        ("https://[::1]/x", Class::Loopback),
        ("https://[::ffff:7f00:1]/x", Class::Loopback),
        ("https://[::ffff:a9fe:a9fe]/latest", Class::LinkLocal),
        ("https://169.254.169.254/latest/meta-data", Class::LinkLocal),
        ("https://10.0.0.1/x", Class::Private),
        ("https://100.64.0.1/x", Class::Shared),
        ("https://0.0.0.0/x", Class::Unspecified),
        ("https://[::]/x", Class::Unspecified),
        ("https://[fe80::1]/x", Class::LinkLocal),
        ("https://[fd00::1]/x", Class::UniqueLocal),
        ("https://[64:ff9b::7f00:1]/x", Class::Loopback),
        ("https://224.0.0.1/x", Class::Multicast),
        ("https://255.255.255.255/x", Class::Broadcast),
    ] {
        let got = fetcher.get(url).await;
        assert!(
            matches!(got, Err(CimdError::Forbidden { class: c, .. }) if c == class),
            "{url}: {got:?}"
        );
    }
    // Other spellings of loopback are not even client IDs.
    for url in [
        "https://0x7f.1/x",
        "https://2130706433/x",
        "https://017700000001/x",
        "https://[::ffff:127.0.0.1]/x",
    ] {
        let got = fetcher.get(url).await;
        assert!(
            matches!(got, Err(CimdError::Url(UrlError::NotCanonical { .. }))),
            "{url}: {got:?}"
        );
    }
}

#[tokio::test]
async fn userinfo_is_refused_before_connecting() {
    let server = serving_its_document().await;
    let url = format!("https://evil@127.0.0.1:{}/client.json", server.addr.port());
    let got = server.allowing_loopback().get(&url).await;
    assert_eq!(got, Err(CimdError::Url(UrlError::Userinfo)));
    assert_eq!(server.accepted(), 0);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = serving_its_document().await;
    let location = target.url("127.0.0.1");
    let head = format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0");
    let server = Server::answering(&head, b"").await;
    let got = server
        .allowing_loopback()
        .get(&server.url("127.0.0.1"))
        .await;
    assert_eq!(
        got,
        Err(CimdError::Redirect {
            status: 302,
            location: Some(location)
        })
    );
    assert_eq!(target.accepted(), 0);
}

#[tokio::test]
async fn a_large_body_is_refused_while_it_is_read() {
    // Streamed slowly, chunked, with no declared length: refused at the limit, before the
    // time limit and before the whole body arrived.
    let chunk = vec![b' '; 8 * 1024];
    let server = Server::start(move || {
        let mut steps = vec![Step::Write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec(),
        )];
        for _ in 0..40 {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            steps.push(Step::Write(framed));
            steps.push(Step::Sleep(Duration::from_millis(20)));
        }
        steps.push(Step::Sleep(Duration::from_secs(30)));
        steps
    })
    .await;
    let got = server
        .allowing_loopback()
        .get(&server.url("127.0.0.1"))
        .await;
    assert_eq!(got, Err(CimdError::TooLarge(64 * 1024)));

    // Declared too large: refused on the declaration.
    let server = Server::start(|| {
        vec![
            Step::Write(format!("{}\r\n\r\n{{", json_head(1 << 20)).into_bytes()),
            Step::Sleep(Duration::from_secs(30)),
        ]
    })
    .await;
    let got = server
        .allowing_loopback()
        .get(&server.url("127.0.0.1"))
        .await;
    assert_eq!(got, Err(CimdError::TooLarge(64 * 1024)));
}

#[tokio::test]
async fn a_body_longer_than_declared_is_cut_at_the_declared_length() {
    let server = serving_its_document().await;
    let body = doc(&server.url("127.0.0.1")).to_string();
    let long = Server::start(move || {
        vec![
            Step::Write(format!("{}\r\n\r\n", json_head(10)).into_bytes()),
            Step::Write(body.repeat(200).into_bytes()),
        ]
    })
    .await;
    let got = long.allowing_loopback().get(&long.url("127.0.0.1")).await;
    assert!(
        matches!(got, Err(CimdError::Document(DocumentError::Json(_)))),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_slow_server_runs_into_the_time_limit() {
    let limits = Limits {
        timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    // No answer at all.
    let silent = Server::start(|| vec![Step::Sleep(Duration::from_secs(30))]).await;
    let got = silent
        .fetcher(&["127.0.0.1/32"], limits.clone())
        .get(&silent.url("127.0.0.1"))
        .await;
    assert_eq!(got, Err(CimdError::Timeout(limits.timeout)));

    // A byte at a time: each byte comes soon enough, the whole does not.
    let drip = Server::start(|| {
        let mut steps = vec![Step::Write(
            format!("{}\r\n\r\n", json_head(1000)).into_bytes(),
        )];
        for _ in 0..1000 {
            steps.push(Step::Write(b" ".to_vec()));
            steps.push(Step::Sleep(Duration::from_millis(50)));
        }
        steps
    })
    .await;
    let got = drip
        .fetcher(&["127.0.0.1/32"], limits.clone())
        .get(&drip.url("127.0.0.1"))
        .await;
    assert_eq!(got, Err(CimdError::Timeout(limits.timeout)));
}

async fn get_from(server: &Server) -> Fetched {
    server
        .allowing_loopback()
        .get(&server.url("127.0.0.1"))
        .await
}

#[tokio::test]
async fn a_document_must_be_the_clients_own() {
    use DocumentError::*;
    let other = serving(JSON, |_| doc("https://other.example/client.json")).await;
    assert_eq!(
        get_from(&other).await,
        Err(CimdError::Document(ClientIdMismatch {
            found: "https://other.example/client.json".into()
        }))
    );
    let no_redirects = serving(JSON, |url| json!({ "client_id": url })).await;
    assert_eq!(
        get_from(&no_redirects).await,
        Err(CimdError::Document(RedirectUrisMissing))
    );
    let relative = serving(
        JSON,
        |url| json!({ "client_id": url, "redirect_uris": ["/callback"] }),
    )
    .await;
    assert!(matches!(
        get_from(&relative).await,
        Err(CimdError::Document(RedirectUriInvalid { index: 0, .. }))
    ));
    let charset = serving("content-type: application/json; charset=utf-8\r\n", doc).await;
    assert!(get_from(&charset).await.is_ok());
    let html = serving("content-type: text/html\r\n", doc).await;
    assert_eq!(
        get_from(&html).await,
        Err(CimdError::ContentType(Some("text/html".into())))
    );
    let untyped = serving("", doc).await;
    assert_eq!(get_from(&untyped).await, Err(CimdError::ContentType(None)));
    let missing = Server::answering("HTTP/1.1 404 Not Found\r\ncontent-length: 0", b"").await;
    assert_eq!(get_from(&missing).await, Err(CimdError::Status(404)));
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let server = serving_its_document().await;
    let stranger = Server::answering("HTTP/1.1 204 No Content", b"").await;
    // Trusting another server's certificate only.
    let fetcher = Fetcher::new(
        vec!["127.0.0.1/32".parse().unwrap()],
        stranger.roots.clone(),
        Limits::default(),
    )
    .unwrap();
    let got = fetcher.get(&server.url("127.0.0.1")).await;
    let Err(CimdError::Connect(reason)) = &got else {
        panic!("{got:?}");
    };
    assert!(reason.contains("certificate"), "{reason}");
}

#[tokio::test]
async fn a_failure_is_kept_for_a_while_too() {
    let server = Server::answering("HTTP/1.1 500 Oops\r\ncontent-length: 0", b"").await;
    let fetcher = server.allowing_loopback();
    let url = server.url("127.0.0.1");
    assert_eq!(fetcher.get(&url).await, Err(CimdError::Status(500)));
    assert_eq!(fetcher.get(&url).await, Err(CimdError::Status(500)));
    assert_eq!(server.accepted(), 1);
}
