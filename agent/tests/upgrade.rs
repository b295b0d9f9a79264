//! Privileged end-to-end tests of upgrades and tampering: an agent taking over from a running
//! one under load (no request lost, none past the proxy), and links whose program was swapped
//! or that were detached by another root process (reported, then mended by the next start).
mod common;

use std::{
    fs::File,
    net::SocketAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use nix::sched::{CloneFlags, setns};

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// What one client thread saw.
#[derive(Default, Debug)]
struct Tally {
    answered: usize,
    /// Answered, but the server saw a peer outside the agent's reserved ports.
    unproxied: usize,
    failed: Vec<String>,
}

/// Clients in the host (and remote) namespace, each sending pings on a new connection each
/// until `stop`.
fn load(host: &Host, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Tally>> {
    let targets = [
        (host.netns.clone(), addr("127.0.0.1", PORT)),
        (host.netns.clone(), addr(HOST_V6, PORT)),
        (host.remote_netns.clone(), addr(HOST_V4, PORT)),
    ];
    targets
        .into_iter()
        .map(|(ns, target)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                setns(File::open(ns).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
                let mut t = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    match fetch(target, None) {
                        Ok(peer) if in_reserved(peer) => t.answered += 1,
                        Ok(_) => t.unproxied += 1,
                        Err(e) => t.failed.push(e.to_string()),
                    }
                }
                t
            })
        })
        .collect()
}

