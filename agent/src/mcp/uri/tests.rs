//! One test per normalisation rule and per refusal; the differential test against the servers'
//! own parsers is `agent/tests/uri.rs`.
use proptest::prelude::*;

use super::{UriError, normalise};

#[track_caller]
fn same(inputs: &[&str], expected: &str) {
    for input in inputs {
        assert_eq!(normalise(input).as_deref(), Ok(expected), "{input:?}");
    }
}

#[track_caller]
fn ambiguous(input: &str) -> &'static str {
    match normalise(input) {
        Err(UriError::Ambiguous { why, .. }) => why,
        other => panic!("{input:?}: {other:?}"),
    }
}

#[track_caller]
fn invalid(input: &str) {
    assert!(
        matches!(normalise(input), Err(UriError::Invalid(_))),
        "{input:?}: {:?}",
        normalise(input)
    );
}

#[test]
fn the_spellings_that_read_a_forbidden_file_all_normalise_to_it() {
    same(
        &[
            "file:///secret",
            "FILE:///secret",
            "File:///secret",
            "file:///./secret",
            "file:///x/../secret",
            "file:///x/y/../../secret",
            "file://localhost/secret",
            "file://LOCALHOST/secret",
            " file:///secret",
            "file:///secret ",
            "file:/secret",
            "file:secret",
            "file:\\\\\\secret",
            "file:////secret",
            "file:///%2e/secret",
            "file:///a/%2e%2E/secret",
            "file:///a/.%2e/secret",
            "file:///%73ecret",
            "file:///%73%65%63%72%65%74",
        ],
        "file:///secret",
    );
}

#[test]
fn controls_and_whitespace_are_stripped_around_and_tabs_and_newlines_anywhere() {
    same(
        &[
            "\tfile:///se\ncret\r",
            "\u{1}file:///secret\u{0}",
            "\u{1f} \u{b}file:///secret\u{c}",
            "file:///se\t\tcret",
        ],
        "file:///secret",
    );
    // Other controls inside are encoded, not dropped.
    same(&["file:///se\u{1}cret"], "file:///se%01cret");
    same(&["file:///se cret"], "file:///se%20cret");
}

#[test]
fn scheme_and_special_host_are_lower_cased_other_hosts_keep_their_case() {
    same(&["HTTP://EXAMPLE.com/A"], "http://example.com/A");
    same(&["MEMO://Notes/Today"], "memo://Notes/Today");
    same(&["memo://Notes%41/x"], "memo://NotesA/x");
}

#[test]
fn unreserved_escapes_are_decoded_and_others_upper_cased() {
    same(&["memo://h/%41%7a%2D%2e%5F%7e"], "memo://h/Az-._~");
    same(&["memo://h/%2f%3a%c3%a9"], "memo://h/%2F%3A%C3%A9");
    same(&["memo://h/a?q=%41%2b#%7e%20"], "memo://h/a?q=A%2B#~%20");
    same(&["http://%41:%62@h/"], "http://A:b@h/");
}

#[test]
fn encoded_slashes_and_backslashes_stay_encoded() {
    same(&["file:///a%2fb", "file:///a%2Fb"], "file:///a%2Fb");
    same(&["file:///a%5cb"], "file:///a%5Cb");
    same(&["file:///..%2fsecret"], "file:///..%2Fsecret");
}

#[test]
fn a_percent_that_starts_no_escape_is_encoded() {
    same(&["memo://h/100%"], "memo://h/100%25");
    same(&["memo://h/%zz"], "memo://h/%25zz");
    same(&["memo://h/%4"], "memo://h/%254");
    // Not decoded twice: `%%341` is `%` and `%34` (`4`), then `1`.
    same(&["memo://h/%%341", "memo://h/%2541"], "memo://h/%2541");
}

#[test]
fn dot_segments_are_removed_also_when_encoded() {
    same(
        &["memo://h/./a/../b", "memo://h/%2E/a/%2e%2e/b"],
        "memo://h/b",
    );
    same(&["memo:/a/b/../c"], "memo:/a/c");
    same(&["http://h/a/..", "http://h/.."], "http://h/");
    // Opaque paths have no segments.
    same(&["urn:a/../b"], "urn:a/../b");
    // A dot in a query or fragment is data.
    same(&["memo://h/a?../..#./."], "memo://h/a?../..#./.");
}

#[test]
fn backslashes_are_slashes_in_special_schemes_only() {
    same(&["http://h\\a\\..\\b"], "http://h/b");
    same(&["memo://h/a\\..\\b"], "memo://h/a\\..\\b");
}

#[test]
fn default_ports_and_empty_paths() {
    same(&["http://h:80", "http://h", "HTTP://h:080/"], "http://h/");
    same(&["https://h:443/x"], "https://h/x");
    same(&["ws://h:80/"], "ws://h/");
    same(&["wss://h:443/"], "wss://h/");
    same(&["http://h:8080"], "http://h:8080/");
    // Other schemes have no default port and may have an empty path.
    same(&["memo://h:80"], "memo://h:80");
    same(&["memo://h"], "memo://h");
}

#[test]
fn hosts_are_canonical() {
    same(&["http://[0:0::1]/"], "http://[::1]/");
    same(
        &["http://0x7f.1/", "http://127.1/", "http://2130706433/"],
        "http://127.0.0.1/",
    );
    same(&["memo://[0:0::1]/"], "memo://[::1]/");
    // Other schemes' hosts are opaque: no IPv4 parsing, non-ASCII percent-encoded.
    same(&["memo://0x7f.1/"], "memo://0x7f.1/");
    same(&["memo://é/x"], "memo://%C3%A9/x");
}

