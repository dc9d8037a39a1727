//! Writes a runner tree to disk without losing anything: an existing directory is only replaced
//! when it is empty or is itself a runner this tool generated, and then only as a whole.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::runner::{Entry, Tree};

/// Marks a directory as a runner this tool wrote, so `--force` may replace it.
pub const MARKER: &str = "share/microvm/spec.json";
/// Marks a host package this tool wrote.
pub const HOST_MARKER: &str = "share/microvm/host-spec.json";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not empty; pass --force to replace a runner generated earlier")]
    NotEmpty(PathBuf),
    #[error(
        "{0} is not empty and is not output of microvm-codegen (no {1}); refusing to replace it even with --force"
    )]
    NotARunner(PathBuf, &'static str),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_tree(dir: &Path, tree: &Tree) -> Result<(), OutputError> {
    for (relative, entry) in tree {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        match entry {
            Entry::File {
                contents,
                executable,
            } => {
                fs::write(&path, contents).map_err(io_error(&path))?;
                let mode = if *executable { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(io_error(&path))?;
            }
            Entry::Symlink { target } => symlink(target, &path).map_err(io_error(&path))?,
        }
    }
    Ok(())
}

fn is_empty_dir(dir: &Path) -> Result<bool, OutputError> {
    Ok(fs::read_dir(dir).map_err(io_error(dir))?.next().is_none())
}

/// Writes a runner `tree` to `out`.
pub fn write(out: &Path, tree: &Tree, force: bool) -> Result<(), OutputError> {
    write_marked(out, tree, force, MARKER)
}

/// Writes `tree` to `out`; with `force`, replaces `out` only if `marker` shows this tool wrote it.
pub fn write_marked(
    out: &Path,
    tree: &Tree,
    force: bool,
    marker: &'static str,
) -> Result<(), OutputError> {
    let metadata = match fs::symlink_metadata(out) {
        Ok(metadata) => Some(metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(out)(e)),
    };
    match metadata {
        None => {
            // A Nix build may create only $out itself, so write in place.
            fs::create_dir_all(out).map_err(io_error(out))?;
            write_tree(out, tree)
        }
        Some(m) if !m.is_dir() => Err(OutputError::NotADirectory(out.to_owned())),
        Some(_) if is_empty_dir(out)? => write_tree(out, tree),
        Some(_) if !force => Err(OutputError::NotEmpty(out.to_owned())),
        Some(_) if !out.join(marker).is_file() => {
            Err(OutputError::NotARunner(out.to_owned(), marker))
        }
        Some(_) => replace(out, tree),
    }
}

/// Writes the new runner beside the old one and swaps them, so a failure leaves the old runner.
fn replace(out: &Path, tree: &Tree) -> Result<(), OutputError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runner".to_owned());
    let sibling =
        |suffix: &str| out.with_file_name(format!(".{name}.{suffix}-{}", std::process::id()));
    let fresh = sibling("new");
    let old = sibling("old");
    let _ = fs::remove_dir_all(&fresh);
    if let Err(e) = write_tree(&fresh, tree) {
        let _ = fs::remove_dir_all(&fresh);
        return Err(e);
    }
    fs::rename(out, &old).map_err(io_error(out))?;
    if let Err(e) = fs::rename(&fresh, out) {
        let _ = fs::rename(&old, out);
        return Err(io_error(out)(e));
    }
    fs::remove_dir_all(&old).map_err(io_error(&old))
}
