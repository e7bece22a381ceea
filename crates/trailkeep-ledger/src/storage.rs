//! The storage seam: every byte the ledger keeps goes through [`Storage`].
//!
//! Objects are named by `/`-separated relative paths (`seg/00000000000000000000.log`,
//! `log/acme/tile/0/000`). Two kinds of write exist, matching what both a local disk and an
//! object store can offer:
//!
//! * [`Storage::put`] replaces a whole object atomically and durably (temp file + fsync + rename +
//!   directory fsync on disk; a single PUT on an object store). Sealed segments, tiles, checkpoints
//!   and metadata are written this way and never modified in place.
//! * [`Storage::append`] + [`Storage::sync`] grow the one active segment; bytes appended are only
//!   durable after `sync` returns.
//!
//! [`LocalDir`] is the default implementation; [`MemStorage`] keeps everything in memory and can
//! simulate a crash that loses (a random prefix of) every unsynced append. This module never
//! interprets the bytes it stores.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A small object-store-like seam. Implementations must be safe to share between threads.
pub trait Storage: Send + Sync + fmt::Debug {
    /// The whole object, or `None` if it does not exist.
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// `len` bytes at `offset`; fewer if the object is shorter. Errors if the object is missing.
    fn get_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Size of the object, or `None` if it does not exist.
    fn size(&self, name: &str) -> io::Result<Option<u64>>;
    /// Names of all objects whose name starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// The distinct next path components below `dir` (which ends with `/`), sorted: the
    /// "subdirectories" and objects directly inside it.
    fn list_children(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut out: Vec<String> = self
            .list(dir)?
            .iter()
            .filter_map(|n| n[dir.len()..].split('/').next().map(str::to_owned))
            .collect();
        out.dedup();
        Ok(out)
    }
    /// Atomically and durably replace (or create) an object.
    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Append to an object, creating it if needed. Not durable until [`Storage::sync`].
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Make every append to `name` (and its creation) durable.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Cut an appendable object to `len` bytes (durable after [`Storage::sync`]).
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Remove an object; removing a missing object is not an error.
    fn delete(&self, name: &str) -> io::Result<()>;
}

fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid object name {name:?}"),
        ))
    }
}

/// Append handles kept open by [`LocalDir`].
const MAX_OPEN_FILES: usize = 64;

/// Objects stored as files below a root directory.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    /// Open append handles, so that `sync` fsyncs the file that was written.
    open: Mutex<BTreeMap<String, File>>,
}

