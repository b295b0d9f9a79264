//! The MCP methods Moat knows, one row each: the policy action that decides it, what it names
//! (the target its params hold), how a denial is answered, and whether its result is a list
//! Moat filters. Every other part of Moat asks this table; adding a method is one row here
//! and its action in the Cedar schema.

/// What a method names: read from its params, decided by the policies, and what a denial says
/// does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Tool,
    Resource,
    Prompt,
}

impl Target {
    /// The params key that holds it (also the key of a list entry).
    pub const fn param(self) -> &'static str {
        match self {
            Target::Tool | Target::Prompt => "name",
            Target::Resource => "uri",
        }
    }

    /// What it is called in errors and in the audit record.
    pub const fn noun(self) -> &'static str {
        match self {
            Target::Tool => "tool",
            Target::Resource => "resource",
            Target::Prompt => "prompt",
        }
    }

    /// Its Cedar entity type.
    pub const fn entity(self) -> &'static str {
        match self {
            Target::Tool => "Tool",
            Target::Resource => "Resource",
            Target::Prompt => "Prompt",
        }
    }
}

/// What the decoder reads from a method's params, besides what every message has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    None,
    /// The tool, resource URI or prompt (a string, required).
    Target(Target),
    /// `initialize`: `protocolVersion` (a string, required).
    ProtocolVersion,
    /// `notifications/cancelled`: `requestId`, the request it cancels.
    Cancels,
}

/// A list whose entries Moat decides one by one, each as the call it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum List {
    Tools,
    Resources,
    Prompts,
}

impl List {
    /// The method whose result it is.
    pub const fn method(self) -> Method {
        match self {
            List::Tools => Method::ToolsList,
            List::Resources => Method::ResourcesList,
            List::Prompts => Method::PromptsList,
        }
    }

    /// The key of the result's array.
    pub const fn array(self) -> &'static str {
        match self {
            List::Tools => "tools",
            List::Resources => "resources",
            List::Prompts => "prompts",
        }
    }

    /// The call each entry stands for (an entry is shown when that call would be allowed).
    pub const fn entry(self) -> Method {
        match self {
            List::Tools => Method::ToolsCall,
            List::Resources => Method::ResourcesRead,
            List::Prompts => Method::PromptsGet,
        }
    }

    /// What names an entry: the entry call's target.
    pub fn target(self) -> Target {
        match self.entry().spec().param {
            Param::Target(t) => t,
            _ => unreachable!("a list entry's call names a target"),
        }
    }
}

/// How a denied request is answered. The client learns that it may not, never which policy
/// said so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// As the server answers a name it does not have: 200 and its JSON-RPC error
    /// ("Unknown tool: x", "Resource not found: x").
    Unknown(Target),
    /// 403 and a JSON-RPC error "Forbidden: <method>".
    Forbidden,
    /// 405 with `Allow: POST`: what a server without the HTTP feature answers.
    NotAllowed,
}

/// The action deciding every notification a client sends.
pub const NOTIFICATION: &str = "notification";
/// The action deciding any request method not in the table.
pub const OTHER: &str = "other";

/// One known method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    /// The Cedar action that decides it.
    pub action: &'static str,
    pub param: Param,
    /// Its result is a list Moat filters.
    pub list: Option<List>,
}

impl Spec {
    /// What it names, if anything.
    pub const fn target(&self) -> Option<Target> {
        match self.param {
            Param::Target(t) => Some(t),
            _ => None,
        }
    }

    pub const fn denial(&self) -> Denial {
        match self.target() {
            Some(t) => Denial::Unknown(t),
            None => Denial::Forbidden,
        }
    }
}

macro_rules! methods {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $action:expr, $param:expr, $list:expr; )*) => {
        /// A JSON-RPC method: one Moat knows, any other notification, or any other method.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method {
            $( $(#[$doc])* $variant, )*
            /// Any other `notifications/...`.
            Notification,
            /// Any other method.
            Other,
        }

        /// The table: every known method, in the order of the Cedar schema.
        pub static METHODS: &[Spec] = &[
            $( Spec { name: $name, action: $action, param: $param, list: $list }, )*
        ];

        impl Method {
            const KNOWN: &[Method] = &[$( Method::$variant ),*];
        }
    };
}

use Param::{Cancels, ProtocolVersion, Target as Names};

methods! {
    // variant                 name                          action                       params                      list
    Initialize              = "initialize",               "initialize",               ProtocolVersion,            None;
    Ping                    = "ping",                     "ping",                     Param::None,                None;
    ToolsList               = "tools/list",               "tools/list",               Param::None,                Some(List::Tools);
    ToolsCall               = "tools/call",               "tools/call",               Names(Target::Tool),        None;
    ResourcesList           = "resources/list",           "resources/list",           Param::None,                Some(List::Resources);
    ResourcesTemplatesList  = "resources/templates/list", "resources/templates/list", Param::None,                None;
    ResourcesRead           = "resources/read",           "resources/read",           Names(Target::Resource),    None;
    ResourcesSubscribe      = "resources/subscribe",      "resources/subscribe",      Names(Target::Resource),    None;
    ResourcesUnsubscribe    = "resources/unsubscribe",    "resources/unsubscribe",    Names(Target::Resource),    None;
    PromptsList             = "prompts/list",             "prompts/list",             Param::None,                Some(List::Prompts);
    PromptsGet              = "prompts/get",              "prompts/get",              Names(Target::Prompt),      None;
    CompletionComplete      = "completion/complete",      "completion/complete",      Param::None,                None;
    LoggingSetLevel         = "logging/setLevel",         "logging/setLevel",         Param::None,                None;
    SubscriptionsListen     = "subscriptions/listen",     "subscriptions/listen",     Param::None,                None;
    TasksGet                = "tasks/get",                "tasks/get",                Param::None,                None;
    TasksResult             = "tasks/result",             "tasks/result",             Param::None,                None;
    TasksList               = "tasks/list",               "tasks/list",               Param::None,                None;
    TasksCancel             = "tasks/cancel",             "tasks/cancel",             Param::None,                None;
    NotificationsCancelled  = "notifications/cancelled",  NOTIFICATION,               Cancels,                    None;
}

