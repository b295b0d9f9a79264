//! The pool against a raw HTTP/1.1 server on 127.0.0.1 that numbers its connections, records
//! which connection each request arrived on, and (like Express for a GET) answers a request
//! before reading the body its headers declare.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    sync::Condvar,
    time::Instant,
};

use http_body_util::BodyExt as _;

use super::*;
use crate::{
    auth::Principal,
    config::PortRange,
    http::{body::full, error::ProxyError, forward::send},
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A request as the server read it.
#[derive(Clone, Debug)]
struct Seen {
    conn: usize,
    path: String,
}

#[derive(Default)]
struct Log {
    /// Each connection (numbered from 0 in order of arrival), and whether it has ended.
    conns: Vec<(TcpStream, bool)>,
    requests: Vec<Seen>,
    /// Connections on which a request line could not be read.
    malformed: Vec<usize>,
}

#[derive(Default)]
struct State {
    log: Mutex<Log>,
    changed: Condvar,
}

impl State {
    fn update(&self, f: impl FnOnce(&mut Log)) {
        f(&mut self.log.lock().unwrap());
        self.changed.notify_all();
    }
}

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut id = 0;
                st.update(|l| {
                    id = l.conns.len();
                    l.conns.push((stream.try_clone().unwrap(), false));
                });
                let st = st.clone();
                std::thread::spawn(move || {
                    serve(id, stream, &st);
                    st.update(|l| l.conns[id].1 = true);
                });
            }
        });
        Self { addr, state }
    }

    fn log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.state.log.lock().unwrap())
    }

    fn connections(&self) -> usize {
        self.log(|l| l.conns.len())
    }

    fn requests(&self) -> Vec<Seen> {
        self.log(|l| l.requests.clone())
    }

    /// Waits (up to TIMEOUT) until `done` holds, with this runtime running meanwhile (the
    /// pool's connection tasks close what it drops); returns whether it did.
    async fn wait(&self, done: impl Fn(&Log) -> bool) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        while !self.log(&done) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Waits until the connection `id` has ended.
    async fn ended(&self, id: usize) -> bool {
        self.wait(|l| l.conns.get(id).is_some_and(|c| c.1)).await
    }

    /// Which of the connections are still open.
    fn open(&self) -> Vec<usize> {
        self.log(|l| (0..l.conns.len()).filter(|&i| !l.conns[i].1).collect())
    }

    /// Closes the connection `id` from the server's side (FIN), as a server closing an idle
    /// keep-alive connection does, and waits (blocking) until its thread has seen it go.
    fn close(&self, id: usize) {
        self.log(|l| l.conns[id].0.shutdown(Shutdown::Both).unwrap());
        let log = self.state.log.lock().unwrap();
        let (log, _) = self
            .state
            .changed
            .wait_timeout_while(log, TIMEOUT, |l| !l.conns[id].1)
            .unwrap();
        assert!(log.conns[id].1, "connection {id} did not end");
    }
}

/// One connection: request heads answered at once, then the declared body read (and
/// discarded). `/sse` answers with a stream that never ends, `/half` with half of its declared
/// body, `/stall` not at all.
fn serve(id: usize, stream: TcpStream, st: &State) {
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    loop {
        let mut line = String::new();
        // Empty lines before a request line are skipped (RFC 9112 2.2).
        while line.trim_end().is_empty() {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
        }
        let words: Vec<&str> = line.trim_end().split(' ').collect();
        let [method, path, version] = words[..] else {
            st.update(|l| l.malformed.push(id));
            let _ = w.write_all(
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            );
            return;
        };
        assert!(method.chars().all(|c| c.is_ascii_uppercase()) && version.starts_with("HTTP/"));
        let mut length = 0u64;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let path = path.to_string();
        st.update(|l| {
            l.requests.push(Seen {
                conn: id,
                path: path.clone(),
            })
        });
        match path.as_str() {
            "/sse" => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n");
                return until_closed(&mut r);
            }
            "/half" => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nhalf");
                return until_closed(&mut r);
            }
            "/stall" => return until_closed(&mut r),
            "/empty" => {
                let _ = write!(w, "HTTP/1.1 204 No Content\r\nx-conn: {id}\r\n\r\n");
            }
            _ => {
                let body = format!("conn={id}");
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-conn: {id}\r\nkeep-alive: timeout=30\r\n\r\n{body}",
                    body.len()
                );
            }
        }
        if path == "/early" {
            std::thread::sleep(Duration::from_millis(100));
        }
        let declared = std::io::copy(&mut (&mut r).take(length), &mut std::io::sink());
        if declared.ok() != Some(length) {
            return;
        }
    }
}

