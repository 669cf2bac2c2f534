//! One SFTP session: the SFTP requests of one logged-in user, each done through the confined
//! files layer (`crate::vfs`) on the volume's root, opened once for the session (`/` is the
//! volume's root). Every request first checks that the user is still on record, so a deleted
//! user can do nothing more even before the server's watch ends the connection.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File as Named, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode,
    Version,
};
use russh_sftp::server::StatusReply;

use super::server::Shared;
use crate::vfs::{DirStream, Entry, FsError, Kind, Root, Upload};

/// Most entries per READDIR answer.
const PAGE: usize = 512;
/// Most bytes one READ answers with.
const MAX_READ: u32 = 256 * 1024;
/// Most handles one session may hold open.
const MAX_HANDLES: usize = 1024;

/// What an SFTP handle refers to.
enum Open {
    Read(Arc<File>),
    /// A file written in place (opened without truncation).
    Write(Arc<File>),
    /// A new or truncated file: written to a temp name, renamed over its own at close.
    Upload {
        file: Arc<File>,
        upload: Box<Upload>,
        failed: bool,
        /// Its path as the client named it, normalized (for the viewers' event).
        path: String,
    },
    /// An open directory, read a batch per READDIR (`None` while a batch is being read).
    Dir(Option<Box<DirStream>>),
}

pub struct Sftp {
    shared: Arc<Shared>,
    login: String,
    /// The generation of the user it logged in as: a user of that name created since is
    /// another user, and this session may do nothing more.
    generation: u64,
    volume_id: String,
    /// The volume's size limit when it is not a file system of its own (not a loop mount):
    /// `statvfs@openssh.com` shows no more than it.
    limit: Option<u64>,
    root: Arc<Root>,
    handles: HashMap<String, Open>,
    next: u64,
    /// Its place among its connection's running sessions, given back when it ends.
    _running: super::server::Running,
}

type Reply<T> = Result<T, StatusReply>;

fn fail(code: StatusCode, msg: impl Into<String>) -> StatusReply {
    StatusReply::new(code).with_message(msg)
}

fn fs(e: FsError) -> StatusReply {
    match e {
        FsError::NotFound => fail(StatusCode::NoSuchFile, "No such file"),
        FsError::Escapes => fail(StatusCode::PermissionDenied, "Path escapes the volume"),
        FsError::NoSpace => fail(StatusCode::Failure, "Volume is full"),
        e => fail(StatusCode::Failure, e.to_string()),
    }
}

fn io(e: std::io::Error) -> StatusReply {
    fs(FsError::from(e))
}

fn ok(id: u32) -> Status {
    Status { id, status_code: StatusCode::Ok, error_message: "Ok".into(), language_tag: "en-US".into() }
}

/// Runs `f` on the root off the async threads.
async fn blocking<T: Send + 'static>(
    root: &Arc<Root>,
    f: impl FnOnce(&Root) -> Result<T, FsError> + Send + 'static,
) -> Reply<T> {
    let root = Arc::clone(root);
    tokio::task::spawn_blocking(move || f(&root))
        .await
        .map_err(|e| fail(StatusCode::Failure, e.to_string()))?
        .map_err(fs)
}

/// `/a/../b/./c` as `/b/c`, relative to `/`; `..` stops at the root.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn attrs_of_stat(st: &rustix::fs::Stat) -> FileAttributes {
    FileAttributes {
        size: Some(u64::try_from(st.st_size).unwrap_or(0)),
        uid: Some(st.st_uid),
        gid: Some(st.st_gid),
        permissions: Some(st.st_mode),
        atime: Some(u32::try_from(st.st_atime).unwrap_or(0)),
        mtime: Some(u32::try_from(st.st_mtime).unwrap_or(0)),
        ..Default::default()
    }
}

fn attrs_of_entry(e: &Entry) -> FileAttributes {
    let kind = match e.kind {
        Kind::File => 0o100000,
        Kind::Dir => 0o040000,
        Kind::Symlink => 0o120000,
        Kind::Other => 0,
    };
    FileAttributes {
        size: Some(e.size),
        permissions: Some(kind | e.mode),
        mtime: Some(u32::try_from(e.modified).unwrap_or(0)),
        atime: Some(u32::try_from(e.modified).unwrap_or(0)),
        ..Default::default()
    }
}

