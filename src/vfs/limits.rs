//! The caps that keep reading an archive in bounded memory, whatever its headers declare. Each
//! is checked before anything of that size is read into memory; a refusal names the cap.

/// Longest entry name or link target taken, in bytes (Linux's `PATH_MAX` less its NUL). A GNU
/// long name or long link header (`L`, `K`) may declare one byte more, for the NUL it carries.
pub const MAX_NAME: u64 = 4096;

/// Largest PAX extended header (`x` or `g`) taken, in bytes: the tar crate reads one whole.
pub const MAX_PAX: u64 = 64 * 1024;

/// Most GNU sparse extension headers after one entry (each adds up to 21 regions to a list the
/// tar crate keeps in memory).
pub const MAX_SPARSE_EXTENSIONS: u64 = 64;

/// Most entries a zip's central directory may list: the zip crate keeps a record of each and
/// reserves room for as many as the directory claims.
pub const MAX_ZIP_ENTRIES: u64 = 100_000;

/// Largest zip central directory taken, in bytes: the zip crate reads it whole into memory.
pub const MAX_ZIP_DIRECTORY: u64 = 16 << 20;

/// Bytes of symlink paths one pass over an archive remembers (so that no later entry goes
/// through a link an earlier one made).
pub const MAX_LINK_PATHS: u64 = 8 << 20;

/// Largest zstd window taken, as a power of two (128 MiB, libzstd's own default cap): the
/// decoder allocates the window a frame declares, so a frame declaring more is refused.
pub const MAX_ZSTD_WINDOW_LOG: u32 = 27;

/// Deepest entry taken, in directories below the extraction directory (tree walks stop at
/// `walk::MAX_DEPTH`, and the extracted tree is walked to be moved in place).
pub const MAX_ENTRY_DEPTH: usize = super::walk::MAX_DEPTH - 2;

/// `16 MiB`, `64 KiB`, `4096 bytes`: a cap as the refusals say it.
pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 && n != MAX_NAME => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn caps_read_as_people_say_them() {
        assert_eq!(super::bytes(super::MAX_ZIP_DIRECTORY), "16 MiB");
        assert_eq!(super::bytes(super::MAX_PAX), "64 KiB");
        assert_eq!(super::bytes(super::MAX_NAME), "4096 bytes");
        assert_eq!(super::bytes(1000), "1000 bytes");
    }
}
