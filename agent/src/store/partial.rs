//! Resume data: the bytes of an interrupted layer download, kept in
//! `blobs/sha256/<hex>.partial`, replayed on the next try, then continued from the network
//! with an HTTP Range.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// Makes the partial file valid to resume from and returns its length: created when absent,
/// emptied when longer than the blob can be.
pub(crate) fn prepare_partial(path: &Path, size: u64) -> io::Result<u64> {
    let f = crate::fsutil::open_private_append(path)?;
    let len = f.metadata()?.len();
    if len > size {
        f.set_len(0)?;
        return Ok(0);
    }
    Ok(len)
}

/// The bytes of an interrupted download, replayed from disk before the network continues.
pub(crate) struct PartialSource {
    file: io::Take<File>,
}

impl PartialSource {
    pub(crate) fn open(path: &Path, len: u64) -> io::Result<Self> {
        let mut f = File::open(path)?;
        f.rewind()?;
        Ok(PartialSource { file: f.take(len) })
    }

    pub(crate) fn then<R: Read>(self, rest: R) -> io::Chain<io::Take<File>, R> {
        self.file.chain(rest)
    }
}

/// Keeps every byte from the network in the partial file, so an interrupted pull (or a
/// restarted agent) resumes instead of starting over.
pub(crate) struct Tee<'p, R> {
    pub(crate) inner: R,
    pub(crate) out: File,
    pub(crate) on_bytes: &'p (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}
