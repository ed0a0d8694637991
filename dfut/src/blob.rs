//! Encoded values as shared, immutable byte buffers: on the heap, received
//! from a peer, or mapped from a file (a shared-memory object of this host,
//! or one spilled to disk).
//!
//! Every holder of a [`Blob`] sees the same bytes; nothing writes to them
//! after construction. A buffer mapped from a file this process created
//! removes the file when the last holder drops it (a mapping stays valid
//! after the file is removed, so readers in flight are never cut off).

use std::path::PathBuf;
use std::sync::Arc;

/// Encoded bytes of a value, shared without copying.
pub type Blob = Arc<Bytes>;

/// The bytes of one encoded value; see the module documentation.
pub struct Bytes(Repr);

enum Repr {
    Heap(Vec<u8>),
    Received(Arc<dyn AsRef<[u8]> + Send + Sync>),
    Mapped {
        map: memmap2::Mmap,
        /// The file, removed with the last holder when this process owns it.
        file: PathBuf,
        owned: bool,
    },
}

impl Bytes {
    /// A read-only mapping of `file`. With `owned`, the file is removed
    /// when the last holder of these bytes drops them.
    pub(crate) fn mapped(file: PathBuf, owned: bool) -> std::io::Result<Self> {
        Self::map_file(std::fs::File::open(&file)?, file, owned)
    }

    /// Like [`Bytes::mapped`], from the file already open as `f`.
    pub(crate) fn map_file(f: std::fs::File, file: PathBuf, owned: bool) -> std::io::Result<Self> {
        let map = if f.metadata()?.len() == 0 {
            // An empty file cannot be mapped; an empty map stands in.
            memmap2::MmapOptions::new()
                .len(0)
                .map_anon()?
                .make_read_only()?
        } else {
            // SAFETY: the file is sealed: its writer wrote it whole before
            // publishing its path, and no process writes to it afterwards
            // (object files are created with mode 0400 in a directory only
            // their owner's user can enter).
            unsafe { memmap2::Mmap::map(&f)? }
        };
        Ok(Self(Repr::Mapped { map, file, owned }))
    }

    /// The file these bytes are mapped from, if they are.
    pub(crate) fn file(&self) -> Option<&std::path::Path> {
        match &self.0 {
            Repr::Mapped { file, .. } => Some(file),
            _ => None,
        }
    }

    /// Whether the bytes live in a file mapping rather than on the heap.
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Heap(v) => v,
            Repr::Received(r) => (**r).as_ref(),
            Repr::Mapped { map, .. } => map,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(Repr::Heap(v))
    }
}

impl From<Arc<dyn AsRef<[u8]> + Send + Sync>> for Bytes {
    fn from(r: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        Self(Repr::Received(r))
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        match &mut self.0 {
            Repr::Mapped {
                file, owned: true, ..
            } => {
                let _ = std::fs::remove_file(file);
            }
            // A large buffer is kept for the next large value
            // (`dfut_net::buffers`: bounded in bytes and in time).
            Repr::Heap(v) if v.capacity() >= dfut_net::buffers::MIN_KEPT => {
                dfut_net::buffers::give_back(std::mem::take(v));
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Mapped { file, .. } => {
                write!(f, "Bytes({} bytes at {})", self.len(), file.display())
            }
            _ => write!(f, "Bytes({} bytes)", self.len()),
        }
    }
}

/// A blob holding `v`.
pub(crate) fn blob(v: Vec<u8>) -> Blob {
    Arc::new(Bytes::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_mapping_removes_its_file_with_the_last_holder() {
        let dir = std::env::temp_dir().join(format!("dfut-blob-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x");
        std::fs::write(&path, [1u8, 2, 3]).unwrap();
        let b: Blob = Arc::new(Bytes::mapped(path.clone(), true).unwrap());
        let reader = b.clone();
        drop(b);
        assert!(path.exists(), "a holder is left");
        assert_eq!(&reader[..], &[1, 2, 3]);
        drop(reader);
        assert!(!path.exists());
        std::fs::write(&path, []).unwrap();
        let empty = Bytes::mapped(path.clone(), false).unwrap();
        assert!(empty.is_empty() && empty.is_mapped());
        drop(empty);
        assert!(path.exists(), "not owned: kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
