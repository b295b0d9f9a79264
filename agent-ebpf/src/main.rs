//! Moat's kernel programs: steer protected ports to the proxy (sk_lookup), guard the upstream identity (bind4/6), name the local process behind each connection (sock_ops), report tampering with the programs (lsm/bpf).
#![no_std]
#![no_main]

mod guard;
mod identity;
mod maps;
mod steer;
mod tamper;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
