//! The hash chain over audit records: each record ends with `prev` (the hash of the record
//! before it; 64 zeros for the first) and `hash`, the SHA-256 of the record as written up to
//! and including `prev` (the line without `,"hash":"..."`, closed with `}`). Editing,
//! removing, inserting or reordering records breaks the chain at the first record touched,
//! and the chain continues across restarts. `moat audit verify` checks it.
use std::{
    fmt,
    io::{self, BufRead as _, Read as _, Seek as _, SeekFrom},
    path::PathBuf,
};

use serde_json::Value;

const ZERO: [u8; 32] = [0; 32];

/// Where the chain stands: the last record's number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub prev: [u8; 32],
}

impl Chain {
    /// A new chain: no record yet.
    pub const START: Self = Self { seq: 0, prev: ZERO };

    /// The chain at the end of an audit file (empty: a new chain).
    pub fn resume(file: &mut std::fs::File) -> io::Result<Self> {
        let len = file.seek(SeekFrom::End(0))?;
        let start = len.saturating_sub(256 * 1024);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = String::new();
        file.read_to_string(&mut tail)?;
        let last = tail
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok());
        Ok(match last {
            None => Self { seq: 0, prev: ZERO },
            Some(v) => Self {
                seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0),
                prev: v
                    .get("hash")
                    .and_then(Value::as_str)
                    .and_then(unhex)
                    .unwrap_or(ZERO),
            },
        })
    }

    /// Seals `record` (one JSON object, without `prev` and `hash`): appends `prev` and `hash`
    /// and a newline, and moves the chain on.
    pub fn seal(&mut self, record: &mut Vec<u8>) {
        debug_assert_eq!(record.last(), Some(&b'}'));
        record.pop();
        record.extend_from_slice(b",\"prev\":\"");
        push_hex(record, &self.prev);
        record.extend_from_slice(b"\"}");
        let hash = sha256(record);
        record.pop();
        record.extend_from_slice(b",\"hash\":\"");
        push_hex(record, &hash);
        record.extend_from_slice(b"\"}\n");
        self.prev = hash;
    }
}

/// The first record where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub file: PathBuf,
    pub line: usize,
    pub seq: Option<u64>,
    pub why: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, "record {seq}: ")?;
        }
        f.write_str(&self.why)
    }
}

/// Checks the chain through `files`, in order (one chain, continued from file to file), from
/// its first record. Returns the number of records.
pub fn verify(files: &[PathBuf]) -> Result<u64, Broken> {
    verify_from(files, false)
}

/// Like [`verify`]; with `mid_chain`, the first record may follow records not given (removed
/// by retention, or archived elsewhere): its `prev` is taken as it is, and everything from it
/// on is checked.
pub fn verify_from(files: &[PathBuf], mid_chain: bool) -> Result<u64, Broken> {
    let mut prev = ZERO;
    let mut last_seq: Option<u64> = None;
    let mut count = 0;
    for path in files {
        let broken = |line: usize, seq: Option<u64>, why: String| Broken {
            file: path.clone(),
            line,
            seq,
            why,
        };
        let file = std::fs::File::open(path).map_err(|e| broken(0, None, e.to_string()))?;
        for (i, line) in io::BufReader::new(file).lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| broken(n, None, e.to_string()))?;
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| broken(n, None, format!("not a JSON record: {e}")))?;
            let seq = v.get("seq").and_then(Value::as_u64);
            let (body, hash) = split(&line)
                .ok_or_else(|| broken(n, seq, "no `hash` at the end of the record".into()))?;
            if sha256(body.as_bytes()) != hash {
                return Err(broken(
                    n,
                    seq,
                    "altered: its hash does not match its content".into(),
                ));
            }
            let claimed_prev = v.get("prev").and_then(Value::as_str).and_then(unhex);
            if let (true, 0, Some(p)) = (mid_chain, count, claimed_prev) {
                prev = p;
            }
            if claimed_prev != Some(prev) {
                let why = if count == 0 && last_seq.is_none() && seq != Some(1) {
                    "the chain does not start here (earlier records missing, or a later file first)"
                } else {
                    "does not follow the record before it: a record is missing, inserted or out of order"
                };
                return Err(broken(n, seq, why.into()));
            }
            match (last_seq, seq) {
                (Some(l), Some(s)) if s != l + 1 => {
                    return Err(broken(n, seq, format!("numbered {s} after {l}")));
                }
                (_, None) => return Err(broken(n, None, "no `seq`".into())),
                _ => {}
            }
            prev = hash;
            last_seq = seq;
            count += 1;
        }
    }
    Ok(count)
}

