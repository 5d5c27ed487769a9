//! A bounded map that keeps what was used recently.
//!
//! Two generations: new entries go into `hot`; when it is full, `hot`
//! becomes `cold` and the old `cold` is dropped. A hit in `cold` moves the
//! entry back to `hot`. At most `2 × capacity` entries, O(1) per operation,
//! and an entry used once per generation is never dropped: close enough to
//! LRU for caches whose misses cost a file read.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct BoundedCache<K, V> {
    hot: HashMap<K, V>,
    cold: HashMap<K, V>,
    capacity: usize,
}

impl<K: Hash + Eq, V> BoundedCache<K, V> {
    pub fn new(capacity: usize) -> BoundedCache<K, V> {
        BoundedCache {
            hot: HashMap::new(),
            cold: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.hot.contains_key(key) {
            let (k, v) = self.cold.remove_entry(key)?;
            self.insert(k, v);
        }
        self.hot.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.hot.len() >= self.capacity && !self.hot.contains_key(&key) {
            self.cold = std::mem::take(&mut self.hot);
        }
        self.cold.remove(&key);
        self.hot.insert(key, value);
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.hot.remove(key).or_else(|| self.cold.remove(key))
    }

    /// The cached value, or `make`'s, which is then cached.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &V
    where
        K: Clone,
    {
        if self.get(&key).is_none() {
            self.insert(key.clone(), make());
        }
        &self.hot[&key]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_twice_the_capacity() {
        let mut c = BoundedCache::new(3);
        for i in 0..100 {
            c.insert(i, i * 10);
            assert!(c.len() <= 6, "{} entries after {i}", c.len());
        }
        assert_eq!(c.get(&99), Some(&990));
        assert_eq!(c.get(&0), None, "old entries are gone");
    }

    #[test]
    fn entries_in_use_survive_generations() {
        let mut c = BoundedCache::new(2);
        c.insert("keep", 1);
        for i in 0..20 {
            c.insert(format!("x{i}").leak() as &str, i);
            assert_eq!(c.get("keep"), Some(&1), "dropped at {i}");
        }
        assert_eq!(c.remove("keep"), Some(1));
        assert_eq!(c.get("keep"), None);
    }

    #[test]
    fn get_or_insert_with_computes_once() {
        let mut c = BoundedCache::new(4);
        let mut calls = 0;
        for _ in 0..3 {
            let v = *c.get_or_insert_with(7u32, || {
                calls += 1;
                "seven"
            });
            assert_eq!(v, "seven");
        }
        assert_eq!(calls, 1);
        let mut c: BoundedCache<u32, u32> = BoundedCache::new(0);
        c.insert(1, 1);
        assert_eq!(c.len(), 1, "capacity 0 still caches one entry");
    }
}
