//! Writes a runner tree to disk without losing anything. A directory that is new or empty is
//! simply filled. With `--force`, a directory holding output of this tool is updated in place:
//! only the files the tool wrote there before (its manifest) are replaced or deleted, every
//! other file — a volume image the runner made, a script of the user's own — stays, and a file
//! the tool did not write that stands where a new one must go stops it before anything changes.
//!
//! Runs on one directory take turns (a lock on it), and each file is written beside its final
//! name and renamed over it, so a reader never sees half a file and nothing but the directory's
//! own files is ever touched: `--out .` works from inside the runner, and no sibling
//! directories are made.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use crate::runner::{Entry, Tree};

/// Marks a directory as a runner this tool wrote, so `--force` may update it.
pub const MARKER: &str = "share/microvm/spec.json";
/// Marks a host package this tool wrote.
pub const HOST_MARKER: &str = "share/microvm/host-spec.json";
/// Lists, one path a line, every file this tool wrote into the directory, itself included:
/// exactly what `--force` may replace or delete.
pub const MANIFEST: &str = "share/microvm/generated-files";

/// Suffix of the name a file is written under before it is renamed into place. Runs on one
/// directory take turns, so one name per file is enough; a run that was killed leaves at most
/// these, and the next run removes them.
const STAGING_SUFFIX: &str = ".microvm-codegen-new";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not empty; pass --force to update output generated there earlier")]
    NotEmpty(PathBuf),
    #[error(
        "{0} is not empty and is not output of microvm-codegen (no {1}); refusing to write into it even with --force"
    )]
    NotARunner(PathBuf, &'static str),
    #[error(
        "{dir}: {} in the way (microvm-codegen did not write {}, so --force keeps {}): {}; move {} away and run again",
        if paths.len() == 1 { "a file is" } else { "files are" },
        if paths.len() == 1 { "it" } else { "them" },
        if paths.len() == 1 { "it" } else { "them" },
        paths.join(", "),
        if paths.len() == 1 { "it" } else { "them" },
    )]
    InTheWay { dir: PathBuf, paths: Vec<String> },
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

/// Where `relative` is written before it is renamed into place.
fn staging_path(out: &Path, relative: &str) -> PathBuf {
    let path = out.join(relative);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{STAGING_SUFFIX}"))
}

fn remove_if_present(path: &Path) -> Result<(), OutputError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path)(e)),
        _ => Ok(()),
    }
}

/// Writes `entry` under its staging name.
fn stage(out: &Path, relative: &str, entry: &Entry) -> Result<(), OutputError> {
    let staged = staging_path(out, relative);
    if let Some(parent) = staged.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    remove_if_present(&staged)?;
    match entry {
        Entry::File {
            contents,
            executable,
        } => {
            let mode = if *executable { 0o755 } else { 0o644 };
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&staged)
                .map_err(io_error(&staged))?;
            file.write_all(contents.as_bytes())
                .map_err(io_error(&staged))?;
            // The mode given to open() is masked by the umask; the output's is not.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_error(&staged))
        }
        Entry::Symlink { target } => symlink(target, &staged).map_err(io_error(&staged)),
    }
}

/// Writes `entry` to `relative`, replacing what is there in one step.
fn put(out: &Path, relative: &str, entry: &Entry) -> Result<(), OutputError> {
    stage(out, relative, entry)?;
    let path = out.join(relative);
    fs::rename(staging_path(out, relative), &path).map_err(io_error(&path))
}

fn manifest_entry(paths: &BTreeSet<String>) -> Entry {
    Entry::File {
        contents: paths.iter().map(|p| format!("{p}\n")).collect(),
        executable: false,
    }
}

/// `tree` as `write` leaves it in a new directory: with the manifest of every file written.
/// (The evaluator plugin returns this, so a runner written by Nix is the generator's.)
pub fn with_manifest(tree: &Tree) -> Tree {
    let mut wanted: BTreeSet<String> = tree.keys().cloned().collect();
    wanted.insert(MANIFEST.to_owned());
    let mut complete = tree.clone();
    complete.insert(MANIFEST.to_owned(), manifest_entry(&wanted));
    complete
}

/// A manifest line is taken only as a plain relative path inside the directory, so an edited
/// manifest cannot make `--force` delete anything outside it.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// What the manifest in `out` lists; empty when there is none (output of a version of this
/// tool that kept none: then every file it would replace counts as in the way).
fn read_manifest(out: &Path) -> Result<BTreeSet<String>, OutputError> {
    let path = out.join(MANIFEST);
    match fs::read(&path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| is_plain_relative(line))
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(io_error(&path)(e)),
    }
}

fn metadata_if_present(path: &Path) -> Result<Option<fs::Metadata>, OutputError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// The first of `relative`'s parent directories inside `out` that is there but is not a plain
/// directory (a file, or a link that could lead outside `out`).
fn blocked_parent(out: &Path, relative: &str) -> Result<Option<String>, OutputError> {
    let mut parents: Vec<&Path> = Path::new(relative).ancestors().skip(1).collect();
    parents.reverse();
    for parent in parents.into_iter().filter(|p| !p.as_os_str().is_empty()) {
        match metadata_if_present(&out.join(parent))? {
            None => return Ok(None),
            Some(m) if m.is_dir() => {}
            Some(_) => return Ok(Some(parent.display().to_string())),
        }
    }
    Ok(None)
}

