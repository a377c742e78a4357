//! The cross target matrix agrees everywhere it is named, and the cross
//! binaries keep their budgets.
//!
//! `cross/targets` is the one list. `.cargo/config.toml` must give every
//! target a linker (and a qemu runner unless it is x86_64), `Cross.toml` must
//! name exactly the same targets, and `cross/test` (what CI runs) must take
//! its targets from that list rather than from a list of its own. The issue's
//! required targets and budgets (aarch64-musl at most 1.5 MiB, ARMv7 at most
//! 1.3 MiB) are checked in the list itself.
//!
//! When `cross/build` has left binaries in `target/cross/bin/` (or
//! `RINGCAST_CROSS_OUT` names a directory, in which case every target must
//! be there), each one is also checked: ELF machine, size against the
//! budget, no MPEG-TS media inside (the daemon only knows the demo file's
//! path) and no test code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ringcast_tests::workspace_root;

/// One row of `cross/targets`.
#[derive(Debug, Clone)]
struct Row {
    target: String,
    std: String,
    test: String,
    budget_kib: u64,
    openwrt: Vec<String>,
    enigma2: Option<String>,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(workspace_root().join("cross/targets"))
        .expect("read cross/targets");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 7, "cross/targets row has 7 columns: {line:?}");
            let list = |s: &str| -> Vec<String> {
                if s == "-" {
                    Vec::new()
                } else {
                    s.split(',').map(str::to_string).collect()
                }
            };
            Row {
                target: f[0].to_string(),
                std: f[1].to_string(),
                test: f[3].to_string(),
                budget_kib: f[4]
                    .parse()
                    .unwrap_or_else(|_| panic!("budget of {line:?}")),
                openwrt: list(f[5]),
                enigma2: (f[6] != "-").then(|| f[6].to_string()),
            }
        })
        .collect()
}

fn matrix() -> BTreeSet<String> {
    rows().into_iter().map(|r| r.target).collect()
}

/// `[target.NAME]` section names of a TOML file, and each section's keys.
fn toml_target_sections(path: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            current = None;
            if let Some(name) = header
                .strip_suffix(']')
                .and_then(|h| h.strip_prefix("target."))
            {
                let name = name.trim_matches('"').to_string();
                if !name.contains('.') {
                    sections.push((name, Vec::new()));
                    current = Some(sections.len() - 1);
                }
            }
        } else if let (Some(i), Some((key, _))) = (current, line.split_once('=')) {
            if !line.starts_with('#') {
                sections[i].1.push(key.trim().to_string());
            }
        }
    }
    sections
}

#[test]
fn matrix_has_the_required_targets_and_budgets() {
    let rows = rows();
    let names: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
    for required in [
        "aarch64-unknown-linux-musl",
        "armv7-unknown-linux-musleabihf",
        "armv7-unknown-linux-gnueabihf",
        "x86_64-unknown-linux-musl",
    ] {
        assert!(
            names.contains(&required),
            "{required} missing from cross/targets"
        );
    }
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "a target is listed twice");
    for row in &rows {
        assert!(
            ["rustup", "build-std"].contains(&row.std.as_str()),
            "{}: std column {:?}",
            row.target,
            row.std
        );
        assert!(
            ["full", "unit", "smoke"].contains(&row.test.as_str()),
            "{}: test column {:?}",
            row.target,
            row.test
        );
        let limit_kib = if row.target.starts_with("aarch64") || row.target.starts_with("x86_64") {
            1536 // 1.5 MiB
        } else {
            1331 // the largest whole KiB within 1.3 MiB
        };
        assert!(
            row.budget_kib <= limit_kib,
            "{}: budget {} KiB is above the issue's {} KiB",
            row.target,
            row.budget_kib,
            limit_kib
        );
    }
    let full: Vec<&str> = rows
        .iter()
        .filter(|r| r.test == "full")
        .map(|r| r.target.as_str())
        .collect();
    assert!(
        full.contains(&"aarch64-unknown-linux-musl"),
        "aarch64-musl must run the process tests under qemu: {full:?}"
    );
    assert!(
        full.iter().any(|t| t.starts_with("armv7")),
        "an ARMv7 target must run the process tests under qemu: {full:?}"
    );
}