/// Blocks until the client closes the connection.
fn until_closed(r: &mut BufReader<TcpStream>) {
    let mut buf = [0; 1024];
    while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
}

/// A pool whose connections come from a reserved range of its own (no other test uses it).
fn pool(limits: Limits) -> Pool {
    let ports = PortRange {
        lo: 61100,
        hi: 61199,
    };
    let upstream = Upstream::new(ports, "[::]:1".parse().unwrap());
    Pool::with_limits(Arc::new(upstream), limits)
}

fn owner(iss: &str, sub: &str, client_id: Option<&str>) -> Option<Owner> {
    Some(Owner::from(&Principal {
        sub: sub.into(),
        client_id: client_id.map(Into::into),
        iss: iss.into(),
        scopes: vec![],
        claims: Default::default(),
    }))
}

fn key(server: &Server, principal: Option<Owner>) -> Key {
    Key {
        addr: server.addr,
        principal,
    }
}

/// A request as the proxy sends it: absolute URI, Host naming the upstream.
fn request(key: &Key, method: &str, path: &str) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", key.addr))
        .header(header::HOST, key.addr.to_string())
        .body(full(Bytes::new()))
        .unwrap()
}

async fn open(pool: &Pool, key: &Key, path: &str) -> Response<Body> {
    send(pool, key.clone(), request(key, "GET", path), TIMEOUT)
        .await
        .expect("a response")
}

/// A GET read to its end: the status, and the server's number of the connection it took.
async fn get(pool: &Pool, key: &Key, path: &str) -> (u16, Option<usize>) {
    let resp = open(pool, key, path).await;
    let status = resp.status().as_u16();
    let conn = resp
        .headers()
        .get("x-conn")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    if let Some(n) = conn {
        assert!(body.is_empty() || body == format!("conn={n}"), "{body:?}");
    }
    (status, conn)
}

#[tokio::test]
async fn two_principals_never_share_a_connection_even_one_after_the_other() {
    let server = Server::start();
    let pool = pool(Limits::default());
    let alice = key(&server, owner("https://idp", "alice", Some("app")));
    let principals = [
        alice.clone(),
        key(&server, owner("https://idp", "bob", Some("app"))),
        // The same subject from another issuer, or through another client, is someone else.
        key(&server, owner("https://other-idp", "alice", Some("app"))),
        key(&server, owner("https://idp", "alice", Some("other-app"))),
        key(&server, owner("https://idp", "alice", None)),
        key(&server, None),
    ];
    let mut conns = Vec::new();
    for round in 0..3 {
        for (i, k) in principals.iter().enumerate() {
            let (status, conn) = get(&pool, k, &format!("/{i}")).await;
            assert_eq!(status, 200);
            let conn = conn.unwrap();
            if round == 0 {
                conns.push(conn);
            } else {
                assert_eq!(
                    conn, conns[i],
                    "principal {i}, round {round}: its own connection"
                );
            }
        }
    }
    let mut distinct = conns.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), principals.len(), "{conns:?}");
    assert_eq!(server.connections(), principals.len());
    for s in server.requests() {
        let i: usize = s.path[1..].parse().unwrap();
        assert_eq!(
            s.conn, conns[i],
            "{s:?} arrived on another principal's connection"
        );
    }
}

#[tokio::test]
async fn one_principal_reuses_one_connection_after_each_response_was_read_to_its_end() {
    let server = Server::start();
    let pool = pool(Limits::default());
    let alice = key(&server, owner("https://idp", "alice", None));
    for _ in 0..5 {
        assert_eq!(get(&pool, &alice, "/").await, (200, Some(0)));
        // A response without a body ends with its head.
        assert_eq!(get(&pool, &alice, "/empty").await, (204, Some(0)));
    }
    assert_eq!(server.connections(), 1);
    assert_eq!(
        pool.idle(),
        Counts {
            keys: 1,
            connections: 1
        }
    );
}

/// The server answers before it has read the request's body: the response ends while the
/// body is still being written, and that connection is not used again.
#[tokio::test]
async fn a_connection_whose_response_ended_before_its_request_was_sent_is_closed() {
    let server = Server::start();
    let pool = pool(Limits::default());
    let alice = key(&server, owner("https://idp", "alice", None));
    // More than the socket buffers hold while the server waits.
    let mut upload = request(&alice, "POST", "/early");
    *upload.body_mut() = full(Bytes::from(vec![b'x'; 32 << 20]));
    let resp = send(&pool, alice.clone(), upload, TIMEOUT).await.unwrap();
    assert_eq!(resp.headers()["x-conn"], "0");
    resp.into_body().collect().await.unwrap();
    assert!(server.ended(0).await, "closed once the body went out");
    assert_eq!(get(&pool, &alice, "/").await, (200, Some(1)));
}

