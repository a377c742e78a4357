//! Starts the real `ringcast` binary and stops it with SIGTERM.
//!
//! The log (stderr) is collected line by line on a thread; the port comes from
//! the `listening on http://ADDR:PORT/` line, so tests pass
//! `--listen 127.0.0.1:0` and run in parallel without port clashes. On drop
//! the child gets SIGTERM, up to 5 s to exit, then SIGKILL; when the test is
//! failing, the last log lines are printed to help the reader of the failure.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::http::{http_request, HttpResponse};

/// How to start the daemon.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// Command-line arguments after the binary name.
    pub args: Vec<String>,
    /// Run inside this network namespace (`ip netns exec NAME ...`).
    pub netns: Option<String>,
    /// Give the daemon a pipe as stdin (for `stdin` sources).
    pub stdin_piped: bool,
    /// Working directory; defaults to the workspace root.
    pub cwd: Option<PathBuf>,
}

impl DaemonOptions {
    pub fn new<S: AsRef<str>>(args: &[S]) -> DaemonOptions {
        DaemonOptions {
            args: args.iter().map(|s| s.as_ref().to_string()).collect(),
            ..DaemonOptions::default()
        }
    }

    pub fn netns(mut self, name: &str) -> DaemonOptions {
        self.netns = Some(name.to_string());
        self
    }

    pub fn stdin_piped(mut self) -> DaemonOptions {
        self.stdin_piped = true;
        self
    }
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

type SharedLog = Arc<(Mutex<LogState>, Condvar)>;

/// A running daemon; SIGTERM/SIGKILL on drop.
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    log: SharedLog,
    netns: Option<String>,
    stdin: Option<ChildStdin>,
    log_thread: Option<std::thread::JoinHandle<()>>,
    first_status: Option<Result<u16, String>>,
}