/// Paths in `out` that writing `wanted` would overwrite although this tool did not write them
/// (they are not in `previous`), or that are directories.
fn in_the_way(
    out: &Path,
    wanted: &BTreeSet<String>,
    previous: &BTreeSet<String>,
) -> Result<Vec<String>, OutputError> {
    let mut blocked = BTreeSet::new();
    for relative in wanted {
        if let Some(parent) = blocked_parent(out, relative)? {
            blocked.insert(parent);
            continue;
        }
        match metadata_if_present(&out.join(relative))? {
            Some(m) if m.is_dir() || !previous.contains(relative) => {
                blocked.insert(relative.clone());
            }
            _ => {}
        }
    }
    Ok(blocked.into_iter().collect())
}

fn is_empty_dir(dir: &Path) -> Result<bool, OutputError> {
    Ok(fs::read_dir(dir).map_err(io_error(dir))?.next().is_none())
}

/// Writes a runner `tree` to `out`.
pub fn write(out: &Path, tree: &Tree, force: bool) -> Result<(), OutputError> {
    write_marked(out, tree, force, MARKER)
}

/// Writes `tree` to `out`, which must be new or empty, or — with `force` — hold output of this
/// tool with `marker` among its files. Leaves a manifest of what it wrote.
pub fn write_marked(
    out: &Path,
    tree: &Tree,
    force: bool,
    marker: &'static str,
) -> Result<(), OutputError> {
    match metadata_if_present(out)? {
        // A Nix build may create only $out itself, so write in place.
        None => fs::create_dir_all(out).map_err(io_error(out))?,
        Some(m) if !m.is_dir() => return Err(OutputError::NotADirectory(out.to_owned())),
        Some(_) => {}
    }
    // Held until this returns: a second run on `out` waits, then sees this one's output.
    let lock = fs::File::open(out).map_err(io_error(out))?;
    lock.lock().map_err(io_error(out))?;

    let previous = if is_empty_dir(out)? {
        BTreeSet::new()
    } else if !force {
        return Err(OutputError::NotEmpty(out.to_owned()));
    } else {
        let previous = read_manifest(out)?;
        if !previous.contains(marker) && !out.join(marker).is_file() {
            return Err(OutputError::NotARunner(out.to_owned(), marker));
        }
        previous
    };

    let mut wanted: BTreeSet<String> = tree.keys().cloned().collect();
    wanted.insert(MANIFEST.to_owned());
    let blocked = in_the_way(out, &wanted, &previous)?;
    if !blocked.is_empty() {
        return Err(OutputError::InTheWay {
            dir: out.to_owned(),
            paths: blocked,
        });
    }

    // Staged files a killed run left behind.
    for relative in previous.iter().chain(&wanted) {
        if blocked_parent(out, relative)?.is_none() {
            remove_if_present(&staging_path(out, relative))?;
        }
    }
    // First claim every file this run may write, so that if it is killed part way the next
    // `--force` still knows them as its own.
    let claimed: BTreeSet<String> = previous.union(&wanted).cloned().collect();
    if claimed != previous {
        put(out, MANIFEST, &manifest_entry(&claimed))?;
    }
    let files = || tree.iter().filter(|(relative, _)| *relative != MANIFEST);
    let written = files()
        .try_for_each(|(relative, entry)| stage(out, relative, entry))
        .and_then(|()| {
            files().try_for_each(|(relative, _)| {
                let path = out.join(relative);
                fs::rename(staging_path(out, relative), &path).map_err(io_error(&path))
            })
        });
    if let Err(e) = written {
        for (relative, _) in files() {
            let _ = fs::remove_file(staging_path(out, relative));
        }
        return Err(e);
    }
    for stale in previous.difference(&wanted) {
        remove_stale(out, stale)?;
    }
    if claimed != wanted {
        put(out, MANIFEST, &manifest_entry(&wanted))?;
    }
    Ok(())
}

/// Deletes a file an earlier run wrote and this one does not, and the directories that held
/// only it.
fn remove_stale(out: &Path, relative: &str) -> Result<(), OutputError> {
    if blocked_parent(out, relative)?.is_some() {
        return Ok(());
    }
    let path = out.join(relative);
    match metadata_if_present(&path)? {
        Some(m) if !m.is_dir() => fs::remove_file(&path).map_err(io_error(&path))?,
        _ => return Ok(()),
    }
    for parent in Path::new(relative).ancestors().skip(1) {
        if parent.as_os_str().is_empty() || fs::remove_dir(out.join(parent)).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_names_only_paths_inside_the_directory() {
        for accepted in ["bin/microvm-run", "share/microvm/spec.json", "var.img"] {
            assert!(is_plain_relative(accepted), "{accepted}");
        }
        for refused in [
            "",
            "/etc/passwd",
            "../x",
            "bin/../../x",
            "./bin/x",
            "bin/\0x",
        ] {
            assert!(!is_plain_relative(refused), "{refused}");
        }
    }
}
