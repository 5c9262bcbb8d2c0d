//! Kubernetes YAML text → the objects the planner reads. Pure: the caller does the file I/O.

use serde::Deserialize;

use sluice_crds::SourceBlocklist;

use crate::model::{Service, ServiceObject, Slice, SliceObject};
use crate::translate::{Subject, Warning};

#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub services: Vec<Service>,
    pub slices: Vec<Slice>,
    pub blocklists: Vec<SourceBlocklist>,
}

impl Objects {
    fn extend(&mut self, other: Objects) {
        self.services.extend(other.services);
        self.slices.extend(other.slices);
        self.blocklists.extend(other.blocklists);
    }
}

/// Standalone mode's memory of each manifest file: the objects of its last version that read
/// without an error. A file caught half-written, or saved with a mistake, keeps serving its
/// previous objects (with a warning) instead of taking its Services out of the datapath.
#[derive(Debug, Default)]
pub struct LastGood {
    files: std::collections::BTreeMap<String, Objects>,
}

impl LastGood {
    /// Takes in one file's text (or why it could not be read): its objects, or the last good
    /// ones when this version has an error.
    pub fn read(&mut self, source: &str, text: Result<&str, String>, into: &mut Objects, warnings: &mut Vec<Warning>) {
        let mut fresh = Objects::default();
        let mut found = Vec::new();
        match text {
            // Caught between truncate and write, most likely: deleting the file is how its
            // objects are removed.
            Ok(text) if text.trim().is_empty() && self.files.contains_key(source) => {
                found.push(Warning::new(Subject::Manifest(source.to_string()), "empty (delete the file to remove its objects)"))
            }
            Ok(text) => parse(source, text, &mut fresh, &mut found),
            Err(e) => found.push(Warning::new(Subject::Manifest(source.to_string()), format!("unreadable: {e}"))),
        }
        match self.files.get(source) {
            Some(good) if !found.is_empty() => {
                into.extend(good.clone());
                warnings.extend(found.into_iter().map(|w| Warning { message: format!("{}; keeping the file's last good version", w.message), ..w }));
            }
            _ => {
                if found.is_empty() {
                    self.files.insert(source.to_string(), fresh.clone());
                }
                into.extend(fresh);
                warnings.extend(found);
            }
        }
    }

    /// Forgets the files that are gone.
    pub fn retain(&mut self, present: &[String]) {
        self.files.retain(|f, _| present.contains(f));
    }
}

/// Parses every document of a (multi-document) YAML text; `List` objects are unpacked.
/// Documents of other kinds are ignored; broken ones become warnings naming `source`.
/// The Services and EndpointSlices of one YAML text, and what was wrong with it.
pub fn parse_str(text: &str) -> (Vec<Service>, Vec<Slice>, Vec<Warning>) {
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
                warnings.push(Warning::new(Subject::Manifest(format!("{source} document {}", index + 1)), format!("not YAML: {e}")));
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
    let object = || Subject::Manifest(format!("{source} document {} ({kind})", index + 1));
    match kind.as_str() {
        "Service" => match serde_yaml::from_value::<ServiceObject>(value) {
            Ok(s) => into.services.push(s.into_model()),
            Err(e) => warnings.push(Warning::new(object(), format!("not a valid Service: {e}"))),
        },
        "EndpointSlice" => match serde_yaml::from_value::<SliceObject>(value) {
            Ok(s) => into.slices.push(s.into_model()),
            Err(e) => warnings.push(Warning::new(object(), format!("not a valid EndpointSlice: {e}"))),
        },
        "SourceBlocklist" => match serde_yaml::from_value::<SourceBlocklist>(value) {
            Ok(b) => into.blocklists.push(b),
            Err(e) => warnings.push(Warning::new(object(), format!("not a valid SourceBlocklist: {e}"))),
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

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: d}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n";

    fn read(last: &mut LastGood, text: Result<&str, String>) -> (Vec<String>, Vec<Warning>) {
        let (mut objects, mut warnings) = (Objects::default(), Vec::new());
        last.read("dir/web.yaml", text, &mut objects, &mut warnings);
        (objects.services.iter().map(|s| s.key.name.to_string()).collect(), warnings)
    }

    #[test]
    fn a_file_with_an_error_keeps_serving_its_last_good_version() {
        let mut last = LastGood::default();
        assert_eq!(read(&mut last, Ok(WEB)).0, ["web"]);
        // Half-written: the YAML stops mid-mapping.
        let (services, warnings) = read(&mut last, Ok(&WEB[..60]));
        assert_eq!(services, ["web"], "the last good version stays");
        assert!(warnings[0].message.contains("keeping the file's last good version"), "{warnings:?}");
        for bad in [Ok(""), Ok("kind: Service\nspec: {ports: [{port: nope}]}\n"), Err("permission denied".to_string())] {
            let (services, warnings) = read(&mut last, bad.as_deref().map_err(Clone::clone));
            assert_eq!(services, ["web"]);
            assert_eq!(warnings.len(), 1, "{warnings:?}");
        }
        // Fixed: the new version replaces it.
        assert_eq!(read(&mut last, Ok(&WEB.replace("web", "shop"))).0, ["shop"]);
        // Gone: forgotten, and a broken new file of that name has nothing to fall back on.
        last.retain(&[]);
        let (services, warnings) = read(&mut last, Ok(&WEB[..60]));
        assert!(services.is_empty());
        assert!(!warnings[0].message.contains("last good"), "{warnings:?}");
    }
}