fn attrs_of_meta(m: &std::fs::Metadata) -> FileAttributes {
    use std::os::unix::fs::MetadataExt;
    FileAttributes {
        size: Some(m.len()),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        permissions: Some(m.mode()),
        atime: Some(u32::try_from(m.atime()).unwrap_or(0)),
        mtime: Some(u32::try_from(m.mtime()).unwrap_or(0)),
        ..Default::default()
    }
}

/// Permission bits from SFTP attributes: setuid, setgid and sticky are refused.
fn mode_of(attrs: &FileAttributes) -> Reply<Option<u32>> {
    match attrs.permissions {
        None => Ok(None),
        Some(p) if p & 0o7000 != 0 => Err(fail(StatusCode::PermissionDenied, "setuid, setgid and sticky are refused")),
        Some(p) => Ok(Some(p & 0o777)),
    }
}

/// Reads up to `len` bytes of `file` at `offset` from the page cache only (`RWF_NOWAIT`: the
/// kernel answers EAGAIN rather than wait for the disk), on the calling thread. Returns the
/// buffer (`len` long), how much of it was read, and whether that is all there is to read
/// (the buffer is full or the end of the file was reached).
fn read_cached(file: &File, offset: u64, len: usize) -> (Vec<u8>, usize, bool) {
    use rustix::io::{preadv2, ReadWriteFlags};
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let at = offset + got as u64;
        match preadv2(file, &mut [std::io::IoSliceMut::new(&mut buf[got..])], at, ReadWriteFlags::NOWAIT) {
            Ok(0) => return (buf, got, true),
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            // Not cached (EAGAIN), not supported here, or an error the blocking read reports.
            Err(_) => return (buf, got, false),
        }
    }
    (buf, got, true)
}

/// Writes `data` to `file` at `offset` as far as the page cache takes it without waiting
/// (`RWF_NOWAIT`: the kernel answers EAGAIN rather than wait for the disk, dirty-page
/// throttling, a lock or a block allocation), on the calling thread; how much was written.
fn write_cached(file: &File, data: &[u8], offset: u64) -> usize {
    use rustix::io::{pwritev2, ReadWriteFlags};
    let mut done = 0;
    while done < data.len() {
        let at = offset + done as u64;
        match pwritev2(file, &[std::io::IoSlice::new(&data[done..])], at, ReadWriteFlags::NOWAIT) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            // Would wait, not supported here, or an error the blocking write reports.
            Err(_) => break,
        }
    }
    done
}

/// Fills `buf` from `got` on, off the async threads; what was read, up to the end of the file.
async fn read_rest(file: Arc<File>, mut buf: Vec<u8>, mut got: usize, offset: u64) -> Reply<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    })
    .await
    .map_err(|e| fail(StatusCode::Failure, e.to_string()))?
    .map_err(io)
}

/// An SSH string (u32 length, bytes) from the front of `data`.
fn ssh_string(data: &mut &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let s = data.get(4..4 + len)?;
    let out = String::from_utf8(s.to_vec()).ok();
    *data = &data[4 + len..];
    out
}

impl Sftp {
    pub(super) fn new(
        shared: Arc<Shared>,
        login: String,
        generation: u64,
        root: Root,
        limit: Option<u64>,
        running: super::server::Running,
    ) -> Sftp {
        let volume_id = login.split_once('.').map_or(String::new(), |(_, v)| v.to_string());
        Sftp {
            shared,
            login,
            generation,
            volume_id,
            limit,
            root: Arc::new(root),
            handles: HashMap::new(),
            next: 1,
            _running: running,
        }
    }

    /// The user is still on record (the same user, not one created again under its name):
    /// whether it may write.
    fn check(&self) -> Reply<bool> {
        let user = |s: &crate::store::State| {
            s.sftp_users.get(&self.login).filter(|u| u.generation == self.generation).map(|u| !u.read_only)
        };
        match self.shared.store().read(user) {
            Some(writable) => Ok(writable),
            None => Err(fail(StatusCode::PermissionDenied, "This SFTP user no longer exists")),
        }
    }

    fn writable(&self) -> Reply<()> {
        match self.check()? {
            true => Ok(()),
            false => Err(fail(StatusCode::PermissionDenied, "This SFTP user is read-only")),
        }
    }