/// `files` in chain order: by the number of their first record (files without one first).
/// Names do not matter, so `audit*.jsonl` can be given as the shell expands it; the chain
/// itself still proves the order.
pub fn in_chain_order(files: &[PathBuf]) -> Vec<PathBuf> {
    let first_seq = |p: &PathBuf| -> Option<u64> {
        let file = std::fs::File::open(p).ok()?;
        let mut line = String::new();
        io::BufReader::new(file).read_line(&mut line).ok()?;
        serde_json::from_str::<Value>(&line)
            .ok()?
            .get("seq")?
            .as_u64()
    };
    let mut keyed: Vec<(Option<u64>, PathBuf)> =
        files.iter().map(|p| (first_seq(p), p.clone())).collect();
    keyed.sort_by_key(|(seq, _)| *seq);
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// The record without its `hash` (closed with `}`), and the hash it claims.
fn split(line: &str) -> Option<(String, [u8; 32])> {
    const MARK: &str = ",\"hash\":\"";
    let i = line.rfind(MARK)?;
    let rest = line[i + MARK.len()..].strip_suffix("\"}")?;
    Some((format!("{}}}", &line[..i]), unhex(rest)?))
}

/// The SHA-256 of `bytes`, in hex: how records name the files (config, policies) in force.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(super) fn hex(b: &[u8; 32]) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex(&mut out, b);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `b` in lower-case hex (on every record: no formatting machinery).
fn push_hex(out: &mut Vec<u8>, b: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for x in b {
        out.push(DIGITS[usize::from(x >> 4)]);
        out.push(DIGITS[usize::from(x & 0xf)]);
    }
}

pub(super) fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` records in `dir/name`.
    fn chain_file(dir: &std::path::Path, name: &str, from: Chain, n: u64) -> (PathBuf, Chain) {
        let mut c = from;
        let mut text = Vec::new();
        for _ in 0..n {
            c.seq += 1;
            let mut r = format!(
                r#"{{"seq":{},"kind":"request","tool":"t{}"}}"#,
                c.seq, c.seq
            )
            .into_bytes();
            c.seal(&mut r);
            text.extend(r);
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        (path, c)
    }

    fn lines(p: &PathBuf) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn any_edit_removal_insertion_or_swap_is_found_and_named() {
        let dir = std::env::temp_dir().join(format!("moat-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, end) = chain_file(&dir, "a.jsonl", Chain { seq: 0, prev: ZERO }, 5);
        let (b, _) = chain_file(&dir, "b.jsonl", end, 3);
        assert_eq!(
            verify(&[a.clone(), b.clone()]),
            Ok(8),
            "one chain across files"
        );
        assert!(
            verify(&[b.clone(), a.clone()]).is_err(),
            "files in the wrong order"
        );
        assert_eq!(
            in_chain_order(&[b.clone(), a.clone()]),
            [a.clone(), b.clone()]
        );

        let original = lines(&a);
        let check = |edited: Vec<String>, line: usize, words: &str| {
            std::fs::write(&a, edited.join("\n") + "\n").unwrap();
            let e = verify(std::slice::from_ref(&a)).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.why.contains(words), "{e}");
        };
        // Altered: a field changed in record 3.
        let mut x = original.clone();
        x[2] = x[2].replace("\"t3\"", "\"t9\"");
        check(x, 3, "altered");
        // Removed: record 2.
        let mut x = original.clone();
        x.remove(1);
        check(x, 2, "missing");
        // Swapped: records 2 and 3.
        let mut x = original.clone();
        x.swap(1, 2);
        check(x, 2, "out of order");
        // Inserted: a copy of record 4 after it.
        let mut x = original.clone();
        x.insert(4, original[3].clone());
        check(x, 5, "inserted");
        // Re-hashed after an edit: the next record no longer follows it.
        let mut x = original.clone();
        let mut forged = x[1].replace("\"t2\"", "\"t7\"");
        let cut = forged.rfind(",\"prev\"").unwrap();
        forged.truncate(cut);
        forged.push('}');
        let mut fake = Chain {
            seq: 1,
            prev: split(&x[0]).unwrap().1,
        };
        let mut bytes = forged.into_bytes();
        fake.seal(&mut bytes);
        x[1] = String::from_utf8(bytes).unwrap().trim_end().to_string();
        check(x, 3, "does not follow");
        // The first record removed: the chain does not start here.
        let mut x = original.clone();
        x.remove(0);
        check(x.clone(), 1, "does not start");
        // ... unless told the earlier records are elsewhere; what follows is still checked.
        assert_eq!(verify_from(std::slice::from_ref(&a), true), Ok(4));
        x.swap(1, 2);
        std::fs::write(&a, x.join("\n") + "\n").unwrap();
        let e = verify_from(std::slice::from_ref(&a), true).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_round_trips() {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i * 37 + 5) as u8;
        }
        let h = hex(&b);
        assert_eq!(&h[..6], "052a4f");
        assert_eq!(h, b.iter().map(|x| format!("{x:02x}")).collect::<String>());
        assert_eq!(unhex(&h), Some(b));
    }
}