#[test]
fn userinfo_query_fragment_and_non_ascii_paths() {
    same(&["http://a@b:c@EX.com/"], "http://a%40b:c@ex.com/");
    same(&["http://h/?q=a b'c#f g"], "http://h/?q=a%20b%27c#f%20g");
    same(&["memo://h/?q=a b'c"], "memo://h/?q=a%20b'c");
    same(&["file:///é/ß"], "file:///%C3%A9/%C3%9F");
    same(&["memo://h?"], "memo://h?");
    same(&["http://h/#"], "http://h/#");
}

#[test]
fn windows_drive_letters_that_every_parser_reads_alike() {
    same(
        &["file:///C:/x", "file:C:/x", "file://C:/x", "file:/C:/x"],
        "file:///C:/x",
    );
    same(&["file:///C:/../x", "file:///C:/../../x"], "file:///C:/x");
    same(&["file:///c%3A/x"], "file:///c%3A/x");
}

#[test]
fn windows_drive_letters_that_parsers_read_differently_are_refused() {
    assert!(ambiguous("file:///c|/x").contains("'|'"));
    assert!(ambiguous("file:///%63|/x").contains("'|'"));
    assert!(ambiguous("file://host/c:/x").contains("host and a drive letter"));
    assert!(ambiguous("http://h/c:/..").contains("drive letter"));
    assert!(ambiguous("memo://h/c|/../x").contains("drive letter"));
    assert!(ambiguous("file:///f:x/../y").contains("drive letter"));
    assert!(ambiguous("file:c:\tx").contains("tab"));
    assert!(ambiguous("file://h/c:\nx").contains("tab"));
    // Without a host the `url` crate reads the tab as the standard does.
    same(&["file:///c:\tx"], "file:///c:x");
}

#[test]
fn other_schemes_refuse_what_node_and_python_read_differently() {
    assert!(ambiguous("memo://h/..").contains("above the root"));
    assert!(ambiguous("memo://h/a/../..?q").contains("above the root"));
    assert!(ambiguous("memo:/%2e%2e").contains("above the root"));
    same(&["memo://h/a/.."], "memo://h/");
    assert!(ambiguous("memo://h:1\\x").contains("backslash"));
    assert!(ambiguous("memo://@").contains("without a host"));
    // A backslash in the userinfo is encoded by both.
    same(&["memo://a\\b@h/x"], "memo://a%5Cb@h/x");
}

#[test]
fn international_hosts_are_refused() {
    for input in [
        "http://bücher.de/",
        "http://xn--bcher-kva.de/",
        "HTTP://XN--BCHER-KVA.DE/",
        "http://b%C3%BCcher.de/",
        "https://ＥＸＡＭＰＬＥ.com/",
        "file://bücher/x",
    ] {
        assert_eq!(
            normalise(input),
            Err(UriError::InternationalHost),
            "{input:?}"
        );
    }
}

#[test]
fn what_the_servers_refuse_is_invalid() {
    for input in [
        "",
        "   ",
        "a",
        "/x",
        "//h/x",
        "memo://f o/x",
        "memo://[::1",
        "http://",
        "http://x:99999/",
        "memo://x:99999/",
        "http://[v1.x]/",
        "http://ex%00ample.com/",
        "1http://h/",
    ] {
        invalid(input);
    }
}

#[test]
fn errors_say_what_is_wrong() {
    let invalid = normalise("a").unwrap_err().to_string();
    assert_eq!(
        invalid,
        "resource URI is not a valid absolute URI: relative URL without a base"
    );
    let ambiguous = normalise("file:///c|/x").unwrap_err().to_string();
    assert!(ambiguous.starts_with("resource URI is ambiguous: a drive letter spelt with '|'"));
    assert!(
        normalise("http://bücher.de/")
            .unwrap_err()
            .to_string()
            .contains("plain ASCII host name")
    );
}

#[test]
fn very_long_uris_normalise_whole() {
    let long = format!("FILE:///{}../secret", "a/".repeat(200_000));
    let expected = format!("file:///{}secret", "a/".repeat(199_999));
    let normal = normalise(&long).unwrap();
    assert!(normal == expected, "{} bytes", normal.len());
    let escapes = format!("memo://h/{}", "%7e".repeat(100_000));
    let normal = normalise(&escapes).unwrap();
    assert!(
        normal == format!("memo://h/{}", "~".repeat(100_000)),
        "{} bytes",
        normal.len()
    );
}

/// Printable ASCII and a few troublemakers, spelt in pieces so that URI structure comes up often.
fn spelling() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "file:",
            "FILE:",
            "http:",
            "memo:",
            "//",
            "/",
            "\\",
            ".",
            "..",
            "%2e",
            "%2F",
            "%41",
            "%",
            "%zz",
            "localhost",
            "c:",
            "C|",
            "@",
            ":",
            ":80",
            "[::1]",
            "?",
            "#",
            "\t",
            " ",
            "é",
            "xn--",
            "h",
        ])
        .prop_map(str::to_owned),
        "[ -~]{1,3}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn normalising_twice_changes_nothing(input in spelling()) {
        if let Ok(normal) = normalise(&input) {
            prop_assert_eq!(normalise(&normal), Ok(normal.clone()));
            prop_assert!(normal.is_ascii(), "{:?}", normal);
        }
    }

    #[test]
    fn any_string_gets_an_answer(input in any::<String>()) {
        let _ = normalise(&input);
    }
}