#[test]
fn cargo_config_gives_every_target_a_linker_and_runner() {
    let sections = toml_target_sections(&workspace_root().join(".cargo/config.toml"));
    let named: BTreeSet<String> = sections.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        named,
        matrix(),
        ".cargo/config.toml [target.*] vs cross/targets"
    );
    for (target, keys) in &sections {
        assert!(keys.contains(&"linker".to_string()), "{target}: no linker");
        if !target.starts_with("x86_64") {
            assert!(
                keys.contains(&"runner".to_string()),
                "{target}: no qemu runner"
            );
        }
    }
    // The runner matches the architecture, and the linker wrappers exist.
    let text = std::fs::read_to_string(workspace_root().join(".cargo/config.toml")).unwrap();
    for target in matrix() {
        let section = section_text(&text, &target);
        if target.starts_with("aarch64") {
            assert!(
                section.contains("qemu-aarch64-static"),
                "{target}: {section}"
            );
        } else if target.starts_with("arm") {
            assert!(section.contains("qemu-arm-static"), "{target}: {section}");
        }
        if let Some(path) = section
            .lines()
            .find_map(|l| l.strip_prefix("linker = \"cross/"))
        {
            let path = workspace_root()
                .join("cross")
                .join(path.trim_end_matches('"'));
            assert!(
                path.is_file(),
                "{target}: linker {} missing",
                path.display()
            );
        }
    }
}

fn section_text(text: &str, target: &str) -> String {
    let header = format!("[target.{target}]");
    let start = text.find(&header).unwrap_or_else(|| panic!("no {header}"));
    let rest = &text[start + header.len()..];
    let end = rest.find("\n[").unwrap_or(rest.len());
    rest[..end].to_string()
}

#[test]
fn cross_toml_names_the_same_targets() {
    let sections = toml_target_sections(&workspace_root().join("Cross.toml"));
    let named: BTreeSet<String> = sections.into_iter().map(|(n, _)| n).collect();
    assert_eq!(named, matrix(), "Cross.toml [target.*] vs cross/targets");
}

