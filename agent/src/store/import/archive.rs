//! Reading files out of an image archive: a directory, or an uncompressed tar indexed once so
//! each blob is read by seeking, never by extracting the archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// An archive's files by relative path (`index.json`, `blobs/sha256/<hex>`).
pub enum Archive {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        /// path -> (offset of the data, size)
        files: HashMap<String, (u64, u64)>,
    },
}

/// Normalises an archive path: no leading `./` or `/`, and refuses `..`.
pub fn clean(p: &str) -> Option<String> {
    let mut out = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

impl Archive {
    pub fn open(path: &Path) -> io::Result<Archive> {
        if path.is_dir() {
            return Ok(Archive::Dir(path.to_path_buf()));
        }
        let mut f = File::open(path)?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic)?;
        if magic[..n].starts_with(&[0x1f, 0x8b])
            || magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        {
            return Err(io::Error::other(
                "compressed archive: decompress it first (berth reads blobs by seeking in a plain tar)",
            ));
        }
        f.rewind()?;
        let mut files = HashMap::new();
        let mut links = Vec::new();
        let mut tar = tar::Archive::new(f);
        for entry in tar.entries()? {
            let entry = entry?;
            let Some(name) = std::str::from_utf8(&entry.path_bytes())
                .ok()
                .and_then(clean)
            else {
                continue;
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    files.insert(name, (entry.raw_file_position(), entry.size()));
                }
                // Old `docker save` links repeated layers to their first copy.
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = entry.link_name_bytes() {
                        links.push((name, String::from_utf8_lossy(&target).into_owned()));
                    }
                }
                _ => {}
            }
        }
        for (name, target) in links {
            let base = match name.rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/{target}"),
                None => target.clone(),
            };
            let resolved = if target.starts_with('/') {
                clean(&target)
            } else {
                clean_rel(&base)
            };
            if let Some(t) = resolved.and_then(|t| files.get(&t).copied()) {
                files.insert(name, t);
            }
        }
        Ok(Archive::Tar {
            path: path.to_path_buf(),
            files,
        })
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            Archive::Dir(d) => clean(name).is_some_and(|n| d.join(n).is_file()),
            Archive::Tar { files, .. } => clean(name).is_some_and(|n| files.contains_key(&n)),
        }
    }

    /// A file's size.
    pub fn size(&self, name: &str) -> io::Result<u64> {
        let n = clean(name).ok_or_else(|| bad_name(name))?;
        match self {
            Archive::Dir(d) => Ok(std::fs::metadata(d.join(n))?.len()),
            Archive::Tar { files, .. } => {
                files.get(&n).map(|(_, s)| *s).ok_or_else(|| missing(name))
            }
        }
    }

    /// A stream of one file.
    pub fn open_file(&self, name: &str) -> io::Result<io::Take<File>> {
        let n = clean(name).ok_or_else(|| bad_name(name))?;
        match self {
            Archive::Dir(d) => {
                let f = File::open(d.join(&n)).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        missing(name)
                    } else {
                        e
                    }
                })?;
                let len = f.metadata()?.len();
                Ok(f.take(len))
            }
            Archive::Tar { path, files } => {
                let (off, size) = *files.get(&n).ok_or_else(|| missing(name))?;
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(off))?;
                Ok(f.take(size))
            }
        }
    }

    /// A small file whole (at most `max` bytes).
    pub fn read_small(&self, name: &str, max: u64) -> io::Result<Vec<u8>> {
        if self.size(name)? > max {
            return Err(io::Error::other(format!(
                "{name} is larger than {max} bytes"
            )));
        }
        let mut out = Vec::new();
        self.open_file(name)?.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Resolves `a/b/../c` lexically (for link targets inside the archive).
fn clean_rel(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

fn missing(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{name} is missing from the archive"),
    )
}

fn bad_name(name: &str) -> io::Error {
    io::Error::other(format!("refusing archive path {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(
            clean("./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean("/index.json").as_deref(), Some("index.json"));
        assert_eq!(clean("../etc/passwd"), None);
        assert_eq!(clean("."), None);
        assert_eq!(clean_rel("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(clean_rel("../x"), None);
    }
}
