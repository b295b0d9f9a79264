//! The built-in rules of content inspection, written from the documented formats of each kind
//! of secret and personal datum, and the markers of injected instructions that tool integrity
//! reads in descriptions. A rule is a pattern, the part of a match that is the finding (the
//! value after `password=`, not the key), and a check a match must pass (a card number's
//! Luhn digit, an IBAN's checksum, the randomness of a generic secret).
use crate::{
    integrity::markers::{BIDI, DIRECTIVES, INVISIBLE},
    vocab::{ContentAction, ContentKind, RULES},
};

/// What a match must also pass to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    None,
    /// A payment card: 13 to 19 digits, an issuer's prefix and the Luhn check digit.
    Card,
    /// An IBAN: its country's length range and the ISO 7064 mod-97 checksum.
    Iban,
    /// A phone number in international form: 8 to 15 digits.
    Phone,
    /// A generic secret: long and random enough (Shannon entropy per character).
    Random,
}

/// One built-in rule.
pub struct Rule {
    pub id: &'static str,
    pub kind: ContentKind,
    /// What is done when the config says nothing.
    pub action: ContentAction,
    /// A `regex` pattern; group 1, when it has one, is the finding.
    pub pattern: String,
    pub check: Check,
}

/// A character class of inclusive ranges.
fn class(ranges: &[(char, char)]) -> String {
    let mut s = String::from("[");
    for &(a, b) in ranges {
        s.push_str(&format!("\\x{{{:X}}}-\\x{{{:X}}}", a as u32, b as u32));
    }
    s.push_str("]+");
    s
}

/// The phrases of tool integrity's `model_directive` marker, each space matching any run of
/// white space.
fn directives() -> String {
    let phrases: Vec<String> = DIRECTIVES
        .iter()
        .map(|d| {
            d.split(' ')
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(r"\s+")
        })
        .collect();
    format!("(?i)(?:{})", phrases.join("|"))
}

/// The pattern of the built-in rule `id`, and the check its matches must pass.
fn pattern(id: &str) -> (String, Check) {
    use Check as C;
    match id {
        "aws_access_key_id" => (r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b".to_string(), C::None),
        "aws_secret_access_key" => (r#"(?i)aws[ -~]{0,24}?(?:secret|private)[ -~]{0,24}?[\s"':=]+([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#.to_string(), C::Random),
        "gcp_api_key" => (r"\b(AIza[0-9A-Za-z_\-]{35})(?:[^0-9A-Za-z_\-]|$)".to_string(), C::None),
        "github_token" => (r"\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b".to_string(), C::None),
        "gitlab_token" => (r"\b(glpat-[A-Za-z0-9_\-]{20,})".to_string(), C::None),
        "slack_token" => (r"\b(xox[abposr]-[A-Za-z0-9\-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,})".to_string(), C::None),
        "stripe_key" => (r"\b((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,})\b".to_string(), C::None),
        "openai_api_key" => (r"\b(sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})".to_string(), C::None),
        "anthropic_api_key" => (r"\b(sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_\-]{80,})".to_string(), C::None),
        "private_key" => (r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s]|[A-Za-z\-]+: [^\n]*\n)*(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?)".to_string(), C::None),
        "jwt" => (r"\b(eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})".to_string(), C::None),
        "bearer_token" => (r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{20,}=*)".to_string(), C::None),
        "url_password" => (r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]+:([^\s:/@]{3,})@".to_string(), C::None),
        "generic_secret" => (r#"(?i)(?:secret|token|passw(?:or)?d|pwd|api[_\-]?key|access[_\-]?key|private[_\-]?key|credential)[A-Za-z_\-]{0,16}["']?\s*(?::|=|=>)\s*["']?([A-Za-z0-9+/_.~\-]{16,}=*)"#.to_string(), C::Random),
        "email" => (r"\b([A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})\b".to_string(), C::None),
        "payment_card" => (r"\b([2-6][0-9](?:[ \-]?[0-9]){11,17})\b".to_string(), C::Card),
        "iban" => (r"\b([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30})\b".to_string(), C::Iban),
        "phone" => (r"(\+[1-9][0-9]{0,2}(?:[ .\-]?\(?[0-9]{1,4}\)?){2,5})".to_string(), C::Phone),
        "model_directive" => (directives(), C::None),
        "invisible_unicode" => (class(INVISIBLE), C::None),
        "bidi_control" => (class(BIDI), C::None),
        "terminal_escape" => (r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F\x{80}-\x{9F}]+".to_string(), C::None),
        other => unreachable!("no pattern for rule {other}"),
    }
}

/// Every built-in rule, in the order findings are reported.
pub fn built_in() -> Vec<Rule> {
    RULES
        .iter()
        .map(|r| {
            let (pattern, check) = pattern(r.id);
            Rule {
                id: r.id,
                kind: r.kind,
                action: r.action,
                pattern,
                check,
            }
        })
        .collect()
}

/// Whether `m`, the finding of a rule with `check`, passes it.
pub fn passes(check: Check, m: &str) -> bool {
    match check {
        Check::None => true,
        Check::Card => card(m),
        Check::Iban => iban(m),
        Check::Phone => (8..=15).contains(&m.bytes().filter(u8::is_ascii_digit).count()),
        Check::Random => random(m),
    }
}

fn card(m: &str) -> bool {
    let digits: Vec<u32> = m.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let prefix = |n: usize| digits[..n].iter().fold(0, |a, d| a * 10 + d);
    let issuer = digits[0] == 4                                // Visa
        || (51..=55).contains(&prefix(2))                      // Mastercard
        || (2221..=2720).contains(&prefix(4))
        || matches!(prefix(2), 34 | 37)                        // American Express
        || prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)) // Discover
        || (3528..=3589).contains(&prefix(4))                  // JCB
        || matches!(prefix(2), 36 | 38) || (300..=305).contains(&prefix(3)) // Diners
        || prefix(2) == 62; // UnionPay
    issuer && luhn(&digits)
}

/// The Luhn check digit of `digits` is right.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: letters of the country code, then the mod-97 of the rearranged number is 1.
pub fn iban(m: &str) -> bool {
    let s: Vec<u8> = m.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in s[4..].iter().chain(&s[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Random enough for a secret: over 3.5 bits of entropy per character, with both letters and
/// digits (words and numbers that follow `token:` are not secrets).
pub fn random(m: &str) -> bool {
    let b = m.as_bytes();
    if b.len() < 16 || !b.iter().any(u8::is_ascii_digit) || !b.iter().any(u8::is_ascii_alphabetic) {
        return false;
    }
    let mut counts = [0u32; 256];
    for &c in b {
        counts[c as usize] += 1;
    }
    let n = b.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > 3.5
}
