//! A network namespace that the test creates and deletes (also on panic).
//!
//! `Netns::new()` runs `ip netns add rc-<pid>-<n>`, brings `lo` up with the
//! MULTICAST flag and a `224.0.0.0/4 dev lo src 127.0.0.1` route so that multicast sent and
//! joined inside the namespace stays on its loopback. Nothing inside can reach
//! any other network. Threads enter it with [`enter_current_thread`]
//! (`setns(2)` with `CLONE_NEWNET` changes only the calling thread), processes
//! with `ip netns exec`.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Guard for a namespace made by this process; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[allow(clippy::new_without_default)] // creating a namespace is a side effect, not a default value
impl Netns {
    /// Creates the namespace. Panics (fails the test) when `ip netns` is not
    /// usable: these tests must not silently skip.
    pub fn new() -> Netns {
        crate::require_root();
        remove_stale();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("rc-{}-{}", std::process::id(), n);
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("ip netns unavailable: {e}"));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "set", "lo", "multicast", "on"]);
        // `src` matters: without it multicast sent here has source 0.0.0.0
        // (127.0.0.1 is host-scoped), and source-specific joins never match.
        ns.ip(&[
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> ARGS` and returns stdout; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Adds a veth pair `a` <-> `b`, both inside this namespace and up, with
    /// IPv6 link-local addresses ready (DAD off). Multicast sent out of `a`
    /// arrives on `b`, like on a real LAN, without leaving the namespace.
    pub fn add_veth(&self, a: &str, b: &str) {
        // Through a shell inside the namespace: /proc/sys/net belongs to the
        // opener's namespace, and `sysctl` (procps) may not be installed.
        let script = "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
                      echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad";
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("run sh in namespace");
        assert!(out.status.success(), "disable IPv6 DAD: {out:?}");
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
        let ready = crate::wait_for(std::time::Duration::from_secs(10), || {
            [a, b]
                .iter()
                .all(|dev| {
                    let addr = self.ip(&["-6", "addr", "show", "dev", dev]);
                    addr.contains("fe80") && !addr.contains("tentative")
                })
                .then_some(())
        });
        assert!(
            ready.is_some(),
            "veth {a}/{b} got no IPv6 link-local address"
        );
    }

    /// The interface index of `dev` inside the namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
    }

    /// Multicast groups joined on `dev` (from `ip -n NS maddr show dev DEV`).
    pub fn maddr(&self, dev: &str) -> String {
        self.ip(&["maddr", "show", "dev", dev])
    }

    /// Runs `f` on a fresh thread that has entered this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter_current_thread(&name);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// Moves the calling thread into namespace `name` (a `/run/netns/` entry).
/// Sockets the thread opens afterwards live in that namespace.
pub fn enter_current_thread(name: &str) {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid open fd and a documented nstype; affects this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Deletes namespaces `rc-<pid>-<n>` left by a test process that no longer
/// exists (a killed earlier run). Only our own naming scheme is touched.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let mut parts = name.split('-');
        if parts.next() != Some("rc") {
            continue;
        }
        let Some(Ok(pid)) = parts.next().map(str::parse::<u32>) else {
            continue;
        };
        if parts.next().map(str::parse::<u32>).is_none() {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
