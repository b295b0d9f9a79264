//! lsm/bpf: a bpf(2) call that can take Moat's programs off their hooks or put others in their
//! place (detaching or updating a link, detaching a program), made by any process but the agent
//! (or an agent that is replacing the programs), is reported with the process. Nothing is
//! refused: the agent's status checks say whether the links still run Moat's programs.
use agent_common::{Event, EventKind};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id},
    macros::lsm,
    programs::LsmContext,
};
use aya_log_ebpf::debug;

use crate::maps::{by_current, report, settings};

const BPF_PROG_DETACH: i32 = 9;
const BPF_LINK_UPDATE: i32 = 29;
const BPF_LINK_DETACH: i32 = 34;

#[lsm(hook = "bpf")]
pub fn moat_tamper(ctx: LsmContext) -> i32 {
    let cmd: i32 = ctx.arg(0);
    if cmd != BPF_LINK_DETACH && cmd != BPF_LINK_UPDATE && cmd != BPF_PROG_DETACH {
        return 0;
    }
    let s = settings();
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let agent = s.agent_tgid != 0 && tgid == s.agent_tgid && cgroup_id == s.agent_cgroup_id;
    if agent || (s.manager_tgid != 0 && tgid == s.manager_tgid) {
        return 0;
    }
    debug!(&ctx, "tamper: bpf command {} by pid {}", cmd, tgid);
    report(&Event {
        src_port: cmd as u32,
        ..by_current(EventKind::Tamper, tgid, cgroup_id)
    });
    0
}
