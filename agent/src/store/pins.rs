//! Pins: per server, the approved definition of each tool, prompt and resource it offers
//! (its canonical form and SHA-256), who pinned it (an operator, or trust on first use) and when.
use serde::{Deserialize, Serialize};

use super::{
    db::{Db as _, Records, Store, Write, check_key, get, put},
    error::StoreError,
    record::{Record, Timestamp},
};

const PINS: Records = Records::new("pins");

/// One pinned definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The definition's RFC 8785 form.
    pub canonical: String,
    /// Its SHA-256, lower-case hex.
    pub hash: String,
    pub at: Timestamp,
    /// `operator` or `first_use`.
    pub by: String,
}

impl Record for Pin {
    const TABLE: &'static str = "pins";
    const VERSION: u32 = 1;
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(PINS).map(drop)
}

/// `server/kind/name`: server names and kinds hold no `/`, so the first two split it.
fn key(server: &str, kind: &str, name: &str) -> String {
    format!("{server}/{kind}/{name}")
}

/// The pins.
pub struct Pins<'a>(&'a Store);

impl Store {
    pub fn pins(&self) -> Pins<'_> {
        Pins(self)
    }
}

impl Pins<'_> {
    /// Every pin of `server`: (kind, name, pin), in key order.
    pub fn of_server(&self, server: &str) -> Result<Vec<(String, String, Pin)>, StoreError> {
        let prefix = format!("{server}/");
        self.0.read(|r| {
            let t = r.table(PINS)?;
            let mut out = Vec::new();
            for item in t.range(prefix.as_str()..).db(r.path)? {
                let (k, v) = item.db(r.path)?;
                let Some(rest) = k.value().strip_prefix(&prefix) else {
                    break;
                };
                let Some((kind, name)) = rest.split_once('/') else {
                    return Err(StoreError::Corrupt {
                        path: r.path.to_path_buf(),
                        detail: format!("pin key {:?}", k.value()),
                    });
                };
                let pin = super::record::decode(&k.value(), v.value())?;
                out.push((kind.to_string(), name.to_string(), pin));
            }
            Ok(out)
        })
    }

    /// Pins `name` of `kind` on `server`, replacing its pin; the pin it replaced.
    pub fn put(
        &self,
        server: &str,
        kind: &str,
        name: &str,
        pin: &Pin,
    ) -> Result<Option<Pin>, StoreError> {
        self.write(server, kind, name, pin, true)
    }

    /// Pins `name` unless it has a pin already (trust on first use: the first definition
    /// stays, whoever comes second); the pin it has, if it had one.
    pub fn put_new(
        &self,
        server: &str,
        kind: &str,
        name: &str,
        pin: &Pin,
    ) -> Result<Option<Pin>, StoreError> {
        self.write(server, kind, name, pin, false)
    }

    fn write(
        &self,
        server: &str,
        kind: &str,
        name: &str,
        pin: &Pin,
        replace: bool,
    ) -> Result<Option<Pin>, StoreError> {
        let key = key(server, kind, name);
        check_key("pinned name", &key)?;
        self.0.write(|w| {
            let mut t = w.table(PINS)?;
            let old = get::<Pin>(&t, &key, w.path)?;
            if replace || old.is_none() {
                put(&mut t, &key, pin, w.path)?;
            }
            Ok(old)
        })
    }

    /// Removes the pin of `name`; the pin removed.
    pub fn remove(&self, server: &str, kind: &str, name: &str) -> Result<Option<Pin>, StoreError> {
        let key = key(server, kind, name);
        self.0.write(|w| {
            let mut t = w.table(PINS)?;
            let old = get::<Pin>(&t, &key, w.path)?;
            t.remove(key.as_str()).db(w.path)?;
            Ok(old)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(hash: &str) -> Pin {
        Pin {
            canonical: format!("{{\"h\":\"{hash}\"}}"),
            hash: hash.into(),
            at: Timestamp(7),
            by: "operator".into(),
        }
    }

    #[test]
    fn pins_are_kept_per_server_and_survive_reopening() {
        let dir = crate::store::tests::Dir::new("pins");
        let dir = dir.state();
        {
            let store = Store::open(&dir).unwrap();
            let pins = store.pins();
            assert_eq!(pins.put("files", "tool", "a/b", &pin("1")).unwrap(), None);
            assert_eq!(
                pins.put("files", "tool", "a/b", &pin("2")).unwrap(),
                Some(pin("1"))
            );
            // The first pin stays when only a new one may be taken.
            let first = pins.put_new("files", "tool", "a/b", &pin("9")).unwrap();
            assert_eq!(first, Some(pin("2")));
            assert_eq!(pins.put_new("files", "tool", "c", &pin("8")).unwrap(), None);
            assert_eq!(pins.remove("files", "tool", "c").unwrap(), Some(pin("8")));
            pins.put("files", "prompt", "greet", &pin("3")).unwrap();
            // A server whose name begins with the other's is another server.
            pins.put("files2", "tool", "x", &pin("4")).unwrap();
            pins.put("file", "tool", "y", &pin("5")).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let pins = store.pins();
        assert_eq!(
            pins.of_server("files").unwrap(),
            vec![
                ("prompt".into(), "greet".into(), pin("3")),
                ("tool".into(), "a/b".into(), pin("2")),
            ]
        );
        assert_eq!(pins.remove("files", "tool", "a/b").unwrap(), Some(pin("2")));
        assert_eq!(pins.remove("files", "tool", "a/b").unwrap(), None);
        assert_eq!(pins.of_server("files").unwrap().len(), 1);
        assert_eq!(pins.of_server("files2").unwrap().len(), 1);
        assert!(pins.of_server("nope").unwrap().is_empty());
        // A name no key can hold is refused, not written.
        assert!(pins.put("files", "tool", "a\nb", &pin("6")).is_err());
    }
}