#[test]
fn ci_builds_and_tests_the_matrix_from_the_list() {
    let root = workspace_root();
    let common = std::fs::read_to_string(root.join("cross/common.sh")).unwrap();
    assert!(
        common.contains("\"$cross_dir/targets\""),
        "cross/common.sh reads cross/targets"
    );
    let test = std::fs::read_to_string(root.join("cross/test")).unwrap();
    assert!(
        test.contains("\ncross/build"),
        "cross/test runs cross/build"
    );
    assert!(
        test.contains("for target in $(all_targets)"),
        "cross/test takes its targets from cross/targets"
    );
    let build = std::fs::read_to_string(root.join("cross/build")).unwrap();
    assert!(build.contains("mapfile -t targets < <(all_targets)"));
    // cross/build and cross/package name no target of their own.
    let package = std::fs::read_to_string(root.join("cross/package")).unwrap();
    for target in matrix() {
        assert!(!build.contains(&target), "cross/build hard-codes {target}");
        assert!(
            !package.contains(&target),
            "cross/package hard-codes {target}"
        );
    }
    // Packaging version = workspace version.
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let version = cargo
        .split("[workspace.package]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .expect("workspace version");
    let makefile = std::fs::read_to_string(root.join("cross/openwrt/Makefile")).unwrap();
    assert!(
        makefile.contains(&format!("PKG_VERSION:={version}\n")),
        "cross/openwrt/Makefile PKG_VERSION is not {version}"
    );
}

/// The binaries cross/build made, and whether all of them must exist.
fn built_binaries() -> (PathBuf, bool) {
    match std::env::var_os("RINGCAST_CROSS_OUT") {
        Some(dir) if !dir.is_empty() => (PathBuf::from(dir).join("bin"), true),
        _ => (workspace_root().join("target/cross/bin"), false),
    }
}

/// Offset of a run of 7 TS sync bytes 188 bytes apart, if any.
fn ts_run(bytes: &[u8]) -> Option<usize> {
    const RUN: usize = 7;
    (0..bytes.len().saturating_sub(188 * (RUN - 1)))
        .find(|&p| (0..RUN).all(|k| bytes[p + 188 * k] == 0x47))
}

fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

#[test]
fn ts_run_finds_media_and_not_code() {
    let demo = std::fs::read(workspace_root().join("assets/demo.ts")).unwrap();
    assert_eq!(ts_run(&demo), Some(0));
    let mut embedded = vec![0u8; 1000];
    embedded.extend_from_slice(&demo[..188 * 8]);
    assert_eq!(ts_run(&embedded), Some(1000));
    assert_eq!(ts_run(&[0x47u8; 2000][..]), Some(0));
    assert_eq!(ts_run(&[0x11u8; 5000][..]), None);
}

#[test]
fn cross_binaries_keep_their_budget_and_carry_no_media_or_tests() {
    let (dir, required) = built_binaries();
    let mut checked = 0;
    for row in rows() {
        let path = dir.join(&row.target).join("ringcast");
        let Ok(bytes) = std::fs::read(&path) else {
            assert!(!required, "{} was not built", path.display());
            continue;
        };
        let expected = match row.target.split('-').next().unwrap() {
            "aarch64" => 183,
            "x86_64" => 62,
            _ => 40,
        };
        assert_eq!(elf_machine(&bytes), expected, "{}", row.target);
        let size = bytes.len() as u64;
        println!(
            "{:32} {:>9} bytes ({:.1} KiB, budget {} KiB)",
            row.target,
            size,
            size as f64 / 1024.0,
            row.budget_kib
        );
        assert!(
            size <= row.budget_kib * 1024,
            "{} is over budget",
            row.target
        );
        assert_eq!(ts_run(&bytes), None, "{}: MPEG-TS media inside", row.target);
        for marker in ["hal/src/sim", "tests/src/", "ringcast_tests", "#[test]"] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{}: test code inside ({marker})",
                row.target
            );
        }
        checked += 1;
    }
    println!("{checked} cross binaries checked in {}", dir.display());
}

#[test]
fn openwrt_and_enigma2_architectures_fit_the_binary() {
    for row in rows() {
        for arch in &row.openwrt {
            let fits = match row.target.as_str() {
                "aarch64-unknown-linux-musl" => arch.starts_with("aarch64_"),
                "x86_64-unknown-linux-musl" => arch == "x86_64",
                // Hard-float ARMv7 code needs a VFP unit.
                "armv7-unknown-linux-musleabihf" => {
                    arch.starts_with("arm_cortex-a")
                        && (arch.contains("vfp") || arch.contains("neon"))
                }
                // Soft-float ARMv6 code runs on ARM11 and on any ARMv7.
                "arm-unknown-linux-musleabi" => {
                    ["arm_arm1176jzf-s_vfp", "arm_mpcore"].contains(&arch.as_str())
                        || arch.starts_with("arm_cortex-a")
                }
                "armv5te-unknown-linux-musleabi" => {
                    ["arm_arm926ej-s", "arm_xscale"].contains(&arch.as_str())
                }
                other => panic!("{other} has OpenWrt arches but no rule here"),
            };
            assert!(fits, "{}: OpenWrt arch {arch} does not fit", row.target);
        }
        if let Some(arch) = &row.enigma2 {
            let fits = match row.target.as_str() {
                "aarch64-unknown-linux-musl" => arch == "aarch64",
                "armv7-unknown-linux-musleabihf" => arch.starts_with("armv7ahf"),
                _ => false,
            };
            assert!(fits, "{}: Enigma2 arch {arch} does not fit", row.target);
        }
    }
    // An OpenWrt arch gets one binary only.
    let mut seen = BTreeSet::new();
    for row in rows() {
        for arch in row.openwrt {
            assert!(seen.insert(arch.clone()), "{arch} listed twice");
        }
    }
}
