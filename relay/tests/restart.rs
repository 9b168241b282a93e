//! The relay as an operator meets it: it prints its addresses, and keeps its peer id and
//! webrtc certificate (so the /certhash handed to browsers) across restarts.

#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn start_and_read_addresses(home: &std::path::Path) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tabswarm-relay"))
        .arg("--home")
        .arg(home)
        .args([
            "--ip",
            "127.0.0.1",
            "--tcp-port",
            "0",
            "--quic-port",
            "0",
            "--ws-port",
            "0",
            "--webrtc-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addrs: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    child.kill().unwrap();
    child.wait().unwrap();
    addrs
}

/// An address without its ports (ports are chosen by the OS with port 0).
fn without_ports(addr: &str) -> String {
    addr.split('/')
        .filter(|part| !part.chars().all(|c| c.is_ascii_digit()) || part.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn addresses_survive_a_restart() {
    let home = std::env::temp_dir().join(format!("tabswarm-relay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let first = start_and_read_addresses(&home);
    let kinds: Vec<bool> = ["/tcp/", "/quic-v1/", "/ws/", "/webrtc-direct/certhash/"]
        .iter()
        .map(|k| first.iter().any(|a| a.contains(k)))
        .collect();
    assert_eq!(kinds, [true; 4], "{first:?}");
    assert!(
        first.iter().all(|a| a.contains("/p2p/12D3KooW")),
        "{first:?}"
    );
    let second = start_and_read_addresses(&home);
    let mut a: Vec<String> = first.iter().map(|s| without_ports(s)).collect();
    let mut b: Vec<String> = second.iter().map(|s| without_ports(s)).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "peer id or certhash changed across a restart");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn help_documents_the_limits() {
    let out = Command::new(env!("CARGO_BIN_EXE_tabswarm-relay"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--max-circuit-mib",
        "--max-circuit-secs",
        "--max-reservations",
        "--external-address",
        "--home",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}
