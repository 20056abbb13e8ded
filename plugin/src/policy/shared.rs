//! Process-wide state behind a small trait: proxy-wasm shared data in Envoy, a map in tests.
//!
//! Every Envoy worker runs its own VM, so anything global (breakers, buckets) lives in the
//! host's shared data and is changed with compare-and-swap: read the value and its version,
//! compute the new value, write it back only if nobody wrote in between, and otherwise start
//! again from a fresh read. Values are small fixed binary layouts; one that does not decode is
//! treated as absent and rewritten, never trusted.

use std::cell::RefCell;
use std::collections::HashMap;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// Someone wrote the key since it was read: read again and retry.
    CasMismatch,
    /// The host refused for another reason.
    Host,
}

/// The host could not read a key: not the same as a key that is absent, which would be
/// created (and so overwritten) by the next write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadError;

/// A process-wide key-value store with compare-and-swap.
pub trait SharedStore {
    /// The value of `key` and its version (`None` when the key has never been written).
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, ReadError>;
    /// Writes `value` if the key is still at version `cas` (0: write unconditionally, which is
    /// how a missing key is created).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), WriteError>;
}

/// A value kept in a [`SharedStore`]. Decoding is exact (one encoding per value), so two
/// values that compare equal have the same bytes.
pub trait SharedValue: Sized + Default + Clone + PartialEq {
    /// Reads a value; `None` for anything that is not exactly a value of this layout.
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// Writes the value.
    fn encode(&self) -> Vec<u8>;
}

/// Attempts before an update gives up: contention beyond this means something is wrong, and
/// the caller falls back to a safe decision rather than spinning on the request path.
pub const MAX_CAS_ATTEMPTS: u32 = 8;

/// Why an update did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost the compare-and-swap race.
    Contended,
    /// The host refused a write.
    Host,
}

/// What an update did, besides its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateStats {
    /// Compare-and-swap races lost (each one cost a re-read).
    pub cas_retries: u32,
    /// The stored value did not decode and was replaced by a fresh one.
    pub reset: bool,
}

/// Reads `key`, applies `change` and writes the result back with compare-and-swap, retrying
/// from a fresh read when another worker wrote in between. A change that leaves the value as
/// it was writes nothing, so a read-only decision costs one host call. "As it was" compares
/// the decoded values, not their bytes: a breaker's layout is hundreds of bytes, and encoding
/// and comparing them on every request cost more in wasm than the decision itself.
pub fn update<S, V, R>(
    store: &S,
    key: &str,
    mut change: impl FnMut(&mut V) -> R,
) -> (Result<R, UpdateError>, UpdateStats)
where
    S: SharedStore + ?Sized,
    V: SharedValue,
{
    let mut stats = UpdateStats::default();
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (stored, cas) = match store.get(key) {
            Ok(Some((bytes, cas))) => (Some(bytes), cas),
            Ok(None) => (None, 0),
            // Writing now would replace whatever is there unconditionally.
            Err(ReadError) => return (Err(UpdateError::Host), stats),
        };
        let decoded = stored.as_deref().and_then(V::decode);
        stats.reset |= stored.is_some() && decoded.is_none();
        let mut value = decoded.clone().unwrap_or_default();
        let result = change(&mut value);
        if decoded.as_ref() == Some(&value) {
            return (Ok(result), stats);
        }
        match store.set(key, &value.encode(), cas) {
            Ok(()) => return (Ok(result), stats),
            Err(WriteError::CasMismatch) => stats.cas_retries += 1,
            Err(WriteError::Host) => return (Err(UpdateError::Host), stats),
        }
    }
    (Err(UpdateError::Contended), stats)
}

/// An in-memory [`SharedStore`] with Envoy's semantics, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, ReadError> {
        Ok(self.entries.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), WriteError> {
        let mut entries = self.entries.borrow_mut();
        let version = match entries.get(key) {
            Some((_, current)) if cas != 0 && cas != *current => {
                return Err(WriteError::CasMismatch)
            }
            Some((_, current)) => current.wrapping_add(1).max(1),
            None => 1,
        };
        entries.insert(key.to_owned(), (value.to_vec(), version));
        Ok(())
    }
}

