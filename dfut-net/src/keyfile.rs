//! The credential on disk: written like a private key, read only when kept
//! like one.
//!
//! A new file is written to a fresh temporary file created with mode 0600
//! (`O_CREAT|O_EXCL`, so a planted file or symlink there is refused, never
//! followed), then linked into place: without `overwrite` the link fails if
//! anything, even a dangling symlink, already has the name, so an existing
//! credential is never replaced by accident. Reading refuses a file that
//! its group or others may read, with the reason and the fix.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::NetError;

fn err(path: &Path, what: impl std::fmt::Display) -> NetError {
    NetError::Credential(crate::Cause::msg(format!("{}: {what}", path.display())))
}

/// Writes `pem` to `path` with mode 0600. Fails if `path` exists, unless
/// `overwrite` (then the old file is replaced atomically).
pub(crate) fn write(path: &Path, pem: &str, overwrite: bool) -> Result<(), NetError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err(path, "not a file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(pem.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&tmp, e));
    }
    let placed = if overwrite {
        std::fs::rename(&tmp, path)
    } else {
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        linked
    };
    placed.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            err(
                path,
                "already exists; not overwritten (remove it, or pass --force)",
            )
        } else {
            err(path, e)
        }
    })
}

/// Whether `e` says the file already existed.
pub(crate) fn already_exists(e: &NetError) -> bool {
    matches!(e, NetError::Credential(m) if m.to_string().ends_with("pass --force)"))
}

/// Reads the PEM text at `path`, refusing a file others may read.
pub(crate) fn read(path: &Path) -> Result<String, NetError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| err(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(err(
                path,
                format!(
                    "mode {:o} lets others read the cluster's private key; \
                     run `chmod 600 {}` (and make a new credential if others \
                     may have read it)",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    std::fs::read_to_string(path).map_err(|e| err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dfut-keyfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_is_private_and_never_replaced_by_accident() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("new");
        let f = d.join("c.pem");
        write(&f, "one", false).unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = write(&f, "two", false).unwrap_err();
        assert!(already_exists(&again), "{again}");
        assert_eq!(read(&f).unwrap(), "one");
        write(&f, "two", true).unwrap();
        assert_eq!(read(&f).unwrap(), "two");
        let leftovers = std::fs::read_dir(&d).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left");
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let d = dir("link");
        let target = d.join("elsewhere");
        let f = d.join("c.pem");
        std::os::unix::fs::symlink(&target, &f).unwrap();
        assert!(write(&f, "secret", false).is_err());
        assert!(!target.exists(), "nothing was written through the link");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_may_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("lax");
        let f = d.join("c.pem");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&f).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
