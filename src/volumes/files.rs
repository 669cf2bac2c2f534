//! What the files API needs from a volume: its root opened for `crate::vfs` (which does every
//! path fd-relative beneath it), and the vfs layer's errors as the API's.

use super::Volumes;
use crate::error::Error;
use crate::model::Volume;
use crate::vfs::{FsError, Root};

/// The volume a user's key names, with its root open (blocking: call off the async threads).
/// What the API writes there belongs to the user its server runs as.
pub fn open_root(volumes: &Volumes, key: &str) -> Result<(Volume, Root), Error> {
    let volume = super::find(volumes, key)?;
    let (uid, gid) = owner(volumes, &volume.volume_id);
    let root = super::mount_path(volumes, &volume.volume_id)
        .map_err(Error::Conflict)
        .and_then(|path| Root::open(&path).and_then(|r| r.owned_by(uid, gid)).map_err(|e| fs_error(e, &volume)))?;
    Ok((volume, root))
}

/// The user files of a volume belong to: that of the (oldest) server using it, else
/// `containers.user`.
pub fn owner(volumes: &Volumes, volume_id: &str) -> (u32, u32) {
    let user = volumes.store.read(|s| {
        s.containers.values().filter(|c| c.volume_id == volume_id).min_by_key(|c| c.created_at).map(|c| c.user.clone())
    });
    let user = user.unwrap_or_else(|| volumes.config.containers.user.clone());
    crate::model::parse_user(&user).unwrap_or((1000, 1000))
}

/// A vfs error as the API says it; a full volume names its limit.
pub fn fs_error(e: FsError, volume: &Volume) -> Error {
    match e {
        FsError::Escapes => Error::BadRequest("Path escapes the volume".into()),
        FsError::NotFound => Error::NotFound("File not found".into()),
        FsError::Exists => Error::Conflict("A file or directory of that name exists (send \"overwrite\": true)".into()),
        FsError::NotADirectory => Error::BadRequest("Not a directory".into()),
        FsError::IsADirectory => Error::BadRequest("Is a directory".into()),
        FsError::NoSpace => Error::Full(format!("Volume is full (limit {})", human(volume.size_limit_bytes))),
        FsError::Invalid(m) | FsError::BadEntry(m) => Error::BadRequest(m),
        FsError::Io(e) => Error::Internal(format!("file system error: {e}")),
    }
}

/// `10.0 GiB`, `512.0 MiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(10 << 30), "10.0 GiB");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(0), "0.0 B");
    }
}