impl MemoryStore {
    /// Overwrites a key with raw bytes, as a foreign or older writer might.
    pub fn poke(&self, key: &str, bytes: &[u8]) {
        let _ = self.set(key, bytes, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[derive(Debug, Default, Clone, PartialEq)]
    struct Counter(u32);

    impl SharedValue for Counter {
        fn decode(bytes: &[u8]) -> Option<Self> {
            Some(Counter(u32::from_le_bytes(bytes.try_into().ok()?)))
        }
        fn encode(&self) -> Vec<u8> {
            self.0.to_le_bytes().to_vec()
        }
    }

    /// A store where another worker writes between every read and write, `races` times.
    struct Racing {
        inner: MemoryStore,
        races: RefCell<u32>,
    }

    impl SharedStore for Racing {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, ReadError> {
            let read = self.inner.get(key)?;
            if *self.races.borrow() > 0 {
                *self.races.borrow_mut() -= 1;
                let (bytes, _) = read.clone().unwrap_or_default();
                let other = Counter::decode(&bytes).unwrap_or_default().0 + 100;
                self.inner.poke(key, &Counter(other).encode());
            }
            Ok(read)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), WriteError> {
            self.inner.set(key, value, cas)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn updates_create_read_and_write_back() {
        let store = MemoryStore::default();
        let (result, stats) = update(&store, "k", |c: &mut Counter| {
            c.0 += 1;
            c.0
        });
        assert_eq!((result, stats), (Ok(1), UpdateStats::default()));
        let (result, _) = update(&store, "k", |c: &mut Counter| {
            c.0 += 1;
            c.0
        });
        assert_eq!(result, Ok(2));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_lost_race_is_retried_from_a_fresh_read_and_loses_nothing() {
        let store = Racing {
            inner: MemoryStore::default(),
            races: RefCell::new(2),
        };
        store.inner.poke("k", &Counter(1).encode());
        let (result, stats) = update(&store, "k", |c: &mut Counter| {
            c.0 += 1;
            c.0
        });
        assert_eq!(result, Ok(202), "both foreign writes and ours survive");
        assert_eq!(stats.cas_retries, 2);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn endless_contention_gives_up_instead_of_spinning() {
        let store = Racing {
            inner: MemoryStore::default(),
            races: RefCell::new(u32::MAX),
        };
        store.inner.poke("k", &Counter(0).encode());
        let (result, stats) = update(&store, "k", |c: &mut Counter| c.0 += 1);
        assert_eq!(result, Err(UpdateError::Contended));
        assert_eq!(stats.cas_retries, MAX_CAS_ATTEMPTS);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_undecodable_value_is_reset_not_trusted() {
        let store = MemoryStore::default();
        store.poke("k", b"garbage!!");
        let (result, stats) = update(&store, "k", |c: &mut Counter| {
            c.0 += 1;
            c.0
        });
        assert_eq!(result, Ok(1));
        assert!(stats.reset);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_unchanged_value_is_not_written() {
        let store = MemoryStore::default();
        store.poke("k", &Counter(5).encode());
        let version = store.get("k").unwrap().map(|(_, v)| v);
        let _ = update(&store, "k", |c: &mut Counter| c.0);
        assert_eq!(store.get("k").unwrap().map(|(_, v)| v), version);
    }

    /// A store whose reads fail, as a host might.
    struct Unreadable(MemoryStore);

    impl SharedStore for Unreadable {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, ReadError> {
            Err(ReadError)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), WriteError> {
            self.0.set(key, value, cas)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_failed_read_is_an_error_and_never_overwrites_the_value() {
        let store = Unreadable(MemoryStore::default());
        store.0.poke("k", &Counter(41).encode());
        let (result, _) = update(&store, "k", |c: &mut Counter| c.0 += 1);
        assert_eq!(result, Err(UpdateError::Host));
        assert_eq!(
            store.0.get("k").unwrap().map(|(b, _)| b),
            Some(Counter(41).encode())
        );
    }
}
