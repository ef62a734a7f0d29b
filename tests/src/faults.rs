//! The fault queue the stand-ins share: faults injected by a test, each
//! for one operation (or for every one) and a number of requests, taken in
//! the order they were injected.

use std::sync::Mutex;

struct Fault<K> {
    /// Operation name, or `None` for any the stand-in lets a wildcard hit.
    operation: Option<String>,
    kind: K,
    remaining: u32,
}

pub struct Faults<K>(Mutex<Vec<Fault<K>>>);

impl<K> Default for Faults<K> {
    fn default() -> Self {
        Faults(Mutex::new(Vec::new()))
    }
}

impl<K: Copy> Faults<K> {
    pub fn inject(&self, operation: Option<&str>, kind: K, times: u32) {
        self.0.lock().unwrap().push(Fault {
            operation: operation.map(str::to_string),
            kind,
            remaining: times,
        });
    }

    /// Faults injected and not met yet.
    pub fn pending(&self) -> u32 {
        self.0.lock().unwrap().iter().map(|f| f.remaining).sum()
    }

    /// The first fault left whose operation `hits` accepts (`None` is a
    /// wildcard), used up by one.
    pub fn take(&self, hits: impl Fn(Option<&str>) -> bool) -> Option<K> {
        let mut faults = self.0.lock().unwrap();
        let f = faults
            .iter_mut()
            .find(|f| f.remaining > 0 && hits(f.operation.as_deref()))?;
        f.remaining -= 1;
        Some(f.kind)
    }
}
