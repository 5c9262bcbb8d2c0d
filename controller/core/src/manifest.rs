//! Kubernetes YAML text → the objects the planner reads. Pure: the caller does the file I/O.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::translate::Warning;

#[derive(Debug, Default)]
pub struct Objects {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub blocklists: Vec<crate::blocklist::Blocklist>,
}

/// Parses every document of a (multi-document) YAML text; `List` objects are unpacked.
/// Documents of other kinds are ignored; broken ones become warnings naming `source`.
/// The Services and EndpointSlices of one YAML text, and what was wrong with it.
pub fn parse_str(text: &str) -> (Vec<Service>, Vec<EndpointSlice>, Vec<Warning>) {
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    parse("text", text, &mut objects, &mut warnings);
    (objects.services, objects.slices, warnings)
}

pub fn parse(source: &str, text: &str, into: &mut Objects, warnings: &mut Vec<Warning>) {
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(Warning { object: format!("{source} document {}", index + 1), message: format!("not YAML: {e}") });
                // A syntax error leaves the rest of the stream unreadable.
                break;
            }
        };
        take(source, index, value, into, warnings);
    }
}

fn take(source: &str, index: usize, value: serde_yaml::Value, into: &mut Objects, warnings: &mut Vec<Warning>) {
    if value.is_null() {
        return;
    }
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    let object = || format!("{source} document {} ({kind})", index + 1);
    match kind.as_str() {
        "Service" => match serde_yaml::from_value::<Service>(value) {
            Ok(s) => into.services.push(s),
            Err(e) => warnings.push(Warning { object: object(), message: format!("not a valid Service: {e}") }),
        },
        "EndpointSlice" => match serde_yaml::from_value::<EndpointSlice>(value) {
            Ok(s) => into.slices.push(s),
            Err(e) => warnings.push(Warning { object: object(), message: format!("not a valid EndpointSlice: {e}") }),
        },
        "SourceBlocklist" => match serde_yaml::from_value::<crate::blocklist::Blocklist>(value) {
            Ok(b) => into.blocklists.push(b),
            Err(e) => warnings.push(Warning { object: object(), message: format!("not a valid SourceBlocklist: {e}") }),
        },
        "List" | "ServiceList" | "EndpointSliceList" | "SourceBlocklistList" => {
            if let Some(items) = value.get("items").and_then(|i| i.as_sequence()) {
                for item in items.clone() {
                    take(source, index, item, into, warnings);
                }
            }
        }
        _ => {}
    }
}
