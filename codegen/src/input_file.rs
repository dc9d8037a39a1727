//! Reading the files the commands are given, with a bound on their size: a path such as
//! `/dev/zero` or a huge file given by mistake is refused after `limit` bytes, with a stable
//! code, instead of growing a buffer until memory runs out.

use std::io::{self, Read};
use std::path::Path;

/// A kind of input file and how much of it is ever reasonable.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// The most bytes read.
    pub bytes: u64,
    /// Stable code of the refusal, `microvm::<area>::too_large`.
    pub code: &'static str,
    /// What the file should be, for the message ("a runner spec").
    pub what: &'static str,
    /// What to do instead.
    pub hint: &'static str,
}

/// A runner spec: the Nix side writes a few kilobytes; 4 MiB is far beyond any real one.
pub const SPEC: Limit = Limit {
    bytes: 4 << 20,
    code: "microvm::spec::too_large",
    what: "a runner spec",
    hint: "give the spec.json the Nix side writes (a few kB), not another file",
};

/// A Nix file read for option declarations or linted: hand-written modules are far smaller;
/// generated package sets are not what lint is for.
pub const NIX: Limit = Limit {
    bytes: 16 << 20,
    code: "microvm::nix::too_large",
    what: "a Nix file to read",
    hint: "give the modules that set or declare microvm.* options, not generated package sets",
};

/// A file of a VM's state directory that `microvm` reads (its flake reference, a runner's
/// `share/microvm/*`, the declared list): small files the generator or the host module wrote;
/// anything larger is not one of them.
pub const STATE: Limit = Limit {
    bytes: 4 << 20,
    code: "microvm::manage::too_large",
    what: "a file of a VM's state",
    hint: "the state directory holds something microvm did not write there; remove or reinstall the VM",
};

/// The text of `path`, unless it is longer than `limit` (an `InvalidData` error whose message
/// names the code, the limit and what to do) or is not UTF-8.
pub fn read_to_string(path: &Path, limit: Limit) -> io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.bytes + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit.bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: more than {} MiB, more than {} can be; {}",
                limit.code,
                limit.bytes >> 20,
                limit.what,
                limit.hint
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_more_than_the_limit_and_reads_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let small = Limit {
            bytes: 4 << 20,
            ..SPEC
        };
        std::fs::write(&path, vec![b'x'; 4 << 20]).unwrap();
        assert_eq!(read_to_string(&path, small).unwrap().len(), 4 << 20);
        std::fs::write(&path, vec![b'x'; (4 << 20) + 1]).unwrap();
        let error = read_to_string(&path, small).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("microvm::spec::too_large: more than 4 MiB"),
            "{error}"
        );
    }
}