/// The spec of `notifications/...` methods not in the table, and of unknown methods.
const NOTIFICATION_SPEC: Spec = Spec {
    name: "notifications/*",
    action: NOTIFICATION,
    param: Param::None,
    list: None,
};
const OTHER_SPEC: Spec = Spec {
    name: "*",
    action: OTHER,
    param: Param::None,
    list: None,
};

impl Method {
    /// The method called `name` (exactly: method names are case-sensitive).
    pub fn of(name: &str) -> Method {
        if let Some(i) = METHODS.iter().position(|s| s.name == name) {
            return Method::KNOWN[i];
        }
        if name.starts_with("notifications/") {
            Method::Notification
        } else {
            Method::Other
        }
    }

    pub fn spec(self) -> &'static Spec {
        match self {
            Method::Notification => &NOTIFICATION_SPEC,
            Method::Other => &OTHER_SPEC,
            known => {
                let i = Method::KNOWN.iter().position(|m| *m == known);
                &METHODS[i.expect("every known method has a row")]
            }
        }
    }

    /// A notification method (`notifications/...`): the only methods a message without an id
    /// may carry.
    pub fn is_notification(self) -> bool {
        self.spec().action == NOTIFICATION
    }

    /// The Cedar action that decides it: its own, `notification` for every notification,
    /// `other` for any method not in the table (never one of the HTTP actions).
    pub fn action(self) -> &'static str {
        self.spec().action
    }

    pub fn target(self) -> Option<Target> {
        self.spec().target()
    }

    pub fn list(self) -> Option<List> {
        self.spec().list
    }
}

/// What an HTTP request itself asks, apart from any JSON-RPC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpAction {
    /// A GET of the server's event stream (Streamable HTTP or legacy).
    StreamOpen,
    /// A DELETE that ends a session.
    SessionEnd,
}

impl HttpAction {
    pub const fn action(self) -> &'static str {
        match self {
            HttpAction::StreamOpen => "stream/open",
            HttpAction::SessionEnd => "session/end",
        }
    }

    pub const fn denial(self) -> Denial {
        Denial::NotAllowed
    }
}

/// Every Cedar action, once: the table's, `notification`, the HTTP actions and `other`.
pub fn actions() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    METHODS
        .iter()
        .map(|s| s.action)
        .chain([
            NOTIFICATION,
            HttpAction::StreamOpen.action(),
            HttpAction::SessionEnd.action(),
            OTHER,
        ])
        .filter(move |a| {
            let new = !seen.contains(a);
            if new {
                seen.push(a);
            }
            new
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_found_by_its_name_and_names_are_unique() {
        for (i, spec) in METHODS.iter().enumerate() {
            assert_eq!(Method::of(spec.name).spec(), spec);
            assert!(
                METHODS[..i].iter().all(|s| s.name != spec.name),
                "{} twice",
                spec.name
            );
        }
        assert_eq!(Method::KNOWN.len(), METHODS.len());
    }

    #[test]
    fn unknown_methods_are_other_or_a_notification_never_an_http_action() {
        for name in [
            "Tools/call",
            "tools/call ",
            "stream/open",
            "session/end",
            "other",
            "",
        ] {
            assert_eq!(Method::of(name), Method::Other, "{name:?}");
            assert_eq!(Method::of(name).action(), OTHER);
        }
        for name in ["notifications/initialized", "notifications/anything"] {
            assert_eq!(Method::of(name), Method::Notification);
            assert!(Method::of(name).is_notification());
        }
        assert!(Method::of("notifications/cancelled").is_notification());
        assert!(!Method::of("tools/call").is_notification());
        assert!(!Method::of("notification").is_notification());
    }

    #[test]
    fn lists_stand_for_their_entries_calls() {
        for list in [List::Tools, List::Resources, List::Prompts] {
            assert_eq!(list.method().list(), Some(list));
            assert_eq!(list.entry().target(), Some(list.target()));
        }
    }

    #[test]
    fn actions_are_listed_once() {
        let all: Vec<_> = actions().collect();
        for a in &all {
            assert_eq!(all.iter().filter(|b| b == &a).count(), 1, "{a}");
        }
        assert!(all.contains(&NOTIFICATION) && all.contains(&OTHER));
        assert!(all.contains(&"stream/open") && all.contains(&"session/end"));
    }
}
