//! Building OCI images in code: layers as lists of entries (files, dirs, links, devices,
//! whiteouts, opaque dirs, and deliberately hostile entries), compressed gzip, zstd or not at
//! all, with OCI or Docker v2 media types, single-platform or as a multi-arch index.

use std::io::Write;

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One tar entry. Paths are written as given (no normalisation), so hostile ones stay hostile.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    Char {
        path: String,
        major: u32,
        minor: u32,
    },
    Block {
        path: String,
        major: u32,
        minor: u32,
    },
    Fifo {
        path: String,
    },
}

impl Entry {
    pub fn dir(path: &str) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }
    pub fn file(path: &str, data: &[u8]) -> Entry {
        Entry::File {
            path: path.into(),
            data: data.to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        }
    }
    /// `.wh.<name>` beside the deleted path.
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        Entry::file(&p, b"")
    }
    /// `.wh..wh..opq` inside `dir`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), b"")
    }
}

/// Extended attributes of an entry: (name, value).
pub type Xattrs = Vec<(String, Vec<u8>)>;

/// A fixed mtime so builds are reproducible.
pub const MTIME: u64 = 1_700_000_000;

/// Writes entries as a tar stream. Names go into the header bytes directly (GNU long-name
/// records when they do not fit) so nothing sanitises a hostile path.
pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        let (path, link, data, pax): (&str, Option<&str>, &[u8], Xattrs) = match e {
            Entry::Dir {
                path,
                mode,
                uid,
                gid,
            } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                (path, None, &[], vec![])
            }
            Entry::File {
                path,
                data,
                mode,
                uid,
                gid,
                xattrs,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                (path, None, data, xattrs.clone())
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                (path, Some(target), &[], vec![])
            }
            Entry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                (path, Some(target), &[], vec![])
            }
            Entry::Char { path, major, minor } | Entry::Block { path, major, minor } => {
                h.set_entry_type(if matches!(e, Entry::Char { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_mode(0o660);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                (path, None, &[], vec![])
            }
            Entry::Fifo { path } => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                (path, None, &[], vec![])
            }
        };
        if !pax.is_empty() {
            let exts: Vec<(String, Vec<u8>)> = pax
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
                .collect();
            b.append_pax_extensions(exts.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        if path.len() > 99 {
            long_record(&mut b, tar::EntryType::GNULongName, path);
        }
        set_raw_name(&mut h, path);
        if let Some(l) = link {
            if l.len() > 99 {
                long_record(&mut b, tar::EntryType::GNULongLink, l);
            }
            let g = h.as_gnu_mut().unwrap();
            let n = l.len().min(99);
            g.linkname = [0; 100];
            g.linkname[..n].copy_from_slice(&l.as_bytes()[..n]);
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn set_raw_name(h: &mut tar::Header, path: &str) {
    let g = h.as_gnu_mut().unwrap();
    let n = path.len().min(99);
    g.name = [0; 100];
    g.name[..n].copy_from_slice(&path.as_bytes()[..n]);
}

fn long_record(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, value: &str) {
    let mut h = tar::Header::new_gnu();
    set_raw_name(&mut h, "././@LongLink");
    h.set_entry_type(kind);
    h.set_mode(0o644);
    let mut data = value.as_bytes().to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
}

pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

/// A layer blob ready to push.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
    /// The uncompressed tar's digest.
    pub diff_id: String,
}

impl Blob {
    pub fn layer(entries: &[Entry], c: Compression, docker: bool) -> Blob {
        Self::from_tar(tar_bytes(entries), c, docker)
    }

    pub fn from_tar(tar: Vec<u8>, c: Compression, docker: bool) -> Blob {
        let bytes = compress(&tar, c);
        let media_type = match (c, docker) {
            (Compression::Gzip, true) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Compression::Gzip, false) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Compression::Zstd, _) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Compression::None, _) => "application/vnd.oci.image.layer.v1.tar",
        };
        Blob {
            media_type: media_type.into(),
            digest: sha256(&bytes),
            diff_id: sha256(&tar),
            bytes,
        }
    }
}

/// An image: config, manifest and layer blobs.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Blob>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub media_type: String,
}

impl Image {
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }
    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }
}

/// What goes into the config's `config` object.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
}

pub struct ImageBuilder {
    layers: Vec<Blob>,
    settings: Settings,
    os: String,
    arch: String,
    variant: Option<String>,
    docker: bool,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    pub fn new() -> Self {
        ImageBuilder {
            layers: vec![],
            settings: Settings::default(),
            os: "linux".into(),
            arch: host_arch().into(),
            variant: None,
            docker: false,
        }
    }
    /// Docker v2 schema 2 media types instead of OCI ones.
    pub fn docker(mut self) -> Self {
        self.docker = true;
        self
    }
    pub fn platform(mut self, arch: &str, variant: Option<&str>) -> Self {
        self.arch = arch.into();
        self.variant = variant.map(Into::into);
        self
    }
    pub fn settings(mut self, s: Settings) -> Self {
        self.settings = s;
        self
    }
    pub fn layer(mut self, entries: &[Entry], c: Compression) -> Self {
        let docker = self.docker;
        self.layers.push(Blob::layer(entries, c, docker));
        self
    }
    pub fn blob(mut self, b: Blob) -> Self {
        self.layers.push(b);
        self
    }

