//! The Rust mirrors in sluice-abi must match the structs the C compiler laid out; the compiled
//! object's BTF is the witness. Needs `bpftool` (Debian package bpftool), no privileges.

use std::process::Command;

#[test]
fn abi_mirrors_match_the_btf_of_the_compiled_object() {
    let dir = std::env::temp_dir().join(format!("sluice-btf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("sock_lb.o");
    std::fs::write(&obj, sluice_datapath::SOCK_LB_OBJECT).unwrap();
    let out = Command::new("bpftool").args(["-j", "btf", "dump", "file"]).arg(&obj).output().expect("bpftool is needed for this test: apt-get install bpftool");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let btf: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
