//! ARCHITECTURE.md's invariants, checked against the tree. Run with
//! `cargo test -p palisade-architecture -- --nocapture` to see the figures.
#![allow(clippy::print_stdout)]

use palisade_architecture::*;

/// Crates that make up the control plane (server side).
const SERVER: [&str; 6] = [
    "palisade-console",
    "palisade-control",
    "palisade-gateway",
    "palisade-http",
    "palisade-server",
    "palisade-store",
];

/// Pure crates: no async runtime, sockets, database or HTTP stack.
const PURE: [&str; 13] = [
    "palisade-core",
    "palisade-advisory",
    "palisade-pki",
    "palisade-audit",
    "palisade-est",
    "palisade-mqtt",
    "palisade-attest",
    "palisade-release",
    "palisade-policy",
    "palisade-detect",
    "palisade-bootenv",
    "palisade-posture",
    "palisade-oscore",
];

#[test]
fn no_module_imports_another_in_a_circle() {
    let mut found = Vec::new();
    for (name, dir) in crates() {
        for cycle in cycles(&module_graph(&dir.join("src"))) {
            let names: Vec<String> = cycle
                .iter()
                .map(|m| {
                    if m.is_empty() {
                        "(root)".into()
                    } else {
                        m.join("::")
                    }
                })
                .collect();
            found.push(format!("{name}: {}", names.join(", ")));
        }
    }
    assert!(
        found.is_empty(),
        "modules in an import cycle:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_crate_holds_more_than_a_quarter_of_the_code() {
    let sizes: Vec<(String, usize)> = crates()
        .into_iter()
        .map(|(name, dir)| (name, non_test_lines(&dir.join("src"))))
        .collect();
    let total: usize = sizes.iter().map(|(_, n)| n).sum();
    let mut sorted = sizes.clone();
    sorted.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    println!("non-test Rust lines under crates/*/src: {total}");
    for (name, n) in &sorted {
        println!(
            "{:>7} {:>5.1} %  {name}",
            n,
            100.0 * *n as f64 / total as f64
        );
    }
    for (name, n) in &sizes {
        assert!(
            n * 4 <= total,
            "{name} holds {n} of {total} non-test lines ({:.1} %), more than 25 %: split it along a seam",
            100.0 * *n as f64 / total as f64
        );
    }
}

#[test]
fn devices_and_edges_never_depend_on_server_crates() {
    let all = crates();
    for device_side in ["palisade-agent", "palisade-edge"] {
        let deps = dependencies(&all[device_side].join("Cargo.toml"));
        for server in SERVER.iter().chain(["palisade"].iter()) {
            assert!(!deps.contains(*server), "{device_side} depends on {server}");
        }
    }
}

#[test]
fn pure_crates_have_no_runtime_sockets_database_or_http() {
    let all = crates();
    for pure in PURE {
        let deps = dependencies(&all[pure].join("Cargo.toml"));
        for io in [
            "tokio",
            "sqlx",
            "hyper",
            "hyper-util",
            "axum",
            "tokio-rustls",
            "socket2",
            "rumqttc",
            "reqwest",
            "palisade-store",
            "palisade-control",
        ] {
            assert!(!deps.contains(io), "{pure} is pure but depends on {io}");
        }
    }
}

#[test]
fn services_are_composed_only_by_the_server_and_reached_only_from_the_front_ends() {
    let all = crates();
    // The front ends and the composition depend on the services, never the
    // other way round; the gateway and the HTTP surface do not know each other.
    let control = dependencies(&all["palisade-control"].join("Cargo.toml"));
    for upper in [
        "palisade-gateway",
        "palisade-http",
        "palisade-console",
        "palisade-server",
    ] {
        assert!(
            !control.contains(upper),
            "palisade-control depends on {upper}"
        );
    }
    let gateway = dependencies(&all["palisade-gateway"].join("Cargo.toml"));
    let http = dependencies(&all["palisade-http"].join("Cargo.toml"));
    assert!(!gateway.contains("palisade-http") && !http.contains("palisade-gateway"));
    // The console is a front end over the services and the API's shared
    // pieces; the API never depends on it.
    let console = dependencies(&all["palisade-console"].join("Cargo.toml"));
    assert!(!http.contains("palisade-console") && !console.contains("palisade-gateway"));
    let store = dependencies(&all["palisade-store"].join("Cargo.toml"));
    assert!(store.iter().all(|d| !d.starts_with("palisade-")
        || ["palisade-core", "palisade-audit"].contains(&d.as_str())));
}

#[test]
fn the_system_clock_is_read_in_one_place() {
    let mut readers = Vec::new();
    for (name, dir) in crates() {
        for f in rust_files(&dir.join("src")) {
            let code = code_before_tests(&std::fs::read_to_string(&f).unwrap_or_default());
            if code.contains("disallowed_methods") {
                readers.push(format!(
                    "{name}/{}",
                    f.strip_prefix(&dir).unwrap_or(&f).display()
                ));
            }
        }
    }
    assert_eq!(
        readers,
        ["palisade-core/src/clock.rs"],
        "system clock readers"
    );
}
