//! The free-space reserve while a layer unpacks. A pull estimates the space it needs once,
//! before downloading, from compressed sizes; a layer can unpack to far more (a small gzip of
//! zeros, a million empty files, sparse holes). So the filesystem is looked at again every
//! [`CHECK_EVERY_ENTRIES`] entries and [`CHECK_EVERY_BYTES`] bytes, and the unpack stops before
//! it takes the last `min_free` bytes, or the same share of the inodes.

use std::os::fd::BorrowedFd;

/// Entries between two looks at the filesystem.
pub const CHECK_EVERY_ENTRIES: u64 = 64;
/// Bytes written between two looks at the filesystem.
pub const CHECK_EVERY_BYTES: u64 = 4 << 20;

/// What ran short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scarce {
    Bytes,
    Inodes,
}

/// The reserve was reached: `available` of `unit` left, `reserve` to keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unpacking stopped with {available} {unit} left free on the state dir's filesystem, where [images] min_free keeps {reserve}",
    unit = match .scarce { Scarce::Bytes => "bytes", Scarce::Inodes => "inodes" }
)]
pub struct Reserve {
    pub scarce: Scarce,
    pub available: u64,
    pub reserve: u64,
}

/// The inodes to keep free: the share of all inodes that `min_free` is of all bytes (none on
/// filesystems that report no inode count, such as btrfs).
pub fn inode_reserve(min_free: u64, total_bytes: u64, total_inodes: u64) -> u64 {
    if min_free == 0 || total_inodes == 0 || total_bytes == 0 {
        return 0;
    }
    let r =
        u128::from(total_inodes) * u128::from(min_free.min(total_bytes)) / u128::from(total_bytes);
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// Judges a filesystem's counts against the reserve (pure).
pub fn judge(
    min_free: u64,
    avail_bytes: u64,
    total_bytes: u64,
    avail_inodes: u64,
    total_inodes: u64,
) -> Result<(), Reserve> {
    if avail_bytes < min_free {
        return Err(Reserve {
            scarce: Scarce::Bytes,
            available: avail_bytes,
            reserve: min_free,
        });
    }
    let inodes = inode_reserve(min_free, total_bytes, total_inodes);
    if avail_inodes < inodes {
        return Err(Reserve {
            scarce: Scarce::Inodes,
            available: avail_inodes,
            reserve: inodes,
        });
    }
    Ok(())
}

/// Counts entries and bytes since the last look, and looks when either is due.
#[derive(Debug)]
pub struct Guard {
    min_free: u64,
    entries: u64,
    bytes: u64,
}

impl Guard {
    pub fn new(min_free: u64) -> Guard {
        Guard {
            min_free,
            // Due at once: the first entry looks.
            entries: CHECK_EVERY_ENTRIES,
            bytes: 0,
        }
    }

    /// Another entry is about to be written.
    pub fn entry(&mut self, fs: BorrowedFd<'_>) -> std::io::Result<Result<(), Reserve>> {
        self.entries += 1;
        self.due(fs)
    }

    /// `n` more bytes were written.
    pub fn wrote(&mut self, n: u64, fs: BorrowedFd<'_>) -> std::io::Result<Result<(), Reserve>> {
        self.bytes += n;
        self.due(fs)
    }

    fn due(&mut self, fs: BorrowedFd<'_>) -> std::io::Result<Result<(), Reserve>> {
        if self.min_free == 0
            || (self.entries < CHECK_EVERY_ENTRIES && self.bytes < CHECK_EVERY_BYTES)
        {
            return Ok(Ok(()));
        }
        self.entries = 0;
        self.bytes = 0;
        let st = rustix::fs::fstatvfs(fs)?;
        Ok(judge(
            self.min_free,
            st.f_bavail.saturating_mul(st.f_frsize),
            st.f_blocks.saturating_mul(st.f_frsize),
            st.f_favail,
            st.f_files,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_reserve_in_bytes_and_inodes() {
        // 1 GiB with 65536 inodes; 64 MiB to keep is 1/16: 4096 inodes.
        assert_eq!(inode_reserve(64 << 20, 1 << 30, 65536), 4096);
        assert_eq!(inode_reserve(0, 1 << 30, 65536), 0);
        assert_eq!(inode_reserve(64 << 20, 1 << 30, 0), 0);
        assert!(judge(64 << 20, 65 << 20, 1 << 30, 5000, 65536).is_ok());
        let e = judge(64 << 20, 63 << 20, 1 << 30, 5000, 65536).unwrap_err();
        assert_eq!(e.scarce, Scarce::Bytes);
        let e = judge(64 << 20, 65 << 20, 1 << 30, 4095, 65536).unwrap_err();
        assert_eq!((e.scarce, e.reserve), (Scarce::Inodes, 4096));
        assert!(e.to_string().contains("4095 inodes") && e.to_string().contains("min_free"));
        // A reserve larger than the filesystem keeps every inode.
        assert_eq!(inode_reserve(u64::MAX, 1 << 30, 65536), 65536);
    }

    proptest! {
        #[test]
        fn the_inode_reserve_is_the_byte_reserves_share(
            min_free in 0u64..1 << 40, total in 1u64..1 << 50, inodes in 0u64..1 << 32) {
            let r = inode_reserve(min_free, total, inodes);
            prop_assert!(r <= inodes);
            if min_free >= total {
                prop_assert_eq!(r, if min_free == 0 { 0 } else { inodes });
            }
        }
    }
}
