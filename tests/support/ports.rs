//! Loopback ports for daemons started as processes, picked below the
//! kernel's ephemeral range: between the check here and the daemon's own
//! `bind`, no `bind(0)` and no outgoing connection of a test running beside
//! it can take the port (with `bind(0)` ports that happened under load: the
//! daemon exited early, its address in use). Shared by `support` and
//! `common` (`#[path]`).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback port that was free a moment ago; never the same one twice in
/// this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = window();
    let span = u32::from(hi - lo);
    // Test processes start at different places, in case two run at once.
    let seed = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = lo + ((seed + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // The whole window is taken: the kernel's choice, as before.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Up to 10 000 ports just below the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, usually 32768–60999).
fn window() -> (u16, u16) {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let lo = low.saturating_sub(10_000).max(1024);
    if low < lo + 1_000 {
        // An ephemeral range starting very low: any window will do.
        (20_000, 30_000)
    } else {
        (lo, low)
    }
}
