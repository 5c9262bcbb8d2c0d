//! Standalone mode: Services and EndpointSlices from YAML files in a directory, re-read when
//! any file changes. Polling (not inotify) keeps it working on every filesystem, including
//! ConfigMap mounts whose files are swapped through symlinks.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sluice_core::Warning;
use sluice_core::manifest::{self, Objects};

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

/// Reads every manifest in `dir`. Unreadable files and bad documents become warnings.
pub fn read_dir(dir: &Path) -> std::io::Result<(Objects, Vec<Warning>)> {
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    for file in manifest_files(dir)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => manifest::parse(&file.display().to_string(), &text, &mut objects, &mut warnings),
            Err(e) => warnings.push(Warning { object: file.display().to_string(), message: format!("unreadable: {e}") }),
        }
    }
    Ok((objects, warnings))
}

/// Watches `dir` forever, resetting the index whenever its files change.
pub async fn run(dir: PathBuf, shared: Shared) {
    let mut last: Option<Fingerprint> = None;
    loop {
        match manifest_files(&dir) {
            Ok(files) => {
                let now = fingerprint(&files);
                if last.as_ref() != Some(&now) {
                    match read_dir(&dir) {
                        Ok((objects, warnings)) => {
                            for w in &warnings {
                                tracing::warn!(object = %w.object, "{}", w.message);
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