    fn add(&mut self, open: Open) -> Reply<String> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(fail(StatusCode::Failure, "Too many open handles"));
        }
        let handle = self.next.to_string();
        self.next += 1;
        self.handles.insert(handle.clone(), open);
        Ok(handle)
    }

    fn file(&self, handle: &str) -> Reply<Arc<File>> {
        match self.handles.get(handle) {
            Some(Open::Read(f) | Open::Write(f) | Open::Upload { file: f, .. }) => Ok(Arc::clone(f)),
            _ => Err(fail(StatusCode::Failure, "Not a file handle")),
        }
    }

    async fn rename(&self, from: String, to: String, overwrite: bool) -> Reply<()> {
        self.writable()?;
        blocking(&self.root, move |r| r.rename(&from, &to, overwrite)).await
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusReply::new(StatusCode::OpUnsupported)
    }

    async fn init(&mut self, _version: u32, _: HashMap<String, String>) -> Reply<Version> {
        let mut v = Version::new();
        v.extensions.insert("posix-rename@openssh.com".into(), "1".into());
        v.extensions.insert("fsync@openssh.com".into(), "1".into());
        v.extensions.insert("statvfs@openssh.com".into(), "2".into());
        Ok(v)
    }

    async fn open(&mut self, id: u32, filename: String, pflags: OpenFlags, attrs: FileAttributes) -> Reply<Handle> {
        let writes = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE);
        if !writes {
            self.check()?;
            // A lookup the kernel has cached is done here; any other off the async threads.
            let file = match self.root.open_read_cached(&filename) {
                Some((file, _)) => file,
                None => blocking(&self.root, move |r| r.open_read(&filename)).await?.0,
            };
            let handle = self.add(Open::Read(Arc::new(file)))?;
            return Ok(Handle { id, handle });
        }
        self.writable()?;
        let mode = mode_of(&attrs)?;
        let read = pflags.contains(OpenFlags::READ);
        let open = blocking(&self.root, move |r| {
            let exists = match r.stat_raw(&filename) {
                Ok(_) => true,
                Err(FsError::NotFound) => false,
                Err(e) => return Err(e),
            };
            if exists && pflags.contains(OpenFlags::EXCLUDE) {
                return Err(FsError::Exists);
            }
            if exists && !pflags.contains(OpenFlags::TRUNCATE) {
                return Ok(Open::Write(Arc::new(r.open_write(&filename, read)?)));
            }
            if !exists && !pflags.contains(OpenFlags::CREATE) {
                return Err(FsError::NotFound);
            }
            // The parent must exist (an upload elsewhere would make it).
            let parent = normalize(&filename);
            let parent = parent.rsplit_once('/').map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
            if !matches!(
                r.stat_raw(parent).map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode)),
                Ok(rustix::fs::FileType::Directory)
            ) {
                return Err(FsError::NotFound);
            }
            let mut upload = r.create_temp(&filename)?;
            if let Some(mode) = mode {
                upload.file().set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            let file = Arc::new(upload.file().try_clone()?);
            Ok(Open::Upload { file, upload: Box::new(upload), failed: false, path: normalize(&filename) })
        })
        .await?;
        let handle = self.add(open)?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Reply<Status> {
        match self.handles.remove(&handle) {
            None => Err(fail(StatusCode::Failure, "No such handle")),
            Some(Open::Upload { upload, failed, path, .. }) => {
                if failed {
                    return Err(fail(StatusCode::Failure, "The upload failed and was discarded"));
                }
                // A user removed meanwhile does not get its upload published.
                self.writable()?;
                tokio::task::spawn_blocking(move || upload.commit())
                    .await
                    .map_err(|e| fail(StatusCode::Failure, e.to_string()))?
                    .map_err(fs)?;
                self.shared.tell(&self.volume_id, format!("sftp upload {}", path.trim_start_matches('/')));
                Ok(ok(id))
            }
            Some(_) => Ok(ok(id)),
        }
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Reply<Data> {
        self.check()?;
        let file = self.file(&handle)?;
        let len = len.min(MAX_READ) as usize;
        // What the page cache holds is read right here: a thread hop would cost more than the
        // copy (most of a small file's download). The rest, if any, is read off the async threads.
        let (mut buf, got, done) = read_cached(&file, offset, len);
        let data = if done {
            buf.truncate(got);
            buf
        } else {
            read_rest(file, buf, got, offset).await?
        };
        if data.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        Ok(Data { id, data })
    }

    async fn write(&mut self, id: u32, handle: String, offset: u64, data: Vec<u8>) -> Reply<Status> {
        self.writable()?;
        let file = self.file(&handle)?;
        if matches!(self.handles.get(&handle), Some(Open::Read(_))) {
            return Err(fail(StatusCode::PermissionDenied, "The handle was opened for reading"));
        }
        // What the page cache takes without waiting is written right here; the rest, if any,
        // off the async threads.
        let done = write_cached(&file, &data, offset);
        let written = if done == data.len() {
            Ok(())
        } else {
            tokio::task::spawn_blocking(move || file.write_all_at(&data[done..], offset + done as u64))
                .await
                .map_err(|e| fail(StatusCode::Failure, e.to_string()))?
        };
        if let Err(e) = written {
            if let Some(Open::Upload { failed, .. }) = self.handles.get_mut(&handle) {
                *failed = true;
            }
            return Err(io(e));
        }
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        self.check()?;
        let st = blocking(&self.root, move |r| r.lstat_raw(&path)).await?;
        Ok(Attrs { id, attrs: attrs_of_stat(&st) })
    }

    async fn stat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        self.check()?;
        let st = blocking(&self.root, move |r| r.stat_raw(&path)).await?;
        Ok(Attrs { id, attrs: attrs_of_stat(&st) })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Reply<Attrs> {
        self.check()?;
        // An open file's attributes are in memory: no thread hop for them.
        let meta = self.file(&handle)?.metadata().map_err(io)?;
        Ok(Attrs { id, attrs: attrs_of_meta(&meta) })
    }

    async fn setstat(&mut self, id: u32, path: String, attrs: FileAttributes) -> Reply<Status> {
        self.writable()?;
        let mode = mode_of(&attrs)?;
        if attrs.uid.is_some() || attrs.gid.is_some() {
            return Err(fail(StatusCode::PermissionDenied, "Owners cannot be changed over SFTP"));
        }
        let size = attrs.size;
        blocking(&self.root, move |r| {
            if let Some(size) = size {
                r.open_write(&path, false)?.set_len(size)?;
            }
            if let Some(mode) = mode {
                r.chmod(&path, &format!("{mode:04o}"))?;
            }
            Ok(())
        })
        .await?;
        Ok(ok(id))
    }

    async fn fsetstat(&mut self, id: u32, handle: String, attrs: FileAttributes) -> Reply<Status> {
        self.writable()?;
        let mode = mode_of(&attrs)?;
        if attrs.uid.is_some() || attrs.gid.is_some() {
            return Err(fail(StatusCode::PermissionDenied, "Owners cannot be changed over SFTP"));
        }
        if matches!(self.handles.get(&handle), Some(Open::Read(_))) && (mode.is_some() || attrs.size.is_some()) {
            return Err(fail(StatusCode::PermissionDenied, "The handle was opened for reading"));
        }
        let file = self.file(&handle)?;
        let size = attrs.size;
        tokio::task::spawn_blocking(move || {
            if let Some(size) = size {
                file.set_len(size)?;
            }
            if let Some(mode) = mode {
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| fail(StatusCode::Failure, e.to_string()))?
        .map_err(io)?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Reply<Handle> {
        self.check()?;
        let stream = blocking(&self.root, move |r| r.dir_stream(&path)).await?;
        let handle = self.add(Open::Dir(Some(Box::new(stream))))?;
        Ok(Handle { id, handle })
    }

    /// The next batch of the directory, read on from where the last one stopped: a listing
    /// reads each name once, however large the directory.
    async fn readdir(&mut self, id: u32, handle: String) -> Reply<Name> {
        self.check()?;
        let mut stream = match self.handles.get_mut(&handle) {
            Some(Open::Dir(stream)) => {
                stream.take().ok_or_else(|| fail(StatusCode::Failure, "The directory is being read"))?
            }
            _ => return Err(fail(StatusCode::Failure, "Not a directory handle")),
        };
        let (stream, batch) = tokio::task::spawn_blocking(move || {
            let batch = stream.next_batch(PAGE);
            (stream, batch)
        })
        .await
        .map_err(|e| fail(StatusCode::Failure, e.to_string()))?;
        if let Some(Open::Dir(slot)) = self.handles.get_mut(&handle) {
            *slot = Some(stream);
        }
        let batch = batch.map_err(fs)?;
        if batch.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        let files = batch.iter().map(|e| Named::new(e.name.clone(), attrs_of_entry(e))).collect();
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Reply<Status> {
        self.writable()?;
        blocking(&self.root, move |r| r.remove_file(&filename)).await?;
        Ok(ok(id))
    }

    async fn mkdir(&mut self, id: u32, path: String, attrs: FileAttributes) -> Reply<Status> {
        self.writable()?;
        let mode = mode_of(&attrs)?.unwrap_or(0o755);
        blocking(&self.root, move |r| r.mkdir_one(&path, mode)).await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Reply<Status> {
        self.writable()?;
        blocking(&self.root, move |r| r.rmdir(&path)).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Reply<Name> {
        self.check()?;
        Ok(Name { id, files: vec![Named::dummy(normalize(&path))] })
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Reply<Status> {
        Sftp::rename(self, oldpath, newpath, false).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Reply<Name> {
        self.check()?;
        let target = blocking(&self.root, move |r| r.readlink(&path)).await?;
        Ok(Name { id, files: vec![Named::dummy(target)] })
    }

    /// OpenSSH (and every client following it) sends the target first, then the link's path:
    /// the fields russh-sftp names `linkpath` and `targetpath` arrive in that order.
    async fn symlink(&mut self, id: u32, linkpath: String, targetpath: String) -> Reply<Status> {
        self.writable()?;
        blocking(&self.root, move |r| r.symlink(&linkpath, &targetpath)).await?;
        Ok(ok(id))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Reply<Packet> {
        let mut rest = data.as_slice();
        match request.as_str() {
            "posix-rename@openssh.com" => {
                let (Some(from), Some(to)) = (ssh_string(&mut rest), ssh_string(&mut rest)) else {
                    return Err(StatusReply::new(StatusCode::BadMessage));
                };
                Sftp::rename(self, from, to, true).await?;
                Ok(Packet::Status(ok(id)))
            }
            "fsync@openssh.com" => {
                self.check()?;
                let handle = ssh_string(&mut rest).ok_or_else(|| StatusReply::new(StatusCode::BadMessage))?;
                let file = self.file(&handle)?;
                tokio::task::spawn_blocking(move || file.sync_all())
                    .await
                    .map_err(|e| fail(StatusCode::Failure, e.to_string()))?
                    .map_err(io)?;
                Ok(Packet::Status(ok(id)))
            }
            "statvfs@openssh.com" => {
                self.check()?;
                let path = ssh_string(&mut rest).ok_or_else(|| StatusReply::new(StatusCode::BadMessage))?;
                let st = blocking(&self.root, move |r| r.statvfs(&path)).await?;
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: statvfs_reply(&st, self.limit) }))
            }
            _ => Err(self.unimplemented()),
        }
    }
}

/// The body of a `statvfs@openssh.com` answer: eleven u64s (OpenSSH's PROTOCOL file). With
/// `limit` (a volume that is only a directory on the host's disk), the sizes are capped at it.
fn statvfs_reply(st: &rustix::fs::StatVfs, limit: Option<u64>) -> Vec<u8> {
    use rustix::fs::StatVfsMountFlags;
    let frsize = st.f_frsize.max(1);
    let (mut blocks, mut bfree, mut bavail) = (st.f_blocks, st.f_bfree, st.f_bavail);
    if let Some(limit) = limit {
        blocks = blocks.min(limit / frsize);
        bfree = bfree.min(blocks);
        bavail = bavail.min(blocks);
    }
    let mut flag = 0u64;
    if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
        flag |= 1;
    }
    if st.f_flag.contains(StatVfsMountFlags::NOSUID) {
        flag |= 2;
    }
    let fields =
        [st.f_bsize, frsize, blocks, bfree, bavail, st.f_files, st.f_ffree, st.f_favail, st.f_fsid, flag, st.f_namemax];
    fields.iter().flat_map(|v| v.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_under_the_root() {
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("."), "/");
        assert_eq!(normalize("/a/../../b/./c/"), "/b/c");
        assert_eq!(normalize("../../etc"), "/etc");
        let mut data: &[u8] = &[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 9];
        assert_eq!(ssh_string(&mut data).as_deref(), Some("hi"));
        assert_eq!(ssh_string(&mut data), None, "a length past the end");
    }

    #[test]
    fn statvfs_answers_are_capped_at_a_limit() {
        let st = rustix::fs::statvfs("/").unwrap();
        let word = |b: &[u8], i: usize| u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let plain = statvfs_reply(&st, None);
        assert_eq!(plain.len(), 88);
        assert_eq!(word(&plain, 2), st.f_blocks);
        let capped = statvfs_reply(&st, Some(1 << 20));
        let frsize = word(&capped, 1);
        assert!(word(&capped, 2) * frsize <= 1 << 20);
        assert!(word(&capped, 3) <= word(&capped, 2) && word(&capped, 4) <= word(&capped, 2));
    }
}
