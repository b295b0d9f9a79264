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
#[cfg(test)]
pub fn verify(files: &[PathBuf]) -> Result<u64, Broken> {
    verify_from(files, false)
}

/// Like [`verify`]; with `mid_chain`, the first record may follow records not given (removed
/// by retention, or archived elsewhere): its `prev` is taken as it is, and everything from it
/// on is checked.
#[cfg(test)]
pub fn verify_from(files: &[PathBuf], mid_chain: bool) -> Result<u64, Broken> {
    verify_to(files, mid_chain, None).map(|v| v.records)
}

/// What a verified chain holds, and how its end compares with the chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub end: End,
}

/// How the last record given compares with the chain head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// No head given: records removed from the end cannot be seen.
    Unchecked,
    /// The last record is the head's.
    AtHead(u64),
    /// The head's record is in the chain, and `after` records follow it: written after the
    /// head was last saved (the agent is running, or it stopped before saving it).
    PastHead { head: u64, after: u64 },
}

/// `event` of the record the agent writes when, at its start, the log did not continue the
/// chain head (see `audit::resume`); verifying fails there.
pub const HEAD_MISMATCH: &str = "head_mismatch";

/// Like [`verify_from`], and with `head`, the end is checked against it: the head's record
/// must be in the chain (the record numbered `head.seq` has its hash, or the one after it
/// names it as `prev`), and the chain may go on past it (records written after the head was
/// saved), but must not end before it (records missing at the end).
pub fn verify_to(
    files: &[PathBuf],
    mid_chain: bool,
    head: Option<Chain>,
) -> Result<Verified, Broken> {
    let mut prev = ZERO;
    let mut last_seq: Option<u64> = None;
    let mut count = 0;
    // Where the last record is, and whether the head's record was met.
    let mut last_at = (files.last().cloned().unwrap_or_default(), 0);
    let mut met_head = false;
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
                let why = if v.get("kind") == Some(&Value::from("audit"))
                    && v.get("event") == Some(&Value::from(HEAD_MISMATCH))
                {
                    head_mismatch_why(&v)
                } else if count == 0 && last_seq.is_none() && seq != Some(1) {
                    "the chain does not start here (earlier records missing, or a later file first)"
                        .into()
                } else {
                    "does not follow the record before it: a record is missing, inserted or out of order".into()
                };
                return Err(broken(n, seq, why));
            }
            match (last_seq, seq) {
                (Some(l), Some(s)) if s != l + 1 => {
                    return Err(broken(n, seq, format!("numbered {s} after {l}")));
                }
                (_, None) => return Err(broken(n, None, "no `seq`".into())),
                _ => {}
            }
            if v.get("kind") == Some(&Value::from("audit"))
                && v.get("event") == Some(&Value::from(HEAD_MISMATCH))
            {
                return Err(broken(n, seq, head_mismatch_why(&v)));
            }
            if let (Some(h), Some(s)) = (head, seq) {
                let at_head = s == h.seq && hash != h.prev;
                let after_head = s == h.seq + 1 && claimed_prev != Some(h.prev);
                if at_head || after_head {
                    return Err(broken(
                        n,
                        seq,
                        format!(
                            "does not match the chain head, which names record {} with another hash: \
                             the log was rewritten, or the head is another chain's",
                            h.seq
                        ),
                    ));
                }
                met_head |= s == h.seq || s == h.seq + 1;
            }
            prev = hash;
            last_seq = seq;
            last_at = (path.clone(), n);
            count += 1;
        }
    }
    let Some(h) = head else {
        return Ok(Verified {
            records: count,
            end: End::Unchecked,
        });
    };
    let (file, line) = last_at;
    let last = last_seq.unwrap_or(0);
    if h.seq > last {
        let missing = h.seq - last;
        let why = match last_seq {
            Some(_) => format!(
                "the log ends here, but the chain head names record {}: {missing} record{} missing at the end \
                 (removed, or not written yet)",
                h.seq,
                if missing == 1 { "" } else { "s" }
            ),
            None => format!("no records, but the chain head names record {}", h.seq),
        };
        return Err(Broken {
            file,
            line,
            seq: last_seq,
            why,
        });
    }
    if !met_head && h.seq > 0 {
        return Err(Broken {
            file,
            line,
            seq: last_seq,
            why: format!(
                "the chain head names record {}, which is not among the records given \
                 (before the first one: the head is older than the files, or another chain's)",
                h.seq
            ),
        });
    }
    let end = if h.seq == last {
        End::AtHead(h.seq)
    } else {
        End::PastHead {
            head: h.seq,
            after: last - h.seq,
        }
    };
    Ok(Verified {
        records: count,
        end,
    })
}

/// Why verifying stops at a record the agent wrote when the log did not continue its head.
fn head_mismatch_why(v: &Value) -> String {
    let seq = |k: &str| {
        v.get(k)
            .and_then(|o| o.get("seq"))
            .and_then(Value::as_u64)
            .map_or_else(|| "none".to_string(), |s| s.to_string())
    };
    format!(
        "when the agent started, the log ended at record {} but its chain head named record {}: \
         records were removed or rewritten at the end of the log while the agent was stopped \
         (or lost in a power failure with `fsync: off`)",
        seq("log"),
        seq("head")
    )
}

