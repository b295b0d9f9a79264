//! The signals a request can raise against its subject's baseline (see `behaviour`), what each
//! means, and the score they add up to.
use serde::{Serialize, Serializer, ser::SerializeSeq as _};

/// One way a request differs from what its subject usually does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    NewTool,
    NewMethod,
    NewAddress,
    NewProcess,
    OffHours,
    RateSpike,
    DenialBurst,
    Enumeration,
    UnusualArguments,
}

impl Signal {
    pub const ALL: [Signal; 9] = [
        Signal::NewTool,
        Signal::NewMethod,
        Signal::NewAddress,
        Signal::NewProcess,
        Signal::OffHours,
        Signal::RateSpike,
        Signal::DenialBurst,
        Signal::Enumeration,
        Signal::UnusualArguments,
    ];

    /// Its name in audit records, metrics and `context.behaviour.signals`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::NewTool => "new_tool",
            Signal::NewMethod => "new_method",
            Signal::NewAddress => "new_address",
            Signal::NewProcess => "new_process",
            Signal::OffHours => "off_hours",
            Signal::RateSpike => "rate_spike",
            Signal::DenialBurst => "denial_burst",
            Signal::Enumeration => "enumeration",
            Signal::UnusualArguments => "unusual_arguments",
        }
    }

    /// What it means.
    pub fn explain(self) -> &'static str {
        match self {
            Signal::NewTool => "first call of this tool, resource or prompt by this subject",
            Signal::NewMethod => "first request of this kind (MCP method) by this subject",
            Signal::NewAddress => "first request from this source address (IPv6: its /64)",
            Signal::NewProcess => "first request from this local process (uid and command)",
            Signal::OffHours => {
                "at an hour (with the hours on either side) or on a weekday that holds under 1% \
                 of this subject's requests"
            }
            Signal::RateSpike => {
                "more calls this minute, to this target or in all, than 3 times the most in any \
                 earlier minute (and at least 10 to a target, 30 in all)"
            }
            Signal::DenialBurst => {
                "5 or more denials this minute, and at least 3 times the most in any earlier \
                 minute (probing)"
            }
            Signal::Enumeration => {
                "after a list, calls to more different targets within 5 minutes than twice the \
                 most it ever called after a list (and at least 8)"
            }
            Signal::UnusualArguments => {
                "a tool called with an argument key it never had, or arguments over 4 times \
                 (and 1 KiB over) the largest it sent"
            }
        }
    }

    /// What it adds to the score.
    pub fn weight(self) -> u32 {
        match self {
            Signal::NewMethod | Signal::UnusualArguments => 10,
            Signal::NewTool | Signal::NewAddress | Signal::NewProcess | Signal::OffHours => 20,
            Signal::RateSpike | Signal::DenialBurst => 30,
            Signal::Enumeration => 40,
        }
    }

    pub fn by_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of signals.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Signals(u16);

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl Signals {
    pub fn insert(&mut self, s: Signal) {
        self.0 |= s.bit();
    }

    pub fn contains(self, s: Signal) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Signals) -> Signals {
        Signals(self.0 | other.0)
    }

    /// The set as a number (for a decision cache's key).
    pub fn bits(self) -> u16 {
        self.0
    }

    pub fn iter(self) -> impl Iterator<Item = Signal> {
        Signal::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.iter().map(Signal::name)
    }

    /// The sum of the signals' weights, at most 100.
    pub fn score(self) -> u32 {
        self.iter().map(Signal::weight).sum::<u32>().min(100)
    }
}

impl FromIterator<Signal> for Signals {
    fn from_iter<I: IntoIterator<Item = Signal>>(iter: I) -> Self {
        let mut out = Signals::default();
        iter.into_iter().for_each(|s| out.insert(s));
        out
    }
}

impl Serialize for Signals {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for name in self.names() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

/// What the monitor made of one request: in its audit record, and (unless in shadow mode) in
/// its policy context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub score: u32,
    pub signals: Signals,
    /// The subject's baseline is still learning: no signal counts yet.
    pub learning: bool,
    /// `mode: shadow`: policies do not see the signals.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

impl Assessment {
    pub fn new(signals: Signals, learning: bool, shadow: bool) -> Self {
        Self {
            score: signals.score(),
            signals,
            learning,
            shadow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_found_again_and_the_score_is_capped() {
        for s in Signal::ALL {
            assert_eq!(Signal::by_name(s.name()), Some(s));
            assert!(!s.explain().is_empty());
        }
        let all: Signals = Signal::ALL.into_iter().collect();
        assert_eq!(all.iter().count(), Signal::ALL.len());
        assert_eq!(all.score(), 100);
        let two: Signals = [Signal::NewTool, Signal::OffHours].into_iter().collect();
        assert_eq!(two.score(), 40);
        assert_eq!(
            serde_json::to_value(two).unwrap(),
            serde_json::json!(["new_tool", "off_hours"])
        );
        assert_eq!(Signal::by_name("nope"), None);
    }
}
