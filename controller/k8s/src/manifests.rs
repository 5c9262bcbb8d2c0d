//! Standalone mode: Services and EndpointSlices from YAML files in a directory, re-read when
//! any file changes. Polling (not inotify) keeps it working on every filesystem, including
//! ConfigMap mounts whose files are swapped through symlinks.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sluice_core::Warning;
use sluice_core::manifest::{LastGood, Objects};

use crate::Shared;

/// How often the directory is checked; a change is planned well within a second.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if matches!(ext, "yaml" | "yml" | "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok();
            (p.clone(), meta.as_ref().and_then(|m| m.modified().ok()), meta.map_or(0, |m| m.len()))
        })
        .collect()
}

/// Reads every manifest in `dir`. Unreadable files and bad documents become warnings; a file
/// with an error keeps its last good version from `last_good`.
pub fn read_dir(dir: &Path, last_good: &mut LastGood) -> std::io::Result<(Objects, Vec<Warning>)> {
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    let files = manifest_files(dir)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    last_good.retain(&names);
    for (file, name) in files.iter().zip(&names) {
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string());
        last_good.read(name, text.as_deref().map_err(Clone::clone), &mut objects, &mut warnings);
    }
    Ok((objects, warnings))
}

/// Watches `dir` forever, resetting the index whenever its files change.
pub async fn run(dir: PathBuf, shared: Shared) {
    let mut last: Option<Fingerprint> = None;
    let mut last_good = LastGood::default();
    loop {
        match manifest_files(&dir) {
            Ok(files) => {
                let now = fingerprint(&files);
                if last.as_ref() != Some(&now) {
                    match read_dir(&dir, &mut last_good) {
                        Ok((objects, warnings)) => {
                            for w in &warnings {
                                tracing::warn!(object = %w.subject, "{}", w.message);
                            }
                            tracing::info!(
                                dir = %dir.display(),
                                services = objects.services.len(),
                                slices = objects.slices.len(),
                                "manifests read"
                            );
                            shared.update(|i| {
                                i.reset_services(objects.services);
                                i.reset_slices(objects.slices);
                                i.reset_blocklists(objects.blocklists);
                            });
                            last = Some(now);
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), "cannot read manifests: {e}")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "cannot list manifests: {e}"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
