//! The spec dir as the agent's [`SpecSource`]: load, apply the ownership policy, attribute
//! set-level problems to the files they concern, and notice files that may be half-written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_spec::{HostFacts, SpecDefaults};

use super::load::{self, SpecError};
use super::perms::TrustedOwners;
use super::watch::SpecWatcher;
use crate::desired::SpecSource;
use crate::reconcile::desired_set::Scan;

pub struct DirSource {
    dir: PathBuf,
    defaults: SpecDefaults,
    /// This host's id and labels: specs whose `[match]` leaves it out are absent here.
    host: Option<HostFacts>,
    trusted: TrustedOwners,
    settle: Duration,
    watcher: Option<SpecWatcher>,
    cache: load::LoadCache,
}

impl DirSource {
    pub fn new(
        dir: &Path,
        defaults: SpecDefaults,
        trusted: TrustedOwners,
        settle: Duration,
    ) -> Self {
        DirSource {
            dir: dir.to_path_buf(),
            defaults,
            host: None,
            trusted,
            settle,
            watcher: None,
            cache: load::LoadCache::default(),
        }
    }

    /// Judges `[match]` for this host.
    pub fn for_host(mut self, host: HostFacts) -> Self {
        self.host = Some(host);
        self
    }

    /// Keeps `watcher`'s inotify watches following the dir (created late, swapped) at every
    /// scan.
    pub fn with_watcher(mut self, watcher: SpecWatcher) -> Self {
        self.watcher = Some(watcher);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn recently_modified(&self, files: &[PathBuf]) -> bool {
        let now = SystemTime::now();
        files.iter().any(|f| {
            std::fs::metadata(f)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < self.settle)
        })
    }
}

impl SpecSource for DirSource {
    fn scan(&mut self) -> Scan {
        if let Some(w) = &mut self.watcher {
            w.refresh();
        }
        let set = match load::load_dir_cached_for(
            &self.dir,
            &self.defaults,
            &mut self.cache,
            self.host.as_ref(),
        ) {
            Ok(set) => set,
            Err(e) => {
                return Scan {
                    error: Some(e.to_string()),
                    ..Scan::default()
                };
            }
        };
        // A dir others can write lets them add a privileged container, and a dir above it
        // that others can write lets them swap it: trust nothing in it.
        if let Err(e) = self.trusted.check_dir_chain(&self.dir) {
            return Scan {
                error: Some(e),
                ..Scan::default()
            };
        }
        let mut set_problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in &set.set_diagnostics {
            if let Some(name) = spec_name_of(&d.file) {
                set_problems.entry(name).or_default().push(d.to_string());
            }
        }
        let mut scan = Scan::default();
        // The way to each file, walked once per scan: by its dir, or (for a symlink) by itself.
        let mut chains: BTreeMap<PathBuf, Result<(), String>> = BTreeMap::new();
        for (name, result) in set.specs {
            let entry = match result {
                Ok(parsed) => {
                    let mut refused = Vec::new();
                    for f in &parsed.files {
                        // The file that was read, as its own fd described it.
                        let Some(st) = set.read.get(f) else {
                            refused
                                .push(format!("{}: refused: not read by the loader", f.display()));
                            continue;
                        };
                        if let Err(why) = self.trusted.check_mode(st.uid, st.mode) {
                            refused.push(format!("{}: refused: {why}", f.display()));
                        }
                        let parent = f.parent().unwrap_or(Path::new("/"));
                        let chain = if st.symlink {
                            chains
                                .entry(f.clone())
                                .or_insert_with(|| self.trusted.check_file_chain(f))
                        } else if parent == self.dir {
                            continue;
                        } else {
                            chains
                                .entry(parent.to_path_buf())
                                .or_insert_with(|| self.trusted.check_dir_chain(parent))
                        };
                        if let Err(e) = chain
                            && !refused.contains(e)
                        {
                            refused.push(e.clone());
                        }
                    }
                    if let Some(p) = set_problems.remove(&name) {
                        refused.extend(p);
                    }
                    if refused.is_empty() {
                        Ok(parsed.spec)
                    } else {
                        Err(refused.join("\n"))
                    }
                }
                Err(e) => {
                    let files = match &e {
                        SpecError::Files(errs) => {
                            errs.iter().map(|f| f.path().to_path_buf()).collect()
                        }
                        SpecError::Invalid(diags) => {
                            diags.iter().map(|d| d.file.clone()).collect::<Vec<_>>()
                        }
                    };
                    scan.unsettled |= self.recently_modified(&files);
                    Err(e.lines().join("\n"))
                }
            };
            scan.specs.insert(name, entry);
        }
        scan
    }
}

/// `web` for `/etc/berth/specs/web.toml` and for `/etc/berth/specs/web.toml.d/10-x.toml`.
fn spec_name_of(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    if let Some(stem) = name.strip_suffix(".toml")
        && file
            .parent()
            .and_then(|p| p.extension())
            .is_none_or(|ext| ext != "d")
    {
        return Some(stem.to_string());
    }
    let dropin_dir = file.parent()?.file_name()?.to_str()?;
    dropin_dir.strip_suffix(".toml.d").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn source(dir: &Path) -> DirSource {
        DirSource::new(
            dir,
            SpecDefaults::default(),
            TrustedOwners::resolve(&[]).unwrap(),
            Duration::from_secs(1),
        )
    }

    fn write(p: &Path, text: &str) {
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    #[test]
    fn names_of_files() {
        assert_eq!(
            spec_name_of(Path::new("/s/web.toml")).as_deref(),
            Some("web")
        );
        assert_eq!(
            spec_name_of(Path::new("/s/web.toml.d/10-x.toml")).as_deref(),
            Some("web")
        );
        assert_eq!(spec_name_of(Path::new("/s/web.env")), None);
    }

    #[test]
    fn scan_reports_valid_invalid_refused_and_set_problems() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // Ownership checks need files owned by root.
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("specs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        write(&dir.join("ok.toml"), "image = \"busybox\"\n");
        write(&dir.join("bad.toml"), "imag = \"busybox\"\n");
        write(&dir.join("open.toml"), "image = \"busybox\"\n");
        std::fs::set_permissions(
            dir.join("open.toml"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        write(
            &dir.join("a.toml"),
            "image = \"busybox\"\nports = [\"8080:80\"]\n",
        );
        write(
            &dir.join("b.toml"),
            "image = \"busybox\"\nports = [\"8080:80\"]\n",
        );
        let scan = source(&dir).scan();
        assert!(scan.error.is_none());
        assert!(scan.specs["ok"].is_ok());
        let bad = scan.specs["bad"].as_ref().unwrap_err();
        assert!(
            bad.contains("bad.toml:1:1") && bad.contains("did you mean"),
            "{bad}"
        );
        let open = scan.specs["open"].as_ref().unwrap_err();
        assert!(open.contains("chmod go-w"), "{open}");
        // The second file publishing a taken port is the one refused.
        assert!(scan.specs["a"].is_ok());
        let clash = scan.specs["b"].as_ref().unwrap_err();
        assert!(
            clash.contains("8080/tcp") && clash.contains("a.toml"),
            "{clash}"
        );
        // Just written and invalid: maybe half-written, look again soon.
        assert!(scan.unsettled);

        // A dir writable by others is not trusted at all.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let scan = source(&dir).scan();
        assert!(scan.error.unwrap().contains("writable by group or others"));
        // A missing dir is an error, not an empty set.
        let scan = source(&tmp.path().join("nope")).scan();
        assert!(scan.error.unwrap().contains("does not exist"));
    }
}
