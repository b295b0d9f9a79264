//! A server's policies while the agent runs: swapped whole when the file changes (or on
//! SIGHUP); a file that does not load leaves the policies in force as they were.
use std::{
    sync::{Arc, RwLock},
    time::SystemTime,
};

use super::{Engine, load};
use crate::config::Policy;

pub struct Live {
    pub config: Policy,
    engine: RwLock<Arc<Engine>>,
    /// The file's modification time and size when it was last read.
    stamp: RwLock<Option<(SystemTime, u64)>>,
}

/// What a reload did.
pub enum Reloaded {
    Unchanged,
    Replaced,
    /// The new file did not load; the old policies stay.
    Failed(String),
}

impl Live {
    pub fn new(config: Policy, engine: Engine) -> Self {
        Self {
            stamp: RwLock::new(stamp(&config)),
            config,
            engine: RwLock::new(Arc::new(engine)),
        }
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<Engine> {
        self.engine.read().expect("policy lock").clone()
    }

    /// Reads the file again if it changed (or always, with `force`).
    pub fn reload(&self, force: bool) -> Reloaded {
        let now = stamp(&self.config);
        if !force && now == *self.stamp.read().expect("policy lock") {
            return Reloaded::Unchanged;
        }
        *self.stamp.write().expect("policy lock") = now;
        match load(&self.config) {
            Ok(engine) => {
                *self.engine.write().expect("policy lock") = Arc::new(engine);
                Reloaded::Replaced
            }
            Err(e) => Reloaded::Failed(e),
        }
    }
}

fn stamp(c: &Policy) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(&c.file).ok()?;
    Some((m.modified().ok()?, m.len()))
}