/// Whether the chain in the file at `path` passes through `head`: a record numbered `head.seq`
/// has its hash, or one numbered `head.seq + 1` names it as `prev` (the first record of a file
/// rotated just after the head was saved). Reads the file from its start, parsing only the
/// records it needs.
pub fn passes_through(path: &std::path::Path, head: &Chain) -> io::Result<bool> {
    let file = std::fs::File::open(path)?;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        let Some(seq) = seq_of(&line) else { continue };
        if seq == head.seq {
            return Ok(split(&line).is_some_and(|(_, hash)| hash == head.prev));
        }
        if seq == head.seq + 1 {
            let v: Option<Value> = serde_json::from_str(&line).ok();
            let prev = v
                .as_ref()
                .and_then(|v| v.get("prev")?.as_str())
                .and_then(unhex);
            return Ok(prev == Some(head.prev));
        }
        if seq > head.seq + 1 {
            return Ok(false);
        }
    }
    Ok(false)
}

/// A record's `seq`, read from the start of its line (`{"ts":"...","seq":N,`) without parsing
/// the rest.
fn seq_of(line: &str) -> Option<u64> {
    const MARK: &[u8] = b"\"seq\":";
    let b = line.as_bytes();
    let start = b[..b.len().min(80)]
        .windows(MARK.len())
        .position(|w| w == MARK)?
        + MARK.len();
    let digits = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&b[start..start + digits])
        .ok()?
        .parse()
        .ok()
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

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(b: &[u8; 32]) -> String {
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
    fn the_end_is_checked_against_the_head() {
        let dir = std::env::temp_dir().join(format!("moat-chain-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, mid) = chain_file(&dir, "a.jsonl", Chain::START, 5);
        let (b, end) = chain_file(&dir, "b.jsonl", mid, 4);
        let both = [a.clone(), b.clone()];
        let at = |seq: u64| -> Chain {
            let mut c = Chain::START;
            for l in lines(&a).iter().chain(lines(&b).iter()) {
                c = Chain {
                    seq: seq_of(l).unwrap(),
                    prev: split(l).unwrap().1,
                };
                if c.seq == seq {
                    break;
                }
            }
            c
        };
        assert_eq!(at(9), end);
        let v = |files: &[PathBuf], mid: bool, head| verify_to(files, mid, Some(head));
        assert_eq!(verify_to(&both, false, None).unwrap().end, End::Unchecked);
        assert_eq!(v(&both, false, end).unwrap().end, End::AtHead(9));
        // The head lags: the records after it follow it.
        assert_eq!(
            v(&both, false, at(7)).unwrap().end,
            End::PastHead { head: 7, after: 2 }
        );
        // ... also when the head is the last record of a rotated file not given.
        assert_eq!(
            v(std::slice::from_ref(&b), true, mid).unwrap().end,
            End::PastHead { head: 5, after: 4 }
        );
        assert_eq!(
            v(&both, false, Chain::START).unwrap().end,
            End::PastHead { head: 0, after: 9 }
        );
        // Records cut off the end: how many.
        let e = v(std::slice::from_ref(&a), false, end).unwrap_err();
        assert_eq!(
            (e.file.clone(), e.line, e.seq),
            (a.clone(), 5, Some(5)),
            "{e}"
        );
        assert!(e.why.contains("4 records missing at the end"), "{e}");
        let cut = dir.join("cut.jsonl");
        std::fs::write(&cut, lines(&b)[..3].join("\n") + "\n").unwrap();
        let e = v(&[a.clone(), cut.clone()], false, end).unwrap_err();
        assert!(e.why.contains("1 record missing at the end"), "{e}");
        // A head naming another last record (the last record forged, with a valid hash).
        let forged = Chain {
            seq: 9,
            prev: [9; 32],
        };
        let e = v(&both, false, forged).unwrap_err();
        assert_eq!((e.file.clone(), e.line), (b.clone(), 4), "{e}");
        assert!(e.why.contains("does not match the chain head"), "{e}");
        // A head before the first record given.
        let e = v(std::slice::from_ref(&b), true, at(2)).unwrap_err();
        assert!(e.why.contains("not among the records given"), "{e}");
        // An empty log and a head.
        let empty = dir.join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        let e = v(std::slice::from_ref(&empty), false, end).unwrap_err();
        assert!(e.why.contains("no records"), "{e}");
        // passes_through: a record at the head's number with its hash, or the next naming it.
        assert!(passes_through(&b, &end).unwrap());
        assert!(
            passes_through(&b, &mid).unwrap(),
            "the first record follows it"
        );
        assert!(passes_through(&a, &at(3)).unwrap());
        assert!(!passes_through(&a, &end).unwrap());
        assert!(!passes_through(&b, &forged).unwrap());
        assert!(!passes_through(&b, &at(2)).unwrap());
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
