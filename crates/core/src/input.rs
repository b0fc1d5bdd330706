//! Reading the files users point podroute at (cluster file, kubeconfig, MTU
//! file, sysctl tree): regular files only and a size cap, so a FIFO never
//! blocks a command or the agent and `/dev/zero` never fills memory.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Error, Result};

/// The cap for a cluster file or kubeconfig: a cluster file of 100 000
/// nodes is about 9 MiB.
pub const MAX_INPUT_BYTES: u64 = 32 << 20;

/// The text of the regular file at `path`, at most `limit` bytes. `what`
/// names the input in errors (`cluster file`, `kubeconfig`, ...). A missing
/// or unreadable file is [`Error::ReadFile`]; anything else that is not a
/// regular file, a file over the limit, or one that is not UTF-8 is
/// [`Error::Invalid`]: all of them are bad input (exit 2).
pub fn read_text(path: &Path, what: &str, limit: u64) -> Result<String> {
    let read_error = |source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |reason: String| Error::invalid(path.display().to_string(), reason);
    let not_regular =
        |kind: &str| invalid(format!("the {what} is not a regular file (it is {kind})"));
    // Looked at before opening (a socket cannot be opened at all), and again
    // after (the path may have changed in between).
    if let Ok(metadata) = std::fs::metadata(path) {
        if !metadata.is_file() {
            return Err(not_regular(kind(&metadata.file_type())));
        }
    }
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(not_regular(kind(&metadata.file_type())));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(format!(
            "the {what} is larger than {}",
            human(limit)
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        invalid(format!(
            "the {what} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &Path, limit: u64) -> String {
        match read_text(path, "cluster file", limit) {
            Err(e @ Error::Invalid { .. }) => {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            }
            other => panic!("{}: expected Invalid, got {other:?}", path.display()),
        }
    }

    #[test]
    fn only_regular_files_within_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "mode: vxlan\n").expect("write");
        assert_eq!(
            read_text(&file, "cluster file", 100).expect("read"),
            "mode: vxlan\n"
        );
        let big = refused(&file, 4);
        assert!(big.contains("larger than 4 bytes"), "{big}");
        assert!(refused(dir.path(), 100).contains("a directory"));
        assert!(refused(Path::new("/dev/zero"), MAX_INPUT_BYTES).contains("character device"));

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        assert!(refused(&fifo, 100).contains("a FIFO"));
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        assert!(refused(&link, 100).contains("character device"));

        std::fs::write(&file, [b'a', 0xff, b'b']).expect("write");
        assert!(refused(&file, 100).contains("not UTF-8"));
        match read_text(&dir.path().join("missing"), "cluster file", 100) {
            Err(e @ Error::ReadFile { .. }) => assert_eq!(e.exit_code(), 2),
            other => panic!("expected ReadFile, got {other:?}"),
        }
    }
}
