//! What the files API shows of one name in a volume, and the octal mode strings it speaks.

use std::ffi::CStr;

use rustix::fs::{FileType, Stat};
use serde::{Serialize, Serializer};

use super::FsError;

/// One name in a volume as the files API lists it: lstat facts, a symlink's target as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`), shown as a 4-digit octal string.
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    /// Last modification, unix seconds.
    pub modified: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The kinds of name the API tells apart; fifos, sockets and devices are all `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub(crate) fn of(stat: &Stat) -> Kind {
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

impl Entry {
    pub(crate) fn new(name: &str, stat: &Stat, target: Option<&CStr>) -> Entry {
        Entry {
            name: name.to_owned(),
            kind: Kind::of(stat),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mode: stat.st_mode & 0o7777,
            modified: u64::try_from(stat.st_mtime).unwrap_or(0),
            target: target.map(|t| t.to_string_lossy().into_owned()),
        }
    }
}

/// `0o644` as `"0644"`.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

fn octal<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mode_string(*mode))
}

/// Parses a user's mode string (`"0644"`, `"755"`): permission bits only, so setuid, setgid and
/// sticky are refused rather than silently dropped.
pub fn parse_mode(s: &str) -> Result<u32, FsError> {
    let invalid = || FsError::Invalid(format!("Invalid mode {s:?}: expected octal permission bits like \"0644\""));
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(invalid());
    }
    let mode = u32::from_str_radix(s, 8).map_err(|_| invalid())?;
    if mode & !0o777 != 0 {
        return Err(FsError::Invalid(format!("Invalid mode {s:?}: setuid, setgid and sticky bits are not allowed")));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0").unwrap(), 0);
        for bad in ["", "4755", "1777", "0o644", "888", "12345", "-644", " 644"] {
            assert!(matches!(parse_mode(bad), Err(FsError::Invalid(_))), "{bad:?} accepted");
        }
        assert_eq!(mode_string(0o644), "0644");
        assert_eq!(mode_string(0o4755), "4755");
    }

    #[test]
    fn entry_serializes_as_the_api_says() {
        let e = Entry {
            name: "a".into(),
            kind: Kind::Symlink,
            size: 3,
            mode: 0o777,
            modified: 7,
            target: Some("/b".into()),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name":"a","type":"symlink","size":3,"mode":"0777","modified":7,"target":"/b"})
        );
        let plain = Entry { kind: Kind::Dir, target: None, ..e };
        let v = serde_json::to_value(&plain).unwrap();
        assert_eq!(v["type"], "dir");
        assert!(v.get("target").is_none());
    }
}
