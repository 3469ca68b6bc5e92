//! `Table`: the map every part of the state is kept in. The state is copied for every
//! applied entry and handed to readers (the rule loop, the agent, the API) after each, so
//! a copy must cost nothing and a change only what it touches: a persistent red-black
//! tree (rpds) whose copies share every node a change did not touch. Ordered, so every
//! member iterates (and digests) it the same way.

use rpds::RedBlackTreeMapSync;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

/// An ordered map with O(1) copies and O(log n) changes.
#[derive(Clone)]
pub struct Table<K: Ord, V>(RedBlackTreeMapSync<K, V>);

impl<K: Ord, V> Default for Table<K, V> {
    fn default() -> Self {
        Table(RedBlackTreeMapSync::new_sync())
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.get(key)
    }

    /// The value under `key`, to change in place (copies only the path to it).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.get_mut(key)
    }

    /// Whether `key` is present.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.contains_key(key)
    }

    /// Puts `value` under `key`, replacing what was there.
    pub fn insert(&mut self, key: K, value: V) {
        self.0.insert_mut(key, value);
    }

    /// Takes the value under `key` out.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let old = self.0.get(key).cloned();
        if old.is_some() {
            self.0.remove_mut(key);
        }
        old
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.size()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + '_ {
        self.0.iter()
    }

    /// Keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + '_ {
        self.0.keys()
    }

    /// Values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.0.values()
    }

    /// The last entry (the highest key).
    pub fn last(&self) -> Option<(&K, &V)> {
        self.0.last()
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for Table<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<K: Ord + Clone, V: Clone + Eq> Eq for Table<K, V> {}

impl<K: Ord + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for Table<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut t = Table::new();
        for (k, v) in iter {
            t.insert(k, v);
        }
        t
    }
}

impl<K: Ord + Clone + Serialize, V: Clone + Serialize> Serialize for Table<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, K, V> Deserialize<'de> for Table<K, V>
where
    K: Ord + Clone + Deserialize<'de>,
    V: Clone + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TableVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for TableVisitor<K, V>
        where
            K: Ord + Clone + Deserialize<'de>,
            V: Clone + Deserialize<'de>,
        {
            type Value = Table<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut t = Table::new();
                while let Some((k, v)) = a.next_entry()? {
                    t.insert(k, v);
                }
                Ok(t)
            }
        }
        d.deserialize_map(TableVisitor(PhantomData))
    }
}

/// `table[key]` in tests, as with a `BTreeMap`.
#[cfg(test)]
impl<K, V, Q> std::ops::Index<&Q> for Table<K, V>
where
    K: Ord + Clone + Borrow<Q>,
    V: Clone,
    Q: Ord + ?Sized,
{
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_unaffected_by_later_changes() {
        let mut a: Table<String, u32> = (0..100).map(|i| (format!("k{i:03}"), i)).collect();
        let b = a.clone();
        a.insert("k000".into(), 7);
        *a.get_mut("k001").unwrap() = 8;
        assert_eq!(a.remove("k002"), Some(2));
        assert_eq!(a.remove("nope"), None);
        assert_eq!(
            (b.get("k000"), b.get("k001"), b.get("k002")),
            (Some(&0), Some(&1), Some(&2))
        );
        assert_eq!(
            (a.get("k000"), a.get("k001"), a.get("k002")),
            (Some(&7), Some(&8), None)
        );
        assert_eq!((a.len(), b.len()), (99, 100));
        assert_ne!(a, b);
    }

    #[test]
    fn serializes_like_an_ordered_map_in_both_encodings() {
        let t: Table<String, u32> = [("b".to_string(), 2), ("a".to_string(), 1)]
            .into_iter()
            .collect();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":1,"b":2}"#);
        let back: Table<String, u32> = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(back, t);
        let bin = bincode::serde::encode_to_vec(&t, bincode::config::standard()).unwrap();
        let (back, _): (Table<String, u32>, _) =
            bincode::serde::decode_from_slice(&bin, bincode::config::standard()).unwrap();
        assert_eq!(back, t);
    }
}
