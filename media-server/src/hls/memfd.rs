//! [`SealedFile`]: a segment's bytes in a sealed memfd, so the fast path can
//! hand them to a socket with sendfile(2) instead of copying them from user
//! space for every viewer (the copy was a third of the HLS CPU).
//!
//! Contract: the file is written once, then sealed against writes, growth
//! and shrinking, so every viewer gets exactly the bytes that were sealed;
//! sendfile reads it at an explicit offset and never moves a shared file
//! position, so any number of connections can send it at once. The file
//! goes away with the last `Arc` (ring eviction plus in-flight sends).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};

/// An immutable in-memory file holding one segment.
#[derive(Debug)]
pub struct SealedFile {
    fd: OwnedFd,
    len: u64,
}

impl SealedFile {
    /// Copies `data` into a new memfd named `name` (shown in
    /// `/proc/PID/fd`, nothing else) and seals it.
    pub fn new(name: &str, data: &[u8]) -> io::Result<SealedFile> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let mut rest = data;
        while !rest.is_empty() {
            match rustix::io::write(&fd, rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL)?;
        Ok(SealedFile { fd, len: data.len() as u64 })
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One sendfile(2) of the bytes from `*offset` on into `socket`
    /// (non-blocking: `WouldBlock` when its send buffer is full); advances
    /// `*offset` by what was sent.
    pub fn send_to(&self, socket: impl AsFd, offset: &mut u64) -> io::Result<usize> {
        let left = self.len.saturating_sub(*offset);
        let count = usize::try_from(left).unwrap_or(usize::MAX);
        Ok(rustix::fs::sendfile(socket, &self.fd, Some(offset), count)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_sealed_file_sends_exactly_its_bytes_and_refuses_writes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let file = SealedFile::new("test", &data).expect("memfd");
        assert_eq!(file.len(), data.len() as u64);
        assert!(rustix::io::write(&file.fd, b"x").is_err(), "sealed against writes");
        let (mut rx, tx) = std::os::unix::net::UnixStream::pair().expect("pair");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).expect("read");
            got
        });
        let mut offset = 0;
        while offset < file.len() {
            file.send_to(&tx, &mut offset).expect("sendfile");
        }
        drop(tx);
        assert_eq!(reader.join().expect("reader"), data);
    }
}