#[tokio::test]
async fn a_response_dropped_before_its_end_closes_its_connection() {
    let server = Server::start();
    let pool = pool(Limits::default());
    let alice = key(&server, owner("https://idp", "alice", None));
    // An event stream the client left after its first event.
    let mut sse = open(&pool, &alice, "/sse").await.into_body();
    let first = sse.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: 1\n\n");
    drop(sse);
    assert!(server.ended(0).await, "the stream's connection was closed");
    assert_eq!(get(&pool, &alice, "/").await, (200, Some(1)));
    // A body read in part: 4 of its 8 bytes.
    let mut half = open(&pool, &alice, "/half").await.into_body();
    let part = half.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&part[..], b"half");
    drop(half);
    assert!(
        server.ended(1).await,
        "the partly read response's connection was closed"
    );
    // A body not read at all.
    drop(open(&pool, &alice, "/").await);
    assert!(
        server.ended(2).await,
        "the unread response's connection was closed"
    );
    assert_eq!(get(&pool, &alice, "/").await, (200, Some(3)));
    assert_eq!(server.open(), [3]);
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_replaced_and_the_request_succeeds() {
    let server = Server::start();
    let pool = pool(Limits::default());
    let alice = key(&server, owner("https://idp", "alice", None));
    assert_eq!(get(&pool, &alice, "/").await, (200, Some(0)));
    // Closed, and the pool has seen it (the connection's task ran).
    server.close(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&pool, &alice, "/").await, (200, Some(1)));
    assert_eq!(server.connections(), 2);

    // Closed when the pool has not yet seen it: the request is handed to the connection, whose
    // task then finds the end of the stream before writing it and gives it back unsent. To
    // order that, the request is sent by a task woken in the same turn of this runtime's
    // event loop as the connection's task, and before it: its socket became readable first.
    let (tx, woken) = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (tx, l.accept().await.unwrap().0)
    };
    let (pool2, alice2) = (pool.clone(), alice.clone());
    let asking = tokio::spawn(async move {
        let mut woken = woken;
        let mut byte = [0];
        tokio::io::AsyncReadExt::read_exact(&mut woken, &mut byte)
            .await
            .unwrap();
        get(&pool2, &alice2, "/").await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Without letting this runtime run: the wake-up, then the close.
    (&tx).write_all(b"x").unwrap();
    server.close(1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(asking.await.unwrap(), (200, Some(2)));
    let conns: Vec<usize> = server.requests().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 1, 2], "each request arrived once");
}