/// How long the daemon has to print its `listening on` line.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    /// Starts the daemon with `args` on the host (loopback) and waits for it
    /// to listen.
    pub fn start<S: AsRef<str>>(args: &[S]) -> Daemon {
        Daemon::start_with(DaemonOptions::new(args))
    }

    /// Starts the daemon as `options` says and waits for it to listen.
    pub fn start_with(options: DaemonOptions) -> Daemon {
        let bin = crate::ringcast_bin();
        assert!(
            bin.exists(),
            "daemon binary {} not found: build it with `cargo build --release -p ringcast` or set RINGCAST_BIN",
            bin.display()
        );
        let mut command = match &options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // Each daemon keeps its state in a directory of its own (through the
        // systemd variable the daemon honours), unless the test chose one:
        // tests never touch /var/lib/ringcast and never share a store.
        if !options.args.iter().any(|a| a.starts_with("--state-dir")) {
            command.env("STATE_DIRECTORY", private_state_dir());
        }
        // Test daemons never look for a router: port mapping would send
        // SSDP and NAT-PMP/PCP out of the host's real interfaces. A test of
        // port mapping passes its own --portmap (inside its namespaces),
        // and a fixed peer port would clash between parallel daemons.
        if !options.args.iter().any(|a| a.starts_with("--portmap")) {
            command.args(["--portmap", "off"]);
        }
        if !options.args.iter().any(|a| a.starts_with("--peer-port")) {
            command.args(["--peer-port", "0"]);
        }
        command
            .args(&options.args)
            .current_dir(options.cwd.clone().unwrap_or_else(crate::workspace_root))
            .stdin(if options.stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();
        let log: SharedLog = Arc::new((Mutex::new(LogState::default()), Condvar::new()));
        let log_thread = {
            let log = log.clone();
            std::thread::spawn(move || collect_log(stderr, log))
        };
        let mut daemon = Daemon {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            netns: options.netns.clone(),
            stdin,
            log_thread: Some(log_thread),
            first_status: None,
        };
        match daemon.wait_listening() {
            Ok(addr) => daemon.addr = addr,
            Err(why) => panic!(
                "ringcast {:?} did not start: {why}\n--- log ---\n{}",
                options.args,
                daemon.logs().join("\n")
            ),
        }
        daemon.wait_ready();
        daemon
    }

    /// Polls `GET /status` until it answers 200 (up to 5 s). Whether the very
    /// first request after the `listening on` line was refused is kept in
    /// [`Daemon::first_status`]; `http_api.rs` asserts on it, so the other
    /// tests can test their own feature.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.try_request("GET", "/status", &[]).map(|r| r.status);
            if self.first_status.is_none() {
                self.first_status = Some(status.clone());
            }
            if status == Ok(200) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "ringcast listens but GET /status never answered 200 within 5 s (last: {status:?})\n--- log ---\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the first `GET /status` right after the `listening on` line got.
    pub fn first_status(&self) -> Result<u16, String> {
        self.first_status.clone().expect("checked at start")
    }

    fn wait_listening(&mut self) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let (lock, cond) = &*self.log;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(addr) = state.lines.iter().find_map(|l| parse_listening(l)) {
                return Ok(addr);
            }
            if state.closed {
                drop(state);
                let status = self.child.as_mut().and_then(|c| c.wait().ok());
                return Err(format!(
                    "stderr closed before `listening on` (exit: {status:?})"
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no `listening on` line within {LISTEN_TIMEOUT:?}"));
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The HTTP address the daemon listens on (inside its namespace, if any).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The namespace the daemon runs in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `http://ADDR:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A copy of every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    /// Waits up to `timeout` for a log line containing `needle` (ASCII
    /// case-insensitive); returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let needle = needle.to_ascii_lowercase();
        crate::wait_for(timeout, || {
            self.logs()
                .into_iter()
                .find(|l| l.to_ascii_lowercase().contains(&needle))
        })
    }

    /// The pipe to the daemon's stdin (once), when started with `stdin_piped`.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin
            .take()
            .expect("daemon started without stdin_piped, or stdin already taken")
    }

    /// One HTTP request to the daemon (from inside its namespace if any).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        extra_headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        let addr = self.addr;
        let method = method.to_string();
        let path = path.to_string();
        let headers: Vec<(String, String)> = extra_headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let go = move || {
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http_request(addr, &method, &path, &refs, Duration::from_secs(10))
        };
        match &self.netns {
            Some(ns) => {
                let ns = ns.clone();
                std::thread::spawn(move || {
                    crate::netns::enter_current_thread(&ns);
                    go()
                })
                .join()
                .expect("request thread")
            }
            None => go(),
        }
    }

    /// [`Daemon::try_request`]; panics on a transport error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        extra_headers: &[(&str, &str)],
    ) -> HttpResponse {
        self.try_request(method, path, extra_headers)
            .unwrap_or_else(|e| panic!("{method} {}: {e}", self.url(path)))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    /// `GET /status`, parsed. Panics unless 200 and valid JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.get("/status");
        assert_eq!(
            r.status,
            200,
            "/status answered {}: {}",
            r.status,
            r.body_text()
        );
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", r.body_text()))
    }

    /// The `/status` entry of channel `name`.
    pub fn channel_status(&self, name: &str) -> serde_json::Value {
        let status = self.status_json();
        find_channel(&status, name)
            .unwrap_or_else(|| panic!("channel {name:?} not in /status: {status}"))
            .clone()
    }

    /// Resident set size of the daemon process, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, wait up to 5 s (then SIGKILL); returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child present");
        drop(self.stdin.take());
        if let Ok(Some(status)) = child.try_wait() {
            self.join_log();
            return status;
        }
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!("ringcast pid {} ignored SIGTERM for 5 s: SIGKILL", self.pid);
                    let _ = child.kill();
                    break child.wait().expect("wait after SIGKILL");
                }
            }
        };
        self.join_log();
        status
    }

    fn join_log(&mut self) {
        if let Some(t) = self.log_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let status = self.terminate();
        if std::thread::panicking() {
            let lines = self.logs();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- ringcast pid {} exit {status}; last {} of {} log lines ---\n{}\n---",
                self.pid,
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
    }
}

/// A fresh state directory under the system temp dir, unique per daemon.
fn private_state_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join("ringcast-tests-state")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Sends `sig` to a process that this harness started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a PID of a child we spawned and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn collect_log(stderr: std::process::ChildStderr, log: SharedLog) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                let (lock, cond) = &*log;
                let mut state = lock.lock().unwrap();
                // Bounded: a runaway logger must not eat the test's memory.
                if state.lines.len() < 200_000 {
                    state.lines.push(line);
                }
                cond.notify_all();
            }
        }
    }
    let (lock, cond) = &*log;
    lock.lock().unwrap().closed = true;
    cond.notify_all();
}

/// Parses `... listening on http://127.0.0.1:40123/` (or `[::1]:port`).
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let end = rest.find('/').unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Finds `channels[i]` with `name == name` in a `/status` document.
pub fn find_channel<'a>(
    status: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    status["channels"]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
}

/// A `u64` field at a JSON pointer like `/totals/bytes_out`; panics if absent.
pub fn json_u64(value: &serde_json::Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no integer at {pointer} in {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        assert_eq!(
            parse_listening("[    0.012] INFO  listening on http://127.0.0.1:40123/"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            parse_listening("[0.1] INFO listening on http://[::1]:8080/"),
            Some("[::1]:8080".parse().unwrap())
        );
        assert_eq!(parse_listening("[0.1] INFO  starting"), None);
    }
}
