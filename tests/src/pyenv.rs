//! The Python tools of the LAN tests: a venv under `target/pyenv` (made by
//! `tests/run`) with the PyPI packages `async-upnp-client` (the
//! `upnp-client` control point) and `prometheus-client` (the reference
//! parser of the Prometheus text format), and `tests/fixtures/lan_tools.py`,
//! which runs them on text the tests hand it.
//!
//! When the venv is missing the tests fail (never skip) and say how to make
//! it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The venv directory: `$RINGCAST_PYENV`, else `<workspace>/target/pyenv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("RINGCAST_PYENV") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => crate::workspace_root().join("target/pyenv"),
    }
}

fn venv_file(name: &str) -> PathBuf {
    let path = venv_dir().join("bin").join(name);
    assert!(
        path.exists(),
        "{} not found: the LAN tests need the Python venv that tests/run makes \
         (python3 -m venv target/pyenv && target/pyenv/bin/pip install async-upnp-client prometheus-client)",
        path.display()
    );
    path
}

/// The venv's python.
pub fn python() -> PathBuf {
    venv_file("python3")
}

/// The venv's `upnp-client` (async-upnp-client's command-line tool).
pub fn upnp_client() -> PathBuf {
    venv_file("upnp-client")
}

/// Runs `lan_tools.py MODE` with `input` on stdin; returns its stdout parsed
/// as JSON, or Err(its stderr) when it refuses the input.
pub fn lan_tool(mode: &str, input: &[u8]) -> Result<serde_json::Value, String> {
    let script = crate::workspace_root().join("tests/fixtures/lan_tools.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let pid = child.id();
    // Bounded: the parsers read a few kilobytes; 20 s is generous.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(Duration::from_secs(20)).is_err() {
        crate::daemon::signal(pid, libc::SIGKILL);
    }
    let out = waiter
        .join()
        .expect("lan_tools waiter")
        .expect("wait lan_tools");
    let _ = writer.join();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "lan_tools {mode} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
