//! Private names and paths, and the checks that make them safe (SPEC §5).
//!
//! Default paths live in a private directory: `$XDG_RUNTIME_DIR/ipc-demos`, or
//! else `$TMPDIR/ipc-demos-<uid>` (`/tmp/ipc-demos-0` for root). It is created
//! 0700 and refused when it is a symbolic link, not ours, or open to others —
//! in a shared `/tmp` someone else could have made it first, to watch or feed our
//! FIFOs. POSIX object names are `/ipc-demos.<uid>.<mech>`.
//!
//! Every object path is examined with `lstat` (which does not follow a symbolic
//! link) and opened with `O_NOFOLLOW`; an object that is a link, of the wrong
//! type, someone else's, or open to others is refused, and left untouched.

use std::env;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, Mode, SFlag, lstat};
use nix::unistd::{Uid, mkdir, unlink};

use crate::error::{Context, Error, Result};

/// Name of the private directory under `$XDG_RUNTIME_DIR`.
pub const DIR_NAME: &str = "ipc-demos";
/// Prefix of every POSIX name (`/ipc-demos.<uid>.<mech>`) without the slash.
pub const NAME_PREFIX: &str = "ipc-demos";
/// Environment variable that replaces [`NAME_PREFIX`], so parallel tests each
/// get a namespace of their own (and `ipc-clean` in one never touches another's).
pub const PREFIX_ENV: &str = "IPC_DEMOS_PREFIX";
/// Longest POSIX IPC name the kernel takes, slash excluded (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Our effective uid, the owner every object must have.
#[must_use]
pub fn uid() -> u32 {
    Uid::effective().as_raw()
}

/// Where the private directory is, without creating it.
#[must_use]
pub fn private_dir_path() -> PathBuf {
    match env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir).join(DIR_NAME),
        _ => env::temp_dir().join(format!("{DIR_NAME}-{}", uid())),
    }
}

/// The private directory, created 0700 if missing, and checked (see the module docs).
pub fn private_dir() -> Result<PathBuf> {
    let dir = private_dir_path();
    // mkdir 0700: only we may enter it, so nobody can plant or watch objects there.
    match mkdir(&dir, Mode::S_IRWXU) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(Error::errno(format!("mkdir {}", dir.display()), e)),
    }
    check_private_dir(&dir)?;
    Ok(dir)
}

/// Refuses a private directory that is a link, not a directory, not ours, or open to others.
pub fn check_private_dir(dir: &Path) -> Result<()> {
    let st = lstat(dir).context(|| format!("lstat {}", dir.display()))?;
    let shown = dir.display();
    let kind = file_kind(&st);
    if kind != SFlag::S_IFDIR {
        return Err(Error::system(format!(
            "private directory {shown} is a {}, not a directory; refusing to use it",
            kind_name(kind)
        ))
        .hint(format!("remove it if it is yours: rm {shown}")));
    }
    if st.st_uid != uid() {
        return Err(Error::system(format!(
            "private directory {shown} is owned by uid {}, not by us (uid {}); refusing to use it",
            st.st_uid,
            uid()
        ))
        .hint("set XDG_RUNTIME_DIR to a directory of yours, or have its owner remove it"));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::system(format!(
            "private directory {shown} has mode {mode:04o}, open to other users; refusing to use it"
        ))
        .hint(format!("chmod 700 {shown}")));
    }
    Ok(())
}

/// The name prefix in use: `$IPC_DEMOS_PREFIX` if set to letters, digits, `-`,
/// `_` or `.`, else [`NAME_PREFIX`].
#[must_use]
pub fn name_prefix() -> String {
    match env::var(PREFIX_ENV) {
        Ok(p)
            if !p.is_empty()
                && p.len() <= 64
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            p
        }
        _ => NAME_PREFIX.to_string(),
    }
}

/// `/ipc-demos.<uid>.<mech>`: the default POSIX name of a mechanism's object.
#[must_use]
pub fn posix_name(mech: &str) -> String {
    format!("/{}.{}.{mech}", name_prefix(), uid())
}