    pub fn build(mut self) -> Image {
        if self.docker {
            for l in &mut self.layers {
                if l.media_type == "application/vnd.oci.image.layer.v1.tar+gzip" {
                    l.media_type = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
                }
            }
        }
        let s = &self.settings;
        let mut cfg = serde_json::Map::new();
        if !s.env.is_empty() {
            cfg.insert("Env".into(), json!(s.env));
        }
        if let Some(c) = &s.cmd {
            cfg.insert("Cmd".into(), json!(c));
        }
        if let Some(e) = &s.entrypoint {
            cfg.insert("Entrypoint".into(), json!(e));
        }
        if let Some(w) = &s.working_dir {
            cfg.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &s.user {
            cfg.insert("User".into(), json!(u));
        }
        if !s.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> = s
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            cfg.insert("ExposedPorts".into(), json!(ports));
        }
        if let Some(sig) = &s.stop_signal {
            cfg.insert("StopSignal".into(), json!(sig));
        }
        let mut config = json!({
            "architecture": self.arch,
            "os": self.os,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": [],
        });
        if let Some(v) = &self.variant {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).unwrap();
        let (mt, cmt) = if self.docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": cmt, "digest": sha256(&config), "size": config.len()},
            "layers": self.layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.bytes.len()})).collect::<Vec<_>>(),
        });
        Image {
            layers: self.layers,
            config,
            manifest: serde_json::to_vec_pretty(&manifest).unwrap(),
            media_type: mt.into(),
        }
    }
}

/// A multi-platform index over images (each with its os/arch/variant).
pub fn index(images: &[(&Image, &str, Option<&str>)], docker: bool) -> (Vec<u8>, String) {
    let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(img, arch, variant)| {
            let mut p = json!({"os": "linux", "architecture": arch});
            if let Some(v) = variant {
                p["variant"] = json!(v);
            }
            json!({"mediaType": img.media_type, "digest": img.digest(), "size": img.manifest.len(), "platform": p})
        })
        .collect();
    let body =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests}))
            .unwrap();
    (body, mt.to_string())
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// The entries of a busybox rootfs: `/bin/busybox` from Debian's busybox-static and a
/// symlink per applet, plus a few dirs.
pub fn busybox_rootfs() -> Vec<Entry> {
    let bin = std::fs::read("/bin/busybox").expect("busybox-static is installed (/bin/busybox)");
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::dir("etc"),
        Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
            uid: 0,
            gid: 0,
        },
        Entry::dir("root"),
        Entry::File {
            path: "bin/busybox".into(),
            data: bin,
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
        Entry::file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        Entry::file("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
    ];
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let a = applet.trim();
        if !a.is_empty() && a != "busybox" {
            entries.push(Entry::symlink(&format!("bin/{a}"), "busybox"));
        }
    }
    entries
}

/// A gzip layer written as a stream of raw tar bytes, never held uncompressed: for hostile
/// layers too large to build in memory (header bombs). `write` gets a sink for the tar; the
/// end-of-archive blocks are added after it.
pub fn streamed_layer(write: impl FnOnce(&mut dyn Write)) -> Blob {
    struct Sink {
        gz: flate2::write::GzEncoder<Vec<u8>>,
        diff: Sha256,
    }
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.diff.update(b);
            self.gz.write_all(b)?;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink {
        gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
        diff: Sha256::new(),
    };
    write(&mut sink);
    sink.write_all(&[0u8; 1024]).unwrap();
    let bytes = sink.gz.finish().unwrap();
    Blob {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: sha256(&bytes),
        diff_id: format!("sha256:{}", hex::encode(sink.diff.finalize())),
        bytes,
    }
}

/// Writes one raw tar header (GNU format) of `kind` for `name` (at most 99 bytes) announcing
/// `size` bytes of data; the caller writes the data, then [`pad`].
pub fn raw_header(out: &mut dyn Write, kind: tar::EntryType, name: &str, size: u64, mode: u32) {
    let mut h = tar::Header::new_gnu();
    set_raw_name(&mut h, name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_cksum();
    out.write_all(h.as_bytes()).unwrap();
}

/// Zero padding after `size` bytes of entry data, up to the next 512-byte block.
pub fn pad(out: &mut dyn Write, size: u64) {
    let rem = (size % 512) as usize;
    if rem != 0 {
        out.write_all(&vec![0u8; 512 - rem]).unwrap();
    }
}

/// Writes `n` bytes of `byte`, in chunks.
pub fn fill(out: &mut dyn Write, byte: u8, n: u64) {
    let chunk = vec![byte; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..k]).unwrap();
        left -= k as u64;
    }
}

/// An entry whose path may be longer than a header holds: a GNU long-name record first.
pub fn long_entry(out: &mut dyn Write, kind: tar::EntryType, path: &str, mode: u32) {
    if path.len() > 99 {
        let len = path.len() as u64 + 1;
        raw_header(
            out,
            tar::EntryType::GNULongName,
            "././@LongLink",
            len,
            0o644,
        );
        out.write_all(path.as_bytes()).unwrap();
        out.write_all(&[0]).unwrap();
        pad(out, len);
    }
    raw_header(out, kind, &path[..path.len().min(99)], 0, mode);
}
