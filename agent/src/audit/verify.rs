//! `moat audit verify`: the hash chain through the files given, and, with the chain head, its
//! end (records removed from the end of the newest file leave the chain itself whole; only the
//! head shows them).
use std::path::{Path, PathBuf};

use super::chain::{self, Broken, End};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the chain head {path}: {source}")]
    Head {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit chain broken: {0}")]
    Broken(Broken),
}

/// Checks the chain through `files` (any order: put in chain order by their first records;
/// with `mid_chain` the first may follow records not given) and, with `head` (a head file),
/// its end. Returns the report.
pub fn verify(
    files: &[PathBuf],
    mid_chain: bool,
    head: Option<&Path>,
) -> Result<String, VerifyError> {
    let head_chain = head
        .map(|path| {
            super::head::read(path).map_err(|source| VerifyError::Head {
                path: path.to_owned(),
                source,
            })
        })
        .transpose()?;
    let files = chain::in_chain_order(files);
    let v = chain::verify_to(&files, mid_chain, head_chain).map_err(VerifyError::Broken)?;
    let start = if mid_chain {
        " (from its first record given)"
    } else {
        ""
    };
    let end = match v.end {
        End::Unchecked => "; its end was not checked against a chain head (records removed \
                           from the end cannot be seen: give --head or -c)"
            .to_string(),
        End::AtHead(seq) => format!(", ending at the chain head (record {seq})"),
        End::PastHead { head, after } => format!(
            ", through the chain head (record {head}) and {after} record{} written after it was saved",
            if after == 1 { "" } else { "s" }
        ),
    };
    Ok(format!(
        "ok: {} records, one unbroken chain{start}{end}",
        v.records
    ))
}
