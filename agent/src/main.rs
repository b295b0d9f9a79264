//! `moat`: the command line, a thin layer over [`app`].
use std::{io::Write as _, path::PathBuf};

use clap::{Parser, Subcommand};

/// Per-request allocations from several threads: mimalloc avoids glibc's arena contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the agent gives freed memory back to the system when nothing else does.
const RETURN_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

use moat::{
    Config, Mode, app,
    control::{self, Request},
    error::AppError,
};

#[derive(Parser)]
#[command(
    name = "moat",
    version,
    about = "Kernel-enforced protection and audit for MCP servers"
)]
struct Cli {
    /// How the agent's own log (on standard error) is written: `human` or `json` (one object
    /// per line; lines written while a request is served carry its `request_id`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: attach (or adopt, upgrading them in place) the kernel programs and
    /// serve the protected ports.
    Run {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        /// DANGEROUS: no kernel programs (no root needed); each server's port is a plain
        /// listener on 127.0.0.1. Nothing is steered, sealed or guarded: a local process can
        /// reach the upstreams directly. For tests, and hosts without eBPF.
        #[arg(long)]
        unprotected: bool,
        /// Replace the agent of this instance that is running: this version's kernel programs
        /// go in through the pinned links and this agent's socket into the sockmap, then the
        /// running agent drains and stops; the ports never open. For upgrades and restarts.
        #[arg(long)]
        take_over: bool,
    },
    /// Validate a config file.
    Check {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        /// Validate it for `moat run --unprotected`.
        #[arg(long)]
        unprotected: bool,
    },
    /// Check the kernel and the host for what Moat needs, and what the config names; print
    /// what is missing and how to fix it (exit status 1 when something is).
    Doctor {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show attached programs, protected ports, counters and the proxy socket (works while the agent is down).
    Status {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The pin directory (default: agent.bpffs of the config).
        #[arg(long)]
        bpffs: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Development certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Per-request policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Access tokens from Moat's own issuer (`auth: { issuer: local }`), for development.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Local users of the authorization server (`login: local`).
    #[command(subcommand)]
    Users(UsersCommand),
    /// OAuth clients known to the authorization server.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// What users granted clients (refresh-token families), and revoking it.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// What each server offers, against its pins (`integrity`), and approving it.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Stop requests at once, on new requests and open streams, until `moat unlock`: every
    /// server's (--all), one server's, one user's (--sub) or one OAuth client's. Without a
    /// scope, list the lockdowns in force.
    Lockdown {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why (in the audit record and the list).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// What each user (or OAuth client) usually does, learned per server with `behaviour`
    /// on, and the signals its requests raised.
    #[command(subcommand)]
    Behaviour(BehaviourCommand),
    /// Requests held for a person's approval by `@approval` policies.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Content inspection of arguments and results (`inspect` on a server).
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Lift a lockdown.
    Unlock {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Remove the pinned programs: the protected ports open again.
    Detach {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        bpffs: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user, or set a user's password (read from the first line of stdin).
    Add {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Remove a user; their grants are revoked.
    Remove {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    List {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClientsCommand {
    List {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
    },
    /// A client, its consents and grants.
    Show {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Revoke a client: its grants and consents end, its access tokens are refused at once.
    Revoke {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

#[derive(Subcommand)]
enum GrantsCommand {
    List {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(long, allow_hyphen_values = true)]
        sub: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
    },
    /// End a user's (or a client's) refresh tokens, refuse their access tokens and close
    /// their open streams, at once.
    Revoke {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(
            long,
            allow_hyphen_values = true,
            conflicts_with = "client",
            required_unless_present = "client"
        )]
        sub: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
    },
    /// Re-seal the users' third-party tokens under a new key (upstream_auth: { oauth2 }).
    RotateKey {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
    },
}

/// What a lockdown stops: one of these.
#[derive(clap::Args)]
#[group(multiple = false)]
struct ScopeArgs {
    #[arg(long)]
    all: bool,
    #[arg(long)]
    server: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    sub: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    client: Option<String>,
}

impl ScopeArgs {
    fn scope(self) -> Option<moat::lockdown::Scope> {
        use moat::lockdown::Scope;
        match self {
            ScopeArgs { all: true, .. } => Some(Scope::All),
            ScopeArgs {
                server: Some(s), ..
            } => Some(Scope::Server(s)),
            ScopeArgs { sub: Some(s), .. } => Some(Scope::Sub(s)),
            ScopeArgs {
                client: Some(c), ..
            } => Some(Scope::Client(c)),
            _ => None,
        }
    }
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// The approvals waiting for an answer (JSON).
    List {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
    },
    /// Approves the held request ID: it is forwarded.
    Approve {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        id: String,
        /// The approver's name, for the audit record (with the caller's uid).
        #[arg(long)]
        by: Option<String>,
    },
    /// Denies the held request ID: it is refused.
    Deny {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        id: String,
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum InspectCommand {
    /// The built-in rules: id, kind, default action and what each finds (JSON).
    Rules,
}

#[derive(Subcommand)]
enum BehaviourCommand {
    /// A user's (--sub) or OAuth client's (--client) baseline and recent signals (JSON).
    Show {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[command(flatten)]
        who: WhoArgs,
        /// One server (default: every server with `behaviour` on).
        #[arg(long)]
        server: Option<String>,
    },
}

/// Whose baseline: one of these.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct WhoArgs {
    #[arg(long, allow_hyphen_values = true)]
    sub: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    client: Option<String>,
}

#[derive(Subcommand)]
enum ToolsCommand {
    /// Ask the server what it offers now (the running agent connects to it as an MCP client)
    /// and show it as `diff` does; then `approve` what you accept.
    Pin {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(long)]
        server: String,
    },
    /// Every entry (tool, prompt, resource) of a server that is pinned or was listed since
    /// the agent started: its state (`pinned`, `changed`, `unpinned`), the pinned and the seen
    /// SHA-256, the definition seen and its markers of poisoning.
    Diff {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(long)]
        server: String,
    },
    /// Pin the definitions last listed of the entries named (or of every entry not pinned as
    /// it is, with --all); each pin is an audit record.
    Approve {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(long)]
        server: String,
        #[arg(long, conflicts_with = "names", required_unless_present = "names")]
        all: bool,
        #[arg(allow_hyphen_values = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write NAME.crt, NAME.key and NAME-ca.crt (a development CA to trust) into --out.
    SelfSigned {
        name: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain through FILEs (a log and its rotated files, in any order: they
    /// are put in chain order by their first record); name the first broken, missing,
    /// reordered or altered record and exit with status 1. With the chain head (--head, or
    /// found through -c), records missing at the end are found too.
    Verify {
        /// The first record may follow records not given (removed by retention, or archived
        /// elsewhere); everything from it on is checked.
        #[arg(long)]
        mid_chain: bool,
        /// The chain head to check the end against (`<state_dir>/audit-head`).
        #[arg(long, conflicts_with = "config")]
        head: Option<PathBuf>,
        /// Check the end against the chain head in this config's `agent.state_dir`.
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Decide one described request (a JSON file) with a server's policies; print the
    /// decision, the deciding policies and the reason.
    Test {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        #[arg(long)]
        request: PathBuf,
        /// Exit with status 1 unless the decision is this (`allow` or `deny`).
        #[arg(long)]
        expect: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print an access token for a server whose config trusts the local issuer.
    Mint {
        #[arg(short, long, default_value = "/etc/moat/moat.yaml")]
        config: PathBuf,
        /// The server (its `name`) the token is for: its audience.
        #[arg(long)]
        server: String,
        /// The user.
        #[arg(long, allow_hyphen_values = true)]
        sub: String,
        /// Print N tokens, one per line, for the users SUB-0 to SUB-(N-1) (1 to 100000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(moat::control::MAX_MINT)))]
        count: Option<u32>,
        /// Granted scopes (repeat, or space-separated).
        #[arg(long)]
        scope: Vec<String>,
        #[arg(long, default_value = "moat-cli")]
        client_id: String,
        /// An extra claim, KEY=VALUE (VALUE as JSON if it parses, else a string), e.g.
        /// `--claim 'groups=["readers"]'` for policies.
        #[arg(long, value_parser = parse_claim)]
        claim: Vec<(String, serde_json::Value)>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

fn main() {
    moat::install_crypto();
    // rustls logs a warning per handshake for clients that send an IP address as SNI (common);
    // by default only its errors are shown, so clients cannot flood the log.
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOAT_LOG")
        .unwrap_or_else(|_| "info,rustls=error".into());
    // Colours only for a person at a terminal, not in files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = matches!(cli.log_format, LogFormat::Json);
    let log = moat::log_lines::subscriber(json, ansi, filter, std::io::stderr);
    // Also takes the lines of libraries that log through `log`.
    if let Err(e) = tracing_subscriber::util::SubscriberInitExt::try_init(log) {
        eprintln!("moat: cannot set up logging: {e}");
    }
    match SMALL_PAGES_ERRNO.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {}
        errno => tracing::warn!(
            "cannot turn off transparent huge pages (more memory resident): {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
    if let Err(e) = dispatch(cli.command) {
        eprintln!("moat: {e}");
        std::process::exit(e.exit_code());
    }
}

/// mimalloc asks for transparent huge pages for its arenas: each 2 MiB region the heap touches
/// is then resident whole, 20 of an idle agent's 23 MiB of heap while its live data is about
/// one. With 4 KiB pages an idle agent holds what it uses. Run by the loader before `main`,
/// before the first allocation (std's own start allocates), so that no huge page is taken at
/// all; the errno of a failure is kept for `main` to report.
// SAFETY: the loader calls each entry of the init array once, before `main`, with arguments
// that `small_pages` does not read; it only makes a syscall and stores an integer.
#[used]
#[unsafe(link_section = ".init_array")]
static SMALL_PAGES: extern "C" fn() = small_pages;

static SMALL_PAGES_ERRNO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn small_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
        SMALL_PAGES_ERRNO.store(errno, std::sync::atomic::Ordering::Relaxed);
    }
}

/// mimalloc gives freed pages back to the system a second after they were freed (its purge
/// delay), but only when some thread next allocates or frees pages: an agent left idle after a
/// wave of closed streams would keep their memory. A thread of its own lets the expired purges
/// run each second. (A purge delay of 0 would return them at once, but makes the hot path pay an
/// madvise and a TLB shootdown for every page freed.)
fn return_memory() {
    let spawned = std::thread::Builder::new()
        .name("moat-memory".into())
        .spawn(|| {
            // SAFETY: sets up this thread's mimalloc heap, which the collection works through.
            unsafe { libmimalloc_sys::mi_thread_init() };
            loop {
                std::thread::sleep(RETURN_MEMORY_EVERY);
                // SAFETY: mimalloc's collection, safe from any thread; `false` purges only
                // what has waited its delay.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the thread that returns freed memory: {e}");
    }
}

fn dispatch(command: Command) -> Result<(), AppError> {
    match command {
        Command::Run {
            config,
            unprotected,
            take_over,
        } => {
            return_memory();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(AppError::io("starting the runtime"))?
                .block_on(app::run(&config, mode(unprotected), take_over))
        }
        Command::Check {
            config,
            unprotected,
        } => {
            print!("{}", app::check(&config, mode(unprotected))?);
            Ok(())
        }
        Command::Doctor { config, json } => {
            let config = config.map(|p| Config::load(&p)).transpose()?;
            moat::install_crypto();
            let checks = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(AppError::io("starting the runtime"))?
                .block_on(moat::doctor::run(config.as_ref()));
            if json {
                println!("{}", serde_json::to_string(&checks).unwrap_or_default());
            } else {
                print!("{}", moat::doctor::text(&checks));
            }
            if checks
                .iter()
                .any(|c| c.outcome == moat::doctor::Outcome::Missing)
            {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Status {
            config,
            bpffs,
            json,
        } => {
            let config = config.map(|p| Config::load(&p)).transpose()?;
            let dir = pin_dir(bpffs, config.as_ref())?;
            let s = moat::status::status(&dir, config.as_ref())?;
            if json {
                println!("{s}");
            } else {
                print!("{}", moat::status::status_text(&s));
            }
            Ok(())
        }
        Command::Cert(CertCommand::SelfSigned { name, out }) => {
            let w = moat::write_self_signed(&name, &out)?;
            println!(
                "certificate: {}\nkey:         {}\nCA to trust: {}",
                w.cert.display(),
                w.key.display(),
                w.ca.display()
            );
            Ok(())
        }
        Command::Token(TokenCommand::Mint {
            config,
            server,
            sub,
            count,
            scope,
            client_id,
            claim,
            ttl,
        }) => {
            let config = Config::load(&config)?;
            let scopes = scope
                .iter()
                .flat_map(|s| s.split_whitespace())
                .map(str::to_string)
                .collect();
            let req = Request::Mint {
                server,
                sub,
                count,
                client_id,
                scopes,
                claims: claim.into_iter().collect(),
                ttl,
            };
            match control::run(&config, req)? {
                serde_json::Value::String(t) => println!("{t}"),
                serde_json::Value::Array(ts) => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    for t in ts {
                        writeln!(out, "{}", t.as_str().unwrap_or_default())
                            .map_err(AppError::io("writing the tokens"))?;
                    }
                    out.flush().map_err(AppError::io("writing the tokens"))?;
                }
                other => println!("{other}"),
            }
            Ok(())
        }
        Command::Users(UsersCommand::Add { config, name }) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(AppError::io("reading the password from stdin"))?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            control_print(&config, Request::UserAdd { name, password })
        }
        Command::Users(UsersCommand::Remove { config, name }) => {
            control_print(&config, Request::UserRemove { name })
        }
        Command::Users(UsersCommand::List { config }) => control_print(&config, Request::Users),
        Command::Clients(ClientsCommand::List { config }) => {
            control_print(&config, Request::Clients)
        }
        Command::Clients(ClientsCommand::Show { config, id }) => {
            control_print(&config, Request::ClientShow { id })
        }
        Command::Clients(ClientsCommand::Revoke { config, id }) => {
            control_print(&config, Request::ClientRevoke { id })
        }
        Command::Grants(GrantsCommand::List {
            config,
            sub,
            client,
        }) => control_print(&config, Request::Grants { sub, client }),
        Command::Grants(GrantsCommand::Revoke {
            config,
            sub,
            client,
        }) => control_print(&config, Request::GrantsRevoke { sub, client }),
        Command::Grants(GrantsCommand::RotateKey { config }) => {
            control_print(&config, Request::UpstreamRotateKey)
        }
        Command::Lockdown {
            config,
            scope,
            reason,
        } => match scope.scope() {
            Some(scope) => control_print(&config, Request::Lockdown { scope, reason }),
            None => control_print(&config, Request::Lockdowns),
        },
        Command::Behaviour(BehaviourCommand::Show {
            config,
            who: WhoArgs { sub, client },
            server,
        }) => control_print(
            &config,
            Request::Behaviour {
                server,
                sub,
                client,
            },
        ),
        Command::Approvals(ApprovalsCommand::List { config }) => {
            control_print(&config, Request::Approvals)
        }
        Command::Approvals(ApprovalsCommand::Approve { config, id, by }) => control_print(
            &config,
            Request::ApprovalAnswer {
                id,
                approve: true,
                by,
            },
        ),
        Command::Approvals(ApprovalsCommand::Deny { config, id, by }) => control_print(
            &config,
            Request::ApprovalAnswer {
                id,
                approve: false,
                by,
            },
        ),
        Command::Inspect(InspectCommand::Rules) => {
            println!("{:#}", moat::inspect_rules());
            Ok(())
        }
        Command::Unlock { config, scope } => match scope.scope() {
            Some(scope) => control_print(&config, Request::Unlock { scope }),
            None => Err(AppError::NoScope),
        },
        Command::Tools(ToolsCommand::Pin { config, server }) => {
            control_print(&config, Request::ToolsPin { server })
        }
        Command::Tools(ToolsCommand::Diff { config, server }) => {
            control_print(&config, Request::ToolsDiff { server })
        }
        Command::Tools(ToolsCommand::Approve {
            config,
            server,
            all,
            names,
        }) => control_print(
            &config,
            Request::ToolsApprove {
                server,
                names: (!all).then_some(names),
            },
        ),
        Command::Policy(PolicyCommand::Test {
            config,
            request,
            expect,
            json,
        }) => {
            let config = Config::load(&config)?;
            let d = app::policy_test(&config, &request)?;
            if json {
                println!("{}", serde_json::to_string(&d).unwrap_or_default());
            } else {
                println!(
                    "decision: {}\npolicies: {}\nreason:   {}",
                    d.effect,
                    d.policies.join(", "),
                    d.reason
                );
            }
            match expect {
                Some(e) if e != d.effect.as_str() => Err(AppError::Expectation(format!(
                    "expected {e}, decided {}",
                    d.effect
                ))),
                _ => Ok(()),
            }
        }
        Command::Audit(AuditCommand::Verify {
            files,
            mid_chain,
            head,
            config,
        }) => {
            let head = match (head, config) {
                (Some(h), _) => Some(h),
                (None, Some(c)) => Some(moat::audit_head_path(&Config::load(&c)?.agent.state_dir)),
                (None, None) => None,
            };
            let report = moat::audit_verify(&files, mid_chain, head.as_deref())
                .map_err(|e| AppError::Expectation(e.to_string()))?;
            println!("{report}");
            Ok(())
        }
        Command::Detach { config, bpffs } => {
            let config = config.map(|p| Config::load(&p)).transpose()?;
            let dir = pin_dir(bpffs, config.as_ref())?;
            app::detach(&dir)?;
            println!(
                "detached: removed {}; the protected ports are open again",
                dir.display()
            );
            Ok(())
        }
    }
}

/// Runs `req` (in the agent, or on the store) and prints its answer as JSON.
fn control_print(config: &std::path::Path, req: Request) -> Result<(), AppError> {
    let config = Config::load(config)?;
    let answer = control::run(&config, req)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    );
    Ok(())
}

fn mode(unprotected: bool) -> Mode {
    if unprotected {
        Mode::Unprotected
    } else {
        Mode::Steered
    }
}

fn parse_claim(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    if k.is_empty() {
        return Err("the claim needs a name".into());
    }
    let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
    Ok((k.to_string(), v))
}

fn pin_dir(bpffs: Option<PathBuf>, config: Option<&Config>) -> Result<PathBuf, AppError> {
    bpffs
        .or_else(|| config.map(|c| c.agent.bpffs.clone()))
        .ok_or(AppError::NoBpffs)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, ClientsCommand, Command, GrantsCommand};

    /// Client ids are random base64url and may begin with '-'; a command naming one must
    /// take it as the value, not as an unknown option.
    #[test]
    fn ids_that_begin_with_a_dash_are_values() {
        let cli = Cli::try_parse_from(["moat", "grants", "revoke", "--client", "-sNZs_x"]).unwrap();
        let Command::Grants(GrantsCommand::Revoke { client, sub, .. }) = cli.command else {
            panic!("not grants revoke");
        };
        assert_eq!((client.as_deref(), sub), (Some("-sNZs_x"), None));

        let cli = Cli::try_parse_from(["moat", "clients", "revoke", "-x-1"]).unwrap();
        let Command::Clients(ClientsCommand::Revoke { id, .. }) = cli.command else {
            panic!("not clients revoke");
        };
        assert_eq!(id, "-x-1");

        let cli = Cli::try_parse_from(["moat", "grants", "list", "--sub", "-u", "--client", "-c"]);
        let Command::Grants(GrantsCommand::List { sub, client, .. }) = cli.unwrap().command else {
            panic!("not grants list");
        };
        assert_eq!(
            (sub.as_deref(), client.as_deref()),
            (Some("-u"), Some("-c"))
        );
        // Options are still options where a value is not expected.
        assert!(Cli::try_parse_from(["moat", "grants", "revoke", "--bogus", "x"]).is_err());
    }
}
