//! User-given paths, parsed and normalized lexically: the first filter, never the last.
//!
//! Only the kernel's fd-relative resolution ([`super::resolve`]) decides where a path leads; this
//! just turns `"/a/./b/../c/"` into `a/c` and refuses what can never be inside.

use super::FsError;

/// A normalized path beneath a volume root: `/`-joined names, none empty, `.` or `..`, no NUL.
/// The root itself is the empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelPath(String);

impl RelPath {
    /// Parses a user's path: `/`-separated, a leading `/` means the volume root, `.` is ignored
    /// and `..` may step back only while it stays inside (`a/../b` is `b`, `../b` escapes).
    pub(crate) fn parse(s: &str) -> Result<RelPath, FsError> {
        if s.contains('\0') {
            return Err(FsError::Invalid("Path contains a NUL byte".into()));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop().ok_or(FsError::Escapes)?;
                }
                name => parts.push(name),
            }
        }
        Ok(RelPath(parts.join("/")))
    }

    /// The volume root itself.
    pub(crate) fn root() -> RelPath {
        RelPath(String::new())
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as `openat2` takes it: `.` for the root.
    pub(crate) fn as_str(&self) -> &str {
        if self.is_root() {
            "."
        } else {
            &self.0
        }
    }

    /// The parent path and the final name; `None` for the root, which has no name.
    pub(crate) fn split_last(&self) -> Option<(RelPath, &str)> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((parent, name)) => (RelPath(parent.to_owned()), name),
            None => (RelPath(String::new()), self.0.as_str()),
        })
    }

    /// Each leading path with its last name: `a/b` gives `(a, a)` then `(a/b, b)`.
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = (&str, &str)> {
        let s = self.0.as_str();
        let mut end = 0;
        s.split('/').filter(|_| !s.is_empty()).map(move |name| {
            end += usize::from(end > 0) + name.len();
            (&s[..end], name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String, FsError> {
        RelPath::parse(s).map(|p| p.0)
    }

    #[test]
    fn normalizes() {
        for (input, want) in [
            ("", ""),
            ("/", ""),
            (".", ""),
            ("a", "a"),
            ("/a/b/", "a/b"),
            ("a//b/./c", "a/b/c"),
            ("a/../b", "b"),
            ("a/b/../..", ""),
            ("./a/./../a/x y", "a/x y"),
            ("...", "..."),
            ("a/..b", "a/..b"),
        ] {
            assert_eq!(norm(input).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn refuses_climbing_above_the_root_and_nul() {
        for input in ["..", "/..", "../a", "a/../..", "a/b/../../../c", "./../x"] {
            assert!(matches!(norm(input), Err(FsError::Escapes)), "{input:?}");
        }
        assert!(matches!(norm("a\0b"), Err(FsError::Invalid(_))));
    }

    #[test]
    fn splits_and_walks_prefixes() {
        let p = RelPath::parse("a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!((parent.as_str(), name), ("a/b", "c"));
        let one = RelPath::parse("x").unwrap();
        let (parent, name) = one.split_last().unwrap();
        assert_eq!((parent.as_str(), name), (".", "x"));
        assert!(RelPath::parse("/").unwrap().split_last().is_none());
        assert_eq!(p.prefixes().collect::<Vec<_>>(), [("a", "a"), ("a/b", "b"), ("a/b/c", "c")]);
        assert_eq!(RelPath::parse("").unwrap().prefixes().count(), 0);
        assert_eq!(one.prefixes().collect::<Vec<_>>(), [("x", "x")]);
    }

    #[test]
    fn the_root() {
        let root = RelPath::root();
        assert!(root.is_root() && RelPath::parse("/./").unwrap().is_root());
        assert_eq!(root.as_str(), ".");
        assert!(!RelPath::parse("a").unwrap().is_root());
        assert_eq!(RelPath::parse("a/b").unwrap().as_str(), "a/b");
    }
}