#[tokio::test]
async fn idle_connections_are_bounded_per_principal() {
    let server = Server::start();
    let pool = pool(Limits {
        per_key: 2,
        ..Limits::default()
    });
    let alice = key(&server, owner("https://idp", "alice", None));
    // Four at once: four connections.
    let (a, b, c, d) = tokio::join!(
        open(&pool, &alice, "/"),
        open(&pool, &alice, "/"),
        open(&pool, &alice, "/"),
        open(&pool, &alice, "/"),
    );
    assert_eq!(server.connections(), 4);
    for resp in [a, b, c, d] {
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(
        pool.idle(),
        Counts {
            keys: 1,
            connections: 2
        }
    );
    assert!(
        server
            .wait(|l| l.conns.iter().filter(|c| c.1).count() == 2)
            .await
    );
    // The two kept are reused.
    let kept = server.open();
    let (x, y) = tokio::join!(get(&pool, &alice, "/"), get(&pool, &alice, "/"));
    let mut used = vec![x.1.unwrap(), y.1.unwrap()];
    used.sort_unstable();
    assert_eq!(used, kept);
    assert_eq!(server.connections(), 4);
}

#[tokio::test]
async fn the_least_recently_used_principal_goes_first_when_there_are_too_many() {
    let server = Server::start();
    let pool = pool(Limits {
        keys: 3,
        ..Limits::default()
    });
    let users: Vec<Key> = (0..5)
        .map(|i| key(&server, owner("https://idp", &format!("user{i}"), None)))
        .collect();
    for (i, u) in users.iter().enumerate() {
        assert_eq!(get(&pool, u, "/").await, (200, Some(i)));
    }
    assert_eq!(
        pool.idle(),
        Counts {
            keys: 3,
            connections: 3
        }
    );
    assert!(server.ended(0).await && server.ended(1).await);
    assert_eq!(server.open(), [2, 3, 4]);
    // user2 used again is now more recent than user3: user3 goes when user0 comes back.
    assert_eq!(get(&pool, &users[2], "/").await, (200, Some(2)));
    assert_eq!(get(&pool, &users[0], "/").await, (200, Some(5)));
    assert!(server.ended(3).await);
    assert_eq!(server.open(), [2, 4, 5]);
}

#[tokio::test]
async fn idle_connections_are_bounded_in_all() {
    let server = Server::start();
    let pool = pool(Limits {
        total: 3,
        ..Limits::default()
    });
    let alice = key(&server, owner("https://idp", "alice", None));
    let bob = key(&server, owner("https://idp", "bob", None));
    let (a, b) = tokio::join!(open(&pool, &alice, "/"), open(&pool, &alice, "/"));
    for resp in [a, b] {
        resp.into_body().collect().await.unwrap();
    }
    let (a, b) = tokio::join!(open(&pool, &bob, "/"), open(&pool, &bob, "/"));
    for resp in [a, b] {
        resp.into_body().collect().await.unwrap();
    }
    // Bob's second connection made room for itself: Alice's two went.
    assert_eq!(
        pool.idle(),
        Counts {
            keys: 1,
            connections: 2
        }
    );
    assert!(server.ended(0).await && server.ended(1).await);
    assert_eq!(server.open(), [2, 3]);
    // Alone, one principal is held to the total too.
    let many: Vec<_> = (0..4).map(|_| open(&pool, &bob, "/")).collect();
    let mut resps = Vec::new();
    for f in many {
        resps.push(f.await);
    }
    for resp in resps {
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(
        pool.idle(),
        Counts {
            keys: 1,
            connections: 3
        }
    );
}

#[tokio::test]
async fn idle_connections_expire() {
    let server = Server::start();
    let pool = pool(Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    let alice = key(&server, owner("https://idp", "alice", None));
    assert_eq!(get(&pool, &alice, "/").await, (200, Some(0)));
    // Closed by the pool while nobody asks for it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(server.ended(0).await);
    assert_eq!(
        pool.idle(),
        Counts {
            keys: 0,
            connections: 0
        }
    );
    assert_eq!(get(&pool, &alice, "/").await, (200, Some(1)));
}

/// A GET whose Content-Length declares a body that is not sent: the server answers it, then
/// takes the first bytes of whatever comes next on that connection as its body, and reads
/// the rest as a request. That must never be another principal's request.
#[tokio::test]
async fn a_desynchronised_connection_never_carries_another_principals_request() {
    let server = Server::start();
    let pool = pool(Limits::default());
    let mallory = key(&server, owner("https://idp", "mallory", None));
    let alice = key(&server, owner("https://idp", "alice", None));
    let mut smuggling = request(&mallory, "GET", "/smuggle");
    smuggling
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("20"));
    let resp = send(&pool, mallory.clone(), smuggling, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // Mallory's connection is back in the pool, its server side waiting for 20 more bytes.
    assert_eq!(get(&pool, &alice, "/alice?x=1").await, (200, Some(1)));
    assert_eq!(get(&pool, &alice, "/alice?x=1").await, (200, Some(1)));
    // The next request on Mallory's connection is the one torn apart.
    let (status, _) = get(&pool, &mallory, "/next").await;
    assert_eq!(
        status, 400,
        "the server read the rest of a request as a new one"
    );
    assert_eq!(server.log(|l| l.malformed.clone()), [0]);
    let seen: Vec<(usize, String)> = server
        .requests()
        .into_iter()
        .map(|s| (s.conn, s.path))
        .collect();
    assert_eq!(
        seen,
        [
            (0, "/smuggle".to_string()),
            (1, "/alice?x=1".to_string()),
            (1, "/alice?x=1".to_string())
        ]
    );
}

#[tokio::test]
async fn upstream_failures_keep_their_errors_and_hop_by_hop_headers_go() {
    let server = Server::start();
    let pool = pool(Limits::default());
    let alice = key(&server, owner("https://idp", "alice", None));
    let resp = open(&pool, &alice, "/").await;
    assert!(!resp.headers().contains_key("keep-alive"));
    drop(resp);
    let err = send(
        &pool,
        alice.clone(),
        request(&alice, "GET", "/stall"),
        Duration::from_millis(200),
    )
    .await
    .err();
    assert!(matches!(err, Some(ProxyError::UpstreamTimeout)), "{err:?}");
    // Nobody listens there any more.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody = Key {
        addr: gone,
        principal: None,
    };
    let err = send(&pool, nobody.clone(), request(&nobody, "GET", "/"), TIMEOUT)
        .await
        .err();
    match err {
        Some(ProxyError::UpstreamConnect(msg)) => {
            assert!(msg.contains(&gone.to_string()), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}
