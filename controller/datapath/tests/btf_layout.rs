//! The Rust mirrors in sluice-abi must match the structs the C compiler laid out; the compiled
//! object's BTF is the witness. Needs `bpftool` (Debian package bpftool), no privileges.

use std::process::Command;

#[test]
fn abi_mirrors_match_the_btf_of_the_compiled_object() {
    let btf = btf_of("sock_lb", sluice_datapath::SOCK_LB_OBJECT);
    let types = btf["types"].as_array().unwrap();
    for (name, size, fields) in sluice_abi::layouts() {
        let t = types.iter().find(|t| t["kind"] == "STRUCT" && t["name"] == name).unwrap_or_else(|| panic!("struct {name} is not in the object's BTF"));
        assert_eq!(t["size"].as_u64().unwrap() as usize, size, "size of struct {name}");
        let members = t["members"].as_array().unwrap();
        assert_eq!(members.len(), fields.len().max(if fields.is_empty() { members.len() } else { 0 }), "fields of {name}");
        for (field, offset) in fields {
            let m = members.iter().find(|m| m["name"] == field).unwrap_or_else(|| panic!("{name}.{field} not in BTF"));
            assert_eq!(m["bits_offset"].as_u64().unwrap() as usize, offset * 8, "offset of {name}.{field}");
        }
    }
}

/// The BTF of one embedded object, through bpftool.
fn btf_of(name: &str, object: &[u8]) -> serde_json::Value {
    // Tests run in parallel and may read the same object: one directory per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-btf-{}-{call}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join(format!("{name}.o"));
    std::fs::write(&obj, object).unwrap();
    let out = Command::new("bpftool").args(["-j", "btf", "dump", "file"]).arg(&obj).output().expect("bpftool is needed for this test: apt-get install bpftool");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The loader names each program it loads; every program an object has must be one of them,
/// and every name one of its programs (the programs are the objects' global functions).
#[test]
fn the_loaders_program_names_are_exactly_the_objects_programs() {
    use sluice_datapath::loader;
    let objects: [(&str, &[u8], Vec<&str>); 4] = [
        ("sock_lb", sluice_datapath::SOCK_LB_OBJECT, loader::SOCK_ADDR_PROGRAMS.iter().chain(loader::SOCK_PROGRAMS.iter()).copied().collect()),
        ("nodeport", sluice_datapath::NODEPORT_OBJECT, vec![loader::TC_INGRESS, loader::TC_EGRESS]),
        ("xdp", sluice_datapath::XDP_OBJECT, vec![loader::XDP_PROGRAM, loader::XDP_PROBE_PROGRAM]),
        ("xdp_watch", sluice_datapath::XDP_WATCH_OBJECT, loader::XDP_WATCH_PROGRAMS.iter().map(|(p, _)| *p).collect()),
    ];
    for (name, object, mut expected) in objects {
        let btf = btf_of(name, object);
        let mut programs: Vec<&str> =
            btf["types"].as_array().unwrap().iter().filter(|t| t["kind"] == "FUNC" && t["linkage"] == "global").map(|t| t["name"].as_str().unwrap()).collect();
        programs.sort();
        expected.sort();
        assert_eq!(programs, expected, "programs of {name}.o against the loader's names");
    }
}
