//! The component imports only what `wit/world.wit` declares (the `wasi:http/proxy` world
//! plus `wasi:cli` environment and what Rust's standard library links), so every host
//! that provides that world — `wasmtime serve -Scli`, this host — runs it unchanged.

use std::collections::BTreeSet;
use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// `wasi:http/types@0.2.12` → `wasi:http/types`: the host matches imports by semver, and
/// Rust's standard library and the `wasi` crate import different 0.2.x patch versions.
fn unversioned(name: &str) -> String {
    name.split('@').next().unwrap_or(name).to_string()
}

fn world_imports() -> BTreeSet<String> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(&wit).expect("wit/ parses");
    let world = resolve
        .select_world(&[pkg], Some("backup"))
        .expect("world `backup`");
    resolve.worlds[world]
        .imports
        .values()
        .filter_map(|item| match item {
            wit_parser::WorldItem::Interface { id, .. } => resolve.id_of(*id),
            _ => None,
        })
        .map(|name| unversioned(&name))
        .collect()
}

#[test]
fn component_imports_only_its_world() {
    let allowed = world_imports();
    assert!(
        allowed.contains("wasi:http/outgoing-handler"),
        "{allowed:?}"
    );
    assert!(allowed.contains("wasi:cli/environment"), "{allowed:?}");
    assert!(!allowed.contains("wasi:filesystem/types"), "{allowed:?}");
    assert!(!allowed.contains("wasi:sockets/tcp"), "{allowed:?}");

    let engine = Engine::new(&Config::new()).expect("engine");
    let component = Component::new(&engine, spaces_backup_host::EMBEDDED_COMPONENT)
        .expect("component compiles");
    let ty = component.component_type();
    let imports: BTreeSet<String> = ty
        .imports(&engine)
        .map(|(name, _)| unversioned(name))
        .collect();
    let extra: Vec<_> = imports.difference(&allowed).collect();
    assert!(extra.is_empty(), "imports outside wit/world.wit: {extra:?}");
    let exports: Vec<String> = ty
        .exports(&engine)
        .map(|(name, _)| unversioned(name))
        .collect();
    assert_eq!(exports, ["wasi:http/incoming-handler"]);
}
