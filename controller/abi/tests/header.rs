//! `bpf/include/sluice_abi.h` is the one source of the ABI. The structs are checked against the
//! compiled object's BTF (controller/datapath/tests/btf_layout.rs); this reads the header itself
//! for everything else: every numeric `#define SLUICE_*`, every enumerator, every map name must
//! have its mirror in this crate with the same value, and every mirror its line in the header.

use std::collections::BTreeMap;

const HEADER: &str = include_str!("../../../bpf/include/sluice_abi.h");

/// Header constants the Rust side has no use for, and why.
const C_ONLY: [(&str, &str); 2] = [
    ("SLUICE_COUNTERS_SIZE", "room in the counters array; Rust reads Counter::ALL"),
    ("SLUICE_EVENTS_BYTES", "the ring buffer's size, read by no one but the kernel"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(u64),
    Name(String),
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Evaluates the integer expressions the header uses: numbers, `<<`, `|`, parentheses and
/// names defined before.
fn eval(expr: &str, known: &BTreeMap<String, Value>) -> Option<u64> {
    let tokens: Vec<String> = {
        let mut t = Vec::new();
        let mut chars = expr.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if c.is_ascii_alphanumeric() || c == '_' {
                let mut w = String::new();
                while let Some(&c) = chars.peek().filter(|c| c.is_ascii_alphanumeric() || **c == '_') {
                    w.push(c);
                    chars.next();
                }
                t.push(w);
            } else if c == '<' {
                chars.next();
                chars.next();
                t.push("<<".into());
            } else {
                t.push(c.to_string());
                chars.next();
            }
        }
        t
    };
    fn or(t: &[String], i: &mut usize, known: &BTreeMap<String, Value>) -> Option<u64> {
        let mut v = shift(t, i, known)?;
        while t.get(*i).is_some_and(|s| s == "|") {
            *i += 1;
            v |= shift(t, i, known)?;
        }
        Some(v)
    }
    fn shift(t: &[String], i: &mut usize, known: &BTreeMap<String, Value>) -> Option<u64> {
        let mut v = atom(t, i, known)?;
        while t.get(*i).is_some_and(|s| s == "<<") {
            *i += 1;
            v <<= atom(t, i, known)?;
        }
        Some(v)
    }
    fn atom(t: &[String], i: &mut usize, known: &BTreeMap<String, Value>) -> Option<u64> {
        let tok = t.get(*i)?.clone();
        *i += 1;
        if tok == "(" {
            let v = or(t, i, known)?;
            (t.get(*i)? == ")").then_some(())?;
            *i += 1;
            return Some(v);
        }
        if let Ok(n) = tok.parse() {
            return Some(n);
        }
        match known.get(&tok) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }
    let mut i = 0;
    let v = or(&tokens, &mut i, known)?;
    (i == tokens.len()).then_some(v)
}

/// Every `#define SLUICE_*` with a value and every enumerator of the header, by name.
fn header_constants() -> BTreeMap<String, Value> {
    let text = strip_comments(HEADER);
    let mut known = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(def) = line.strip_prefix("#define ") {
            let (name, value) = def.split_once(char::is_whitespace).unwrap_or((def, ""));
            let value = value.trim();
            if value.is_empty() || !name.starts_with("SLUICE_") {
                continue;
            }
            let v = if value.starts_with("sluice_") {
                Value::Name(value.to_string())
            } else {
                Value::Int(eval(value, &known).unwrap_or_else(|| panic!("cannot evaluate {name} = {value}")))
            };
            known.insert(name.to_string(), v);
        } else if line.starts_with("enum ") && line.ends_with('{') {
            let mut next = 0u64;
            for member in lines.by_ref() {
                let member = member.trim().trim_end_matches(',');
                if member.starts_with('}') {
                    break;
                }
                if member.is_empty() {
                    continue;
                }
                let (name, value) = match member.split_once('=') {
                    Some((n, v)) => (n.trim(), eval(v, &known).unwrap_or_else(|| panic!("cannot evaluate {member}"))),
                    None => (member, next),
                };
                known.insert(name.to_string(), Value::Int(value));
                next = value + 1;
            }
        }
    }
    known
}

#[test]
fn the_header_parser_reads_what_the_header_uses() {
    let known = header_constants();
    assert_eq!(known.get("SLUICE_CT_F_CLOSED"), Some(&Value::Int(0b1100)), "an expression of earlier names");
    assert_eq!(known.get("SLUICE_EVENTS_BYTES"), Some(&Value::Int(1 << 20)));
    assert_eq!(known.get("SLUICE_CNT_SOCK_NO_BACKEND"), Some(&Value::Int(1)), "an enumerator after `= 0`");
    assert_eq!(known.get("SLUICE_MAP_CT"), Some(&Value::Name("sluice_ct_v1".into())));
    assert!(known.len() > 100, "{} names", known.len());
}

#[test]
fn every_header_constant_has_its_mirror_with_the_same_value() {
    let header = header_constants();
    let mut mirrors: BTreeMap<String, Value> = sluice_abi::c_constants().into_iter().map(|(n, v)| (n.to_string(), Value::Int(v))).collect();
    mirrors.extend(sluice_abi::c_map_names().into_iter().map(|(n, v)| (n.to_string(), Value::Name(v.to_string()))));
    let mut problems = Vec::new();
    for (name, value) in &header {
        if C_ONLY.iter().any(|(n, _)| n == name) {
            continue;
        }
        match mirrors.get(name) {
            None => problems.push(format!("{name} (= {value:?}) has no mirror in sluice-abi (c_constants or c_map_names), nor a reason in C_ONLY")),
            Some(m) if m != value => problems.push(format!("{name}: the header says {value:?}, sluice-abi {m:?}")),
            Some(_) => {}
        }
    }
    for name in mirrors.keys().filter(|n| !header.contains_key(*n)) {
        problems.push(format!("{name} is in sluice-abi but not in the header"));
    }
    for (name, _) in C_ONLY.iter().filter(|(n, _)| !header.contains_key(*n)) {
        problems.push(format!("C_ONLY names {name}, which the header no longer has"));
    }
    assert!(problems.is_empty(), "sluice_abi.h and sluice-abi differ:\n  {}", problems.join("\n  "));
}

#[test]
fn the_map_list_is_exactly_the_headers_maps() {
    let header: Vec<String> = header_constants()
        .into_iter()
        .filter_map(|(n, v)| match v {
            Value::Name(m) if n.starts_with("SLUICE_MAP_") => Some(m),
            _ => None,
        })
        .collect();
    let mut all: Vec<String> = sluice_abi::ALL_MAPS.iter().map(|m| m.to_string()).collect();
    all.sort();
    let mut header = header;
    header.sort();
    assert_eq!(all, header, "ALL_MAPS (what the agent pins and the CLI opens) against the header's SLUICE_MAP_*");
}

#[test]
fn every_header_struct_has_a_mirror_checked_against_btf() {
    let text = strip_comments(HEADER);
    let mut structs: Vec<&str> =
        text.lines().filter_map(|l| l.trim().strip_prefix("struct ")?.strip_suffix('{').map(str::trim)).filter(|n| n.starts_with("sluice_")).collect();
    structs.sort();
    let mut mirrors: Vec<&str> = sluice_abi::layouts().into_iter().map(|(n, _, _)| n).collect();
    mirrors.sort();
    assert_eq!(mirrors, structs, "sluice-abi's layouts() (checked against the object's BTF) against the header's structs");
}