#[test]
fn an_agent_taking_over_under_load_loses_no_request_and_lets_none_past() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(PORT);
    host.start_agent();
    let first = host.agent_pid();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&host, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let before = server.count();
    let old = host.take_over_agent();
    let during = server.count();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    assert!(old.success(), "the old agent stopped cleanly: {old}");
    assert_ne!(host.agent_pid(), first);
    let answered: usize = tallies.iter().map(|t| t.answered).sum();
    let failed: Vec<&String> = tallies.iter().flat_map(|t| &t.failed).collect();
    let unproxied: usize = tallies.iter().map(|t| t.unproxied).sum();
    eprintln!(
        "take-over under load: {answered} answered ({before} before, {} during, {} after), {} failed, {unproxied} unproxied",
        during - before,
        server.count() - during,
        failed.len()
    );
    assert!(
        before > 0 && server.count() > during,
        "traffic on both sides"
    );
    assert_eq!(unproxied, 0, "requests reached the server past the proxy");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        server.count(),
        answered,
        "every request the server got was answered"
    );
    // One audit record for each, across both agents, in one chain.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = host.request_records().len();
        if records == answered {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{records} request records for {answered} requests"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let verify = host
        .command(MOAT, &["audit", "verify", host.audit.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let c = host.port_counters(PORT);
    assert!(
        c["steered"].as_u64().unwrap() >= answered as u64,
        "the counters kept counting across the take-over: {c}"
    );
    assert_eq!(c["dropped"], 0, "{c}");
    let started = host.wait_audit("the new agent's start", |r| {
        r["event"] == "started" && r["adopted_pins"] == true
    });
    let programs = started["programs"].as_array().unwrap();
    // Four programs, and the BPF LSM's where the kernel takes it.
    assert!(programs.len() >= 4, "{started}");
    assert!(programs.iter().all(|p| p["how"] == "kept"), "{started}");
}

/// bpf(2) attributes of BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, valid for its size;
    // the pointers in it point to live locals.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An sk_lookup program that lets every connection through (`r0 = SK_PASS; exit`): what an
/// attacker with root would put in place of Moat's steering.
fn pass_through() -> OwnedFd {
    let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = ProgLoad {
        prog_type: 30, // BPF_PROG_TYPE_SK_LOOKUP
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: 36, // BPF_SK_LOOKUP
        ..Default::default()
    };
    let fd = bpf(5, &mut attr).expect("loading a pass-through sk_lookup program"); // BPF_PROG_LOAD
    // SAFETY: a new descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn pinned(path: &Path) -> OwnedFd {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut attr = [c.as_ptr() as u64, 0u64];
    let fd = bpf(7, &mut attr).expect("opening a pinned link"); // BPF_OBJ_GET
    // SAFETY: a new descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[test]
fn a_swapped_or_detached_link_is_reported_and_the_next_start_mends_it() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_agent();
    host.ping_local().unwrap();
    assert_eq!(host.status()["tampered"], serde_json::json!([]));
    assert_eq!(host.admin_get("/readyz").0, 200);

    // Another root process swaps the steering link's program: connections reach the server
    // listening on the port itself, past the agent.
    let link = pinned(&host.bpffs.join("link_steer"));
    let prog = pass_through();
    let mut update = [link.as_raw_fd() as u32, prog.as_raw_fd() as u32, 0, 0];
    bpf(29, &mut update).expect("BPF_LINK_UPDATE"); // BPF_LINK_UPDATE
    // And detaches the IPv4 bind guard.
    let bind4 = pinned(&host.bpffs.join("link_bind4"));
    bpf(34, &mut [bind4.as_raw_fd() as u32]).expect("BPF_LINK_DETACH");
    let past = host.ping_local().unwrap();
    assert!(!in_reserved(past), "the swapped program steers nothing");
    let s = host.status();
    let tampered: Vec<&str> = s["tampered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tampered.len(), 2, "{s}");
    assert!(tampered[0].starts_with("link_steer runs program"), "{s}");
    assert_eq!(tampered[1], "link_bind4 was detached from its hook");
    let text = host
        .command(MOAT, &["status", "--bpffs", host.bpffs.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("TAMPERED: link_steer runs program"), "{text}");
    let (code, body) = host.admin_get("/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("tampered with: link_steer"), "{body}");
    let steered = host.port_counters(PORT)["steered"].as_u64().unwrap();

    // The next start puts Moat's programs back through the pins, keeping the maps.
    host.stop_agent();
    host.start_agent();
    let seen = host.ping_local().unwrap();
    assert!(in_reserved(seen));
    assert_eq!(host.status()["tampered"], serde_json::json!([]));
    assert_eq!(host.admin_get("/readyz").0, 200);
    assert_eq!(
        host.port_counters(PORT)["steered"].as_u64().unwrap(),
        steered + 1,
        "the counters were kept"
    );
    let started = host.wait_audit("the restart", |r| {
        r["event"] == "started" && r["adopted_pins"] == true
    });
    let how = |p: &str| {
        started["programs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["program"] == p)
            .map(|r| r["how"].clone())
    };
    assert_eq!(how("moat_steer").unwrap(), "replaced", "{started}");
    assert_eq!(how("moat_bind4").unwrap(), "reattached", "{started}");
    assert_eq!(how("moat_bind6").unwrap(), "kept", "{started}");

    // Where the kernel has the BPF LSM, the swap and the detach were also recorded as they
    // happened, with the process that made them (this test).
    if how("moat_tamper").is_none() {
        eprintln!(
            "the kernel refused the BPF LSM program (see the agent log): the kernel's own record \
             of tampering is not exercised here; status and /readyz were"
        );
        return;
    }
    for command in ["link_update", "link_detach"] {
        let r = host.wait_audit(command, |r| {
            r["event"] == "tamper" && r["command"] == command
        });
        assert_eq!(r["process"]["pid"], std::process::id(), "{r}");
    }
}

#[test]
fn pins_whose_maps_have_another_layout_are_refused_and_stay_closed() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(PORT);
    host.start_agent();
    host.kill_agent();
    // What a version with another settings layout would have left: an 8-byte value.
    let settings = host.bpffs.join("map_settings");
    std::fs::remove_file(&settings).unwrap();
    let mut create = [2u32, 4, 8, 1]; // BPF_MAP_TYPE_ARRAY, key 4 B, value 8 B, 1 entry
    let map = bpf(0, &mut create).expect("BPF_MAP_CREATE");
    let path = std::ffi::CString::new(settings.to_str().unwrap()).unwrap();
    let mut pin = [path.as_ptr() as u64, map as u64];
    bpf(6, &mut pin).expect("BPF_OBJ_PIN");

    let out = host
        .command(MOAT, &["run", "-c", host.config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("map_settings has another layout")
            && err.contains("value 8 B")
            && err.contains("moat detach"),
        "{err}"
    );
    // The pinned programs still hold the protected port closed.
    assert!(host.ping_local().is_err());
    assert_eq!(server.count(), 0);
    let out = host.detach();
    assert!(out.status.success());
    host.start_agent();
    assert!(in_reserved(host.ping_local().unwrap()));
}

#[test]
fn a_running_agent_that_does_not_stop_is_killed_by_the_one_taking_over() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_agent();
    let old = host.agent_pid();
    // Stopped: SIGTERM stays pending, as for an agent that hangs.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), nix::sys::signal::SIGSTOP).unwrap();
    let status = host.take_over_agent();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(9), "killed: {status}");
    assert!(
        host.log("agent-2.log")
            .contains("the running agent has not stopped: killing it")
    );
    assert!(in_reserved(host.ping_local().unwrap()));
}
