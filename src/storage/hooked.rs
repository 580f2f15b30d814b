//! For tests: a local storage that lets a test act at a chosen call, as another process (a
//! prune, a run) would between two steps of the code under test.

use std::io::Read;
use std::time::SystemTime;

use super::{LocalStorage, ObjectInfo, ObjectWriter, Storage, StorageError};

/// A call the hook sees, before the storage makes it.
pub(crate) enum Call<'a> {
    Put { key: &'a str, bytes: &'a [u8] },
    List { prefix: &'a str },
    Remove { key: &'a str },
}

/// [`LocalStorage`], with `hook` called before each put and listing, and after each removal.
pub(crate) struct Hooked<F: Fn(&LocalStorage, Call<'_>) + Send + Sync> {
    pub inner: LocalStorage,
    pub hook: F,
}

impl<F: Fn(&LocalStorage, Call<'_>) + Send + Sync> Storage for Hooked<F> {
    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }
    fn create_dir(&self, name: &str) -> Result<(), StorageError> {
        self.inner.create_dir(name)
    }
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        (self.hook)(&self.inner, Call::Put { key, bytes });
        self.inner.put_new(key, bytes)
    }
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.inner.create(key)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        (self.hook)(&self.inner, Call::Put { key, bytes });
        self.inner.put(key, bytes)
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.inner.open(key)
    }
    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectInfo>, StorageError> {
        (self.hook)(&self.inner, Call::List { prefix });
        self.inner.list(prefix, limit)
    }
    fn remove(&self, key: &str) -> Result<(), StorageError> {
        let removed = self.inner.remove(key);
        (self.hook)(&self.inner, Call::Remove { key });
        removed
    }
    fn abort_unfinished_before(
        &self,
        prefix: &str,
        before: Option<SystemTime>,
    ) -> Result<usize, StorageError> {
        self.inner.abort_unfinished_before(prefix, before)
    }
    fn unfinished(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError> {
        self.inner.unfinished(prefix, limit)
    }
    fn marks_a_start(&self) -> bool {
        self.inner.marks_a_start()
    }
    fn remote(&self) -> bool {
        false
    }
}