impl LocalDir {
    /// Use (and create if needed) `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(Self {
            root,
            open: Mutex::new(BTreeMap::new()),
        })
    }

    /// Use `root` without creating anything (for read-only verification).
    pub fn existing(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self {
            root,
            open: Mutex::new(BTreeMap::new()),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    fn sync_dir(dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn ensure_parent(&self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent()
            && !parent.is_dir()
        {
            fs::create_dir_all(parent)?;
            // Make the new directory entries durable up to the root.
            let mut dir = parent;
            while dir.starts_with(&self.root) {
                Self::sync_dir(dir)?;
                if dir == self.root {
                    break;
                }
                match dir.parent() {
                    Some(p) => dir = p,
                    None => break,
                }
            }
        }
        Ok(())
    }

    fn list_into(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(".tmp-") {
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                self.list_into(&entry.path(), &child, out)?;
            } else {
                out.push(child);
            }
        }
        Ok(())
    }
}

impl Storage for LocalDir {
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(name)?) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = File::open(self.path(name)?)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn size(&self, name: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(name)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        // Walk only the directory part of the prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let dir = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let mut out = Vec::new();
        self.list_into(&dir, dir_part, &mut out)?;
        out.retain(|n| n.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn list_children(&self, dir: &str) -> io::Result<Vec<String>> {
        let path = match dir.trim_end_matches('/') {
            "" => self.root.clone(),
            d => self.path(d)?,
        };
        let entries = match fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            if let Some(n) = e?.file_name().to_str()
                && !n.starts_with(".tmp-")
            {
                out.push(n.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(name)?;
        self.ensure_parent(&path)?;
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = parent.join(format!(".tmp-{file_name}-{}", std::process::id()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            // Do not leave a partial copy taking space (on a full disk it is all there is).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Self::sync_dir(&parent)
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !open.contains_key(name) {
            // Bound the number of open descriptors; a closed handle loses nothing already
            // written, and `sync` reopens by path.
            if open.len() >= MAX_OPEN_FILES {
                open.pop_first();
            }
            let path = self.path(name)?;
            self.ensure_parent(&path)?;
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            open.insert(name.to_owned(), f);
        }
        let f = open.get_mut(name).expect("inserted above");
        f.write_all(bytes)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let f = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(name) {
                Some(f) => Some(f.try_clone()?),
                None => None,
            }
        };
        let path = self.path(name)?;
        match f {
            // fdatasync is enough for data; the size change is metadata that fdatasync covers.
            Some(f) => f.sync_data()?,
            None => OpenOptions::new().write(true).open(&path)?.sync_data()?,
        }
        // The file's directory entry must be durable too (first sync after creation).
        Self::sync_dir(path.parent().unwrap_or(&self.root))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let path = self.path(name)?;
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        let path = self.path(name)?;
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        match fs::remove_file(&path) {
            Ok(()) => Self::sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct MemObject {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Whether the object exists after a crash at all.
    durable_exists: bool,
}

/// In-memory storage for tests. Clones share the same objects.
///
/// `put` is durable at once; `append`/`truncate` become durable at `sync`. [`MemStorage::crash`]
/// throws away unsynced state, keeping for each object a caller-chosen prefix of its unsynced
/// appended bytes (a torn write).
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    objects: Arc<Mutex<BTreeMap<String, MemObject>>>,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MemObject>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulate a power loss. For every object with unsynced appended bytes, `keep(name,
    /// unsynced_len)` chooses how many of those bytes survive (0 = all lost). Unsynced truncations
    /// and never-synced objects are rolled back.
    pub fn crash(&self, keep: impl FnMut(&str, usize) -> usize) {
        let mut objects = self.lock();
        Self::apply_crash(&mut objects, keep);
    }

    /// What a machine would find after a power loss now, as an independent store; `self` is left
    /// alone, so a ledger still running on it cannot touch the copy.
    pub fn crashed_copy(&self, keep: impl FnMut(&str, usize) -> usize) -> MemStorage {
        let mut objects = self.lock().clone();
        Self::apply_crash(&mut objects, keep);
        MemStorage {
            objects: Arc::new(Mutex::new(objects)),
        }
    }

    fn apply_crash(
        objects: &mut BTreeMap<String, MemObject>,
        mut keep: impl FnMut(&str, usize) -> usize,
    ) {
        objects.retain(|_, o| o.durable_exists);
        for (name, o) in objects.iter_mut() {
            let extends = o.current.len() > o.durable.len() && o.current.starts_with(&o.durable);
            if extends {
                let unsynced = o.current.len() - o.durable.len();
                let k = keep(name, unsynced).min(unsynced);
                let mut next = o.durable.clone();
                next.extend_from_slice(&o.current[o.durable.len()..o.durable.len() + k]);
                o.current = next;
            } else {
                o.current = o.durable.clone();
            }
            o.durable = o.current.clone();
        }
    }

    /// Total bytes stored under `prefix` (for size reports).
    pub fn total_size(&self, prefix: &str) -> u64 {
        self.lock()
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, o)| o.current.len() as u64)
            .sum()
    }

    /// Mutate an object's bytes in place (tests: corruption). Durable at once.
    pub fn tamper(&self, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut objects = self.lock();
        let o = objects
            .get_mut(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?;
        f(&mut o.current);
        o.durable = o.current.clone();
        Ok(())
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no object {name:?}"))
}

impl Storage for MemStorage {
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        check_name(name)?;
        Ok(self.lock().get(name).map(|o| o.current.clone()))
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        check_name(name)?;
        let objects = self.lock();
        let o = objects.get(name).ok_or_else(|| not_found(name))?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(o.current.len());
        let end = start.saturating_add(len).min(o.current.len());
        Ok(o.current[start..end].to_vec())
    }

    fn size(&self, name: &str) -> io::Result<Option<u64>> {
        check_name(name)?;
        Ok(self.lock().get(name).map(|o| o.current.len() as u64))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        Ok(self
            .lock()
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        self.lock().insert(
            name.to_owned(),
            MemObject {
                current: bytes.to_vec(),
                durable: bytes.to_vec(),
                durable_exists: true,
            },
        );
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        self.lock()
            .entry(name.to_owned())
            .or_default()
            .current
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let mut objects = self.lock();
        let o = objects.get_mut(name).ok_or_else(|| not_found(name))?;
        o.durable = o.current.clone();
        o.durable_exists = true;
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        check_name(name)?;
        let mut objects = self.lock();
        let o = objects.get_mut(name).ok_or_else(|| not_found(name))?;
        o.current
            .truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(())
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        self.lock().remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_crash_keeps_synced_and_a_prefix_of_unsynced() {
        let s = MemStorage::new();
        s.append("a", b"hello").unwrap();
        s.sync("a").unwrap();
        s.append("a", b" world").unwrap();
        s.append("b", b"never synced").unwrap();
        s.put("c", b"put").unwrap();
        s.crash(|_, _| 3);
        assert_eq!(s.get("a").unwrap().unwrap(), b"hello wo");
        assert_eq!(s.get("b").unwrap(), None);
        assert_eq!(s.get("c").unwrap().unwrap(), b"put");
    }

    #[test]
    fn local_dir_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::open(dir.path()).unwrap();
        s.append("seg/x.log", b"abc").unwrap();
        s.sync("seg/x.log").unwrap();
        s.put("log/a/tile/0/000", b"t").unwrap();
        assert_eq!(s.get_range("seg/x.log", 1, 10).unwrap(), b"bc");
        assert_eq!(
            s.list("log/").unwrap(),
            vec!["log/a/tile/0/000".to_string()]
        );
        s.truncate("seg/x.log", 1).unwrap();
        assert_eq!(s.get("seg/x.log").unwrap().unwrap(), b"a");
        assert!(s.get("../x").is_err());
        assert_eq!(s.list_children("log/").unwrap(), vec!["a".to_string()]);
        assert_eq!(
            s.list_children("").unwrap(),
            vec!["log".to_string(), "seg".to_string()]
        );
        let m = MemStorage::new();
        m.put("log/b/x", b"").unwrap();
        m.put("log/a/y/z", b"").unwrap();
        assert_eq!(
            m.list_children("log/").unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