/// The lock-file base for a POSIX-named object (`mq-posix.my-queue` for queue
/// `/my-queue`): lock files live beside nothing in the kernel's namespace, so
/// this is also how `ipc-clean` recovers the names of queues to look for.
#[must_use]
pub fn posix_lock_base(kind: &str, name: &str) -> String {
    format!("{kind}.{}", name.trim_start_matches('/'))
}

/// Refuses a POSIX IPC name the kernel would reject, before any system call (exit 2).
pub fn check_posix_name(flag: &str, name: &str) -> Result<()> {
    let Some(rest) = name.strip_prefix('/') else {
        return Err(Error::usage(format!(
            "{flag} {name:?}: a POSIX name starts with '/', as in /my-queue"
        )));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::usage(format!(
            "{flag} {name:?}: one '/' then a name without further slashes"
        )));
    }
    if rest.len() > NAME_MAX {
        return Err(Error::usage(format!(
            "{flag}: name is {} bytes; the kernel takes at most {NAME_MAX}",
            rest.len()
        )));
    }
    Ok(())
}

/// The file type bits of a stat.
#[must_use]
pub fn file_kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// "regular file", "FIFO", "symbolic link"...
#[must_use]
pub fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "file of unknown type",
    }
}

/// `lstat`, with "does not exist" as `None`.
pub fn lstat_opt(path: &Path) -> Result<Option<FileStat>> {
    match lstat(path) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::errno(format!("lstat {}", path.display()), e)),
    }
}

/// Refuses an object (already known to be of the right type) that is not ours or
/// is open to others. `what` names it: "FIFO /x".
pub fn check_ours(st: &FileStat, what: &str) -> Result<()> {
    if st.st_uid != uid() {
        return Err(Error::system(format!(
            "{what} is owned by uid {}, not by us (uid {}); refusing to use it",
            st.st_uid,
            uid()
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::system(format!(
            "{what} has mode {mode:04o}, open to other users; refusing to use it"
        )));
    }
    Ok(())
}

/// Refuses a path that is not of type `want` without touching it; `Ok(None)` if absent.
pub fn expect_kind(path: &Path, want: SFlag, what: &str) -> Result<Option<FileStat>> {
    let Some(st) = lstat_opt(path)? else {
        return Ok(None);
    };
    let kind = file_kind(&st);
    if kind == want {
        return Ok(Some(st));
    }
    let mut err = Error::system(format!(
        "{} is a {}, not a {}; refusing to touch it",
        path.display(),
        kind_name(kind),
        kind_name(want)
    ));
    if kind == SFlag::S_IFLNK {
        err = Error::system(format!(
            "{} is a symbolic link; refusing to follow it (where a {what} should be)",
            path.display()
        ));
    }
    Err(err)
}

/// Removes `path` only if it is still the object we made (same device and inode),
/// so an owner never deletes a replacement someone put there since.
pub fn remove_if_same(path: &Path, dev: u64, ino: u64) -> bool {
    match lstat(path) {
        Ok(st) if st.st_dev == dev && st.st_ino == ino => unlink(path).is_ok(),
        _ => false,
    }
}

/// Length of a path in bytes (what `sun_path` and `PATH_MAX` count).
#[must_use]
pub fn byte_len(path: &Path) -> usize {
    path.as_os_str().as_bytes().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_names_need_one_leading_slash() {
        check_posix_name("--name", "/q").unwrap();
        for bad in ["q", "/", "/a/b", ""] {
            let err = check_posix_name("--name", bad).unwrap_err();
            assert_eq!(err.exit(), crate::error::Exit::Usage, "{bad}");
        }
        let long = format!("/{}", "x".repeat(256));
        assert!(check_posix_name("--name", &long).is_err());
    }

    #[test]
    fn default_name_carries_uid_and_mechanism() {
        assert_eq!(posix_name("mq"), format!("/ipc-demos.{}.mq", uid()));
    }
}
